//! The cluster runtime on one node: checks the data directory's identity, starts the
//! meta Raft group and the gRPC server, forms a new cluster (`--cluster.initial-peers`),
//! joins a running one (`--cluster.join`) or initializes a one-node cluster, then
//! keeps the cluster id committed and recorded locally.

use super::assign::{Assignment, AssignmentHandle};
use super::grpc_client::{Connections, CONTROL_ANSWER_BYTES_MAX};
use super::pb;
use super::raft::{MetaRaft, RaftOpError, RaftOptions, RaftRole};
use super::ring::{Ring, RingError};
use super::state::{ClusterState, Command, MemberState, NodeAddr, NodeId, Role};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Most voters the meta group gets; later members stay learners.
pub const VOTERS_MAX: usize = 5;
/// Timeout of one Status or Join call to a peer.
const PEER_RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout of a Join call, which waits for the joiner to catch up.
const JOIN_RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between attempts to reach peers while forming or joining.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// How long the maintenance and assignment loops sleep at most: they wake for each
/// change of the node's Raft view (`RaftWatch`), so this only bounds a retry
/// after a failed step. They wake on its beats (`until_beat`), with the other
/// periodic loops.
const MAINTAIN_INTERVAL: Duration = Duration::from_secs(2);
/// How long the maintenance loop waits for a proposal to commit.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The file recording which node and cluster a data directory belongs to.
const IDENTITY_FILE: &str = "node.json";

/// How this node takes part in the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `--cluster.node-id`; unique in the cluster.
    pub node_id: NodeId,
    /// `--cluster.listen-address`: where the gRPC server listens; none for a
    /// one-node cluster without cluster flags.
    pub listen_address: Option<SocketAddr>,
    /// `--cluster.advertise-address`: the gRPC address peers use (default: the
    /// listen address).
    pub advertise_address: Option<String>,
    /// The HTTP address peers and clients use for this node's API.
    pub http_address: String,
    /// `--cluster.initial-peers`: gRPC addresses of the nodes forming a new cluster.
    pub initial_peers: Vec<String>,
    /// `--cluster.join`: gRPC address of any member of a running cluster.
    pub join: Option<String>,
    /// How long to keep trying to reach the join address.
    pub join_timeout: Duration,
    /// Directory of the cluster's files (`<storage.tsdb.path>/cluster`).
    pub dir: PathBuf,
    pub raft: RaftOptions,
    /// `--cluster.failure-timeout`: a member that has not answered the leader's
    /// probes for this long is marked down and its work moves to the others.
    pub failure_timeout: Duration,
    /// `--cluster.query-timeout` and `--cluster.partial-response`: how queries
    /// treat a slow or failed peer.
    pub fanout: super::fanout::FanoutOptions,
    /// `--cluster.replication-factor`: voters of each node's WAL group (capped by
    /// the cluster size).
    pub replication_factor: usize,
}

/// `--cluster.failure-timeout`'s default.
pub const FAILURE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(15);

impl ClusterConfig {
    /// A one-node cluster without a gRPC server (the server without cluster flags).
    pub fn single_node(dir: PathBuf, http_address: String) -> ClusterConfig {
        ClusterConfig {
            node_id: 1,
            listen_address: None,
            advertise_address: None,
            http_address,
            initial_peers: Vec::new(),
            join: None,
            join_timeout: Duration::from_secs(60),
            dir,
            raft: RaftOptions::default(),
            failure_timeout: FAILURE_TIMEOUT_DEFAULT,
            fanout: super::fanout::FanoutOptions::default(),
            replication_factor: super::replication::REPLICATION_FACTOR_DEFAULT,
        }
    }

    fn advertise(&self) -> String {
        match (&self.advertise_address, self.listen_address) {
            (Some(a), _) => a.clone(),
            (None, Some(l)) => l.to_string(),
            (None, None) => String::new(),
        }
    }

    /// The initial peers with this node's own address, sorted and deduplicated:
    /// the form every node must agree on.
    fn peer_set(&self) -> Vec<String> {
        let mut peers: BTreeSet<String> = self.initial_peers.iter().cloned().collect();
        peers.insert(self.advertise());
        peers.into_iter().collect()
    }
}

/// The cluster cannot start, form or join.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster: invalid flags: {0}")]
    Config(String),
    #[error("cluster: {path}: {reason}")]
    Identity { path: PathBuf, reason: String },
    #[error(
        "cluster: the data directory {path} belongs to node {found}, not node {wanted}; \
         use --cluster.node-id={found} or another --storage.tsdb.path"
    )]
    OtherNode {
        path: PathBuf,
        found: NodeId,
        wanted: NodeId,
    },
    #[error(
        "cluster: the data directory {path} belongs to cluster {ours}, but {address} is in \
         cluster {theirs}; use a fresh --storage.tsdb.path to join that cluster"
    )]
    OtherCluster {
        path: PathBuf,
        ours: String,
        theirs: String,
        address: String,
    },
    #[error("cluster: listening on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cluster: {0}")]
    Raft(#[from] RaftOpError),
    #[error("cluster: --cluster.initial-peers disagree: this node has [{ours}], {address} has [{theirs}]")]
    PeersDisagree {
        ours: String,
        theirs: String,
        address: String,
    },
    #[error("cluster: node id {node_id} is used by both {first} and {second}")]
    DuplicateNodeId {
        node_id: NodeId,
        first: String,
        second: String,
    },
    #[error("cluster: joining via {address} failed: {reason}")]
    Join { address: String, reason: String },
    #[error("cluster: gRPC server: {0}")]
    Serve(String),
}

/// What a data directory's `node.json` records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    node_id: NodeId,
    cluster_id: Option<String>,
}

fn read_identity(path: &Path) -> Result<Option<Identity>, ClusterError> {
    let err = |reason: String| ClusterError::Identity {
        path: path.to_path_buf(),
        reason,
    };
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| err(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(e.to_string())),
    }
}

fn write_identity(path: &Path, id: &Identity) -> Result<(), ClusterError> {
    let bytes = serde_json::to_vec_pretty(id).map_err(|e| ClusterError::Identity {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    super::write_atomic(path, &bytes).map_err(|e| ClusterError::Identity {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// One member as `GET /api/v1/status/cluster` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub node_id: NodeId,
    pub grpc_address: String,
    pub http_address: String,
    /// Voter or learner in the committed membership.
    pub role: Role,
    pub state: MemberState,
    /// The member's own Raft state, when it answered (`None`: unreachable).
    pub raft_state: Option<String>,
    pub reachable: bool,
    /// Scrape targets the ring in force gives this member, counted over the
    /// targets this node discovers (every node discovers the same).
    pub owned_targets: u64,
    /// The member's wall clock minus this node's, estimated from its answer
    /// (0 for this node; None when it did not answer or sent no clock).
    pub clock_offset_seconds: Option<f64>,
}

/// The cluster as this node sees it (`GET /api/v1/status/cluster`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub cluster_id: Option<String>,
    pub node_id: NodeId,
    pub raft_state: RaftRole,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    pub ring_epoch: u64,
    /// The epoch of the ring in force now (a new epoch's ring takes over at its
    /// scheduled time); None before the first ring is scheduled.
    pub ring_epoch_in_force: Option<u64>,
    pub members: Vec<MemberStatus>,
}

impl ClusterStatus {
    /// Counts the targets keyed by `target_keys` per member, by their owner at
    /// `at_ms` in `assignment`.
    pub fn count_owned_targets(
        &mut self,
        assignment: &Assignment,
        target_keys: &[Vec<u8>],
        at_ms: i64,
    ) {
        let mut counts: BTreeMap<NodeId, u64> = BTreeMap::new();
        for k in target_keys {
            if let Some(owner) = assignment.owner(k, at_ms) {
                *counts.entry(owner).or_default() += 1;
            }
        }
        for m in &mut self.members {
            m.owned_targets = counts.get(&m.node_id).copied().unwrap_or(0);
        }
        self.ring_epoch_in_force = assignment.epoch_at(at_ms);
    }
}

struct Inner {
    cfg: ClusterConfig,
    raft: MetaRaft,
    identity_path: PathBuf,
    identity: parking_lot::Mutex<Identity>,
    /// Who owns which work when, refreshed from the committed plans.
    assignment: Arc<AssignmentHandle>,
    /// Connections to peers for the failure detector's status probes.
    channels: Connections,
    /// The WAL groups this node holds (none without WAL groups), which its
    /// answers to status probes list.
    groups: Option<super::raft::group::WalGroups>,
    /// Which groups the other members hold: relayed by the meta leader's probes,
    /// or asked by the reconciler (`repair`).
    directory: super::repair::GroupDirectory,
}

/// Handle to the running cluster on this node. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl Cluster {
    /// The connections to peers the failure detector's probes reuse.
    pub(super) fn peer_channels(&self) -> &Connections {
        &self.inner.channels
    }

    /// The WAL groups this node holds, as `WalGroups.Held` answers (None
    /// without WAL groups).
    pub(super) fn held(&self) -> Option<pb::HeldResponse> {
        self.inner.groups.as_ref().map(|g| g.held())
    }

    /// Which WAL groups the other members hold.
    pub fn directory(&self) -> &super::repair::GroupDirectory {
        &self.inner.directory
    }

    /// Takes the group directory the meta leader relays as this node's: the
    /// active members missing from it did not answer.
    pub(super) fn take_directory(&self, relayed: pb::GroupDirectory) {
        let active: Vec<NodeId> = self.state().active_ids().into_iter().collect();
        self.inner
            .directory
            .install_relayed(self.node_id(), relayed, &active);
    }

    /// Checks the data directory, opens the meta group and starts the gRPC server
    /// (when a listen address is set), which also serves `local` (this node's own
    /// storage; by WAL group with `grouped`) to the other members' fan-out
    /// queries and, with `groups`, the WAL groups' Raft RPCs. Forming or joining
    /// happens in `run`.
    pub async fn start(
        cfg: ClusterConfig,
        local: Arc<dyn crate::storage::Queryable>,
        grouped: Option<Arc<dyn super::query_service::GroupedStorage>>,
        groups: Option<super::raft::group::WalGroups>,
        shutdown: CancellationToken,
    ) -> Result<Cluster, ClusterError> {
        if !cfg.initial_peers.is_empty() && cfg.join.is_some() {
            return Err(ClusterError::Config(
                "--cluster.initial-peers and --cluster.join exclude each other: the first forms a new cluster, the second joins a running one".into(),
            ));
        }
        if (!cfg.initial_peers.is_empty() || cfg.join.is_some()) && cfg.listen_address.is_none() {
            return Err(ClusterError::Config(
                "--cluster.initial-peers and --cluster.join need --cluster.listen-address".into(),
            ));
        }
        std::fs::create_dir_all(&cfg.dir).map_err(|e| ClusterError::Identity {
            path: cfg.dir.clone(),
            reason: e.to_string(),
        })?;
        let identity_path = cfg.dir.join(IDENTITY_FILE);
        let identity = match read_identity(&identity_path)? {
            Some(id) if id.node_id != cfg.node_id => {
                return Err(ClusterError::OtherNode {
                    path: cfg.dir.clone(),
                    found: id.node_id,
                    wanted: cfg.node_id,
                })
            }
            Some(id) => id,
            None => {
                let id = Identity {
                    node_id: cfg.node_id,
                    cluster_id: None,
                };
                write_identity(&identity_path, &id)?;
                id
            }
        };
        let raft = MetaRaft::open(&cfg.dir, cfg.node_id, &cfg.raft).await?;
        let assignment = Arc::new(AssignmentHandle::new(&raft.state(), cfg.node_id));
        assignment.set_lease(super::assign::lease_for(cfg.failure_timeout));
        let cluster = Cluster {
            inner: Arc::new(Inner {
                cfg,
                raft,
                identity_path,
                identity: parking_lot::Mutex::new(identity),
                assignment,
                channels: Connections::default(),
                groups: groups.clone(),
                directory: Default::default(),
            }),
        };
        // From the start, not only once formed or joined: a joining node must follow
        // the plans from the moment it applies them.
        tokio::spawn(cluster.clone().follow_assignment(shutdown.clone()));
        if let Some(address) = cluster.inner.cfg.listen_address {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| ClusterError::Listen { address, source })?;
            tracing::info!(%address, node_id = cluster.inner.cfg.node_id, "cluster gRPC listening");
            let mut routes = tonic::service::Routes::default();
            if let Some(g) = groups {
                routes = routes.add_service(g.service());
            }
            let routes = routes
                .add_service(cluster.inner.raft.service())
                .add_service(pb::cluster_server::ClusterServer::new(
                    super::service::ClusterService::new(cluster.clone()),
                ))
                .add_service(super::query_service::QueryService::new(local, grouped).into_server());
            tokio::spawn(super::grpc_server::serve(
                listener,
                routes,
                shutdown.clone(),
            ));
        }
        Ok(cluster)
    }

    pub(crate) fn raft(&self) -> &MetaRaft {
        &self.inner.raft
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.cfg.node_id
    }

    /// This node's addresses as members see them.
    pub fn node_addr(&self) -> NodeAddr {
        NodeAddr {
            grpc_address: self.inner.cfg.advertise(),
            http_address: self.inner.cfg.http_address.clone(),
        }
    }

    /// The sorted initial peers (with this node) this node was started with.
    pub(crate) fn peer_set(&self) -> Vec<String> {
        if self.inner.cfg.initial_peers.is_empty() {
            Vec::new()
        } else {
            self.inner.cfg.peer_set()
        }
    }

    /// The cluster id recorded in this node's data directory.
    pub fn cluster_id(&self) -> Option<String> {
        self.inner.identity.lock().cluster_id.clone()
    }

    /// The committed cluster state as applied on this node.
    pub fn state(&self) -> ClusterState {
        self.inner.raft.state()
    }

    /// Who owns which scrape target and rule group when; kept up to date with the
    /// committed ring plans.
    pub fn assignment(&self) -> Arc<AssignmentHandle> {
        self.inner.assignment.clone()
    }

    /// Whether this node talks to others (started with cluster flags); a one-node
    /// cluster without them answers queries from local storage only.
    pub fn is_networked(&self) -> bool {
        self.inner.cfg.listen_address.is_some()
    }

    /// The fan-out settings this node was started with.
    pub fn fanout_options(&self) -> super::fanout::FanoutOptions {
        self.inner.cfg.fanout
    }

    /// The committed members other than this node, for the fan-out.
    pub fn peers(&self) -> Vec<super::fanout::Peer> {
        self.inner.raft.with_state(|s| self.peers_in(s))
    }

    /// The committed members other than this node, for the fan-out, and the ids
    /// of every member (this node too), from one read of the cluster state: a
    /// fan-out read asks for both before it sends anything.
    pub fn peers_and_members(&self) -> (Vec<super::fanout::Peer>, BTreeSet<NodeId>) {
        self.inner
            .raft
            .with_state(|s| (self.peers_in(s), s.members.keys().copied().collect()))
    }

    /// The members of `state` other than this node that have a gRPC address.
    fn peers_in(&self, state: &ClusterState) -> Vec<super::fanout::Peer> {
        let me = self.node_id();
        state
            .members
            .values()
            .filter(|m| m.node_id != me && !m.addr.grpc_address.is_empty())
            .map(|m| super::fanout::Peer {
                node_id: m.node_id,
                grpc_address: m.addr.grpc_address.clone(),
                http_address: m.addr.http_address.clone(),
                down: m.state == MemberState::Down,
                groups: None,
                standby: Vec::new(),
                own_storage_empty: false,
            })
            .collect()
    }

    /// A queryable over `local` and every other member's storage, merged.
    pub fn fanout(
        &self,
        local: Arc<dyn crate::storage::Queryable>,
    ) -> super::fanout::FanoutQueryable {
        let cluster = self.clone();
        super::fanout::FanoutQueryable::new(
            local,
            Arc::new(move || cluster.peers()),
            self.inner.cfg.fanout,
        )
    }

    /// The ring of the committed active members.
    pub fn ring(&self) -> Result<Ring, RingError> {
        let s = self.state();
        Ring::new(s.active_ids(), s.ring_epoch)
    }

    /// Forms or joins the cluster, then keeps the cluster id committed and recorded
    /// until `shutdown`. Returns an error when this node cannot be part of the
    /// cluster (the caller stops the server); Raft is shut down on return.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ClusterError> {
        let result = tokio::select! {
            r = self.bootstrap(&shutdown) => r,
            _ = shutdown.cancelled() => Ok(()),
        };
        if result.is_ok() {
            let detector = super::failure::run(
                self.clone(),
                self.inner.cfg.failure_timeout,
                shutdown.clone(),
            );
            tokio::join!(self.maintain(&shutdown), detector);
        }
        self.inner.raft.shutdown().await;
        result
    }

    async fn bootstrap(&self, shutdown: &CancellationToken) -> Result<(), ClusterError> {
        let cfg = &self.inner.cfg;
        if self.inner.raft.is_initialized().await? {
            if let Some(address) = &cfg.join {
                self.check_same_cluster(address).await?;
            }
            tracing::info!(
                node_id = cfg.node_id,
                "rejoining the cluster recorded in the data directory"
            );
            return Ok(());
        }
        if let Some(address) = &cfg.join {
            return self.join(address, shutdown).await;
        }
        if !cfg.initial_peers.is_empty() {
            return self.form(shutdown).await;
        }
        let members = BTreeMap::from([(cfg.node_id, self.node_addr())]);
        self.inner.raft.initialize(members).await?;
        tracing::info!(node_id = cfg.node_id, "initialized a one-node cluster");
        Ok(())
    }

    /// Forms a new cluster from `--cluster.initial-peers`: waits until every peer
    /// answers, checks that they agree, and lets the peer with the lowest node id
    /// initialize the group with all of them as voters.
    async fn form(&self, shutdown: &CancellationToken) -> Result<(), ClusterError> {
        let ours = self.inner.cfg.peer_set();
        let me = self.node_addr();
        let mut waiting_logged = false;
        loop {
            let mut members = BTreeMap::from([(self.node_id(), me.clone())]);
            let mut missing = Vec::new();
            let mut initialized_peer = None;
            for peer in ours.iter().filter(|p| **p != me.grpc_address) {
                match peer_status(peer, PEER_RPC_TIMEOUT).await {
                    Ok(s) => {
                        if s.initial_peers != ours && !s.initialized {
                            return Err(ClusterError::PeersDisagree {
                                ours: ours.join(","),
                                theirs: s.initial_peers.join(","),
                                address: peer.clone(),
                            });
                        }
                        if s.initialized {
                            initialized_peer = Some(peer.clone());
                        }
                        let addr = s.node.map(|n| NodeAddr {
                            grpc_address: peer.clone(),
                            http_address: n.http_address,
                        });
                        if let Some(prev) = members.get(&s.node_id) {
                            return Err(ClusterError::DuplicateNodeId {
                                node_id: s.node_id,
                                first: prev.grpc_address.clone(),
                                second: peer.clone(),
                            });
                        }
                        members.insert(s.node_id, addr.unwrap_or_default());
                    }
                    Err(e) => missing.push(format!("{peer} ({})", e.message())),
                }
            }
            if let Some(peer) = initialized_peer {
                // The group exists already (formed while this node was down); its
                // leader brings this node up to date.
                tracing::info!(%peer, "cluster already formed; waiting for its leader");
                return Ok(());
            }
            if missing.is_empty() {
                let lowest = *members.keys().next().unwrap_or(&self.node_id());
                if lowest == self.node_id() {
                    tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "forming the cluster");
                    match self.inner.raft.initialize(members).await {
                        Ok(()) => {}
                        // Initialized meanwhile (a restart raced us): nothing to do.
                        Err(RaftOpError::Rejected(m)) => {
                            tracing::info!(reason = %m, "not initializing")
                        }
                        Err(e) => return Err(e.into()),
                    }
                } else {
                    tracing::info!(
                        leader_candidate = lowest,
                        "all peers reachable; node {lowest} forms the cluster"
                    );
                }
                return Ok(());
            }
            if !waiting_logged {
                tracing::info!(missing = ?missing, "waiting for initial peers");
                waiting_logged = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY_INTERVAL) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// A node that already belongs to a cluster and is told to join `address`:
    /// refuses when `address` answers with another cluster id. An unreachable address
    /// is no reason not to restart.
    async fn check_same_cluster(&self, address: &str) -> Result<(), ClusterError> {
        // The replayed state knows the id even if the node stopped before recording it.
        let Some(ours) = self.state().cluster_id.or_else(|| self.cluster_id()) else {
            return Ok(());
        };
        match peer_status(address, PEER_RPC_TIMEOUT).await {
            Ok(s) if !s.cluster_id.is_empty() && s.cluster_id != ours => {
                Err(ClusterError::OtherCluster {
                    path: self.inner.cfg.dir.clone(),
                    ours,
                    theirs: s.cluster_id,
                    address: address.to_string(),
                })
            }
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(%address, error = %e.message(), "cannot check the join address's cluster id");
                Ok(())
            }
        }
    }

    /// Joins a running cluster through `address`, retrying while it is unreachable.
    async fn join(&self, address: &str, shutdown: &CancellationToken) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + self.inner.cfg.join_timeout;
        let join_err = |reason: String| ClusterError::Join {
            address: address.to_string(),
            reason,
        };
        let channel = super::raft::channel(address).map_err(join_err)?;
        let mut client = pb::cluster_client::ClusterClient::new(channel);
        loop {
            let mut req = tonic::Request::new(pb::JoinRequest {
                node_id: self.node_id(),
                node: Some(pb::Node {
                    grpc_address: self.node_addr().grpc_address,
                    http_address: self.node_addr().http_address,
                }),
                cluster_id: self.cluster_id(),
            });
            req.set_timeout(JOIN_RPC_TIMEOUT);
            match client.join(req).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    tracing::info!(
                        %address,
                        cluster_id = %resp.cluster_id,
                        leader = resp.leader_id,
                        voter = resp.voter,
                        "joined the cluster"
                    );
                    if !resp.cluster_id.is_empty() {
                        self.record_cluster_id(&resp.cluster_id)?;
                    }
                    return Ok(());
                }
                Err(s)
                    if s.code() == tonic::Code::FailedPrecondition
                        && s.message().contains("belongs to cluster") =>
                {
                    return Err(ClusterError::OtherCluster {
                        path: self.inner.cfg.dir.clone(),
                        ours: self.cluster_id().unwrap_or_default(),
                        theirs: s
                            .message()
                            .rsplit(' ')
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                        address: address.to_string(),
                    });
                }
                Err(s) if retryable(&s) && tokio::time::Instant::now() < deadline => {
                    tracing::info!(%address, error = %s.message(), "join: retrying");
                }
                Err(s) if retryable(&s) => {
                    return Err(join_err(format!(
                        "no hearth node answered within {:?}: {}",
                        self.inner.cfg.join_timeout,
                        s.message()
                    )));
                }
                Err(s)
                    if s.code() == tonic::Code::Unimplemented
                        || s.code() == tonic::Code::Unknown
                        || s.code() == tonic::Code::Internal =>
                {
                    return Err(join_err(format!(
                        "{address} does not look like a hearth cluster address ({})",
                        s.message()
                    )));
                }
                Err(s) => return Err(join_err(s.message().to_string())),
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY_INTERVAL) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// Keeps the assignment in step with the applied ring plans until `shutdown`.
    async fn follow_assignment(self, shutdown: CancellationToken) {
        let mut watch = self.inner.raft.watch();
        loop {
            // Read before the state, so the state holds at least what was applied.
            let view = self.inner.raft.view();
            let caught_up = view.leader.is_some() && view.last_applied_index >= view.last_log_index;
            let state = self.state();
            if caught_up && !self.inner.assignment.caught_up() {
                self.inner.assignment.refresh(&state);
                self.inner.assignment.set_caught_up();
                tracing::info!(
                    applied = ?view.last_applied_index,
                    "caught up with the leader's log; taking work from the ring"
                );
            }
            if self.inner.assignment.refresh(&state) {
                let a = self.inner.assignment.get();
                tracing::info!(
                    ring_epoch = state.ring_epoch,
                    plans = ?state.ring_plans.iter().map(|p| (p.epoch, p.at_ms)).collect::<Vec<_>>(),
                    in_force = ?a.epoch_at(now_ms()),
                    "ring plans changed"
                );
            }
            tokio::select! {
                _ = watch.changed(until_beat(MAINTAIN_INTERVAL)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// While running: a leader commits a cluster id when there is none yet; every
    /// node records the committed id in its data directory.
    async fn maintain(&self, shutdown: &CancellationToken) {
        let mut watch = self.inner.raft.watch();
        loop {
            let state = self.state();
            match &state.cluster_id {
                Some(id) => {
                    if self.cluster_id().as_deref() != Some(id.as_str()) {
                        if let Err(e) = self.record_cluster_id(id) {
                            tracing::error!(error = %e, "recording the cluster id");
                        }
                    }
                }
                None => {
                    if self.inner.raft.view().role == RaftRole::Leader {
                        let id = self
                            .cluster_id()
                            .unwrap_or_else(|| ulid::Ulid::new().to_string());
                        // Bounded: a leader that lost its quorum may never commit it.
                        let propose = self
                            .inner
                            .raft
                            .propose(Command::SetClusterId { cluster_id: id });
                        tokio::select! {
                            r = tokio::time::timeout(PROPOSE_TIMEOUT, propose) => match r {
                                Ok(Ok(_)) => {}
                                Ok(Err(e)) => tracing::warn!(error = %e, "proposing the cluster id"),
                                Err(_) => tracing::warn!("proposing the cluster id: not committed within {PROPOSE_TIMEOUT:?}"),
                            },
                            _ = shutdown.cancelled() => return,
                        }
                    }
                }
            }
            tokio::select! {
                _ = watch.changed(until_beat(MAINTAIN_INTERVAL)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    fn record_cluster_id(&self, id: &str) -> Result<(), ClusterError> {
        let mut identity = self.inner.identity.lock();
        match &identity.cluster_id {
            Some(ours) if ours == id => return Ok(()),
            Some(ours) => {
                return Err(ClusterError::OtherCluster {
                    path: self.inner.cfg.dir.clone(),
                    ours: ours.clone(),
                    theirs: id.to_string(),
                    address: "the meta group".into(),
                })
            }
            None => {}
        }
        let next = Identity {
            node_id: identity.node_id,
            cluster_id: Some(id.to_string()),
        };
        write_identity(&self.inner.identity_path, &next)?;
        *identity = next;
        tracing::info!(cluster_id = id, "recorded the cluster id");
        Ok(())
    }

    /// This node's status, with each member's own Raft state when `ask_peers` is set
    /// (asked over gRPC with a short timeout each, in parallel).
    pub async fn status(&self, ask_peers: bool) -> ClusterStatus {
        let view = self.inner.raft.view();
        let state = self.state();
        let mut members: Vec<MemberStatus> = state
            .members
            .values()
            .map(|m| MemberStatus {
                node_id: m.node_id,
                grpc_address: m.addr.grpc_address.clone(),
                http_address: m.addr.http_address.clone(),
                role: m.role,
                state: m.state,
                raft_state: None,
                reachable: false,
                owned_targets: 0,
                clock_offset_seconds: None,
            })
            .collect();
        // Before the first membership is applied, show the effective one.
        if members.is_empty() {
            members = view
                .nodes
                .iter()
                .map(|(id, a)| MemberStatus {
                    node_id: *id,
                    grpc_address: a.grpc_address.clone(),
                    http_address: a.http_address.clone(),
                    role: if view.voters.contains(id) {
                        Role::Voter
                    } else {
                        Role::Learner
                    },
                    state: MemberState::Active,
                    raft_state: None,
                    reachable: false,
                    owned_targets: 0,
                    clock_offset_seconds: None,
                })
                .collect();
        }
        let mut asks = tokio::task::JoinSet::new();
        for (i, m) in members.iter_mut().enumerate() {
            if m.node_id == self.node_id() {
                m.raft_state = Some(view.role.as_str().to_string());
                m.reachable = true;
                m.clock_offset_seconds = Some(0.0);
            } else if ask_peers && !m.grpc_address.is_empty() {
                let addr = m.grpc_address.clone();
                asks.spawn(async move {
                    let sent = now_ms();
                    let r = peer_status(&addr, Duration::from_millis(500)).await;
                    (i, sent, now_ms(), r)
                });
            }
        }
        while let Some(Ok((i, sent, received, r))) = asks.join_next().await {
            if let Ok(s) = r {
                let offset = clock_offset_ms(sent, s.wall_clock_ms, received);
                members[i].raft_state = Some(s.raft_state);
                members[i].reachable = true;
                members[i].clock_offset_seconds = offset.map(|(o, _)| o as f64 / 1000.0);
            }
        }
        ClusterStatus {
            cluster_id: state.cluster_id.or_else(|| self.cluster_id()),
            node_id: self.node_id(),
            raft_state: view.role,
            leader_id: view.leader,
            term: view.term,
            last_log_index: view.last_log_index,
            last_applied_index: view.last_applied_index,
            ring_epoch: state.ring_epoch,
            ring_epoch_in_force: self.inner.assignment.get().epoch_at(now_ms()),
            members,
        }
    }

    /// Stops the meta group (also done by `run` on shutdown).
    pub async fn shutdown(&self) {
        self.inner.raft.shutdown().await;
    }
}

/// A peer's clock offset from a `Status` answer: its wall clock minus this
/// node's, in ms, taking the answer as made halfway through the round trip
/// (`sent_ms` to `received_ms` on this node's clock), and the estimate's
/// uncertainty (half the round trip). None when the peer sent no clock.
pub(super) fn clock_offset_ms(
    sent_ms: i64,
    answered_ms: i64,
    received_ms: i64,
) -> Option<(i64, i64)> {
    if answered_ms == 0 {
        return None;
    }
    let half_trip = (received_ms - sent_ms).max(0) / 2;
    Some((answered_ms - (sent_ms + half_trip), half_trip))
}

/// Whether a peer's clock offset (`clock_offset_ms`) is surely beyond what a
/// ring handoff tolerates: a handoff is planned `HANDOFF_DELAY_MS` ahead on the
/// leader's clock, and a node whose clock runs ahead by about that much would
/// reach the handoff time before it learned of the plan.
pub(super) fn clock_skewed(offset_ms: i64, uncertainty_ms: i64) -> bool {
    offset_ms.abs() - uncertainty_ms > CLOCK_SKEW_WARN_MS
}

/// The clock offset between members beyond which the failure detector warns
/// (`clock_skewed`): a quarter of the handoff delay.
const CLOCK_SKEW_WARN_MS: i64 = super::failure::HANDOFF_DELAY_MS / 4;

/// Transport failures worth retrying: the peer may just not be up yet.
fn retryable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
    )
}

/// Asks the node at `address` for its status.
pub async fn peer_status(
    address: &str,
    timeout: Duration,
) -> Result<pb::StatusResponse, tonic::Status> {
    let channels = Connections::default();
    status_request(&channels, address, pb::StatusRequest::default(), timeout).await
}

/// Sends `req` to the `Status` RPC of the node at `address`, over `channels`'
/// connection to it (dropped if the call fails).
pub(super) async fn status_request(
    channels: &Connections,
    address: &str,
    req: pb::StatusRequest,
    timeout: Duration,
) -> Result<pb::StatusResponse, tonic::Status> {
    let answer = channels
        .unary(
            address,
            "/hearth.cluster.v1.Cluster/Status",
            &req,
            timeout,
            CONTROL_ANSWER_BYTES_MAX,
        )
        .await;
    if answer.is_err() {
        channels.forget(address);
    }
    answer
}

/// This node's wall clock, in ms since the Unix epoch.
pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How long until the wall clock next reaches a whole multiple of `period`, a
/// "beat". The cluster's periodic loops (the failure detector, the reconciler,
/// the fallbacks of the loops that watch the meta group) wait for beats rather
/// than for their own intervals, so loops of one period, and loops whose periods
/// divide each other, wake together and one wake-up of the process serves them
/// all. A beat less than a tenth of a period away is skipped, so a loop that
/// wakes a moment before its beat (timers round to milliseconds, and the wall
/// clock may step) does not wake twice.
pub(super) fn until_beat(period: Duration) -> Duration {
    until_beat_at(period, now_ms())
}

fn until_beat_at(period: Duration, now_ms: i64) -> Duration {
    let p = period.as_millis().clamp(1, i64::MAX as u128) as i64;
    let mut wait = p - now_ms.rem_euclid(p);
    if wait * 10 < p {
        wait += p;
    }
    Duration::from_millis(wait as u64)
}

#[cfg(test)]
mod tests {
    use super::until_beat_at;
    use std::time::Duration;

    #[test]
    fn beats_fall_on_whole_multiples_of_the_period() {
        let s = Duration::from_secs(1);
        assert_eq!(until_beat_at(s, 10_250), Duration::from_millis(750));
        assert_eq!(until_beat_at(s, 10_000), Duration::from_millis(1000));
        // Two seconds' beats are every other one of one second's.
        assert_eq!(until_beat_at(2 * s, 11_250), Duration::from_millis(750));
        assert_eq!(until_beat_at(2 * s, 10_250), Duration::from_millis(1750));
        // Woken just before a beat: the next one, not one a moment away.
        assert_eq!(until_beat_at(s, 10_960), Duration::from_millis(1040));
        assert_eq!(until_beat_at(s, 10_899), Duration::from_millis(101));
        // Before the epoch (a clock set wrong) still waits less than two periods.
        assert_eq!(until_beat_at(s, -250), Duration::from_millis(250));
    }
}
