//! WAL replication in cluster mode: which nodes replicate which WAL group
//! (`group_voters`), the `storage::Appendable` every writer uses
//! (`ReplicatedAppendable`: one batch per commit, one entry of this node's group,
//! acknowledged once a quorum has it on disk), the loop that forms this node's group
//! (`run_group_setup`), and the local read side (`LocalGroups`: every group TSDB
//! this node holds, merged).
//!
//! A node appends to its own group. When another replica leads that group (this node
//! restarted and the group elected a new leader meanwhile), the batch is forwarded
//! to that leader over the `WalGroups.Write` RPC; leadership is not taken back.

use super::query_service::GroupedStorage;
use super::raft::group::{
    forward_write, BatchSlots, GroupWriteError, SlotRef, WalGroup, WalGroups,
};
use super::ring::Ring;
use super::runtime::Cluster;
use super::state::{NodeAddr, NodeId};
use super::wal_batch::{self, BatchSamples, BatchSeries};
use crate::fxhash::HashMap as FxHashMap;
use crate::labels::{Labels, Matcher};
use crate::storage::check_order;
use crate::storage::{
    merge_series_sets, AppendError, Appendable, Appender, Querier, Queryable, Sample, SelectHints,
    SeriesRef, SeriesSet, StorageError,
};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// `--cluster.replication-factor`'s default.
pub const REPLICATION_FACTOR_DEFAULT: usize = 3;
/// How long a commit waits for its batch to be committed (including forwarding
/// and waiting for an election) before it fails as unavailable.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between attempts while a group has no known leader.
const LEADER_RETRY: Duration = Duration::from_millis(100);
/// How often the setup loop checks whether this node's group must be formed.
const SETUP_INTERVAL: Duration = Duration::from_millis(500);

/// The ring key of WAL group `group` (the id of the node it belongs to).
pub fn group_key(group: u64) -> String {
    format!("wal-group/{group}")
}

/// The voters of the WAL group of node `owner`: the owner and the next `rf - 1`
/// distinct members after it on the ring, in that order. `rf` is capped by the
/// number of members; an owner that is no member gets a group of its own.
pub fn group_voters(ring: &Ring, owner: NodeId, rf: usize) -> Vec<NodeId> {
    let key = group_key(owner);
    let mut out = vec![owner];
    for id in ring.successors(key.as_bytes(), ring.members().len()) {
        if out.len() >= rf.max(1) {
            break;
        }
        if id != owner {
            out.push(id);
        }
    }
    out
}

/// Forms this node's WAL group once the committed state knows its voters, then
/// returns. A group that exists already (a restart) is left as it is: its leader's
/// reconciler (`repair`) changes replica sets after membership changes.
pub async fn run_group_setup(
    cluster: Cluster,
    groups: WalGroups,
    rf: usize,
    shutdown: CancellationToken,
) {
    let me = cluster.node_id();
    loop {
        match setup_once(&cluster, &groups, me, rf).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::warn!(group = me, error = %e, "forming this node's WAL group"),
        }
        tokio::select! {
            _ = tokio::time::sleep(SETUP_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One attempt: `Ok(true)` once the group exists.
async fn setup_once(
    cluster: &Cluster,
    groups: &WalGroups,
    me: NodeId,
    rf: usize,
) -> Result<bool, String> {
    let g = groups.get_or_open(me).await.map_err(|e| e.to_string())?;
    if g.is_initialized().await.map_err(|e| e.to_string())? {
        return Ok(true);
    }
    let state = cluster.state();
    if !state.members.contains_key(&me) {
        return Ok(false);
    }
    let ring =
        Ring::new(state.members.keys().copied(), state.ring_epoch).map_err(|e| e.to_string())?;
    let voters = group_voters(&ring, me, rf);
    let mut nodes: BTreeMap<NodeId, NodeAddr> = BTreeMap::new();
    for id in &voters {
        let Some(m) = state.members.get(id) else {
            return Ok(false);
        };
        if m.addr.grpc_address.is_empty() {
            return Ok(false);
        }
        nodes.insert(*id, m.addr.clone());
    }
    let formed = g.initialize(nodes).await.map_err(|e| e.to_string())?;
    if formed {
        tracing::info!(group = me, voters = ?voters, "formed this node's WAL group");
    }
    Ok(true)
}

/// The `Appendable` writers use in cluster mode: each commit becomes one entry of
/// this node's WAL group (`docs/format/wal-group-entry.md`).
pub struct ReplicatedAppendable {
    groups: WalGroups,
    node_id: NodeId,
    /// Where the commits' async work runs: commits come from blocking threads.
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    /// Append-to-commit latencies, for `/metrics` and the replication test.
    stats: Arc<CommitStats>,
}

/// Upper bounds (seconds) of the append-to-commit latency histogram's buckets.
const COMMIT_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counters and a latency histogram of commits through the replicated appender.
#[derive(Debug, Default)]
pub struct CommitStats {
    pub commits: AtomicU64,
    pub failures: AtomicU64,
    /// Commits refused because a sample was out of order, a duplicate with
    /// another value or out of bounds (nothing logged).
    pub refused: AtomicU64,
    pub forwarded: AtomicU64,
    /// Sum of commit latencies in µs.
    pub latency_us_sum: AtomicU64,
    /// Commits per `COMMIT_BUCKETS` bucket (not cumulative); the last counts
    /// those above the largest bound.
    latency_buckets: [AtomicU64; COMMIT_BUCKETS.len() + 1],
}

impl CommitStats {
    fn observe(&self, took: Duration) {
        self.commits.fetch_add(1, Relaxed);
        self.latency_us_sum
            .fetch_add(took.as_micros() as u64, Relaxed);
        let secs = took.as_secs_f64();
        let i = COMMIT_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(COMMIT_BUCKETS.len());
        self.latency_buckets[i].fetch_add(1, Relaxed);
    }

    /// `hearth_wal_commit_*` in the text exposition format.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let counters = [
            ("hearth_wal_commit_failures_total", "Commits that failed (no quorum within the timeout, storage errors).", &self.failures),
            ("hearth_wal_commit_refused_total", "Commits refused for an out-of-order, duplicate or out-of-bounds sample before logging.", &self.refused),
            ("hearth_wal_commit_forwarded_total", "Commit attempts forwarded to the leader of this node's WAL group.", &self.forwarded),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Relaxed)
            );
        }
        let name = "hearth_wal_commit_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Append-to-commit latency of this node's appends (a quorum has the entry on disk).\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in COMMIT_BUCKETS.iter().enumerate() {
            cumulative += self.latency_buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.commits.load(Relaxed);
        let sum = self.latency_us_sum.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
        );
        out
    }
}

impl ReplicatedAppendable {
    /// Must be called inside a tokio runtime, which then runs the commits.
    pub fn new(groups: WalGroups, node_id: NodeId, timeout: Duration) -> ReplicatedAppendable {
        ReplicatedAppendable {
            groups,
            node_id,
            runtime: tokio::runtime::Handle::current(),
            timeout,
            stats: Arc::new(CommitStats::default()),
        }
    }

    pub fn stats(&self) -> Arc<CommitStats> {
        self.stats.clone()
    }
}

impl ReplicatedAppendable {
    fn new_appender(&self, whole_batches: bool) -> ReplicatedAppender {
        let local = self.groups.get(self.node_id);
        // The leader checks every sample of the batch before logging it
        // (`WalGroup::write`); for a writer that refuses whole batches anyway,
        // checking them here too when this node leads would do it twice.
        let check_local = !(whole_batches && local.as_ref().is_some_and(WalGroup::leads));
        ReplicatedAppender {
            groups: self.groups.clone(),
            node_id: self.node_id,
            runtime: self.runtime.clone(),
            timeout: self.timeout,
            stats: self.stats.clone(),
            slot_group: local.clone(),
            local: local.filter(|_| check_local),
            series: Vec::new(),
            slot_generation: None,
            slots: Vec::new(),
            by_slot: FxHashMap::default(),
            by_labels: None,
        }
    }
}

impl Appendable for ReplicatedAppendable {
    fn appender(&self) -> Box<dyn Appender> {
        Box::new(self.new_appender(false))
    }

    /// Like `appender`, but when this node leads its group, samples are not
    /// checked against its replica in `append`: the leader's check of the whole
    /// batch at commit refuses them instead, with the same `AppendError`.
    fn batch_appender(&self) -> Box<dyn Appender> {
        Box::new(self.new_appender(true))
    }
}

/// One transaction: samples are buffered by series until `commit`.
struct ReplicatedAppender {
    groups: WalGroups,
    node_id: NodeId,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    stats: Arc<CommitStats>,
    /// This node's replica of its group, which `append` checks samples against
    /// (None until the group is opened, or for a batch appender on the leader:
    /// then only the leader checks, at commit).
    local: Option<WalGroup>,
    /// This node's replica of its group, whose admission slots name the series
    /// (the refs `append` returns), so the leader admits them without a lookup.
    slot_group: Option<WalGroup>,
    series: Vec<BatchSeries>,
    /// The admission slot of each series in `series`, all of generation
    /// `slot_generation`, while `by_labels` is None.
    slot_generation: Option<u32>,
    slots: Vec<u32>,
    /// Slot → position in `series`.
    by_slot: FxHashMap<u32, usize>,
    /// Labels → position in `series`: once a slot's generation ended during
    /// the batch, or without a group to name slots in.
    by_labels: Option<FxHashMap<Labels, usize>>,
}

impl ReplicatedAppender {
    /// The position of `labels` in `series` (pushed when new) and the ref to
    /// return for it.
    fn position(&mut self, series_ref: SeriesRef, labels: &Labels) -> (usize, SeriesRef) {
        let slot = self
            .slot_group
            .as_ref()
            .map(|g| g.slot_of(series_ref, labels));
        let new_ref = slot.map_or(0, |r| r.series_ref());
        if self.by_labels.is_none() {
            if let Some(i) = slot.and_then(|r| self.position_by_slot(r, labels)) {
                return (i, new_ref);
            }
            let by_labels = self
                .series
                .iter()
                .enumerate()
                .map(|(i, s)| (s.labels.clone(), i))
                .collect();
            self.by_labels = Some(by_labels);
        }
        let index = self.by_labels.get_or_insert_with(FxHashMap::default);
        let i = *index.entry(labels.clone()).or_insert_with(|| {
            self.series.push(BatchSeries {
                labels: labels.clone(),
                samples: BatchSamples::new(),
            });
            self.series.len() - 1
        });
        (i, new_ref)
    }

    /// The position of the series in slot `r` (pushed when new), or None when
    /// `r` is of another generation than the batch's slots, or its slot holds
    /// other labels in the batch.
    fn position_by_slot(&mut self, r: SlotRef, labels: &Labels) -> Option<usize> {
        if *self.slot_generation.get_or_insert(r.generation) != r.generation {
            return None;
        }
        match self.by_slot.get(&r.slot) {
            Some(&i) => {
                let l = &self.series[i].labels;
                (l.ptr_eq(labels) || l == labels).then_some(i)
            }
            None => {
                self.by_slot.insert(r.slot, self.series.len());
                self.slots.push(r.slot);
                self.series.push(BatchSeries {
                    labels: labels.clone(),
                    samples: BatchSamples::new(),
                });
                Some(self.series.len() - 1)
            }
        }
    }
}

impl Appender for ReplicatedAppender {
    fn append(
        &mut self,
        series_ref: SeriesRef,
        labels: &Labels,
        t: i64,
        v: f64,
    ) -> Result<SeriesRef, AppendError> {
        if labels.is_empty() {
            return Err(AppendError::InvalidLabels(labels.to_string()));
        }
        let (i, new_ref) = self.position(series_ref, labels);
        let s = &mut self.series[i];
        // A sample is checked against the one before it in this batch, or else
        // against what this node's replica of its group holds (the same check as
        // a TSDB append), so refusals come here, one by one. The group's leader
        // checks the batch again before logging it (this replica may lag it, and
        // other batches may be in flight): then the whole commit is refused.
        let append = match s.samples.last() {
            Some(last) => check_order(Some((last.t, last.v.to_bits())), t, v)?,
            None => match &self.local {
                Some(g) => g.check_sample(labels, t, v)?,
                None => true,
            },
        };
        if append {
            s.samples.push(Sample { t, v });
        }
        // A ref names the series' slot in this node's replica of its group; the
        // group's other replicas number them their own way.
        Ok(new_ref)
    }

    fn commit(self: Box<Self>) -> Result<(), AppendError> {
        if self.series.iter().all(|s| s.samples.is_empty()) {
            return Ok(());
        }
        let started = Instant::now();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (groups, me, timeout, stats) = (
            self.groups.clone(),
            self.node_id,
            self.timeout,
            self.stats.clone(),
        );
        let slots = match (self.slot_generation, &self.by_labels) {
            (Some(generation), None) => Some((generation, self.slots)),
            _ => None,
        };
        let series = self.series;
        self.runtime.spawn(async move {
            let slots = slots.as_ref().map(|(generation, slots)| BatchSlots {
                generation: *generation,
                slots,
            });
            let r = commit_to_group(&groups, me, &series, slots, timeout, &stats).await;
            let _ = tx.send(r);
        });
        let result = match rx.recv_timeout(self.timeout + Duration::from_secs(1)) {
            Ok(r) => r,
            Err(_) => Err(AppendError::Unavailable(format!(
                "WAL group {me}: not committed within {timeout:?}"
            ))),
        };
        match &result {
            Ok(()) => self.stats.observe(started.elapsed()),
            Err(
                AppendError::OutOfOrder
                | AppendError::DuplicateSampleForTimestamp
                | AppendError::OutOfBounds,
            ) => {
                self.stats.refused.fetch_add(1, Relaxed);
            }
            Err(_) => {
                self.stats.failures.fetch_add(1, Relaxed);
            }
        }
        result
    }

    fn rollback(self: Box<Self>) {}
}

/// Commits `series` to group `me`: locally when this node leads it, else through
/// its leader (as a self-contained batch: the leader names the series by id when
/// it logs them); retries while the group has no leader, until `timeout`.
async fn commit_to_group(
    groups: &WalGroups,
    me: NodeId,
    series: &[BatchSeries],
    slots: Option<BatchSlots<'_>>,
    timeout: Duration,
    stats: &CommitStats,
) -> Result<(), AppendError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let unavailable = |why: String| AppendError::Unavailable(format!("WAL group {me}: {why}"));
    let mut batch: Option<Vec<u8>> = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(unavailable(format!("not committed within {timeout:?}")));
        }
        // Right after the cluster formed, the group may not exist yet: the setup
        // loop forms it within moments, so wait for it like for an election.
        let leader = groups.get(me).and_then(|g| g.leader().map(|l| (g, l)));
        let result = match leader {
            Some((_, (id, addr))) if id != me => {
                stats.forwarded.fetch_add(1, Relaxed);
                forward_write(
                    groups.peer_channels(),
                    &addr.grpc_address,
                    me,
                    batch
                        .get_or_insert_with(|| wal_batch::encode(series))
                        .clone(),
                    left,
                )
                .await
            }
            Some((g, _)) => g.write_slotted(series, slots, left).await,
            None => Err(GroupWriteError::NotLeader {
                group: me,
                leader: None,
            }),
        };
        match result {
            Ok(_) => return Ok(()),
            Err(GroupWriteError::Refused { error, .. }) => return Err(error),
            Err(GroupWriteError::Timeout { .. }) => {
                return Err(unavailable(format!(
                    "not committed within {timeout:?} (no quorum?)"
                )))
            }
            Err(e @ GroupWriteError::Unconfirmed { .. }) => {
                return Err(AppendError::Unavailable(e.to_string()))
            }
            // The leader moved or is being elected: ask again shortly. A forwarded
            // write that failed in transport may have been committed anyway; the
            // retry then appends the same samples again, which apply drops as
            // duplicates.
            Err(GroupWriteError::NotLeader { .. }) | Err(GroupWriteError::Fatal { .. }) => {
                tokio::time::sleep(LEADER_RETRY.min(left)).await;
            }
        }
    }
}

/// Every group TSDB this node holds as a voter (and the node's own pre-cluster
/// `Db`), read as one: the local side of the fan-out in cluster mode. Cheap to
/// clone.
#[derive(Clone)]
pub struct LocalGroups {
    groups: WalGroups,
    /// The node's own TSDB, which holds what was written before cluster mode.
    base: Arc<dyn Queryable>,
}

impl LocalGroups {
    pub fn new(groups: WalGroups, base: Arc<dyn Queryable>) -> LocalGroups {
        LocalGroups { groups, base }
    }

    /// The ids of the groups this node is a voter of, with the last log index
    /// this node's replica of each applied. A learner still catching up (or a
    /// replica not yet told its membership) is not read from: its copy may lack
    /// what the group committed.
    pub fn held_applied(&self) -> BTreeMap<u64, u64> {
        self.voter_groups()
            .iter()
            .map(|g| (g.id(), g.applied_index()))
            .collect()
    }

    fn voter_groups(&self) -> Vec<WalGroup> {
        self.groups
            .all()
            .into_iter()
            .filter(WalGroup::is_voter)
            .collect()
    }
}

#[tonic::async_trait]
impl GroupedStorage for LocalGroups {
    async fn querier_for_groups(
        &self,
        mint: i64,
        maxt: i64,
        groups: &[u64],
    ) -> Result<Box<dyn Querier>, StorageError> {
        let mut parts = vec![self.base.querier(mint, maxt)?];
        let me = self.groups.node_id();
        for id in groups {
            match self.groups.get(*id) {
                Some(g) if g.is_voter() => parts.push(g.db().querier(mint, maxt)?),
                // This node's own group, opened but not formed yet (the cluster has
                // just formed and `run_group_setup` is about to): only the owner
                // forms its group, so no replica anywhere holds an entry of it and
                // the answer is nothing, not a missing replica. The read plan asks
                // the owner for a group nobody holds as a voter yet. Formed just
                // now, Raft has this node as a voter before its metrics show it.
                Some(g) if *id == me => {
                    if !formed(&g).await? {
                        continue;
                    }
                    let voter = g
                        .is_voter_now()
                        .await
                        .map_err(|e| StorageError::Other(format!("WAL group {}: {e}", g.id())))?;
                    if !voter {
                        return Err(not_held(*id));
                    }
                    parts.push(g.db().querier(mint, maxt)?);
                }
                // This node's own group, not even opened yet: the same, once the
                // groups this node held before a restart are all open (before that
                // its replica may exist on disk, unread).
                None if *id == me && self.groups.existing_opened() => continue,
                _ => return Err(not_held(*id)),
            }
        }
        Ok(Box::new(MergeQuerier { parts }))
    }
}

fn not_held(id: u64) -> StorageError {
    StorageError::Other(format!(
        "WAL group {id}: this node holds no voting replica of it (the replica moved)"
    ))
}

/// Whether `g`'s replica has ever had a membership (was formed here or joined).
/// Asked of Raft itself, not its published metrics, which may still show no
/// membership for a moment after a restart reopens a formed group.
async fn formed(g: &WalGroup) -> Result<bool, StorageError> {
    g.is_initialized()
        .await
        .map_err(|e| StorageError::Other(format!("WAL group {}: {e}", g.id())))
}

impl Queryable for LocalGroups {
    fn querier(&self, mint: i64, maxt: i64) -> Result<Box<dyn Querier>, StorageError> {
        let mut parts = vec![self.base.querier(mint, maxt)?];
        for g in self.voter_groups() {
            parts.push(g.db().querier(mint, maxt)?);
        }
        Ok(Box::new(MergeQuerier { parts }))
    }
}

/// Several queriers read as one; series with equal labels merged in time.
struct MergeQuerier {
    parts: Vec<Box<dyn Querier>>,
}

fn union(lists: Vec<Vec<String>>) -> Vec<String> {
    let mut all: Vec<String> = lists.into_iter().flatten().collect();
    all.sort();
    all.dedup();
    all
}

impl Querier for MergeQuerier {
    fn select(&self, hints: &SelectHints, matchers: &[Matcher]) -> Result<SeriesSet, StorageError> {
        let sets = self
            .parts
            .iter()
            .map(|p| p.select(hints, matchers))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(merge_series_sets(sets))
    }

    fn label_values(&self, name: &str, matchers: &[Matcher]) -> Result<Vec<String>, StorageError> {
        let lists = self
            .parts
            .iter()
            .map(|p| p.label_values(name, matchers))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(union(lists))
    }

    fn label_names(&self, matchers: &[Matcher]) -> Result<Vec<String>, StorageError> {
        let lists = self
            .parts
            .iter()
            .map(|p| p.label_names(matchers))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(union(lists))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: right after a cluster formed, the read plan asked each owner
    /// for its own group, opened but not formed yet, and the owner answered "holds
    /// no voting replica of it (the replica moved)", a warning on the query.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_owner_asked_for_its_unformed_group_answers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let me = 2;
        let groups = WalGroups::new(
            &dir.path().join("groups"),
            me,
            crate::cluster::raft::RaftOptions::default(),
            crate::tsdb::db::DbOptions::default(),
        );
        let base: Arc<dyn Queryable> = Arc::new(crate::storage::memory::MemStorage::new());
        let local = LocalGroups::new(groups.clone(), base);
        let read = |q: Box<dyn Querier>| {
            let hints = SelectHints {
                start_ms: 0,
                end_ms: 10,
                series_only: false,
                newest_only: false,
            };
            let m = [Matcher::new(crate::labels::MatchType::Regexp, "__name__", ".+").unwrap()];
            q.select(&hints, &m).unwrap().count()
        };

        // Not opened yet, and the groups held before a restart are not all open
        // yet either: this node's replica may be on disk, unread.
        let e = local.querier_for_groups(0, 10, &[me]).await.err().unwrap();
        assert!(e.to_string().contains("no voting replica"), "{e}");
        // Once they are, a group not opened was never formed: nothing in it.
        groups.open_existing().await.unwrap();
        let q = local.querier_for_groups(0, 10, &[me]).await.unwrap();
        assert_eq!(read(q), 0);
        let e = local.querier_for_groups(0, 10, &[3]).await.err().unwrap();
        assert!(e.to_string().contains("no voting replica"), "{e}");

        groups.get_or_open(me).await.unwrap();
        let q = local.querier_for_groups(0, 10, &[me]).await.unwrap();
        assert_eq!(read(q), 0);
        // Read right after forming it, before Raft may have published this node
        // as its voter.
        let addr = NodeAddr {
            grpc_address: "127.0.0.1:1".into(),
            http_address: String::new(),
        };
        let own = groups.get(me).unwrap();
        assert!(own.initialize([(me, addr)].into()).await.unwrap());
        assert!(own.is_voter_now().await.unwrap());
        let q = local.querier_for_groups(0, 10, &[me]).await.unwrap();
        assert_eq!(read(q), 0);
        // Another node's group: a replica opened here and not formed (a learner
        // about to be caught up) may lack what the group committed.
        groups.get_or_open(3).await.unwrap();
        for id in [3, 4] {
            let e = local.querier_for_groups(0, 10, &[id]).await.err().unwrap();
            assert!(e.to_string().contains("no voting replica"), "{e}");
        }
        groups.shutdown().await;
    }

    /// The refs a replicated appender returns name each series' admission slot:
    /// samples appended with them go to their series, within a batch and
    /// across batches, also when the slots' generation ends between batches or
    /// in the middle of one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appended_series_are_named_by_their_admission_slots() {
        use crate::cluster::raft::group::tests::{one_voter_group, read_group, series};
        let dir = tempfile::tempdir().unwrap();
        let (groups, g) = one_voter_group(dir.path()).await;
        let store = ReplicatedAppendable::new(groups.clone(), 1, Duration::from_secs(10));
        let (a, b) = (series(0), series(1));
        let g2 = g.clone();
        tokio::task::spawn_blocking(move || {
            let mut app = store.batch_appender();
            let ra = app.append(0, &a, 1000, 1.0).unwrap();
            let rb = app.append(0, &b, 1000, 1.0).unwrap();
            assert!(ra != 0 && rb != 0 && ra != rb);
            assert_eq!(app.append(ra, &a, 2000, 2.0).unwrap(), ra);
            app.commit().unwrap();

            let mut app = store.batch_appender();
            assert_eq!(app.append(ra, &a, 3000, 3.0).unwrap(), ra);
            app.commit().unwrap();

            // The generation ends between batches: a's ref is renewed.
            g2.trim_admissions();
            let mut app = store.batch_appender();
            let ra2 = app.append(ra, &a, 4000, 4.0).unwrap();
            assert_ne!(ra2, ra);
            app.commit().unwrap();

            // ... and in the middle of one: b's stale ref after a's fresh one,
            // then a again.
            let mut app = store.batch_appender();
            assert_eq!(app.append(ra2, &a, 5000, 5.0).unwrap(), ra2);
            g2.trim_admissions();
            let rb2 = app.append(rb, &b, 5000, 5.0).unwrap();
            assert_ne!(rb2, rb);
            app.append(ra2, &a, 6000, 6.0).unwrap();
            // A sample older than one before it in the batch is refused.
            assert!(app.append(ra2, &a, 5500, 5.5).is_err());
            app.commit().unwrap();
        })
        .await
        .unwrap();
        let got = read_group(&g);
        assert_eq!(
            got[&series(0).to_string()],
            vec![1000, 2000, 3000, 4000, 5000, 6000]
        );
        assert_eq!(got[&series(1).to_string()], vec![1000, 5000]);
        groups.shutdown().await;
    }

    #[test]
    fn group_voters_are_the_owner_then_distinct_successors() {
        let ring = Ring::new([1, 2, 3, 4, 5], 1).unwrap();
        for owner in 1..=5 {
            let v = group_voters(&ring, owner, 3);
            assert_eq!(v.len(), 3);
            assert_eq!(v[0], owner);
            let mut d = v.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 3, "{v:?}");
            assert_eq!(v, group_voters(&ring, owner, 3), "deterministic");
        }
    }

    #[test]
    fn replication_factor_is_capped_by_the_cluster_size() {
        let ring = Ring::new([1, 2], 1).unwrap();
        let mut v = group_voters(&ring, 2, 3);
        v.sort();
        assert_eq!(v, vec![1, 2]);
        let one = Ring::new([7], 1).unwrap();
        assert_eq!(group_voters(&one, 7, 3), vec![7]);
    }
}
