//! A reusable segmented write-ahead log (`wal::Log`): CRC-framed records in
//! numbered segment files, with torn-tail repair on recovery.
