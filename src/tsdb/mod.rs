//! The local time-series database: an in-memory head backed by a write-ahead log,
//! and immutable two-hour blocks in Prometheus's on-disk format.

pub mod chunkenc;
pub mod chunks;
pub mod head_chunks;
pub mod index;
pub mod meta;
pub mod postings;
pub mod record;
pub mod tombstones;
