//! Memory-mapped head chunk files (`chunks_head/`): full head chunks written to disk and read back through memmap2.
