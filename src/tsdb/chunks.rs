//! Block chunk segment files (`chunks/000001…`) in Prometheus's format, read through memmap2.
