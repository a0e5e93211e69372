//! Code generated from `proto/cluster.proto` by `build.rs` (prost messages, tonic
//! clients and servers). Only the `cluster` modules use it.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("hearth.cluster.v1");
