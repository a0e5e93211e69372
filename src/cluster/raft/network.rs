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
use openraft::{LogId, SnapshotSegmentId, Vote};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
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
    /// The WAL group's commit notices (None for the meta group).
    notices: Option<Arc<CommitNotices>>,
}

/// Whether a WAL group's leader sends its followers **commit notices**.
///
/// openraft's leader sends each follower an empty AppendEntries whenever its
/// commit index moves and no entries are on their way to it: per write, a second
/// RPC to every follower, answered and waited for like the first. A follower
/// only needs the commit index to apply what it already holds, and the leader's
/// next entries carry it; so while a group is led by its owner without timer
/// heartbeats (`repair::group_timers`) and has no learners, the transport leaves
/// those notices out: an empty AppendEntries that repeats what the follower
/// acknowledged last (same vote, same log position) on the same replication
/// stream is answered "success" without being sent. The follower's state is
/// what it said last time: the leader's progress and commit index do not move
/// on such an answer, and its only other use, openraft's time of the last
/// quorum acknowledgement, is a metric hearth does not read. Heartbeats that
/// must reach the followers are always sent: leadership checks (openraft makes
/// a new client for each, which has acknowledged nothing), and heartbeat rounds
/// this node asks for (`WalGroup::nudge`, which the leader runs shortly after
/// the last of a run of writes, so followers still learn the commit within
/// moments).
#[derive(Default)]
pub struct CommitNotices {
    defer: AtomicBool,
    /// Heartbeat rounds asked for: each stream sends its next empty
    /// AppendEntries when this moved since its last one.
    rounds: AtomicU64,
    /// Notices left out, for `/metrics`.
    deferred: Arc<AtomicU64>,
}

impl CommitNotices {
    pub fn new(deferred: Arc<AtomicU64>) -> CommitNotices {
        CommitNotices {
            deferred,
            ..Default::default()
        }
    }

    /// Whether notices may be left out from now on.
    pub fn set_defer(&self, defer: bool) {
        self.defer.store(defer, Ordering::Relaxed);
    }

    pub fn defers(&self) -> bool {
        self.defer.load(Ordering::Relaxed)
    }

    /// Makes every stream send its next empty AppendEntries: call before asking
    /// openraft for a heartbeat round.
    pub fn new_round(&self) {
        self.rounds.fetch_add(1, Ordering::AcqRel);
    }
}

impl Network {
    /// The meta group's transport.
    pub fn meta() -> Network {
        Network::default()
    }

    /// The transport of WAL group `group_id`, which leaves out commit notices
    /// as `notices` says.
    pub fn group(group_id: u64, notices: Arc<CommitNotices>) -> Network {
        Network {
            group: Some(group_id),
            connections: Connections::default(),
            notices: Some(notices),
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
    notices: Option<Arc<CommitNotices>>,
    /// The vote and log position of the last AppendEntries the peer accepted on
    /// this client, while nothing failed since.
    acked: Option<(Vote<Nid>, Option<LogId<Nid>>)>,
    /// `CommitNotices::rounds` at this client's last empty AppendEntries.
    rounds_seen: u64,
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
            notices: self.notices.clone(),
            acked: None,
            rounds_seen: 0,
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

impl PeerClient {
    /// Whether `rpc` is a commit notice to leave out (`CommitNotices`): no
    /// entries, no heartbeat round asked for since this client's last empty
    /// one, and the vote and log position the peer accepted last on it.
    fn is_commit_notice<C: HearthConfig>(&mut self, rpc: &AppendEntriesRequest<C>) -> bool {
        let Some(n) = &self.notices else {
            return false;
        };
        if !rpc.entries.is_empty() {
            return false;
        }
        let round = n.rounds.load(Ordering::Acquire);
        let asked = std::mem::replace(&mut self.rounds_seen, round) != round;
        !asked && n.defers() && self.acked == Some((rpc.vote, rpc.prev_log_id))
    }
}

impl<C: HearthConfig> RaftNetwork<C> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<Nid>, RpcErr> {
        let position = (
            rpc.vote,
            rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id),
        );
        if self.is_commit_notice(&rpc) {
            if let Some(n) = &self.notices {
                n.deferred.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(AppendEntriesResponse::Success);
        }
        let msg = convert::append_request_to_pb(&rpc, self.group.unwrap_or(0));
        let answer = self
            .call("AppendEntries", &msg, &option)
            .await
            .and_then(|r| convert::append_response_from_pb(r).map_err(convert_to_rpc));
        self.acked = match &answer {
            Ok(AppendEntriesResponse::Success) => Some(position),
            _ => None,
        };
        answer
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::raft::group::GroupConfig;
    use openraft::{CommittedLeaderId, Entry, EntryPayload};

    fn log_id(term: u64, index: u64) -> LogId<Nid> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn append(
        vote: Vote<Nid>,
        prev: u64,
        entries: u64,
        commit: u64,
    ) -> AppendEntriesRequest<GroupConfig> {
        AppendEntriesRequest {
            vote,
            prev_log_id: Some(log_id(1, prev)),
            entries: (prev + 1..=prev + entries)
                .map(|i| Entry {
                    log_id: log_id(1, i),
                    payload: EntryPayload::Blank,
                })
                .collect(),
            leader_commit: Some(log_id(1, commit)),
        }
    }

    async fn client(mut network: Network) -> PeerClient {
        let node = NodeAddr {
            grpc_address: "127.0.0.1:1".into(),
            http_address: String::new(),
        };
        RaftNetworkFactory::<GroupConfig>::new_client(&mut network, 2, &node).await
    }

    /// An empty AppendEntries is left out only when it repeats, on the same
    /// stream, the vote and log position the peer accepted last, while the
    /// group defers notices and no heartbeat round was asked for since.
    #[tokio::test]
    async fn only_repeated_empty_appends_are_left_out_as_commit_notices() {
        let notices = Arc::new(CommitNotices::default());
        notices.set_defer(true);
        let vote = Vote::new_committed(1, 1);
        let mut c = client(Network::group(1, notices.clone())).await;
        // Nothing accepted on this client yet: a leadership check's heartbeat.
        assert!(!c.is_commit_notice(&append(vote, 5, 0, 5)));
        // The peer accepted entries 6..=7 under `vote`.
        c.acked = Some((vote, Some(log_id(1, 7))));
        assert!(
            !c.is_commit_notice(&append(vote, 7, 1, 7)),
            "entries are sent"
        );
        assert!(c.is_commit_notice(&append(vote, 7, 0, 7)));
        assert!(
            !c.is_commit_notice(&append(vote, 6, 0, 7)),
            "another position"
        );
        let newer = Vote::new_committed(2, 1);
        assert!(!c.is_commit_notice(&append(newer, 7, 0, 7)), "another vote");
        // A heartbeat round asked for: the next empty append is sent, once.
        notices.new_round();
        assert!(!c.is_commit_notice(&append(vote, 7, 0, 7)));
        assert!(c.is_commit_notice(&append(vote, 7, 0, 7)));
        // Not deferring: everything is sent.
        notices.set_defer(false);
        assert!(!c.is_commit_notice(&append(vote, 7, 0, 7)));
        // The meta group's transport never leaves anything out.
        let mut meta = client(Network::meta()).await;
        meta.acked = Some((vote, Some(log_id(1, 7))));
        assert!(!meta.is_commit_notice(&append(vote, 7, 0, 7)));
    }
}
