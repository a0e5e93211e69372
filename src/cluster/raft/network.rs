//! The Raft transport's client side: sends openraft's RPCs to a peer's `Raft` gRPC
//! service (the meta group) or its `WalGroups` service (a WAL group, named in each
//! request by its group id), over the same lean HTTP/2 gRPC client as the fan-out
//! (`grpc_client`): each request leaves in one write, so the peer wakes once per
//! RPC. Heartbeats and log entries are most of a cluster's RPCs.

use super::convert::{self, ConvertError};
use super::{HearthConfig, Nid};
use crate::cluster::grpc_client::{Connections, CONTROL_ANSWER_BYTES_MAX};
use crate::cluster::state::NodeAddr;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, SnapshotMismatch,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::SnapshotSegmentId;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long connecting to a peer may take before the RPC counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Makes a client per peer. The clients of one peer share one connection
/// (`Connections`), made on the first RPC: openraft asks for a new client for
/// every heartbeat round it is told to send (the failure detector's leadership
/// check, a two-voter group's commit notice), and a connection each was most of
/// an idle cluster's TCP work.
#[derive(Clone, Default)]
pub struct Network {
    /// The WAL group whose RPCs this network carries; `None` for the meta group.
    group: Option<u64>,
    connections: Connections,
}

impl Network {
    /// The meta group's transport.
    pub fn meta() -> Network {
        Network::default()
    }

    /// The transport of WAL group `group_id`.
    pub fn group(group_id: u64) -> Network {
        Network {
            group: Some(group_id),
            connections: Connections::default(),
        }
    }
}

/// The client of one peer.
pub struct PeerClient {
    target: Nid,
    group: Option<u64>,
    /// The peer's connections, shared with the other clients of this network.
    connections: Connections,
    address: String,
}

/// Builds a lazily-connecting channel to `address` (host:port).
pub fn channel(address: &str) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{address}")).map_err(|e| e.to_string())?;
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect_lazy())
}

impl<C: HearthConfig> RaftNetworkFactory<C> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: Nid, node: &NodeAddr) -> PeerClient {
        PeerClient {
            target,
            group: self.group,
            connections: self.connections.clone(),
            address: node.grpc_address.clone(),
        }
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<Nid, NodeAddr, RaftError<Nid, E>>;

/// Maps a failed call to openraft's view: transport failures make the peer
/// unreachable (openraft backs off), anything else is a network error.
fn status_to_rpc<E: std::error::Error>(s: tonic::Status) -> RpcErr<E> {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(&s))
        }
        _ => RPCError::Network(NetworkError::new(&s)),
    }
}

fn convert_to_rpc<E: std::error::Error>(e: ConvertError) -> RpcErr<E> {
    RPCError::Network(NetworkError::new(&e))
}

impl PeerClient {
    /// Calls `method` of this network's service (`Raft` for the meta group,
    /// `WalGroups` for a WAL group) on the peer and returns its one answer, within
    /// `option`'s hard deadline. A failed call is openraft's view of it
    /// (`status_to_rpc`); an unreachable peer's connection is dropped, so that
    /// later calls connect afresh (it may have restarted, or the connection be
    /// stuck behind a healed partition).
    async fn call<Req, Resp, E>(
        &self,
        method: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
        E: std::error::Error,
    {
        let service = match self.group {
            None => "Raft",
            Some(_) => "WalGroups",
        };
        let path = format!("/hearth.cluster.v1.{service}/{method}");
        self.connections
            .unary(
                &self.address,
                &path,
                request,
                option.hard_ttl(),
                CONTROL_ANSWER_BYTES_MAX,
            )
            .await
            .map_err(|s| {
                let e = status_to_rpc(s);
                if matches!(e, RPCError::Unreachable(_)) {
                    self.connections.forget(&self.address);
                }
                e
            })
    }
}

impl<C: HearthConfig> RaftNetwork<C> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<Nid>, RpcErr> {
        let msg = convert::append_request_to_pb(&rpc, self.group.unwrap_or(0));
        let resp = self.call("AppendEntries", &msg, &option).await?;
        convert::append_response_from_pb(resp).map_err(convert_to_rpc)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<Nid>, RpcErr<InstallSnapshotError>> {
        let msg = convert::snapshot_request_to_pb(&rpc, self.group.unwrap_or(0));
        let resp: crate::cluster::pb::InstallSnapshotResponse =
            self.call("InstallSnapshot", &msg, &option).await?;
        if let Some(m) = &resp.mismatch {
            let e = SnapshotMismatch {
                expect: SnapshotSegmentId {
                    id: m.expect_id.clone(),
                    offset: m.expect_offset,
                },
                got: SnapshotSegmentId {
                    id: m.got_id.clone(),
                    offset: m.got_offset,
                },
            };
            return Err(RPCError::RemoteError(RemoteError::new(
                self.target,
                RaftError::APIError(InstallSnapshotError::SnapshotMismatch(e)),
            )));
        }
        convert::snapshot_response_from_pb(resp).map_err(convert_to_rpc)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Nid>,
        option: RPCOption,
    ) -> Result<VoteResponse<Nid>, RpcErr> {
        let msg = convert::vote_request_to_pb(&rpc, self.group.unwrap_or(0));
        let resp = self.call("Vote", &msg, &option).await?;
        convert::vote_response_from_pb(resp).map_err(convert_to_rpc)
    }
}
