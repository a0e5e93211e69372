//! The Raft transport's client side: sends openraft's RPCs to a peer's `Raft` gRPC
//! service (the meta group) or its `WalGroups` service (a WAL group, named in each
//! request by its group id).

use super::convert::{self, ConvertError};
use super::{HearthConfig, Nid};
use crate::cluster::pb::raft_client::RaftClient;
use crate::cluster::pb::wal_groups_client::WalGroupsClient;
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
/// (`PeerChannels`), made lazily on the first RPC: openraft asks for a new
/// client for every heartbeat round it is told to send (the failure detector's
/// leadership check, a two-voter group's commit notice), and a connection each
/// was most of an idle cluster's TCP work.
#[derive(Clone, Default)]
pub struct Network {
    /// The WAL group whose RPCs this network carries; `None` for the meta group.
    group: Option<u64>,
    channels: PeerChannels,
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
            channels: PeerChannels::default(),
        }
    }
}

/// A peer that cannot be addressed (its gRPC address does not parse).
#[derive(Debug, thiserror::Error)]
#[error("raft peer {target}: bad gRPC address {address:?}: {reason}")]
struct BadAddress {
    target: Nid,
    address: String,
    reason: String,
}

/// The client of one peer.
pub struct PeerClient {
    target: Nid,
    group: Option<u64>,
    channel: Result<Channel, BadAddress>,
    /// Where the channel came from, to drop it there when the peer is
    /// unreachable (the next client then connects afresh).
    channels: PeerChannels,
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

/// Channels to peers by gRPC address, for the calls other than Raft's own that
/// recur every second or more often (the failure detector's status probes, the
/// reconciler's `Held`, forwarded writes): one HTTP/2 connection per peer is kept
/// and reused instead of connecting and tearing down one per call. A call that
/// fails `forget`s its channel, so the next one connects afresh (the peer may have
/// restarted, or the old connection may be stuck behind a healed partition).
/// Cheap to clone; clones share the channels.
#[derive(Clone, Default)]
pub struct PeerChannels {
    channels: std::sync::Arc<parking_lot::Mutex<std::collections::HashMap<String, Channel>>>,
}

impl PeerChannels {
    /// The channel to `address`, made (connecting lazily) on first use.
    pub fn get(&self, address: &str) -> Result<Channel, String> {
        let mut map = self.channels.lock();
        if let Some(c) = map.get(address) {
            return Ok(c.clone());
        }
        let c = channel(address)?;
        map.insert(address.to_string(), c.clone());
        Ok(c)
    }

    /// Drops the channel to `address` after a call on it failed.
    pub fn forget(&self, address: &str) {
        self.channels.lock().remove(address);
    }
}

impl<C: HearthConfig> RaftNetworkFactory<C> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: Nid, node: &NodeAddr) -> PeerClient {
        let channel = self
            .channels
            .get(&node.grpc_address)
            .map_err(|reason| BadAddress {
                target,
                address: node.grpc_address.clone(),
                reason,
            });
        PeerClient {
            target,
            group: self.group,
            channel,
            channels: self.channels.clone(),
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
    /// A failed call as openraft sees it (`status_to_rpc`); an unreachable peer's
    /// shared channel is dropped, so that later clients connect afresh (it may
    /// have restarted, or the connection be stuck behind a healed partition).
    fn failed<E: std::error::Error>(&self, s: tonic::Status) -> RpcErr<E> {
        let e = status_to_rpc(s);
        if matches!(e, RPCError::Unreachable(_)) {
            self.channels.forget(&self.address);
        }
        e
    }

    fn channel<E: std::error::Error>(&self) -> Result<Channel, RpcErr<E>> {
        match &self.channel {
            Ok(c) => Ok(c.clone()),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(e))),
        }
    }
}

fn with_deadline<T>(msg: T, option: &RPCOption) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(option.hard_ttl());
    req
}

impl<C: HearthConfig> RaftNetwork<C> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<Nid>, RpcErr> {
        let ch = self.channel()?;
        let msg = convert::append_request_to_pb(&rpc, self.group.unwrap_or(0));
        let req = with_deadline(msg, &option);
        let resp = match self.group {
            None => RaftClient::new(ch).append_entries(req).await,
            Some(_) => WalGroupsClient::new(ch).append_entries(req).await,
        }
        .map_err(|s| self.failed(s))?;
        convert::append_response_from_pb(resp.into_inner()).map_err(convert_to_rpc)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<Nid>, RpcErr<InstallSnapshotError>> {
        let ch = self.channel()?;
        let msg = convert::snapshot_request_to_pb(&rpc, self.group.unwrap_or(0));
        let req = with_deadline(msg, &option);
        let resp = match self.group {
            None => RaftClient::new(ch).install_snapshot(req).await,
            Some(_) => WalGroupsClient::new(ch).install_snapshot(req).await,
        }
        .map_err(|s| self.failed(s))?
        .into_inner();
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
        let ch = self.channel()?;
        let msg = convert::vote_request_to_pb(&rpc, self.group.unwrap_or(0));
        let req = with_deadline(msg, &option);
        let resp = match self.group {
            None => RaftClient::new(ch).vote(req).await,
            Some(_) => WalGroupsClient::new(ch).vote(req).await,
        }
        .map_err(|s| self.failed(s))?;
        convert::vote_response_from_pb(resp.into_inner()).map_err(convert_to_rpc)
    }
}
