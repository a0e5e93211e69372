//! The block index (format version 2): symbols, series, postings and the postings offset table.
//!
//! The layout is Prometheus's `tsdb/docs/format/index.md`, written the way the Go
//! writer in `tsdb/index/index.go` writes it, so that `promtool` reads our blocks and
//! we read Prometheus's. All fixed-width integers are big-endian; every checksum is a
//! big-endian CRC-32C.
//!
//! ```text
//! magic 0xBAAAD700 <4b> | version 2 <1b>
//! symbol table     len <4b> | count <4b> | count × (uvarint len, bytes) | crc <4b>
//!                  (the crc covers count and strings; len counts the same bytes)
//! series           per series, 16-byte aligned (ID = offset / 16):
//!                  uvarint len | labels and chunk metas (len bytes) | crc <4b>
//! label indices    empty: the TOC entry points at the end of the series
//! postings         per (name, value), 4-byte aligned, ("", "") = all series first:
//!                  len <4b> | count <4b> | count × series ID <4b> | crc <4b>
//! label offsets    empty: the TOC entry equals the postings offset table's
//! postings offsets len <4b> | count <4b> | count × (uvarint 2, name, value, uvarint
//!                  postings offset), sorted by (name, value) | crc <4b>
//! TOC              six offsets <8b each> | crc <4b>
//! ```
//!
//! The TOC's postings entry points at the end of the series, before the padding
//! that aligns the first postings list, exactly as the Go writer leaves it.

mod reader;
mod writer;

#[cfg(test)]
mod tests;

pub use reader::IndexReader;
pub use writer::IndexWriter;

use std::path::PathBuf;

/// The four bytes every index file starts with.
pub const MAGIC_INDEX: u32 = 0xBAAA_D700;
/// The format version we write.
pub const FORMAT_V2: u8 = 2;
/// Version 3 has the same layout as version 2 (Prometheus bumped it only to mark
/// that the legacy label index sections may be absent), so we read it too.
pub const FORMAT_V3: u8 = 3;
/// Magic plus version byte.
const HEADER_LEN_BYTES: usize = 5;
/// Six 8-byte section offsets and a CRC.
const TOC_LEN_BYTES: usize = 6 * 8 + 4;
/// Series entries start on multiples of this, so a 4-byte series ID addresses 64 GiB.
const SERIES_ALIGN_BYTES: u64 = 16;
/// Postings lists start on multiples of this, as in the Go writer.
const POSTINGS_ALIGN_BYTES: u64 = 4;
/// Series IDs are 4 bytes in postings lists and count 16-byte units, so an index
/// file can address at most this many bytes.
pub const INDEX_SIZE_MAX_BYTES: u64 = SERIES_ALIGN_BYTES * u32::MAX as u64;

/// Where a chunk of a series lives and which time range it covers (both ends inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    pub mint: i64,
    pub maxt: i64,
    /// Segment file index in the upper 32 bits, byte offset in the lower 32.
    pub chunk_ref: u64,
}

/// The table of contents at the end of an index file: where each section starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Toc {
    pub symbols: u64,
    pub series: u64,
    pub label_indices: u64,
    pub label_indices_table: u64,
    pub postings: u64,
    pub postings_table: u64,
}

impl Toc {
    fn to_array(self) -> [u64; 6] {
        [
            self.symbols,
            self.series,
            self.label_indices,
            self.label_indices_table,
            self.postings,
            self.postings_table,
        ]
    }
}

/// An index could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index {}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("index {}: corrupt at byte {offset}: {what}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("index {}: unsupported format version {version} (versions 2 and 3 can be read)", path.display())]
    UnsupportedVersion { path: PathBuf, version: u8 },
    /// The writer was called with data that breaks the format's rules (out of
    /// order, unknown symbol, overlapping chunks); a bug in the caller.
    #[error("index {}: {what}", path.display())]
    InvalidInput { path: PathBuf, what: String },
    #[error("index {}: no series with ID {id}", path.display())]
    SeriesNotFound { path: PathBuf, id: u64 },
    #[error("index {}: would exceed {limit_bytes} bytes ({what})", path.display())]
    TooLarge {
        path: PathBuf,
        what: &'static str,
        limit_bytes: u64,
    },
}
