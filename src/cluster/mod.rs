//! The cluster: the meta Raft group (members, cluster id, ring epoch), the gRPC
//! services between nodes, the consistent-hash ring, and the runtime that forms or
//! joins a cluster when the server starts. A single node without cluster flags is a
//! one-member cluster on the same path.
//!
//! Layout: `state` (the replicated data, pure), `ring` (placement), `raft` (the only
//! module naming openraft types), `pb` (generated protobuf code), `service` (the
//! `Cluster` gRPC service: join, status), `runtime` (startup, bootstrap, status),
//! `failure` (the leader's failure detector and ring scheduling), `assign` (who owns
//! which target or rule group when), `query_service` (the `Query` gRPC service over a
//! node's local storage), `fanout` (the `Queryable` that reads every member and
//! merges), `grpc_client` and `grpc_server` (the HTTP/2 gRPC client and server
//! every call between members goes through; `quiet` and `coalesce` keep a server
//! connection's wake-ups and writes to one per turn), `wal_batch` (the sample batch a WAL
//! group entry carries),
//! `replication` (WAL groups' voters, the replicated appender, the local read side)
//! and `repair` (the reconciler that repairs WAL groups' replica sets, and the plan
//! that reads each group from one replica).

pub mod assign;
pub mod coalesce;
pub mod failure;
pub mod fanout;
pub mod grpc_client;
pub mod grpc_server;
pub mod pb;
pub mod query_service;
pub mod quiet;
pub mod raft;
pub mod repair;
pub mod replication;
pub mod ring;
pub mod runtime;
pub mod series_ids;
pub mod service;
pub mod state;
pub mod wal_batch;

pub use assign::{Assignment, AssignmentHandle, OwnAll, Ownership};
pub use fanout::{FanoutOptions, FanoutQueryable, Peer, PeersFn};
pub use raft::{RaftOptions, RaftRole};
pub use ring::{Ring, RingError};
pub use runtime::{
    Cluster, ClusterConfig, ClusterError, ClusterStatus, MemberStatus, FAILURE_TIMEOUT_DEFAULT,
};
pub use state::{ClusterState, Command, Member, MemberState, NodeAddr, NodeId, Role};

use std::io::Write as _;
use std::path::Path;

/// Replaces `path` with `bytes` so a crash leaves the old or the new content, never
/// a mix: write a temporary file, fsync it, rename it over `path`, fsync the
/// directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().ok_or_else(|| {
        std::io::Error::other(format!("{} has no parent directory", path.display()))
    })?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
