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
use super::raft::group::{forward_write, GroupWriteError, WalGroup, WalGroups};
use super::ring::Ring;
use super::runtime::Cluster;
use super::state::{NodeAddr, NodeId};
use super::wal_batch::{self, BatchSeries};
use crate::labels::{Labels, Matcher};
use crate::storage::{
    merge_series_sets, AppendError, Appendable, Appender, Querier, Queryable, Sample, SelectHints,
    SeriesRef, SeriesSet, StorageError,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// Counters and a latency record of commits through the replicated appender.
#[derive(Debug, Default)]
pub struct CommitStats {
    pub commits: std::sync::atomic::AtomicU64,
    pub failures: std::sync::atomic::AtomicU64,
    pub forwarded: std::sync::atomic::AtomicU64,
    /// Sum of commit latencies in µs.
    pub latency_us_sum: std::sync::atomic::AtomicU64,
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

impl Appendable for ReplicatedAppendable {
    fn appender(&self) -> Box<dyn Appender> {
        Box::new(ReplicatedAppender {
            groups: self.groups.clone(),
            node_id: self.node_id,
            runtime: self.runtime.clone(),
            timeout: self.timeout,
            stats: self.stats.clone(),
            series: Vec::new(),
            index: HashMap::new(),
        })
    }
}

/// One transaction: samples are buffered by series until `commit`.
struct ReplicatedAppender {
    groups: WalGroups,
    node_id: NodeId,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    stats: Arc<CommitStats>,
    series: Vec<BatchSeries>,
    /// Position of each series in `series`.
    index: HashMap<Labels, usize>,
}

impl Appender for ReplicatedAppender {
    fn append(
        &mut self,
        _series_ref: SeriesRef,
        labels: &Labels,
        t: i64,
        v: f64,
    ) -> Result<SeriesRef, AppendError> {
        if labels.is_empty() {
            return Err(AppendError::InvalidLabels(labels.to_string()));
        }
        let i = match self.index.get(labels) {
            Some(i) => *i,
            None => {
                self.series.push(BatchSeries {
                    labels: labels.clone(),
                    samples: Vec::new(),
                });
                self.index.insert(labels.clone(), self.series.len() - 1);
                self.series.len() - 1
            }
        };
        let s = &mut self.series[i];
        // Order within the batch is checked here; order against what the group
        // already holds is checked when the batch is applied (the same on every
        // replica), where refused samples are dropped as a TSDB commit drops them.
        if let Some(last) = s.samples.last() {
            if t < last.t {
                return Err(AppendError::OutOfOrder);
            }
            if t == last.t {
                if last.v.to_bits() == v.to_bits() {
                    return Ok(0);
                }
                return Err(AppendError::DuplicateSampleForTimestamp);
            }
        }
        s.samples.push(Sample { t, v });
        // Series refs are not shared across the group's replicas; 0 means "look
        // the labels up again", which the buffer does by hash.
        Ok(0)
    }

    fn commit(self: Box<Self>) -> Result<(), AppendError> {
        if self.series.iter().all(|s| s.samples.is_empty()) {
            return Ok(());
        }
        let batch = wal_batch::encode(&self.series);
        let started = Instant::now();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (groups, me, timeout, stats) = (
            self.groups.clone(),
            self.node_id,
            self.timeout,
            self.stats.clone(),
        );
        self.runtime.spawn(async move {
            let r = commit_to_group(&groups, me, batch, timeout, &stats).await;
            let _ = tx.send(r);
        });
        let result = match rx.recv_timeout(self.timeout + Duration::from_secs(1)) {
            Ok(r) => r,
            Err(_) => Err(AppendError::Unavailable(format!(
                "WAL group {me}: not committed within {timeout:?}"
            ))),
        };
        use std::sync::atomic::Ordering::Relaxed;
        match &result {
            Ok(()) => {
                self.stats.commits.fetch_add(1, Relaxed);
                self.stats
                    .latency_us_sum
                    .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
            }
            Err(_) => {
                self.stats.failures.fetch_add(1, Relaxed);
            }
        }
        result
    }

    fn rollback(self: Box<Self>) {}
}

/// Commits `batch` to group `me`: locally when this node leads it, else through
/// its leader; retries while the group has no leader, until `timeout`.
async fn commit_to_group(
    groups: &WalGroups,
    me: NodeId,
    batch: Vec<u8>,
    timeout: Duration,
    stats: &CommitStats,
) -> Result<(), AppendError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let unavailable = |why: String| AppendError::Unavailable(format!("WAL group {me}: {why}"));
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
                stats
                    .forwarded
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                forward_write(&addr.grpc_address, me, batch.clone(), left).await
            }
            Some((g, _)) => g.write(batch.clone(), left).await,
            None => Err(GroupWriteError::NotLeader {
                group: me,
                leader: None,
            }),
        };
        match result {
            Ok(_) => return Ok(()),
            Err(GroupWriteError::Timeout { .. }) => {
                return Err(unavailable(format!(
                    "not committed within {timeout:?} (no quorum?)"
                )))
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

    /// The ids of the groups this node is a voter of. A learner still catching up
    /// (or a replica not yet told its membership) is not read from: its copy may
    /// lack what the group committed.
    pub fn held(&self) -> BTreeSet<u64> {
        self.voter_groups().iter().map(|g| g.id()).collect()
    }

    fn voter_groups(&self) -> Vec<WalGroup> {
        self.groups
            .all()
            .into_iter()
            .filter(WalGroup::is_voter)
            .collect()
    }
}

impl GroupedStorage for LocalGroups {
    fn querier_for_groups(
        &self,
        mint: i64,
        maxt: i64,
        groups: &[u64],
    ) -> Result<Box<dyn Querier>, StorageError> {
        let mut parts = vec![self.base.querier(mint, maxt)?];
        for id in groups {
            let Some(g) = self.groups.get(*id).filter(WalGroup::is_voter) else {
                return Err(StorageError::Other(format!(
                    "WAL group {id}: this node holds no voting replica of it (the replica moved)"
                )));
            };
            parts.push(g.db().querier(mint, maxt)?);
        }
        Ok(Box::new(MergeQuerier { parts }))
    }
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
