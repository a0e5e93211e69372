//! Checkpoints: a set of records written atomically into `checkpoint.NNNNNNNN`
//! (NNNNNNNN = the last WAL segment the checkpoint covers), in the `Log` format so the
//! same reader replays it. The TSDB writes one when it truncates the head, then drops
//! the segments it covers, as Prometheus does.

use std::fs;
use std::path::{Path, PathBuf};

use super::{io_err, open_read_only, sync_dir, FsyncPolicy, Log, LogOptions, LogReader, WalError};

/// Directory name prefix of a checkpoint.
pub const CHECKPOINT_PREFIX: &str = "checkpoint.";
/// Suffix of a checkpoint still being written. Such directories are never read and
/// are removed by the next checkpoint or `delete_before`.
const TMP_SUFFIX: &str = ".tmp";

/// A finished checkpoint on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last WAL segment whose records the checkpoint covers.
    pub last_segment: u64,
    pub path: PathBuf,
}

impl Checkpoint {
    /// A reader over the checkpoint's records, from the first. Any damage is an error:
    /// checkpoints are renamed into place only once complete, so they are never torn.
    pub fn reader(&self) -> Result<LogReader, WalError> {
        open_read_only(&self.path)
    }
}

/// `dir/checkpoint.NNNNNNNN`.
pub fn checkpoint_path(dir: &Path, last_segment: u64) -> PathBuf {
    dir.join(format!("{CHECKPOINT_PREFIX}{last_segment:08}"))
}

/// Writes a checkpoint in a temporary directory and renames it into place.
#[derive(Debug)]
pub struct CheckpointWriter {
    log: Log,
    tmp: PathBuf,
    dir: PathBuf,
    last_segment: u64,
}

impl CheckpointWriter {
    /// Starts `checkpoint.NNNNNNNN` in `dir`, removing a leftover `.tmp` of the same
    /// name from an earlier crash.
    pub fn create(dir: &Path, last_segment: u64) -> Result<CheckpointWriter, WalError> {
        let mut tmp = checkpoint_path(dir, last_segment).into_os_string();
        tmp.push(TMP_SUFFIX);
        let tmp = PathBuf::from(tmp);
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err("remove stale checkpoint", &tmp))?;
        }
        let log = Log::open(
            &tmp,
            LogOptions {
                fsync: FsyncPolicy::Always,
                ..LogOptions::default()
            },
        )?;
        Ok(CheckpointWriter {
            log,
            tmp,
            dir: dir.to_path_buf(),
            last_segment,
        })
    }

    /// Adds one record to the checkpoint.
    pub fn append(&mut self, record: &[u8]) -> Result<(), WalError> {
        self.log.append(record).map(|_| ())
    }

    /// Makes the checkpoint durable and visible: fsync, rename into place, fsync the
    /// parent directory. An existing checkpoint of the same number is replaced.
    pub fn finish(self) -> Result<Checkpoint, WalError> {
        self.log.close()?;
        sync_dir(&self.tmp)?;
        let path = checkpoint_path(&self.dir, self.last_segment);
        if path.exists() {
            fs::remove_dir_all(&path).map_err(io_err("remove old checkpoint", &path))?;
        }
        fs::rename(&self.tmp, &path).map_err(io_err("rename checkpoint", &self.tmp))?;
        sync_dir(&self.dir)?;
        Ok(Checkpoint {
            last_segment: self.last_segment,
            path,
        })
    }
}

/// Writes `records` as checkpoint `last_segment` in `dir`.
pub fn write<'a, I>(dir: &Path, last_segment: u64, records: I) -> Result<Checkpoint, WalError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut w = CheckpointWriter::create(dir, last_segment)?;
    for r in records {
        w.append(r)?;
    }
    w.finish()
}

/// Parses `checkpoint.NNNNNNNN` (not `.tmp`).
fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(CHECKPOINT_PREFIX)?;
    if digits.len() < 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Finished checkpoints in `dir`, oldest first.
pub fn list(dir: &Path) -> Result<Vec<Checkpoint>, WalError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("read directory", dir))? {
        let entry = entry.map_err(io_err("read directory", dir))?;
        if let Some(n) = entry.file_name().to_str().and_then(parse_name) {
            out.push(Checkpoint {
                last_segment: n,
                path: entry.path(),
            });
        }
    }
    out.sort_by_key(|c| c.last_segment);
    Ok(out)
}

/// The newest finished checkpoint in `dir`, if any.
pub fn latest(dir: &Path) -> Result<Option<Checkpoint>, WalError> {
    Ok(list(dir)?.pop())
}

/// Deletes checkpoints older than `last_segment`, and every unfinished `.tmp`
/// checkpoint older than it. Returns how many finished checkpoints were deleted.
pub fn delete_before(dir: &Path, last_segment: u64) -> Result<usize, WalError> {
    let mut deleted = 0;
    for entry in fs::read_dir(dir).map_err(io_err("read directory", dir))? {
        let entry = entry.map_err(io_err("read directory", dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let (base, tmp) = match name.strip_suffix(TMP_SUFFIX) {
            Some(b) => (b, true),
            None => (name.as_str(), false),
        };
        let Some(n) = parse_name(base) else { continue };
        if n < last_segment {
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(io_err("remove checkpoint", &path))?;
            if !tmp {
                deleted += 1;
            }
        }
    }
    sync_dir(dir)?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_latest_delete() {
        let dir = tempfile::tempdir().unwrap();
        let recs: Vec<Vec<u8>> = (0..50u32)
            .map(|i| i.to_be_bytes().repeat(i as usize))
            .collect();
        for n in [3u64, 7, 12] {
            write(dir.path(), n, recs.iter().map(|r| r.as_slice())).unwrap();
        }
        // A leftover unfinished checkpoint is never "latest".
        fs::create_dir(dir.path().join("checkpoint.00000099.tmp")).unwrap();
        let cp = latest(dir.path()).unwrap().unwrap();
        assert_eq!(cp.last_segment, 12);
        assert_eq!(cp.path, checkpoint_path(dir.path(), 12));
        let got: Vec<Vec<u8>> = cp.reader().unwrap().map(|r| r.unwrap().1).collect();
        assert_eq!(got, recs);

        assert_eq!(delete_before(dir.path(), 12).unwrap(), 2);
        let left: Vec<u64> = list(dir.path())
            .unwrap()
            .iter()
            .map(|c| c.last_segment)
            .collect();
        assert_eq!(left, vec![12]);
        assert!(dir.path().join("checkpoint.00000099.tmp").exists());
    }

    #[test]
    fn damaged_checkpoint_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let cp = write(dir.path(), 1, [&b"hello"[..], b"world"]).unwrap();
        let seg = cp.path.join("00000000");
        let mut data = fs::read(&seg).unwrap();
        let n = data.len();
        data.truncate(n - 2); // torn: fine for a live log, not for a checkpoint
        fs::write(&seg, data).unwrap();
        assert!(matches!(cp.reader(), Err(WalError::Corruption { .. })));
    }
}
