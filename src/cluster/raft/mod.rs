//! The Raft groups, and the only module that names openraft types: the type
//! configurations, the durable log store (shared by every group), the meta group's
//! state machine, the gRPC transport, `MetaRaft` (the handle the rest of the cluster
//! uses for the meta group), in `group`, the WAL groups, and in `ticks` the async
//! runtime they run on (whose ticks fall on common instants). Upgrading openraft
//! touches only this directory.

// openraft's `StorageError` and `RPCError` are large; they are openraft's types
// in openraft's signatures, so boxing them here would gain nothing.
#![allow(clippy::result_large_err)]

mod convert;
pub mod group;
mod group_snapshot;
mod log_store;
mod network;
mod service;
mod state_machine;
mod ticks;

#[cfg(test)]
mod tests;

pub use network::channel;
pub use service::RaftService;

use crate::cluster::pb;
use crate::cluster::state::{ClusterState, Command, CommandResult, NodeAddr, NodeId};
use crate::wal::LogOptions;
use log_store::LogStore;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, Config, ServerState, SnapshotPolicy};
use parking_lot::RwLock;
use state_machine::{SmData, StateMachine};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Node id as openraft sees it.
type Nid = NodeId;

/// A state-machine command as bytes, in Raft messages on the wire.
pub(crate) trait Payload: Sized {
    fn to_bytes(&self) -> Vec<u8>;
    fn from_bytes(b: &[u8]) -> Result<Self, String>;
}

/// What the generic parts (log store, transport, conversions) need of a group's
/// type configuration: hearth's node ids and addresses, openraft's own entry type,
/// in-memory snapshots, a payload with a byte form, and how an entry is stored as
/// one record of its `wal::Log`.
pub(crate) trait HearthConfig:
    openraft::RaftTypeConfig<
    NodeId = Nid,
    Node = NodeAddr,
    Entry = openraft::Entry<Self>,
    SnapshotData = Cursor<Vec<u8>>,
    D: Payload + Clone,
>
{
    /// Encodes an entry as one log record.
    fn encode_entry(e: &openraft::Entry<Self>) -> Result<Vec<u8>, String>;
    /// Decodes a log record written by `encode_entry`.
    fn decode_entry(b: &[u8]) -> Result<openraft::Entry<Self>, String>;
}

impl Payload for Command {
    fn to_bytes(&self) -> Vec<u8> {
        // Serializing a `Command` cannot fail: it is plain data with string keys.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn from_bytes(b: &[u8]) -> Result<Command, String> {
        serde_json::from_slice(b).map_err(|e| e.to_string())
    }
}

impl HearthConfig for TypeConfig {
    /// The meta log stores entries as JSON (`docs/format/cluster.md`).
    fn encode_entry(e: &openraft::Entry<Self>) -> Result<Vec<u8>, String> {
        serde_json::to_vec(e).map_err(|e| e.to_string())
    }

    fn decode_entry(b: &[u8]) -> Result<openraft::Entry<Self>, String> {
        serde_json::from_slice(b).map_err(|e| e.to_string())
    }
}

openraft::declare_raft_types!(
    /// openraft's type configuration for the meta group.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = NodeAddr,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = ticks::TickAlignedRuntime,
);

type Raft = openraft::Raft<TypeConfig>;

/// Timing of the meta group.
#[derive(Debug, Clone)]
pub struct RaftOptions {
    /// How often the leader sends heartbeats (openraft sends them on its ticks,
    /// every 1.5 intervals).
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for the leader's lease (the upper bound)
    /// plus a random time in this range starts an election on its next tick. A
    /// new leader follows a leader's death within the sum of both bounds plus one
    /// tick and one round trip (at most about 2.6 s at the defaults).
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Number of applied entries after which a snapshot is taken and the log purged.
    pub snapshot_after_entries: u64,
    /// fsync the log on every append (off only for tests).
    pub fsync: bool,
    /// A WAL group snapshots after this many applied entries
    /// (`--cluster.wal-group.snapshot-entries`).
    pub group_snapshot_entries: u64,
    /// Size of a WAL group's log segments (`--cluster.wal-group.segment-size`).
    pub group_segment_size_bytes: u64,
    /// How often a WAL group's leader sends heartbeats
    /// (`--cluster.wal-group.heartbeat-interval`); its followers' election timeout
    /// is 4 to 6 times this (`group_timing`).
    pub group_heartbeat_interval_ms: u64,
}

/// Default of `--cluster.wal-group.snapshot-entries`.
pub const GROUP_SNAPSHOT_ENTRIES_DEFAULT: u64 = 20_000;
/// Default of `--cluster.wal-group.segment-size`: 32 MiB.
pub const GROUP_SEGMENT_SIZE_DEFAULT: u64 = 32 << 20;
/// Default of `--cluster.wal-group.heartbeat-interval`, in milliseconds. Slower
/// than the meta group's 150: every node is a voter of RF WAL groups, and their
/// heartbeats were most of an idle cluster's CPU, while a WAL group's failover
/// matters less (see `RaftOptions::group_timing`).
pub const GROUP_HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 400;

impl Default for RaftOptions {
    fn default() -> RaftOptions {
        RaftOptions {
            // Heartbeats every 600 ms (the ticks): a follower campaigns after
            // 1.5 to 2 s without a leader, so two or three of them missed; the
            // failure detector's leadership round each second reaches the
            // followers as a heartbeat too. The election timeout's lower bound
            // must stay above this (openraft checks it).
            heartbeat_interval_ms: 400,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            snapshot_after_entries: 1000,
            fsync: true,
            group_snapshot_entries: GROUP_SNAPSHOT_ENTRIES_DEFAULT,
            group_segment_size_bytes: GROUP_SEGMENT_SIZE_DEFAULT,
            group_heartbeat_interval_ms: GROUP_HEARTBEAT_INTERVAL_MS_DEFAULT,
        }
    }
}

impl RaftOptions {
    /// How a Raft log (the meta group's or a WAL group's) is fsynced: on every
    /// append, or never when `fsync` is off (tests).
    pub fn log_fsync(&self) -> crate::wal::FsyncPolicy {
        if self.fsync {
            crate::wal::FsyncPolicy::Always
        } else {
            crate::wal::FsyncPolicy::Never
        }
    }

    /// A WAL group's heartbeat interval and election timeout range, in
    /// milliseconds: the heartbeat `group_heartbeat_interval_ms` (at least 10),
    /// elections after 4 to 6 heartbeat intervals without a leader. They apply
    /// when the timers run: a group led by its owner sends no timer heartbeats
    /// and its followers campaign only once no live member says it leads
    /// (`repair::group_timers`).
    pub fn group_timing(&self) -> (u64, u64, u64) {
        let hb = self.group_heartbeat_interval_ms.max(10);
        (hb, hb * 4, hb * 6)
    }
}

/// A request to the meta group failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RaftOpError {
    #[error("this node is not the leader (leader: {})", .leader.as_ref().map_or("unknown".to_string(), |(id, a)| format!("node {id} at {a}")))]
    NotLeader { leader: Option<(NodeId, NodeAddr)> },
    #[error("raft: {0}")]
    Rejected(String),
    #[error("raft is stopped: {0}")]
    Fatal(String),
    #[error("raft storage in {path}: {reason}")]
    Storage { path: String, reason: String },
}

fn write_err(e: RaftError<Nid, ClientWriteError<Nid, NodeAddr>>) -> RaftOpError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => RaftOpError::NotLeader {
            leader: f.leader_id.zip(f.leader_node),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            RaftOpError::Rejected(c.to_string())
        }
        RaftError::Fatal(f) => RaftOpError::Fatal(f.to_string()),
    }
}

/// A Raft server state, as the status API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RaftRole {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

impl RaftRole {
    pub fn as_str(self) -> &'static str {
        match self {
            RaftRole::Leader => "leader",
            RaftRole::Follower => "follower",
            RaftRole::Candidate => "candidate",
            RaftRole::Learner => "learner",
            RaftRole::Shutdown => "shutdown",
        }
    }
}

/// This node's view of the group, from openraft's metrics.
#[derive(Debug, Clone)]
pub struct RaftView {
    pub node_id: NodeId,
    pub role: RaftRole,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    /// The effective membership (which may not be committed yet).
    pub voters: BTreeSet<NodeId>,
    pub nodes: BTreeMap<NodeId, NodeAddr>,
}

/// The running meta group on this node.
#[derive(Clone)]
pub struct MetaRaft {
    node_id: NodeId,
    raft: Raft,
    sm: Arc<RwLock<SmData>>,
}

impl MetaRaft {
    /// Opens the log and state machine in `dir` and starts Raft. A node whose log
    /// holds a membership rejoins its group; a fresh node waits to be initialized or
    /// added.
    pub async fn open(
        dir: &Path,
        node_id: NodeId,
        opts: &RaftOptions,
    ) -> Result<MetaRaft, RaftOpError> {
        let storage_err = |reason: String| RaftOpError::Storage {
            path: dir.display().to_string(),
            reason,
        };
        let fsync = opts.log_fsync();
        let wal_opts = LogOptions {
            fsync,
            segment_size_bytes: 16 << 20,
            repair: false,
            preallocate_bytes: fsync.preallocate_bytes(),
        };
        let log = LogStore::<TypeConfig>::open(&dir.join("raft"), wal_opts)
            .map_err(|e| storage_err(e.to_string()))?;
        let sm = StateMachine::open(&dir.join("state")).map_err(|e| storage_err(e.to_string()))?;
        let shared = sm.shared();
        let config = Config {
            cluster_name: "hearth-meta".to_string(),
            heartbeat_interval: opts.heartbeat_interval_ms,
            election_timeout_min: opts.election_timeout_min_ms,
            election_timeout_max: opts.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(opts.snapshot_after_entries),
            max_in_snapshot_log_to_keep: 100,
            // Below tonic's 4 MiB message limit.
            snapshot_max_chunk_size: 1 << 20,
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| RaftOpError::Rejected(e.to_string()))?,
        );
        let raft = Raft::new(node_id, config, network::Network::meta(), log, sm)
            .await
            .map_err(|e| RaftOpError::Fatal(e.to_string()))?;
        Ok(MetaRaft {
            node_id,
            raft,
            sm: shared,
        })
    }

    /// The gRPC service peers send Raft RPCs to.
    pub fn service(&self) -> pb::raft_server::RaftServer<RaftService> {
        pb::raft_server::RaftServer::new(RaftService::new(self.raft.clone()))
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Whether this node's log holds a membership (it has been part of a group).
    pub async fn is_initialized(&self) -> Result<bool, RaftOpError> {
        self.raft
            .is_initialized()
            .await
            .map_err(|e| RaftOpError::Fatal(e.to_string()))
    }

    /// Forms a new group with `members` as voters. Fails when this node already
    /// belongs to one.
    pub async fn initialize(&self, members: BTreeMap<NodeId, NodeAddr>) -> Result<(), RaftOpError> {
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                Err(RaftOpError::Rejected(format!("cannot initialize: {e}")))
            }
            Err(RaftError::APIError(InitializeError::NotInMembers(e))) => {
                Err(RaftOpError::Rejected(format!("cannot initialize: {e}")))
            }
            Err(RaftError::Fatal(f)) => Err(RaftOpError::Fatal(f.to_string())),
        }
    }

    /// Adds `id` as a learner and waits until it has caught up with the log.
    /// Adding a known learner again updates nothing and succeeds.
    pub async fn add_learner(&self, id: NodeId, addr: NodeAddr) -> Result<(), RaftOpError> {
        self.raft
            .add_learner(id, addr, true)
            .await
            .map_err(write_err)?;
        Ok(())
    }

    /// Makes the learner `id` a voter.
    pub async fn add_voter(&self, id: NodeId) -> Result<(), RaftOpError> {
        let ids: BTreeSet<NodeId> = [id].into();
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(ids), false)
            .await
            .map_err(write_err)?;
        Ok(())
    }

    /// Removes `id` from the group (as voter and as learner).
    pub async fn remove(&self, id: NodeId) -> Result<(), RaftOpError> {
        let ids: BTreeSet<NodeId> = [id].into();
        let view = self.view();
        if view.voters.contains(&id) {
            if view.voters.len() == 1 {
                return Err(RaftOpError::Rejected(format!(
                    "node {id} is the last voter; a cluster cannot remove its last voter"
                )));
            }
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(ids.clone()), false)
                .await
                .map_err(write_err)?;
        }
        self.raft
            .change_membership(ChangeMembers::RemoveNodes(ids), false)
            .await
            .map_err(write_err)?;
        Ok(())
    }

    /// Proposes a command and waits until it is committed and applied here.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, RaftOpError> {
        let resp = self.raft.client_write(cmd).await.map_err(write_err)?;
        Ok(resp.data)
    }

    /// This node's view of the group right now.
    pub fn view(&self) -> RaftView {
        let m = self.raft.metrics().borrow().clone();
        let role = role_of(m.state);
        let membership = m.membership_config.membership();
        RaftView {
            node_id: self.node_id,
            role,
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied_index: m.last_applied.map(|l| l.index),
            voters: membership.voter_ids().collect(),
            nodes: membership.nodes().map(|(id, n)| (*id, n.clone())).collect(),
        }
    }

    /// Confirms that this node still leads: a majority of the voters answered a
    /// heartbeat sent by this call. Fails when it does not lead or cannot reach a
    /// majority (it may then wait for a while: callers bound it with a timeout).
    pub async fn confirm_leadership(&self) -> Result<(), RaftOpError> {
        match self.raft.get_read_log_id().await {
            Ok(_) => Ok(()),
            Err(RaftError::Fatal(f)) => Err(RaftOpError::Fatal(f.to_string())),
            Err(RaftError::APIError(e)) => Err(RaftOpError::Rejected(e.to_string())),
        }
    }

    /// A watch of this node's view that wakes on each later change of what the
    /// view shows (role, leader, term, log, applied entries, membership). Keep it
    /// across waits so no change is missed.
    pub fn watch(&self) -> RaftWatch {
        let mut full = self.raft.metrics();
        let mut server = self.raft.server_metrics();
        let mut data = self.raft.data_metrics();
        // Fresh clones of openraft's receivers have not seen the current values;
        // mark them seen, or the first wait returns at once (and a loop would spin).
        server.borrow_and_update();
        data.borrow_and_update();
        let seen = WatchKey::of(&full.borrow_and_update());
        RaftWatch {
            full,
            server,
            data,
            seen,
        }
    }

    /// This node's role right now (what `view().role` says, without copying the
    /// membership).
    pub fn role(&self) -> RaftRole {
        role_of(self.raft.metrics().borrow().state)
    }
}

fn role_of(state: ServerState) -> RaftRole {
    match state {
        ServerState::Leader => RaftRole::Leader,
        ServerState::Follower => RaftRole::Follower,
        ServerState::Candidate => RaftRole::Candidate,
        ServerState::Learner => RaftRole::Learner,
        ServerState::Shutdown => RaftRole::Shutdown,
    }
}

/// Waits for changes of a node's view (`MetaRaft::watch`).
///
/// openraft publishes its full metrics after every turn of its loop: a
/// follower's with each heartbeat, a leader's with each heartbeat's replication
/// progress. Waking the node's watchers (which read the whole view and the
/// cluster state) for those would cost every heartbeat a wake-up of each of them.
/// It publishes its server metrics (role, vote, leader, membership) and data
/// metrics (log, applied entries) only when they change, in the same turn just
/// before the full metrics; a watch sleeps on those two and then reads the full
/// metrics, which the view is made of.
pub struct RaftWatch {
    full: tokio::sync::watch::Receiver<openraft::RaftMetrics<Nid, NodeAddr>>,
    server: tokio::sync::watch::Receiver<openraft::metrics::RaftServerMetrics<Nid, NodeAddr>>,
    data: tokio::sync::watch::Receiver<openraft::metrics::RaftDataMetrics<Nid>>,
    seen: WatchKey,
}

/// What of openraft's metrics a `RaftWatch` wakes for.
#[derive(Clone, Copy, PartialEq, Eq)]
struct WatchKey {
    state: ServerState,
    leader: Option<Nid>,
    term: u64,
    last_log_index: Option<u64>,
    applied: Option<openraft::LogId<Nid>>,
    membership: Option<openraft::LogId<Nid>>,
}

impl WatchKey {
    fn of(m: &openraft::RaftMetrics<Nid, NodeAddr>) -> WatchKey {
        WatchKey {
            state: m.state,
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            applied: m.last_applied,
            membership: *m.membership_config.log_id(),
        }
    }
}

impl RaftWatch {
    /// Waits until the view changed since the last wait (or since the watch was
    /// made), or `timeout` passes.
    pub async fn changed(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let key = WatchKey::of(&self.full.borrow_and_update());
            if key != self.seen {
                self.seen = key;
                return;
            }
            let woke = tokio::select! {
                r = self.server.changed() => r,
                r = self.data.changed() => r,
                _ = tokio::time::sleep_until(deadline) => return,
            };
            if woke.is_err() {
                // Raft stopped: nothing will change; wait out the timeout rather
                // than return at once to a caller that loops.
                tokio::time::sleep_until(deadline).await;
                return;
            }
            self.server.borrow_and_update();
            self.data.borrow_and_update();
            // The full metrics of the same turn follow at once; wait for them
            // unless they came already (then the loop sees them).
            if WatchKey::of(&self.full.borrow()) == self.seen {
                match tokio::time::timeout_at(deadline, self.full.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => {
                        tokio::time::sleep_until(deadline).await;
                        return;
                    }
                    Err(_) => return,
                }
            }
        }
    }
}

impl MetaRaft {
    /// The committed cluster state as applied on this node.
    pub fn state(&self) -> ClusterState {
        self.sm.read().state.clone()
    }

    /// `f` of the committed cluster state, read in place (no copy).
    pub fn with_state<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        f(&self.sm.read().state)
    }

    /// Stops Raft.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}
