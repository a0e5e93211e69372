//! A block's `meta.json`.
