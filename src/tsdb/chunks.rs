//! Block chunk segment files (`chunks/000001…`) in Prometheus's format, read through memmap2.
//!
//! Layout (Prometheus's `tsdb/docs/format/chunks.md`):
//!
//! ```text
//! file:  magic 0x85BD40DD (BE u32) │ version 1 │ 3 zero bytes │ entry …
//! entry: data length (uvarint) │ encoding (1 byte) │ data │ CRC-32C of encoding + data (BE u32)
//! ```
//!
//! A chunk reference is `segment index << 32 | byte offset`, where the segment
//! index is the file's 0-based position in name order (file `000001` is index 0).
//! A chunk never spans two files.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::encoding::{put_uvarint, Decoder};

/// A chunk's location: segment index in the upper 32 bits, byte offset in the lower.
pub type ChunkRef = u64;

/// Magic number at the start of every block chunk segment file.
pub const MAGIC_CHUNKS: u32 = 0x85BD_40DD;
/// The only segment format version.
pub const CHUNKS_FORMAT_V1: u8 = 1;
/// Bytes of the segment header: magic, version, 3 bytes of padding.
pub const SEGMENT_HEADER_SIZE_BYTES: usize = 8;
/// Prometheus's default segment size; a chunk never spans segments.
pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 512 * 1024 * 1024;
/// The data-length field is a uvarint of at most this many bytes (a u32).
const MAX_LENGTH_FIELD_SIZE_BYTES: usize = 5;
const CRC_SIZE_BYTES: usize = 4;

/// Makes a chunk reference from a segment index and a byte offset in it.
pub fn chunk_ref(segment_index: u32, offset: u32) -> ChunkRef {
    ((segment_index as u64) << 32) | offset as u64
}

/// Splits a chunk reference into segment index and byte offset.
pub fn unpack_chunk_ref(r: ChunkRef) -> (u32, u32) {
    ((r >> 32) as u32, r as u32)
}

/// The path of segment `index` (0-based) in `dir`: `000001` for index 0.
fn segment_path(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("{:06}", index as u64 + 1))
}

/// Errors reading or writing block chunk files.
#[derive(Debug, thiserror::Error)]
pub enum ChunkFileError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt chunk file {} at offset {offset}: {what}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error(
        "chunk ref {chunk_ref:#x} names segment {segment_index}, but there are {num_segments}"
    )]
    NoSuchSegment {
        chunk_ref: ChunkRef,
        segment_index: u32,
        num_segments: usize,
    },
    #[error("chunk directory {} already holds chunk segment files", path.display())]
    NotEmpty { path: PathBuf },
    #[error("chunk of {len_bytes} bytes is larger than the format allows (4 GiB)")]
    ChunkTooLarge { len_bytes: usize },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ChunkFileError {
    let path = path.to_path_buf();
    move |source| ChunkFileError::Io { op, path, source }
}

/// The segment file being written.
struct OpenSegment {
    index: u32,
    path: PathBuf,
    out: BufWriter<File>,
    len_bytes: u64,
}

/// Writes chunks into numbered segment files of a block's `chunks/` directory.
pub struct ChunkWriter {
    /// The `chunks/` directory itself.
    dir: PathBuf,
    /// A new segment is started when an entry would take the current one past this.
    segment_size_bytes: u64,
    current: Option<OpenSegment>,
    /// Index the next segment gets.
    next_index: u32,
}

impl ChunkWriter {
    /// A writer into `dir` (the block's `chunks/` directory, created if missing)
    /// with Prometheus's default 512 MiB segments.
    pub fn create(dir: &Path) -> Result<Self, ChunkFileError> {
        Self::with_segment_size(dir, DEFAULT_SEGMENT_SIZE_BYTES)
    }

    /// Like `create` with another segment size (small ones are for tests).
    /// Offsets are 32 bits, so the size must be below 4 GiB.
    pub fn with_segment_size(dir: &Path, segment_size_bytes: u64) -> Result<Self, ChunkFileError> {
        assert!(
            segment_size_bytes > SEGMENT_HEADER_SIZE_BYTES as u64
                && segment_size_bytes <= u32::MAX as u64,
            "chunk segment size {segment_size_bytes} must be above the header size and below 4 GiB"
        );
        fs::create_dir_all(dir).map_err(io_err("create chunk directory", dir))?;
        // Refs are positions in the directory listing, so writing next to
        // existing segments would make them point at the wrong files.
        if !list_segments(dir)?.is_empty() {
            return Err(ChunkFileError::NotEmpty {
                path: dir.to_path_buf(),
            });
        }
        Ok(ChunkWriter {
            dir: dir.to_path_buf(),
            segment_size_bytes,
            current: None,
            next_index: 0,
        })
    }

    /// Appends one chunk and returns its reference.
    pub fn write_chunk(&mut self, encoding: u8, data: &[u8]) -> Result<ChunkRef, ChunkFileError> {
        if data.len() > u32::MAX as usize {
            return Err(ChunkFileError::ChunkTooLarge {
                len_bytes: data.len(),
            });
        }
        let mut head = Vec::with_capacity(MAX_LENGTH_FIELD_SIZE_BYTES + 1);
        put_uvarint(&mut head, data.len() as u64);
        head.push(encoding);
        let entry_len = (head.len() + data.len() + CRC_SIZE_BYTES) as u64;

        let needs_cut = match &self.current {
            None => true,
            // A chunk bigger than a whole segment still gets written, alone.
            Some(s) => {
                s.len_bytes > SEGMENT_HEADER_SIZE_BYTES as u64
                    && s.len_bytes + entry_len > self.segment_size_bytes
            }
        };
        if needs_cut {
            self.cut()?;
        }
        let Some(seg) = self.current.as_mut() else {
            unreachable!("cut always opens a segment");
        };
        assert!(
            seg.len_bytes <= u32::MAX as u64,
            "segment offset exceeds 32 bits"
        );
        let r = chunk_ref(seg.index, seg.len_bytes as u32);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&head[head.len() - 1..]), data);
        let write = |out: &mut BufWriter<File>| -> std::io::Result<()> {
            out.write_all(&head)?;
            out.write_all(data)?;
            out.write_all(&crc.to_be_bytes())
        };
        write(&mut seg.out).map_err(io_err("write chunk segment", &seg.path))?;
        seg.len_bytes += entry_len;
        Ok(r)
    }

    /// Finishes the current segment and starts the next one.
    fn cut(&mut self) -> Result<(), ChunkFileError> {
        self.finish_segment()?;
        let index = self.next_index;
        let path = segment_path(&self.dir, index);
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create chunk segment", &path))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut header = [0u8; SEGMENT_HEADER_SIZE_BYTES];
        header[..4].copy_from_slice(&MAGIC_CHUNKS.to_be_bytes());
        header[4] = CHUNKS_FORMAT_V1;
        out.write_all(&header)
            .map_err(io_err("write chunk segment header", &path))?;
        self.current = Some(OpenSegment {
            index,
            path,
            out,
            len_bytes: SEGMENT_HEADER_SIZE_BYTES as u64,
        });
        self.next_index += 1;
        Ok(())
    }

    /// Flushes and fsyncs the current segment, if any.
    fn finish_segment(&mut self) -> Result<(), ChunkFileError> {
        if let Some(seg) = self.current.take() {
            let file = seg
                .out
                .into_inner()
                .map_err(|e| io_err("flush chunk segment", &seg.path)(e.into_error()))?;
            file.sync_all()
                .map_err(io_err("fsync chunk segment", &seg.path))?;
        }
        Ok(())
    }

    /// Flushes and fsyncs the last segment and the directory.
    pub fn finish(mut self) -> Result<(), ChunkFileError> {
        self.finish_segment()?;
        sync_dir(&self.dir)
    }
}

/// Fsyncs a directory so the files created in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), ChunkFileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// The segment files in `dir` (names that are decimal numbers), in number order.
fn list_segments(dir: &Path) -> Result<Vec<PathBuf>, ChunkFileError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list chunk directory", dir))? {
        let entry = entry.map_err(io_err("list chunk directory", dir))?;
        let name = entry.file_name();
        let Some(n) = name.to_str().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        found.push((n, entry.path()));
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// One mapped segment file.
struct Segment {
    path: PathBuf,
    map: Mmap,
}

/// Reads chunks of a block from its memory-mapped segment files.
pub struct ChunkReader {
    segments: Vec<Segment>,
    size_bytes: u64,
}

impl ChunkReader {
    /// Maps every segment file in `dir` (the block's `chunks/` directory) and
    /// checks its header.
    pub fn open(dir: &Path) -> Result<Self, ChunkFileError> {
        let mut segments = Vec::new();
        let mut size_bytes = 0;
        for path in list_segments(dir)? {
            let file = File::open(&path).map_err(io_err("open chunk segment", &path))?;
            // SAFETY: block files are immutable once written; the mapping is
            // read-only and nothing in this process writes to them.
            let map = unsafe { Mmap::map(&file) }.map_err(io_err("mmap chunk segment", &path))?;
            let corrupt = |what: String| ChunkFileError::Corrupt {
                path: path.clone(),
                offset: 0,
                what,
            };
            if map.len() < SEGMENT_HEADER_SIZE_BYTES {
                return Err(corrupt(format!(
                    "file of {} bytes is shorter than the segment header",
                    map.len()
                )));
            }
            let magic = u32::from_be_bytes([map[0], map[1], map[2], map[3]]);
            if magic != MAGIC_CHUNKS {
                return Err(corrupt(format!("invalid magic number {magic:#010x}")));
            }
            if map[4] != CHUNKS_FORMAT_V1 {
                return Err(corrupt(format!("unsupported format version {}", map[4])));
            }
            size_bytes += map.len() as u64;
            segments.push(Segment { path, map });
        }
        Ok(ChunkReader {
            segments,
            size_bytes,
        })
    }

    /// The chunk at `r` as (encoding, data), after checking bounds and CRC.
    pub fn chunk(&self, r: ChunkRef) -> Result<(u8, &[u8]), ChunkFileError> {
        let (index, offset) = unpack_chunk_ref(r);
        let Some(seg) = self.segments.get(index as usize) else {
            return Err(ChunkFileError::NoSuchSegment {
                chunk_ref: r,
                segment_index: index,
                num_segments: self.segments.len(),
            });
        };
        let corrupt = |what: String| ChunkFileError::Corrupt {
            path: seg.path.clone(),
            offset: offset as u64,
            what,
        };
        let start = offset as usize;
        if start < SEGMENT_HEADER_SIZE_BYTES || start >= seg.map.len() {
            return Err(corrupt(format!(
                "chunk offset outside the file's {} bytes of chunks",
                seg.map.len()
            )));
        }
        let mut d = Decoder::new(&seg.map[start..]);
        let len = d
            .uvarint()
            .map_err(|e| corrupt(format!("chunk length: {e}")))?;
        if d.position() > MAX_LENGTH_FIELD_SIZE_BYTES || len > u32::MAX as u64 {
            return Err(corrupt(format!("chunk length {len} is too large")));
        }
        let enc_start = start + d.position();
        let data_end = enc_start + 1 + len as usize;
        let Some(crc_bytes) = seg.map.get(data_end..data_end + CRC_SIZE_BYTES) else {
            return Err(corrupt(format!(
                "chunk of {len} bytes runs past the end of the file ({} bytes)",
                seg.map.len()
            )));
        };
        let want = u32::from_be_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
        let got = crc32c::crc32c(&seg.map[enc_start..data_end]);
        if got != want {
            return Err(corrupt(format!(
                "checksum mismatch: stored {want:#010x}, computed {got:#010x}"
            )));
        }
        Ok((seg.map[enc_start], &seg.map[enc_start + 1..data_end]))
    }

    /// Total bytes of the segment files.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Number of segment files.
    pub fn num_segments(&self) -> usize {
        self.segments.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn write_all(dir: &Path, seg_size: u64, chunks: &[(u8, Vec<u8>)]) -> Vec<ChunkRef> {
        let mut w = ChunkWriter::with_segment_size(dir, seg_size).unwrap();
        let refs = chunks
            .iter()
            .map(|(e, d)| w.write_chunk(*e, d).unwrap())
            .collect();
        w.finish().unwrap();
        refs
    }

    #[test]
    fn layout_matches_the_format() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("chunks");
        let refs = write_all(&dir, DEFAULT_SEGMENT_SIZE_BYTES, &[(1, vec![0, 1, 0xaa])]);
        assert_eq!(refs, vec![8]);
        let bytes = fs::read(dir.join("000001")).unwrap();
        let crc = crc32c::crc32c(&[1, 0, 1, 0xaa]).to_be_bytes();
        let mut want = vec![0x85, 0xbd, 0x40, 0xdd, 1, 0, 0, 0, 3, 1, 0, 1, 0xaa];
        want.extend_from_slice(&crc);
        assert_eq!(bytes, want);
    }

    /// The whole segment file promtool 2.42 wrote for the chunk in
    /// `chunkenc::tests::PROMETHEUS_CHUNK`; writing that chunk must reproduce it.
    #[test]
    fn matches_a_segment_written_by_prometheus() {
        use crate::tsdb::chunkenc::tests::PROMETHEUS_CHUNK;
        let tmp = tempfile::tempdir().unwrap();
        let refs = write_all(
            tmp.path(),
            DEFAULT_SEGMENT_SIZE_BYTES,
            &[(1, PROMETHEUS_CHUNK.to_vec())],
        );
        let mut want = vec![0x85, 0xbd, 0x40, 0xdd, 0x01, 0x00, 0x00, 0x00, 0x61, 0x01];
        want.extend_from_slice(&PROMETHEUS_CHUNK);
        want.extend_from_slice(&[0x48, 0x3d, 0x21, 0x43]);
        assert_eq!(fs::read(tmp.path().join("000001")).unwrap(), want);
        let r = ChunkReader::open(tmp.path()).unwrap();
        assert_eq!(r.chunk(refs[0]).unwrap(), (1, &PROMETHEUS_CHUNK[..]));
    }

    #[test]
    fn segments_are_cut_and_refs_name_them() {
        let tmp = tempfile::tempdir().unwrap();
        let chunks: Vec<(u8, Vec<u8>)> = (0..50u8).map(|i| (1, vec![i; 30])).collect();
        // Each entry is 1 + 1 + 30 + 4 = 36 bytes; 100-byte segments hold two.
        let refs = write_all(tmp.path(), 100, &chunks);
        assert_eq!(refs[0], chunk_ref(0, 8));
        assert_eq!(refs[1], chunk_ref(0, 44));
        assert_eq!(refs[2], chunk_ref(1, 8));
        assert!(tmp.path().join("000025").exists());
        assert!(!tmp.path().join("000026").exists());
        let r = ChunkReader::open(tmp.path()).unwrap();
        assert_eq!(r.num_segments(), 25);
        assert_eq!(r.size_bytes(), 25 * (8 + 72));
        for (cr, (e, d)) in refs.iter().zip(&chunks) {
            assert_eq!(r.chunk(*cr).unwrap(), (*e, &d[..]));
        }
        // A chunk larger than a segment still gets written, alone.
        let tmp2 = tempfile::tempdir().unwrap();
        let refs = write_all(tmp2.path(), 20, &[(1, vec![7; 50]), (1, vec![8; 50])]);
        assert_eq!(refs, vec![chunk_ref(0, 8), chunk_ref(1, 8)]);
    }

    #[test]
    fn corruption_names_file_and_offset() {
        let tmp = tempfile::tempdir().unwrap();
        let refs = write_all(tmp.path(), 1 << 20, &[(1, vec![1; 10]), (1, vec![2; 10])]);
        let path = tmp.path().join("000001");
        let mut bytes = fs::read(&path).unwrap();
        let (_, off) = unpack_chunk_ref(refs[1]);
        bytes[off as usize + 5] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let r = ChunkReader::open(tmp.path()).unwrap();
        assert!(r.chunk(refs[0]).is_ok());
        let msg = r.chunk(refs[1]).unwrap_err().to_string();
        assert!(msg.contains("000001"), "{msg}");
        assert!(msg.contains(&format!("offset {off}")), "{msg}");
        assert!(msg.contains("checksum mismatch"), "{msg}");

        // Truncation and bad refs are errors too.
        fs::write(&path, &bytes[..off as usize + 3]).unwrap();
        let r = ChunkReader::open(tmp.path()).unwrap();
        assert!(r.chunk(refs[1]).is_err());
        assert!(r.chunk(chunk_ref(0, 2)).is_err());
        assert!(r.chunk(chunk_ref(0, 1 << 30)).is_err());
        assert!(matches!(
            r.chunk(chunk_ref(7, 8)),
            Err(ChunkFileError::NoSuchSegment { .. })
        ));

        // A bad header is refused on open.
        fs::write(&path, [0x85, 0xbd, 0x40, 0xde, 1, 0, 0, 0]).unwrap();
        let err = ChunkReader::open(tmp.path()).err().unwrap().to_string();
        assert!(err.contains("magic"), "{err}");
    }

    #[test]
    fn refuses_to_write_into_a_directory_with_segments() {
        let tmp = tempfile::tempdir().unwrap();
        write_all(tmp.path(), 1 << 20, &[(1, vec![1; 10])]);
        assert!(matches!(
            ChunkWriter::create(tmp.path()),
            Err(ChunkFileError::NotEmpty { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn round_trips(
            chunks in proptest::collection::vec(
                (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300)),
                0..60,
            ),
            seg_size in 64u64..2000,
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let refs = write_all(tmp.path(), seg_size, &chunks);
            let r = ChunkReader::open(tmp.path()).unwrap();
            for (cr, (e, d)) in refs.iter().zip(&chunks) {
                let (ge, gd) = r.chunk(*cr).unwrap();
                prop_assert_eq!(ge, *e);
                prop_assert_eq!(gd, &d[..]);
            }
        }

        #[test]
        fn garbage_refs_never_panic(r in any::<u64>(), flip in any::<prop::sample::Index>()) {
            let tmp = tempfile::tempdir().unwrap();
            write_all(tmp.path(), 1 << 20, &[(1, vec![3; 40]), (1, vec![4; 40])]);
            let path = tmp.path().join("000001");
            let mut bytes = fs::read(&path).unwrap();
            let i = flip.index(bytes.len() - 8) + 8;
            bytes[i] ^= 0xff;
            fs::write(&path, &bytes).unwrap();
            let rd = ChunkReader::open(tmp.path()).unwrap();
            let _ = rd.chunk(r);
            let _ = rd.chunk(r & 0xffff);
        }
    }
}
