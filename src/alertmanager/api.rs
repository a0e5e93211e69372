//! API v2 (placeholder)
