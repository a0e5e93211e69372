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
