//! The log store and state machine against openraft's own storage test suite, and
//! durability across reopening.

use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::{Nid, TypeConfig};
use crate::wal::{FsyncPolicy, LogOptions};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

struct Builder;

fn wal_opts() -> LogOptions {
    LogOptions {
        fsync: FsyncPolicy::Never,
        // Small segments, so purging really deletes segment files.
        segment_size_bytes: 256,
        repair: false,
        // Zeros ahead of the records, so the suite runs over preallocated segments.
        preallocate_bytes: 100,
    }
}

impl StoreBuilder<TypeConfig, LogStore<TypeConfig>, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore<TypeConfig>, StateMachine), StorageError<Nid>> {
        let dir =
            tempfile::tempdir().map_err(|e| openraft::StorageIOError::<Nid>::read_logs(&e))?;
        let log = LogStore::<TypeConfig>::open(&dir.path().join("raft"), wal_opts())?;
        let sm = StateMachine::open(&dir.path().join("state"))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

/// A re-forming entry goes after the last entry, in a term above every term the
/// store has seen, with a vote for its node in that term; reopening keeps both.
#[tokio::test]
async fn append_as_new_term_follows_the_log_in_a_higher_term() {
    use openraft::storage::{RaftLogReader, RaftLogStorage};
    use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership, Vote};
    use std::collections::{BTreeMap, BTreeSet};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    let mut log = LogStore::<TypeConfig>::open(&path, wal_opts()).unwrap();
    log.save_vote(&Vote::new(7, 1)).await.unwrap();
    let voters: BTreeSet<Nid> = [2].into();
    let nodes: BTreeMap<Nid, crate::cluster::state::NodeAddr> =
        [(2, crate::cluster::state::NodeAddr::default())].into();
    // An empty log with a vote in term 7: the entry is the first one, in term 8.
    let id = log
        .append_as_new_term(
            2,
            EntryPayload::Membership(Membership::new(vec![voters.clone()], nodes.clone())),
        )
        .await
        .unwrap();
    assert_eq!(id, LogId::new(CommittedLeaderId::new(8, 2), 0));
    // Again: after the previous one, one term higher.
    let id2 = log
        .append_as_new_term(
            2,
            EntryPayload::Membership(Membership::new(vec![voters], nodes)),
        )
        .await
        .unwrap();
    assert_eq!(id2, LogId::new(CommittedLeaderId::new(9, 2), 1));
    drop(log);
    let mut log = LogStore::<TypeConfig>::open(&path, wal_opts()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(9, 2)));
    assert_eq!(log.get_log_state().await.unwrap().last_log_id, Some(id2));
    let entries = log.try_get_log_entries(0..2).await.unwrap();
    assert_eq!(entries.len(), 2);
    assert!(matches!(entries[1].payload, EntryPayload::Membership(_)));
}

/// The entries kept in memory after appending answer reads exactly as the files
/// would: past their bound, after a truncation and re-append in a new term, and
/// after a purge. Every read is compared with a fresh store opened on the same
/// files, which has nothing in memory.
#[tokio::test]
async fn reads_served_from_memory_match_the_files() {
    use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    let mut log = LogStore::<TypeConfig>::open(&path, wal_opts()).unwrap();
    let entry = |term: u64, index: u64| Entry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Blank,
    };
    let ids = |es: Vec<Entry<TypeConfig>>| -> Vec<(u64, u64)> {
        es.iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    };
    async fn same(
        log: &mut LogStore<TypeConfig>,
        path: &std::path::Path,
        range: std::ops::Range<u64>,
    ) -> Vec<Entry<TypeConfig>> {
        let from_memory = log.try_get_log_entries(range.clone()).await.unwrap();
        let mut fresh = LogStore::<TypeConfig>::open(path, wal_opts()).unwrap();
        let from_files = fresh.try_get_log_entries(range).await.unwrap();
        assert_eq!(from_memory, from_files);
        from_memory
    }
    // More entries than the tail keeps: old ones come from the files.
    log.blocking_append((0..300).map(|i| entry(1, i)))
        .await
        .unwrap();
    assert_eq!(ids(same(&mut log, &path, 0..300).await).len(), 300);
    assert_eq!(ids(same(&mut log, &path, 290..300).await)[0], (1, 290));
    // Truncate and append again in term 2: the old term-1 entries are gone.
    log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 295))
        .await
        .unwrap();
    log.blocking_append((295..298).map(|i| entry(2, i)))
        .await
        .unwrap();
    assert_eq!(
        ids(same(&mut log, &path, 293..300).await),
        vec![(1, 293), (1, 294), (2, 295), (2, 296), (2, 297)]
    );
    // Purged entries are not served, from memory or files.
    log.purge(LogId::new(CommittedLeaderId::new(2, 1), 296))
        .await
        .unwrap();
    assert_eq!(ids(same(&mut log, &path, 290..298).await), vec![(2, 297)]);
}

/// Every heartbeat interval `--cluster.wal-group.heartbeat-interval` allows (10 ms
/// to 10 s) gives WAL groups a timing openraft accepts, with elections only after
/// several missed heartbeats; the meta group's timing is not changed by it.
#[test]
fn wal_group_timing_is_valid_across_the_flag_range() {
    for hb in [10, 150, 400, 1000, 10_000] {
        let opts = super::RaftOptions {
            group_heartbeat_interval_ms: hb,
            ..Default::default()
        };
        let (heartbeat, min, max) = opts.group_timing();
        assert_eq!(heartbeat, hb);
        assert!(min >= 4 * heartbeat && max > min, "{hb}: {min}..{max}");
        let config = openraft::Config {
            heartbeat_interval: heartbeat,
            election_timeout_min: min,
            election_timeout_max: max,
            ..Default::default()
        };
        config
            .validate()
            .expect("openraft accepts the WAL group timing");
        let meta = super::RaftOptions::default();
        assert_eq!(
            (opts.heartbeat_interval_ms, opts.election_timeout_min_ms),
            (meta.heartbeat_interval_ms, meta.election_timeout_min_ms)
        );
    }
    // Below the flag's range the interval is raised to 10 ms, never 0.
    let zero = super::RaftOptions {
        group_heartbeat_interval_ms: 0,
        ..Default::default()
    };
    assert_eq!(zero.group_timing().0, 10);
    // The meta group's own defaults are valid too (openraft wants the election
    // timeout's lower bound above the heartbeat interval).
    let meta = super::RaftOptions::default();
    openraft::Config {
        heartbeat_interval: meta.heartbeat_interval_ms,
        election_timeout_min: meta.election_timeout_min_ms,
        election_timeout_max: meta.election_timeout_max_ms,
        ..Default::default()
    }
    .validate()
    .expect("openraft accepts the meta group's timing");
}

/// A `RaftWatch` wakes for what the view shows, not for every publication of
/// openraft's metrics (each turn of its loop, a tick included).
#[tokio::test]
async fn a_raft_watch_wakes_for_changes_of_the_view_not_for_every_tick() {
    use super::{MetaRaft, RaftOptions, RaftRole};
    use crate::cluster::state::{Command, NodeAddr};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let opts = RaftOptions {
        fsync: false,
        ..Default::default()
    };
    let raft = MetaRaft::open(dir.path(), 1, &opts).await.unwrap();
    raft.initialize([(1, NodeAddr::default())].into())
        .await
        .unwrap();
    let started = Instant::now();
    while raft.view().role != RaftRole::Leader {
        assert!(started.elapsed() < Duration::from_secs(10), "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the election's entries be applied, so the view is quiet.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut published = raft.raft.metrics();
    published.borrow_and_update();
    let mut watch = raft.watch();
    let t = Instant::now();
    watch.changed(Duration::from_millis(1200)).await;
    assert!(
        t.elapsed() >= Duration::from_millis(1150),
        "woke after {:?} with nothing changed",
        t.elapsed()
    );
    assert!(
        published.has_changed().unwrap(),
        "openraft published no metrics meanwhile: the wait proved nothing"
    );

    let proposer = {
        let raft = raft.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            raft.propose(Command::SetClusterId {
                cluster_id: "c".into(),
            })
            .await
        })
    };
    let t = Instant::now();
    watch.changed(Duration::from_secs(10)).await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "an applied entry did not wake the watch"
    );
    proposer.await.unwrap().unwrap();
    raft.shutdown().await;
}
