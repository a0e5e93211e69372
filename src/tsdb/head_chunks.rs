//! Memory-mapped head chunk files (`chunks_head/`): full head chunks written to disk and read back through memmap2.
//!
//! Layout (Prometheus's `tsdb/docs/format/head_chunks.md`):
//!
//! ```text
//! file:  magic 0x0130BC91 (BE u32) │ version 1 │ 3 zero bytes │ entry …
//! entry: series ref (BE u64) │ mint (BE i64) │ maxt (BE i64) │ encoding (1 byte)
//!        │ data length (uvarint) │ data │ CRC-32C of everything before it in the entry
//! ```
//!
//! A chunk reference is `file number << 32 | byte offset of the entry`, where the
//! file number is the one in the file's name (`000003` → 3), as Prometheus's
//! `ChunkDiskMapper` does.
//!
//! Each new file is preallocated (sparsely) to the maximum size and mapped
//! whole, read-only. Entries are written with positioned writes through the
//! file; the shared page cache makes them visible through the mapping at once,
//! so readers never wait for writers beyond a short lock to look up the file.
//! Files from an earlier run are never appended to: the first write after
//! `open` starts a new file, as Prometheus does.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use parking_lot::Mutex;

use crate::encoding::put_uvarint;
use crate::tsdb::chunks::ChunkRef;

/// Magic number at the start of every head chunk file.
pub const MAGIC_HEAD_CHUNKS: u32 = 0x0130_BC91;
/// The only head chunk file format version.
pub const HEAD_CHUNKS_FORMAT_V1: u8 = 1;
/// Bytes of the file header: magic, version, 3 bytes of padding.
pub const HEADER_SIZE_BYTES: usize = 8;
/// Prometheus's maximum head chunk file size.
pub const DEFAULT_FILE_SIZE_BYTES: u64 = 128 * 1024 * 1024;

/// Series ref, mint and maxt.
const ENTRY_PREFIX_SIZE_BYTES: usize = 8 + 8 + 8;
const MAX_LENGTH_FIELD_SIZE_BYTES: usize = 5;
const CRC_SIZE_BYTES: usize = 4;
/// Largest entry overhead besides the data.
const MAX_ENTRY_META_SIZE_BYTES: usize =
    ENTRY_PREFIX_SIZE_BYTES + 1 + MAX_LENGTH_FIELD_SIZE_BYTES + CRC_SIZE_BYTES;

/// Errors of the head chunk files.
#[derive(Debug, thiserror::Error)]
pub enum HeadChunkError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt head chunk file {} at offset {offset}: {what}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("head chunk ref {chunk_ref:#x} names file {file_seq}, which is not open")]
    NoSuchFile { chunk_ref: ChunkRef, file_seq: u32 },
    #[error("head chunk files in {} are not numbered consecutively: {found:?}", dir.display())]
    Unsequential { dir: PathBuf, found: Vec<u32> },
    #[error("head chunk of {len_bytes} bytes does not fit in a {file_size_bytes}-byte file")]
    ChunkTooLarge {
        len_bytes: usize,
        file_size_bytes: u64,
    },
    #[error(
        "head chunk with series ref 0, mint 0 and maxt 0 cannot be written: \
         it reads back as the end of the file"
    )]
    ZeroEntry,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> HeadChunkError {
    let path = path.to_path_buf();
    move |source| HeadChunkError::Io { op, path, source }
}

/// A chunk found on disk, as reported by `HeadChunkFiles::iterate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadChunkMeta {
    pub series_ref: u64,
    pub chunk_ref: ChunkRef,
    pub mint_ms: i64,
    pub maxt_ms: i64,
    pub encoding: u8,
    /// The chunk's 2-byte big-endian sample count header (0 if shorter).
    pub num_samples: u16,
}

/// A chunk's data read from a head chunk file: a cheap handle that keeps the
/// file's mapping alive (even after the file is deleted) and derefs to the bytes.
#[derive(Clone)]
pub struct ChunkBytes {
    map: Arc<Mmap>,
    start: usize,
    end: usize,
    encoding: u8,
}

impl ChunkBytes {
    /// The chunk's encoding byte as stored (`chunkenc::ENCODING_XOR` for floats).
    pub fn encoding(&self) -> u8 {
        self.encoding
    }
}

impl Deref for ChunkBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[self.start..self.end]
    }
}

impl std::fmt::Debug for ChunkBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkBytes")
            .field("encoding", &self.encoding)
            .field("len", &(self.end - self.start))
            .finish()
    }
}

/// One head chunk file, mapped.
struct MappedFile {
    path: PathBuf,
    map: Arc<Mmap>,
    /// Bytes of valid entries (header included); nothing past this is read.
    len_bytes: u64,
    /// Largest maxt of its chunks; `i64::MIN` while it has none.
    maxt_ms: i64,
}

/// The file being appended to.
struct WriteFile {
    seq: u32,
    file: File,
}

struct Inner {
    files: BTreeMap<u32, MappedFile>,
    /// Always the last entry of `files` when set.
    write: Option<WriteFile>,
    /// Number for the next file; never reused while open so refs stay unique.
    next_seq: u32,
}

/// The `chunks_head/` directory: writes full head chunks, reads them back
/// through memory maps, and lists them at startup. Safe to share between
/// threads.
pub struct HeadChunkFiles {
    dir: PathBuf,
    /// Maximum bytes per file; a new file is started when an entry would not fit.
    file_size_bytes: u64,
    inner: Mutex<Inner>,
}

/// Where a file's valid entries end, and why if not at a clean end.
struct ScanEnd {
    len_bytes: u64,
    maxt_ms: i64,
    /// Set when the scan stopped at a damaged entry.
    damage: Option<String>,
}

/// A parsed, checksum-verified entry.
struct Entry {
    series_ref: u64,
    mint_ms: i64,
    maxt_ms: i64,
    encoding: u8,
    data_start: usize,
    data_end: usize,
    /// Offset just past the CRC.
    end: usize,
}

/// Reads the entry at `off` of `b` (a file's valid bytes, or the whole mapping
/// when scanning). `Ok(None)` is the end of the entries: the end of `b` or an
/// all-zero entry prefix (preallocated space).
fn parse_entry(b: &[u8], off: usize) -> Result<Option<Entry>, String> {
    let rest = b.get(off..).unwrap_or(&[]);
    if rest.is_empty() {
        return Ok(None);
    }
    let zero_prefix = rest.iter().take(ENTRY_PREFIX_SIZE_BYTES).all(|&x| x == 0);
    if zero_prefix {
        return Ok(None);
    }
    if rest.len() < ENTRY_PREFIX_SIZE_BYTES + 2 {
        return Err(format!("entry header cut short: {} bytes left", rest.len()));
    }
    let be = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&rest[i..i + 8]);
        u64::from_be_bytes(a)
    };
    let series_ref = be(0);
    let mint_ms = be(8) as i64;
    let maxt_ms = be(16) as i64;
    let encoding = rest[24];
    let mut d = crate::encoding::Decoder::new(&rest[25..]);
    let len = d.uvarint().map_err(|e| format!("chunk length: {e}"))?;
    if d.position() > MAX_LENGTH_FIELD_SIZE_BYTES || len > u32::MAX as u64 {
        return Err(format!("chunk length {len} is too large"));
    }
    let data_start = 25 + d.position();
    let data_end = data_start + len as usize;
    let Some(crc_bytes) = rest.get(data_end..data_end + CRC_SIZE_BYTES) else {
        return Err(format!(
            "chunk of {len} bytes runs past the end of the data ({} bytes left)",
            rest.len()
        ));
    };
    let want = u32::from_be_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
    let got = crc32c::crc32c(&rest[..data_end]);
    if want != got {
        return Err(format!(
            "checksum mismatch: stored {want:#010x}, computed {got:#010x}"
        ));
    }
    Ok(Some(Entry {
        series_ref,
        mint_ms,
        maxt_ms,
        encoding,
        data_start: off + data_start,
        data_end: off + data_end,
        end: off + data_end + CRC_SIZE_BYTES,
    }))
}

/// Scans a file's entries from the header on.
fn scan(b: &[u8]) -> ScanEnd {
    let mut off = HEADER_SIZE_BYTES;
    let mut maxt_ms = i64::MIN;
    loop {
        match parse_entry(b, off) {
            Ok(Some(e)) => {
                maxt_ms = maxt_ms.max(e.maxt_ms);
                off = e.end;
            }
            Ok(None) => {
                return ScanEnd {
                    len_bytes: off as u64,
                    maxt_ms,
                    damage: None,
                }
            }
            Err(what) => {
                return ScanEnd {
                    len_bytes: off as u64,
                    maxt_ms,
                    damage: Some(what),
                }
            }
        }
    }
}

fn file_path(dir: &Path, seq: u32) -> PathBuf {
    dir.join(format!("{seq:06}"))
}

fn sync_dir(dir: &Path) -> Result<(), HeadChunkError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

fn map_file(file: &File, path: &Path) -> Result<Arc<Mmap>, HeadChunkError> {
    // SAFETY: the mapping is read-only. This process only writes to the file
    // past the valid length readers are allowed to see, and only shrinks it
    // below ranges nobody reads; other processes must not touch `chunks_head/`.
    let map = unsafe { Mmap::map(file) }.map_err(io_err("mmap head chunk file", path))?;
    Ok(Arc::new(map))
}

impl HeadChunkFiles {
    /// Opens `dir` (created if missing) with Prometheus's 128 MiB files.
    pub fn open(dir: &Path) -> Result<HeadChunkFiles, HeadChunkError> {
        Self::with_file_size(dir, DEFAULT_FILE_SIZE_BYTES)
    }

    /// Opens `dir` with another maximum file size (small ones are for tests).
    ///
    /// Existing files are checked and repaired: a file's entries end at the
    /// first all-zero entry, and a damaged entry (a torn write, a bad checksum)
    /// cuts its file there and deletes every later file, with a warning. The
    /// head rebuilds anything lost from the WAL, which covers every sample in
    /// the head.
    pub fn with_file_size(
        dir: &Path,
        file_size_bytes: u64,
    ) -> Result<HeadChunkFiles, HeadChunkError> {
        assert!(
            file_size_bytes >= (HEADER_SIZE_BYTES + MAX_ENTRY_META_SIZE_BYTES) as u64
                && file_size_bytes <= u32::MAX as u64,
            "head chunk file size {file_size_bytes} must fit an entry and stay below 4 GiB"
        );
        fs::create_dir_all(dir).map_err(io_err("create head chunk directory", dir))?;
        let mut seqs = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err("list head chunk directory", dir))? {
            let entry = entry.map_err(io_err("list head chunk directory", dir))?;
            let name = entry.file_name();
            if let Some(seq) = name.to_str().and_then(|s| s.parse::<u32>().ok()) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        if seqs.windows(2).any(|w| w[1] != w[0] + 1) {
            return Err(HeadChunkError::Unsequential {
                dir: dir.to_path_buf(),
                found: seqs,
            });
        }
        let next_seq = seqs.last().map_or(1, |&s| s + 1);

        let mut files = BTreeMap::new();
        let mut dropped_from: Option<u32> = None;
        for (i, &seq) in seqs.iter().enumerate() {
            let path = file_path(dir, seq);
            if dropped_from.is_some() {
                fs::remove_file(&path).map_err(io_err("delete head chunk file", &path))?;
                continue;
            }
            let is_last = i + 1 == seqs.len();
            let file = File::options()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err("open head chunk file", &path))?;
            let size_bytes = file
                .metadata()
                .map_err(io_err("stat head chunk file", &path))?
                .len();
            let header_zero_or_short = {
                let mut h = [0u8; HEADER_SIZE_BYTES];
                size_bytes < HEADER_SIZE_BYTES as u64
                    || (file.read_exact_at(&mut h, 0).is_ok() && h.iter().all(|&b| b == 0))
            };
            if is_last && header_zero_or_short {
                // A file cut just before a crash, before its header reached disk.
                tracing::warn!(path = %path.display(), "deleting head chunk file without a header");
                fs::remove_file(&path).map_err(io_err("delete head chunk file", &path))?;
                continue;
            }
            let map = map_file(&file, &path)?;
            let corrupt = |offset: u64, what: String| HeadChunkError::Corrupt {
                path: path.clone(),
                offset,
                what,
            };
            if map.len() < HEADER_SIZE_BYTES {
                return Err(corrupt(0, "file shorter than its header".into()));
            }
            let magic = u32::from_be_bytes([map[0], map[1], map[2], map[3]]);
            if magic != MAGIC_HEAD_CHUNKS {
                return Err(corrupt(0, format!("invalid magic number {magic:#010x}")));
            }
            if map[4] != HEAD_CHUNKS_FORMAT_V1 {
                return Err(corrupt(0, format!("unsupported format version {}", map[4])));
            }
            let end = scan(&map);
            if let Some(what) = &end.damage {
                tracing::warn!(
                    path = %path.display(),
                    offset = end.len_bytes,
                    reason = %what,
                    "cutting damaged head chunk file and deleting the files after it"
                );
                dropped_from = Some(seq);
            }
            let map = if end.len_bytes < size_bytes {
                // Drop the damaged or preallocated tail, so the file holds exactly its
                // entries, and map it again at that size.
                drop(map);
                file.set_len(end.len_bytes)
                    .map_err(io_err("truncate head chunk file", &path))?;
                file.sync_all()
                    .map_err(io_err("fsync head chunk file", &path))?;
                map_file(&file, &path)?
            } else {
                map
            };
            files.insert(
                seq,
                MappedFile {
                    path,
                    map,
                    len_bytes: end.len_bytes,
                    maxt_ms: end.maxt_ms,
                },
            );
        }
        if dropped_from.is_some() || seqs.len() != files.len() {
            sync_dir(dir)?;
        }
        Ok(HeadChunkFiles {
            dir: dir.to_path_buf(),
            file_size_bytes,
            inner: Mutex::new(Inner {
                files,
                write: None,
                next_seq,
            }),
        })
    }

    /// Writes one chunk and returns its reference. The chunk can be read back
    /// at once; it is durable after `sync` (or once its file is full).
    pub fn write_chunk(
        &self,
        series_ref: u64,
        mint_ms: i64,
        maxt_ms: i64,
        encoding: u8,
        data: &[u8],
    ) -> Result<ChunkRef, HeadChunkError> {
        if series_ref == 0 && mint_ms == 0 && maxt_ms == 0 {
            return Err(HeadChunkError::ZeroEntry);
        }
        let max_data_bytes =
            self.file_size_bytes as usize - HEADER_SIZE_BYTES - MAX_ENTRY_META_SIZE_BYTES;
        if data.len() > max_data_bytes {
            return Err(HeadChunkError::ChunkTooLarge {
                len_bytes: data.len(),
                file_size_bytes: self.file_size_bytes,
            });
        }
        let mut entry = Vec::with_capacity(MAX_ENTRY_META_SIZE_BYTES + data.len());
        entry.extend_from_slice(&series_ref.to_be_bytes());
        entry.extend_from_slice(&mint_ms.to_be_bytes());
        entry.extend_from_slice(&maxt_ms.to_be_bytes());
        entry.push(encoding);
        put_uvarint(&mut entry, data.len() as u64);
        entry.extend_from_slice(data);
        let crc = crc32c::crc32c(&entry);
        entry.extend_from_slice(&crc.to_be_bytes());

        let mut inner = self.inner.lock();
        let fits = match &inner.write {
            Some(w) => inner.files[&w.seq].len_bytes + entry.len() as u64 <= self.file_size_bytes,
            None => false,
        };
        if !fits {
            self.cut(&mut inner)?;
        }
        let Some(w) = inner.write.as_ref() else {
            unreachable!("cut always opens a file to write");
        };
        let seq = w.seq;
        let mf = inner
            .files
            .get(&seq)
            .unwrap_or_else(|| unreachable!("the file being written is always mapped"));
        let offset = mf.len_bytes;
        w.file
            .write_all_at(&entry, offset)
            .map_err(io_err("write head chunk file", &mf.path))?;
        let Some(mf) = inner.files.get_mut(&seq) else {
            unreachable!("the file being written is always mapped");
        };
        mf.len_bytes += entry.len() as u64;
        mf.maxt_ms = mf.maxt_ms.max(maxt_ms);
        assert!(mf.len_bytes <= self.file_size_bytes);
        Ok(((seq as u64) << 32) | offset)
    }

    /// Finishes the file being written (if any) and starts a new one.
    fn cut(&self, inner: &mut Inner) -> Result<(), HeadChunkError> {
        self.finish_write_file(inner)?;
        let seq = inner.next_seq;
        let path = file_path(&self.dir, seq);
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create head chunk file", &path))?;
        let mut header = [0u8; HEADER_SIZE_BYTES];
        header[..4].copy_from_slice(&MAGIC_HEAD_CHUNKS.to_be_bytes());
        header[4] = HEAD_CHUNKS_FORMAT_V1;
        file.write_all_at(&header, 0)
            .map_err(io_err("write head chunk file header", &path))?;
        // Sparse preallocation: the whole file can be mapped now, and later
        // writes become visible through the mapping without remapping.
        file.set_len(self.file_size_bytes)
            .map_err(io_err("preallocate head chunk file", &path))?;
        let map = map_file(&file, &path)?;
        sync_dir(&self.dir)?;
        inner.files.insert(
            seq,
            MappedFile {
                path,
                map,
                len_bytes: HEADER_SIZE_BYTES as u64,
                maxt_ms: i64::MIN,
            },
        );
        inner.write = Some(WriteFile { seq, file });
        inner.next_seq += 1;
        Ok(())
    }

    /// Trims the file being written to its entries and fsyncs it; it then
    /// takes no more writes. Readers keep their mapping: they only read
    /// below the trimmed length.
    fn finish_write_file(&self, inner: &mut Inner) -> Result<(), HeadChunkError> {
        if let Some(w) = inner.write.take() {
            if let Some(mf) = inner.files.get(&w.seq) {
                w.file
                    .set_len(mf.len_bytes)
                    .map_err(io_err("truncate head chunk file", &mf.path))?;
                w.file
                    .sync_all()
                    .map_err(io_err("fsync head chunk file", &mf.path))?;
            }
        }
        Ok(())
    }

    /// The data of the chunk at `r`, after checking bounds and checksum.
    pub fn chunk(&self, r: ChunkRef) -> Result<ChunkBytes, HeadChunkError> {
        let seq = (r >> 32) as u32;
        let offset = r as u32 as usize;
        let (map, len_bytes, path) = {
            let inner = self.inner.lock();
            let Some(mf) = inner.files.get(&seq) else {
                return Err(HeadChunkError::NoSuchFile {
                    chunk_ref: r,
                    file_seq: seq,
                });
            };
            (Arc::clone(&mf.map), mf.len_bytes as usize, mf.path.clone())
        };
        let corrupt = |what: String| HeadChunkError::Corrupt {
            path: path.clone(),
            offset: offset as u64,
            what,
        };
        if offset < HEADER_SIZE_BYTES || offset >= len_bytes {
            return Err(corrupt(format!(
                "chunk offset outside the file's {len_bytes} bytes of chunks"
            )));
        }
        let valid = map.get(..len_bytes).unwrap_or(&[]);
        match parse_entry(valid, offset) {
            Ok(Some(e)) => Ok(ChunkBytes {
                start: e.data_start,
                end: e.data_end,
                encoding: e.encoding,
                map,
            }),
            Ok(None) => Err(corrupt("no chunk at this offset".into())),
            Err(what) => Err(corrupt(what)),
        }
    }

    /// Fsyncs the file being written, making every chunk written so far durable.
    pub fn sync(&self) -> Result<(), HeadChunkError> {
        // Fsync a duplicate handle outside the lock, so readers and writers are
        // not held up for the length of a disk flush.
        let target = {
            let inner = self.inner.lock();
            match &inner.write {
                Some(w) => {
                    let path = inner.files[&w.seq].path.clone();
                    let file = w
                        .file
                        .try_clone()
                        .map_err(io_err("duplicate head chunk file handle", &path))?;
                    Some((file, path))
                }
                None => None,
            }
        };
        if let Some((file, path)) = target {
            file.sync_data()
                .map_err(io_err("fsync head chunk file", &path))?;
        }
        Ok(())
    }

    /// Every chunk on disk in file order, for rebuilding the head at startup.
    /// The callback may read chunks; writes made meanwhile may or may not be seen.
    pub fn iterate(
        &self,
        f: &mut dyn FnMut(HeadChunkMeta) -> Result<(), HeadChunkError>,
    ) -> Result<(), HeadChunkError> {
        let snapshot: Vec<(u32, Arc<Mmap>, usize, PathBuf)> = {
            let inner = self.inner.lock();
            inner
                .files
                .iter()
                .map(|(&seq, mf)| {
                    (
                        seq,
                        Arc::clone(&mf.map),
                        mf.len_bytes as usize,
                        mf.path.clone(),
                    )
                })
                .collect()
        };
        for (seq, map, len_bytes, path) in snapshot {
            let valid = map.get(..len_bytes).unwrap_or(&[]);
            let mut off = HEADER_SIZE_BYTES;
            loop {
                let e = match parse_entry(valid, off) {
                    Ok(Some(e)) => e,
                    Ok(None) => break,
                    Err(what) => {
                        return Err(HeadChunkError::Corrupt {
                            path,
                            offset: off as u64,
                            what,
                        })
                    }
                };
                let data = &valid[e.data_start..e.data_end];
                let num_samples = match data {
                    [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
                    _ => 0,
                };
                f(HeadChunkMeta {
                    series_ref: e.series_ref,
                    chunk_ref: ((seq as u64) << 32) | off as u64,
                    mint_ms: e.mint_ms,
                    maxt_ms: e.maxt_ms,
                    encoding: e.encoding,
                    num_samples,
                })?;
                off = e.end;
            }
        }
        Ok(())
    }

    /// Deletes whole files whose chunks all end before `mint_ms` (after the
    /// head is truncated). It stops at the first file that must stay, so the
    /// remaining files stay consecutively numbered. Chunks already handed out
    /// as `ChunkBytes` stay readable.
    pub fn truncate_before(&self, mint_ms: i64) -> Result<(), HeadChunkError> {
        let mut inner = self.inner.lock();
        let doomed: Vec<u32> = inner
            .files
            .iter()
            .take_while(|(_, mf)| mf.maxt_ms < mint_ms)
            .map(|(&seq, _)| seq)
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        let writing_doomed = inner
            .write
            .as_ref()
            .is_some_and(|w| doomed.contains(&w.seq));
        if writing_doomed {
            self.finish_write_file(&mut inner)?;
        }
        for seq in doomed {
            if let Some(mf) = inner.files.remove(&seq) {
                fs::remove_file(&mf.path).map_err(io_err("delete head chunk file", &mf.path))?;
            }
        }
        sync_dir(&self.dir)
    }

    /// Total bytes of chunk data in the files (headers and entries).
    pub fn size_bytes(&self) -> u64 {
        self.inner
            .lock()
            .files
            .values()
            .map(|mf| mf.len_bytes)
            .sum()
    }
}

impl Drop for HeadChunkFiles {
    /// Trims and fsyncs the file being written, so a clean shutdown leaves
    /// every chunk durable. Errors can only be logged here; `open` repairs
    /// whatever a failed shutdown leaves behind.
    fn drop(&mut self) {
        let mut inner = self.inner.lock();
        if let Err(e) = self.finish_write_file(&mut inner) {
            tracing::warn!(error = %e, "finishing head chunk file on close");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::chunkenc::{XorChunk, ENCODING_XOR};

    fn chunk_for(i: u64) -> Vec<u8> {
        let mut c = XorChunk::new();
        for j in 0..(i % 120 + 1) as i64 {
            c.append(i as i64 * 10_000 + j * 15, (i + j as u64) as f64);
        }
        c.bytes().to_vec()
    }

    fn list(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn entry_layout_matches_the_format() {
        let tmp = tempfile::tempdir().unwrap();
        let hc = HeadChunkFiles::open(tmp.path()).unwrap();
        let r = hc.write_chunk(7, -1, 2, 1, &[0xab, 0xcd]).unwrap();
        assert_eq!(r, (1 << 32) | 8);
        hc.sync().unwrap();
        let bytes = fs::read(tmp.path().join("000001")).unwrap();
        let mut entry = vec![0, 0, 0, 0, 0, 0, 0, 7];
        entry.extend_from_slice(&[0xff; 8]);
        entry.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]);
        entry.extend_from_slice(&[1, 2, 0xab, 0xcd]);
        let crc = crc32c::crc32c(&entry).to_be_bytes();
        entry.extend_from_slice(&crc);
        assert_eq!(&bytes[..8], &[0x01, 0x30, 0xbc, 0x91, 1, 0, 0, 0]);
        assert_eq!(&bytes[8..8 + entry.len()], &entry[..]);
        assert!(bytes[8 + entry.len()..].iter().all(|&b| b == 0));
        assert_eq!(&*hc.chunk(r).unwrap(), &[0xab, 0xcd]);
    }

    #[test]
    fn many_chunks_across_files_survive_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let mut written = Vec::new();
        {
            let hc = HeadChunkFiles::with_file_size(tmp.path(), 4096).unwrap();
            for i in 1..=300u64 {
                let data = chunk_for(i);
                let r = hc
                    .write_chunk(
                        i % 17 + 1,
                        i as i64 * 100,
                        i as i64 * 100 + 99,
                        ENCODING_XOR,
                        &data,
                    )
                    .unwrap();
                // Readable at once, while writes continue.
                assert_eq!(&*hc.chunk(r).unwrap(), &data[..]);
                written.push((r, i, data));
            }
            hc.sync().unwrap();
            for (r, _, data) in &written {
                assert_eq!(&*hc.chunk(*r).unwrap(), &data[..]);
            }
        }
        let files = list(tmp.path());
        assert!(files.len() > 3, "{files:?}");

        let hc = HeadChunkFiles::with_file_size(tmp.path(), 4096).unwrap();
        let mut seen = Vec::new();
        hc.iterate(&mut |m| {
            seen.push(m);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), written.len());
        for (m, (r, i, data)) in seen.iter().zip(&written) {
            assert_eq!(m.chunk_ref, *r);
            assert_eq!(m.series_ref, i % 17 + 1);
            assert_eq!(m.mint_ms, *i as i64 * 100);
            assert_eq!(m.maxt_ms, *i as i64 * 100 + 99);
            assert_eq!(m.encoding, ENCODING_XOR);
            assert_eq!(m.num_samples as u64, i % 120 + 1);
            let got = hc.chunk(*r).unwrap();
            assert_eq!(&*got, &data[..]);
            assert_eq!(got.encoding(), ENCODING_XOR);
        }
        // New writes go to a new file after the old ones.
        let r = hc
            .write_chunk(1, 1, 2, ENCODING_XOR, &chunk_for(1))
            .unwrap();
        assert_eq!(r >> 32, files.len() as u64 + 1);
    }

    #[test]
    fn damaged_last_entry_is_cut() {
        let tmp = tempfile::tempdir().unwrap();
        let refs: Vec<ChunkRef> = {
            let hc = HeadChunkFiles::with_file_size(tmp.path(), 1 << 20).unwrap();
            (1..=10u64)
                .map(|i| hc.write_chunk(i, 0, 10, 1, &chunk_for(i)).unwrap())
                .collect()
        };
        // Flip a byte in the last entry's data, as a torn write would leave it.
        let path = tmp.path().join("000001");
        let mut bytes = fs::read(&path).unwrap();
        let last_off = (refs[9] & 0xffff_ffff) as usize;
        bytes[last_off + 30] ^= 0x55;
        fs::write(&path, &bytes).unwrap();

        let hc = HeadChunkFiles::with_file_size(tmp.path(), 1 << 20).unwrap();
        let mut n = 0;
        hc.iterate(&mut |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 9);
        assert_eq!(fs::metadata(&path).unwrap().len(), last_off as u64);
        assert!(hc.chunk(refs[8]).is_ok());
        let err = hc.chunk(refs[9]).unwrap_err().to_string();
        assert!(
            err.contains("000001") && err.contains(&last_off.to_string()),
            "{err}"
        );
    }

    #[test]
    fn damage_in_an_earlier_file_drops_the_files_after_it() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let hc = HeadChunkFiles::with_file_size(tmp.path(), 1024).unwrap();
            for i in 1..=60u64 {
                hc.write_chunk(i, 0, 10, 1, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
                    .unwrap();
            }
        }
        assert!(list(tmp.path()).len() >= 3);
        let path = tmp.path().join("000002");
        let mut bytes = fs::read(&path).unwrap();
        bytes[8 + 3] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let _hc = HeadChunkFiles::with_file_size(tmp.path(), 1024).unwrap();
        assert_eq!(list(tmp.path()), vec!["000001", "000002"]);
        assert_eq!(fs::metadata(&path).unwrap().len(), 8);
    }

    #[test]
    fn empty_last_file_is_removed_and_gaps_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let hc = HeadChunkFiles::open(tmp.path()).unwrap();
            hc.write_chunk(1, 0, 10, 1, &[0, 0]).unwrap();
        }
        fs::write(tmp.path().join("000002"), b"").unwrap();
        let hc = HeadChunkFiles::open(tmp.path()).unwrap();
        assert_eq!(list(tmp.path()), vec!["000001"]);
        drop(hc);
        fs::write(tmp.path().join("000005"), b"").unwrap();
        assert!(matches!(
            HeadChunkFiles::open(tmp.path()),
            Err(HeadChunkError::Unsequential { .. })
        ));
    }

    #[test]
    fn truncate_before_deletes_old_files() {
        let tmp = tempfile::tempdir().unwrap();
        let hc = HeadChunkFiles::with_file_size(tmp.path(), 1024).unwrap();
        let mut refs = Vec::new();
        for i in 1..=100i64 {
            refs.push(
                hc.write_chunk(i as u64, i * 10, i * 10 + 9, 1, &[0; 20])
                    .unwrap(),
            );
        }
        let before = list(tmp.path());
        let held = hc.chunk(refs[0]).unwrap();
        hc.truncate_before(500).unwrap();
        let after = list(tmp.path());
        assert!(after.len() < before.len());
        // Every chunk ending at or after 500 is still there, and every chunk
        // gone ended before it.
        for (i, r) in refs.iter().enumerate() {
            let maxt = (i as i64 + 1) * 10 + 9;
            let present = hc.chunk(*r).is_ok();
            assert!(present || maxt < 500, "chunk {i}");
            if maxt >= 500 {
                assert!(present, "chunk {i}");
            }
        }
        assert!(hc.chunk(refs[0]).is_err());
        // A handle taken before deletion stays readable.
        assert_eq!(&*held, &[0; 20]);

        // Truncating past everything removes the file being written too, and
        // writing goes on in a new file.
        hc.truncate_before(i64::MAX).unwrap();
        assert!(list(tmp.path()).is_empty());
        let r = hc.write_chunk(1, 0, 1, 1, &[1, 2]).unwrap();
        assert_eq!(&*hc.chunk(r).unwrap(), &[1, 2]);
        let mut n = 0;
        hc.iterate(&mut |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn concurrent_reads_while_writing() {
        let tmp = tempfile::tempdir().unwrap();
        let hc = Arc::new(HeadChunkFiles::with_file_size(tmp.path(), 8192).unwrap());
        let (tx, rx) = std::sync::mpsc::channel::<(ChunkRef, Vec<u8>)>();
        let reader = {
            let hc = Arc::clone(&hc);
            std::thread::spawn(move || {
                let mut n = 0;
                for (r, data) in rx {
                    assert_eq!(&*hc.chunk(r).unwrap(), &data[..]);
                    n += 1;
                }
                n
            })
        };
        for i in 1..=500u64 {
            let data = chunk_for(i);
            let r = hc.write_chunk(i, 0, i as i64, 1, &data).unwrap();
            tx.send((r, data)).unwrap();
        }
        drop(tx);
        assert_eq!(reader.join().unwrap(), 500);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        #[test]
        fn round_trips_through_reopen(
            chunks in proptest::collection::vec(
                (1u64.., proptest::prelude::any::<i64>(), proptest::prelude::any::<u8>(),
                 proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)),
                0..80,
            ),
            file_size in 300u64..3000,
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let mut refs = Vec::new();
            {
                let hc = HeadChunkFiles::with_file_size(tmp.path(), file_size).unwrap();
                for (sref, t, enc, data) in &chunks {
                    refs.push(hc.write_chunk(*sref, *t, t.saturating_add(1), *enc, data).unwrap());
                }
            }
            let hc = HeadChunkFiles::with_file_size(tmp.path(), file_size).unwrap();
            let mut seen = Vec::new();
            hc.iterate(&mut |m| { seen.push(m); Ok(()) }).unwrap();
            proptest::prop_assert_eq!(seen.len(), chunks.len());
            for ((m, r), (sref, t, enc, data)) in seen.iter().zip(&refs).zip(&chunks) {
                proptest::prop_assert_eq!(m.chunk_ref, *r);
                proptest::prop_assert_eq!((m.series_ref, m.mint_ms, m.encoding), (*sref, *t, *enc));
                let got = hc.chunk(*r).unwrap();
                proptest::prop_assert_eq!(&*got, &data[..]);
            }
        }
    }

    #[test]
    fn refuses_unrepresentable_chunks() {
        let tmp = tempfile::tempdir().unwrap();
        let hc = HeadChunkFiles::with_file_size(tmp.path(), 100).unwrap();
        assert!(matches!(
            hc.write_chunk(0, 0, 0, 1, &[0, 0]),
            Err(HeadChunkError::ZeroEntry)
        ));
        assert!(matches!(
            hc.write_chunk(1, 0, 0, 1, &[0; 100]),
            Err(HeadChunkError::ChunkTooLarge { .. })
        ));
        assert!(hc.write_chunk(1, 0, 0, 1, &[0; 58]).is_ok());
    }
}
