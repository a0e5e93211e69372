//! A WAL group's snapshots on disk and on the wire (`docs/format/wal-group-snapshot.md`).
//!
//! On disk a snapshot is a directory `snapshot-<index>-<ulid>/` in the group's
//! directory: `meta.json` (what the snapshot covers: last log id and membership)
//! and the group TSDB's snapshot (`tsdb::Db::snapshot`: hard-linked blocks and the
//! head as `wal/checkpoint.00000000`). It is written as `….tmp` and renamed into
//! place once complete. On the wire it is one archive: every file with its CRC32C,
//! the whole archive closed by a CRC32C, sent in openraft's chunks.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Directory name prefix of a snapshot.
const PREFIX: &str = "snapshot-";
/// Suffix of a snapshot directory still being written.
const TMP_SUFFIX: &str = ".tmp";
/// The metadata file inside a snapshot directory.
pub(super) const META_FILE: &str = "meta.json";
/// First bytes of an archive.
const MAGIC: &[u8; 8] = b"HSNAP001";
/// Tag of a file entry in an archive; 0 ends the entries.
const TAG_FILE: u8 = 1;
const TAG_END: u8 = 0;
/// Longest relative path an archive may name.
const PATH_BYTES_MAX: usize = 4096;

/// A snapshot could not be written, read or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {path}: {action}: {source}")]
    Io {
        path: String,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("snapshot archive: {0}")]
    Archive(String),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.display().to_string();
    move |source| SnapshotError::Io {
        path,
        action,
        source,
    }
}

/// The directory name of the snapshot up to log index `index`.
pub(super) fn dir_name(index: u64) -> String {
    format!("{PREFIX}{index:020}-{}", ulid::Ulid::new())
}

/// The log index a snapshot directory name carries; `None` for other names and
/// unfinished snapshots.
fn parse_index(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(PREFIX)?;
    if rest.ends_with(TMP_SUFFIX) {
        return None;
    }
    let (index, ulid) = rest.split_once('-')?;
    ulid::Ulid::from_string(ulid).ok()?;
    index.parse().ok()
}

/// The path a snapshot is written at before it is renamed to `final_dir`.
pub(super) fn tmp_path(final_dir: &Path) -> PathBuf {
    let mut s = final_dir.as_os_str().to_os_string();
    s.push(TMP_SUFFIX);
    PathBuf::from(s)
}

/// Finished snapshots in `group_dir`, oldest (lowest index) first. Unfinished ones
/// (`.tmp`) are removed.
pub(super) fn list(group_dir: &Path) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(group_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io("read directory", group_dir)(e)),
    };
    for e in entries {
        let e = e.map_err(io("read directory", group_dir))?;
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(PREFIX) && name.ends_with(TMP_SUFFIX) {
            let p = e.path();
            std::fs::remove_dir_all(&p).map_err(io("remove unfinished snapshot", &p))?;
            continue;
        }
        if let Some(i) = parse_index(&name) {
            out.push((i, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Removes every finished snapshot in `group_dir` but `keep`.
pub(super) fn remove_others(group_dir: &Path, keep: &Path) -> Result<(), SnapshotError> {
    for (_, p) in list(group_dir)? {
        if p != keep {
            std::fs::remove_dir_all(&p).map_err(io("remove old snapshot", &p))?;
        }
    }
    Ok(())
}

/// Renames a finished snapshot into place and makes the rename durable.
pub(super) fn publish(tmp: &Path, final_dir: &Path) -> Result<(), SnapshotError> {
    crate::tsdb::block::sync_dir(tmp).map_err(io("sync", tmp))?;
    std::fs::rename(tmp, final_dir).map_err(io("rename", tmp))?;
    if let Some(parent) = final_dir.parent() {
        crate::tsdb::block::sync_dir(parent).map_err(io("sync", parent))?;
    }
    Ok(())
}

/// Every file under `dir`, as paths relative to it with `/` separators, sorted.
fn files(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) -> Result<(), SnapshotError> {
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io("read directory", dir))? {
        let e = e.map_err(io("read directory", dir))?;
        entries.push(e);
    }
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().to_string();
        let r = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let p = e.path();
        if e.metadata().map_err(io("stat", &p))?.is_dir() {
            files(&p, &r, out)?;
        } else {
            out.push((r, p));
        }
    }
    Ok(())
}

/// Packs the snapshot directory `dir` into one archive: `MAGIC`, then per file a
/// tag, its path, its length, its bytes and their CRC32C, then an end tag and the
/// CRC32C of everything before it.
pub(super) fn pack(dir: &Path) -> Result<Vec<u8>, SnapshotError> {
    let mut list = Vec::new();
    files(dir, "", &mut list)?;
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    for (rel, path) in list {
        let bytes = std::fs::read(&path).map_err(io("read", &path))?;
        out.push(TAG_FILE);
        out.extend_from_slice(&(rel.len() as u16).to_le_bytes());
        out.extend_from_slice(rel.as_bytes());
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&bytes);
        out.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
    }
    out.push(TAG_END);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Reads `n` bytes at `*pos` of `b`, or fails naming what was cut short.
fn take<'a>(b: &'a [u8], pos: &mut usize, n: usize, what: &str) -> Result<&'a [u8], SnapshotError> {
    let end = pos
        .checked_add(n)
        .filter(|&e| e <= b.len())
        .ok_or_else(|| SnapshotError::Archive(format!("cut short in {what} at byte {pos}")))?;
    let s = &b[*pos..end];
    *pos = end;
    Ok(s)
}

/// A relative path from an archive, refused if it could leave the directory.
fn safe_path(rel: &str) -> Result<PathBuf, SnapshotError> {
    let bad = rel.is_empty()
        || rel.starts_with('/')
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\\'));
    if bad {
        return Err(SnapshotError::Archive(format!("unsafe path {rel:?}")));
    }
    Ok(rel.split('/').collect())
}

/// Checks an archive's CRCs and unpacks it into `dst` (created). Nothing is
/// written unless the whole archive's CRC matches.
pub(super) fn unpack(archive: &[u8], dst: &Path) -> Result<(), SnapshotError> {
    if archive.len() < MAGIC.len() + 5 || &archive[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError::Archive(
            "not a WAL group snapshot archive (bad magic)".to_string(),
        ));
    }
    let (body, crc) = archive.split_at(archive.len() - 4);
    let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let got = crc32c::crc32c(body);
    if want != got {
        return Err(SnapshotError::Archive(format!(
            "CRC32C mismatch: archive says {want:08x}, content is {got:08x}"
        )));
    }
    std::fs::create_dir_all(dst).map_err(io("create directory", dst))?;
    let mut pos = MAGIC.len();
    loop {
        let tag = take(body, &mut pos, 1, "tag")?[0];
        match tag {
            TAG_END => break,
            TAG_FILE => {}
            t => {
                return Err(SnapshotError::Archive(format!(
                    "unknown tag {t} at byte {}",
                    pos - 1
                )))
            }
        }
        let l = take(body, &mut pos, 2, "path length")?;
        let plen = u16::from_le_bytes([l[0], l[1]]) as usize;
        if plen > PATH_BYTES_MAX {
            return Err(SnapshotError::Archive(format!("path of {plen} bytes")));
        }
        let rel = std::str::from_utf8(take(body, &mut pos, plen, "path")?)
            .map_err(|_| SnapshotError::Archive(format!("path at byte {pos} is not UTF-8")))?
            .to_string();
        let mut n = [0u8; 8];
        n.copy_from_slice(take(body, &mut pos, 8, "file length")?);
        let len = usize::try_from(u64::from_le_bytes(n))
            .map_err(|_| SnapshotError::Archive(format!("{rel}: length does not fit")))?;
        let bytes = take(body, &mut pos, len, &rel)?;
        let c = take(body, &mut pos, 4, "file CRC")?;
        let want = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        if crc32c::crc32c(bytes) != want {
            return Err(SnapshotError::Archive(format!("{rel}: CRC32C mismatch")));
        }
        let path = dst.join(safe_path(&rel)?);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("create directory", parent))?;
        }
        let mut f = std::fs::File::create(&path).map_err(io("create", &path))?;
        f.write_all(bytes).map_err(io("write", &path))?;
        f.sync_all().map_err(io("sync", &path))?;
    }
    if pos != body.len() {
        return Err(SnapshotError::Archive(format!(
            "{} bytes after the end tag",
            body.len() - pos
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_round_trips_and_any_flipped_byte_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("01ARZ3NDEKTSV4RRFFQ69G5FAV/chunks")).unwrap();
        std::fs::write(src.join("meta.json"), b"{}").unwrap();
        std::fs::write(
            src.join("01ARZ3NDEKTSV4RRFFQ69G5FAV/chunks/000001"),
            vec![7u8; 1000],
        )
        .unwrap();
        let a = pack(&src).unwrap();
        let dst = tmp.path().join("dst");
        unpack(&a, &dst).unwrap();
        assert_eq!(std::fs::read(dst.join("meta.json")).unwrap(), b"{}");
        assert_eq!(
            std::fs::read(dst.join("01ARZ3NDEKTSV4RRFFQ69G5FAV/chunks/000001")).unwrap(),
            vec![7u8; 1000]
        );
        for i in [0, 9, 20, a.len() / 2, a.len() - 1] {
            let mut bad = a.clone();
            bad[i] ^= 0x40;
            let d = tmp.path().join(format!("bad{i}"));
            assert!(unpack(&bad, &d).is_err(), "flipped byte {i} accepted");
            assert!(!d.exists(), "nothing written for a bad archive");
        }
        assert!(unpack(&a[..a.len() - 3], &tmp.path().join("short")).is_err());
    }

    #[test]
    fn names_carry_the_index_and_unsafe_paths_are_refused() {
        let n = dir_name(42);
        assert_eq!(parse_index(&n), Some(42));
        assert_eq!(parse_index(&format!("{n}.tmp")), None);
        assert_eq!(parse_index("raft"), None);
        assert!(safe_path("../x").is_err());
        assert!(safe_path("/etc/x").is_err());
        assert!(safe_path("a//b").is_err());
        assert!(safe_path("a/b").is_ok());
    }
}
