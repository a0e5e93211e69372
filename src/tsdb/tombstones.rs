//! Tombstones: deleted time ranges per series, and the block `tombstones` file.
