//! Gorilla XOR chunk encoding of float samples (Prometheus's chunk encoding 1).
