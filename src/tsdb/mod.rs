//! The local time-series database: an in-memory head backed by a write-ahead log,
//! and immutable two-hour blocks in Prometheus's on-disk format.
