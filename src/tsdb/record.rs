//! WAL record encoding: series, samples and tombstones (Prometheus's record format).
