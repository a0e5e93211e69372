//! The Raft transport's server side: the `Raft` gRPC service hands each RPC to the
//! local meta group; the `handle_*` functions do the work for any group, so the
//! `WalGroups` service (`group.rs`) shares them.

use super::convert;
use super::{HearthConfig, Nid, Raft};
use crate::cluster::pb;
use openraft::error::{InstallSnapshotError, RaftError};
use tonic::{Request, Response, Status};

/// Serves the meta group's Raft RPCs.
pub struct RaftService {
    raft: Raft,
}

impl RaftService {
    pub(super) fn new(raft: Raft) -> RaftService {
        RaftService { raft }
    }
}

/// A local Raft error as a gRPC status: the node is shutting down or broken, so the
/// caller should treat it as unreachable.
fn fatal<E: std::error::Error>(e: RaftError<Nid, E>) -> Status {
    Status::unavailable(format!("raft: {e}"))
}

pub(super) async fn handle_append<C: HearthConfig>(
    raft: &openraft::Raft<C>,
    req: pb::AppendEntriesRequest,
) -> Result<Response<pb::AppendEntriesResponse>, Status> {
    let rpc = convert::append_request_from_pb::<C>(req)?;
    let resp = raft.append_entries(rpc).await.map_err(fatal)?;
    Ok(Response::new(convert::append_response_to_pb(&resp)))
}

pub(super) async fn handle_vote<C: HearthConfig>(
    raft: &openraft::Raft<C>,
    req: pb::VoteRequest,
) -> Result<Response<pb::VoteResponse>, Status> {
    let rpc = convert::vote_request_from_pb(req)?;
    let resp = raft.vote(rpc).await.map_err(fatal)?;
    Ok(Response::new(convert::vote_response_to_pb(&resp)))
}

pub(super) async fn handle_install_snapshot<C: HearthConfig>(
    raft: &openraft::Raft<C>,
    req: pb::InstallSnapshotRequest,
) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
    let rpc = convert::snapshot_request_from_pb::<C>(req)?;
    let vote = rpc.vote;
    match raft.install_snapshot(rpc).await {
        Ok(resp) => Ok(Response::new(convert::snapshot_response_to_pb(&resp))),
        Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m))) => {
            Ok(Response::new(pb::InstallSnapshotResponse {
                vote: Some(convert::vote_to_pb(&vote)),
                mismatch: Some(pb::SnapshotMismatch {
                    expect_id: m.expect.id,
                    expect_offset: m.expect.offset,
                    got_id: m.got.id,
                    got_offset: m.got.offset,
                }),
            }))
        }
        Err(e) => Err(fatal(e)),
    }
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        req: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        handle_append(&self.raft, req.into_inner()).await
    }

    async fn vote(
        &self,
        req: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        handle_vote(&self.raft, req.into_inner()).await
    }

    async fn install_snapshot(
        &self,
        req: Request<pb::InstallSnapshotRequest>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        handle_install_snapshot(&self.raft, req.into_inner()).await
    }
}
