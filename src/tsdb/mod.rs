//! The local time-series database: an in-memory head backed by a write-ahead log,
//! and immutable two-hour blocks in Prometheus's on-disk format.

pub mod block;
pub mod chunkenc;
pub mod chunks;
pub mod db;
pub mod head;
pub mod head_chunks;
pub mod index;
pub mod lock;
pub mod meta;
pub mod postings;
pub mod record;
pub mod tombstones;

/// Any failure of the TSDB, with the module error that caused it.
#[derive(Debug, thiserror::Error)]
pub enum TsdbError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("WAL: {0}")]
    Wal(#[from] crate::wal::WalError),
    #[error("WAL record: {0}")]
    Record(#[from] record::RecordError),
    #[error("head chunks: {0}")]
    HeadChunks(#[from] head_chunks::HeadChunkError),
    #[error("chunks: {0}")]
    Chunks(#[from] chunks::ChunkFileError),
    #[error("index: {0}")]
    Index(#[from] index::IndexError),
    #[error("tombstones: {0}")]
    Tombstones(#[from] tombstones::TombstoneError),
    #[error("meta.json: {0}")]
    Meta(#[from] meta::MetaError),
    #[error("{0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("snapshot: {action} {path}: {source}")]
    Snapshot {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
}
