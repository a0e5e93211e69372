//! Code generated from `proto/cluster.proto` by `build.rs` (prost messages, tonic
//! clients and servers). Only `cluster::raft`, `cluster::service`,
//! `cluster::query_service` and `cluster::fanout` use it.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("hearth.cluster.v1");
