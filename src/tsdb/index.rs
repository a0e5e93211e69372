//! The block index (format version 2): symbols, series, postings and the postings offset table.
