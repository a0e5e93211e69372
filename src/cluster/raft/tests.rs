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
