//! The TSDB passes the storage seams' conformance suite.

use hearth::storage::{conformance, Appendable, Appender, Querier, Queryable, StorageError};
use hearth::tsdb::db::{Db, DbOptions};
use hearth::wal::{FsyncPolicy, LogOptions};

/// A database in a temporary directory that lives as long as it does.
struct TempDb {
    db: Db,
    _dir: tempfile::TempDir,
}

impl Appendable for TempDb {
    fn appender(&self) -> Box<dyn Appender> {
        self.db.appender()
    }
}

impl Queryable for TempDb {
    fn querier(&self, mint: i64, maxt: i64) -> Result<Box<dyn Querier>, StorageError> {
        self.db.querier(mint, maxt)
    }
}

#[test]
fn tsdb_passes_the_storage_conformance_suite() {
    conformance::run_all(&|| {
        let dir = tempfile::tempdir().unwrap();
        let opts = DbOptions {
            wal: LogOptions {
                fsync: FsyncPolicy::Never,
                ..Default::default()
            },
            ..Default::default()
        };
        TempDb {
            db: Db::open(dir.path(), opts).unwrap(),
            _dir: dir,
        }
    });
}
