//! The `Cluster` gRPC service: `Join` (add a node as learner, then voter),
//! `Remove` (take a member out; a learner takes a removed voter's place) and
//! `Status` (this node's identity and view of the group).

use super::pb;
use super::raft::{RaftOpError, RaftRole};
use super::runtime::{Cluster, VOTERS_MAX};
use super::state::NodeAddr;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Timeout of a Join or Remove forwarded to the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the leader waits for a Remove to commit. Without a quorum it never
/// does; the caller is told, though the change may still commit once the quorum
/// returns (as with any Raft write whose answer was lost).
const REMOVE_COMMIT_TIMEOUT: Duration = Duration::from_secs(15);

/// The leader's `Cluster` service, for requests a follower forwards.
struct LeaderClient {
    id: u64,
    address: String,
    client: pb::cluster_client::ClusterClient<tonic::transport::Channel>,
}

impl LeaderClient {
    /// A failed forward says which leader did not answer: the caller may be a
    /// minority that still believes in a leader it cannot reach.
    fn forward_error(&self, s: Status) -> Status {
        match s.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                Status::unavailable(format!(
                    "the leader, node {} at {}, does not answer ({}); no quorum here?",
                    self.id,
                    self.address,
                    s.message()
                ))
            }
            _ => s,
        }
    }
}

/// Serves `Join`, `Remove` and `Status` for one node.
pub struct ClusterService {
    cluster: Cluster,
}

impl ClusterService {
    pub(super) fn new(cluster: Cluster) -> ClusterService {
        ClusterService { cluster }
    }
}

fn raft_status(e: RaftOpError) -> Status {
    match e {
        RaftOpError::NotLeader { .. } => Status::unavailable(e.to_string()),
        RaftOpError::Rejected(m) => Status::failed_precondition(m),
        RaftOpError::Fatal(_) | RaftOpError::Storage { .. } => Status::unavailable(e.to_string()),
    }
}

impl ClusterService {
    /// A client of the leader's `Cluster` service, for requests this node (not the
    /// leader) received.
    fn leader_client(&self) -> Result<LeaderClient, Status> {
        let view = self.cluster.raft().view();
        let (id, addr) = view
            .leader
            .and_then(|id| view.nodes.get(&id).map(|n| (id, n.clone())))
            .ok_or_else(|| Status::unavailable("no leader elected yet; retry"))?;
        if addr.grpc_address.is_empty() {
            return Err(Status::unavailable(format!(
                "leader {id} has no gRPC address"
            )));
        }
        let channel = super::raft::channel(&addr.grpc_address).map_err(Status::internal)?;
        Ok(LeaderClient {
            id,
            address: addr.grpc_address,
            client: pb::cluster_client::ClusterClient::new(channel),
        })
    }

    /// Makes learners voters while there are fewer than `VOTERS_MAX` voters, lowest
    /// id first; returns the first one promoted.
    async fn fill_voters(&self) -> Result<Option<u64>, Status> {
        let raft = self.cluster.raft();
        let mut promoted = None;
        loop {
            let view = raft.view();
            if view.voters.len() >= VOTERS_MAX {
                return Ok(promoted);
            }
            let Some(learner) = view.nodes.keys().find(|id| !view.voters.contains(id)) else {
                return Ok(promoted);
            };
            tracing::info!(node_id = learner, "promoting a learner to voter");
            raft.add_voter(*learner).await.map_err(raft_status)?;
            promoted.get_or_insert(*learner);
        }
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let req = req.into_inner();
        let raft = self.cluster.raft();
        let view = raft.view();
        if view.role != RaftRole::Leader {
            let mut r = Request::new(req);
            r.set_timeout(FORWARD_TIMEOUT);
            let mut leader = self.leader_client()?;
            let result = leader.client.join(r).await;
            return result.map_err(|s| leader.forward_error(s));
        }
        let node = req
            .node
            .clone()
            .ok_or_else(|| Status::invalid_argument("JoinRequest lacks node"))?;
        let addr = NodeAddr {
            grpc_address: node.grpc_address,
            http_address: node.http_address,
        };
        if addr.grpc_address.is_empty() {
            return Err(Status::invalid_argument("JoinRequest: empty gRPC address"));
        }
        let state = self.cluster.state();
        let cluster_id = state.cluster_id.clone().unwrap_or_default();
        if let (Some(theirs), Some(ours)) = (&req.cluster_id, &state.cluster_id) {
            if theirs != ours {
                return Err(Status::failed_precondition(format!(
                    "node {} belongs to cluster {theirs}; this node belongs to cluster {ours}",
                    req.node_id
                )));
            }
        }
        if let Some(existing) = view.nodes.get(&req.node_id) {
            if existing.grpc_address != addr.grpc_address {
                return Err(Status::already_exists(format!(
                    "node id {} is already used by the member at {}",
                    req.node_id, existing.grpc_address
                )));
            }
        }
        if let Some((id, _)) = view
            .nodes
            .iter()
            .find(|(id, n)| **id != req.node_id && n.grpc_address == addr.grpc_address)
        {
            return Err(Status::already_exists(format!(
                "address {} is already used by node {id}",
                addr.grpc_address
            )));
        }
        tracing::info!(node_id = req.node_id, address = %addr.grpc_address, "join: adding learner");
        raft.add_learner(req.node_id, addr)
            .await
            .map_err(raft_status)?;
        let voters = raft.view().voters;
        let voter = if voters.contains(&req.node_id) {
            true
        } else if voters.len() < VOTERS_MAX {
            tracing::info!(node_id = req.node_id, "join: promoting to voter");
            raft.add_voter(req.node_id).await.map_err(raft_status)?;
            true
        } else {
            false
        };
        Ok(Response::new(pb::JoinResponse {
            cluster_id,
            leader_id: self.cluster.node_id(),
            voter,
        }))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        let req = req.into_inner();
        let raft = self.cluster.raft();
        let view = raft.view();
        if view.role != RaftRole::Leader {
            let mut r = Request::new(req);
            r.set_timeout(REMOVE_COMMIT_TIMEOUT + Duration::from_secs(5));
            let mut leader = self.leader_client()?;
            let result = leader.client.remove(r).await;
            return result.map_err(|s| leader.forward_error(s));
        }
        if !view.nodes.contains_key(&req.node_id) {
            let members: Vec<String> = view.nodes.keys().map(|id| id.to_string()).collect();
            return Err(Status::not_found(format!(
                "node {} is not a member (members: {})",
                req.node_id,
                members.join(", ")
            )));
        }
        tracing::info!(node_id = req.node_id, "removing a member");
        tokio::time::timeout(REMOVE_COMMIT_TIMEOUT, raft.remove(req.node_id))
            .await
            .map_err(|_| {
                Status::unavailable(format!(
                    "removing node {} was not committed within {REMOVE_COMMIT_TIMEOUT:?}: \
                     no quorum of voters answers; it may still take effect when they do",
                    req.node_id
                ))
            })?
            .map_err(raft_status)?;
        // The leader may have removed itself and stepped down; then the new leader
        // fills the voter set on the next join or remove.
        let promoted = if raft.view().role == RaftRole::Leader {
            self.fill_voters().await?
        } else {
            None
        };
        Ok(Response::new(pb::RemoveResponse {
            leader_id: self.cluster.node_id(),
            promoted,
        }))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let mut req = req.into_inner();
        if let Some(relayed) = req.directory.take() {
            self.cluster.take_directory(relayed);
        }
        if req.lease
            && self.cluster.raft().view().last_applied_index.unwrap_or(0) >= req.applied_index
        {
            // The leader vouches that a majority is in touch with it, and so with
            // this node, which has applied what the leader had.
            self.cluster
                .assignment()
                .note_contact(std::time::Instant::now());
        }
        let initialized = self
            .cluster
            .raft()
            .is_initialized()
            .await
            .map_err(raft_status)?;
        let st = self.cluster.status(false).await;
        let me = self.cluster.node_addr();
        Ok(Response::new(pb::StatusResponse {
            node_id: self.cluster.node_id(),
            node: Some(pb::Node {
                grpc_address: me.grpc_address,
                http_address: me.http_address,
            }),
            cluster_id: st.cluster_id.unwrap_or_default(),
            initial_peers: self.cluster.peer_set(),
            initialized,
            raft_state: st.raft_state.as_str().to_string(),
            leader_id: st.leader_id,
            term: st.term,
            last_log_index: st.last_log_index,
            last_applied_index: st.last_applied_index,
            members: st
                .members
                .iter()
                .map(|m| pb::Member {
                    node_id: m.node_id,
                    node: Some(pb::Node {
                        grpc_address: m.grpc_address.clone(),
                        http_address: m.http_address.clone(),
                    }),
                    role: match m.role {
                        super::state::Role::Voter => "voter".into(),
                        super::state::Role::Learner => "learner".into(),
                    },
                    state: match m.state {
                        super::state::MemberState::Active => "active".into(),
                        super::state::MemberState::Down => "down".into(),
                    },
                })
                .collect(),
            ring_epoch: st.ring_epoch,
            wall_clock_ms: super::runtime::now_ms(),
            held: self.cluster.held(),
        }))
    }
}
