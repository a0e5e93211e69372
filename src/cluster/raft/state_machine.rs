//! The meta group's state machine: applies committed entries to a `ClusterState`
//! and snapshots it as JSON (`docs/format/cluster.md`). The latest snapshot is kept
//! in one file, replaced atomically, and restored on start.

use super::{Nid, TypeConfig};
use crate::cluster::state::{ClusterState, CommandResult, NodeAddr};
use crate::cluster::write_atomic;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogId, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The snapshot file in the state machine's directory.
const SNAPSHOT_FILE: &str = "snapshot.json";
/// Largest snapshot accepted from a leader or read from disk. The meta state is a
/// few hundred bytes per member.
const SNAPSHOT_BYTES_MAX: usize = 64 << 20;

/// Everything the state machine holds; also the snapshot's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SmData {
    pub last_applied: Option<LogId<Nid>>,
    pub last_membership: StoredMembership<Nid, NodeAddr>,
    pub state: ClusterState,
}

/// A snapshot on disk: its metadata and the serialized `SmData`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<Nid, NodeAddr>,
    data: Vec<u8>,
}

/// The state machine. Clones share the same state (the snapshot builder is a clone).
#[derive(Clone)]
pub struct StateMachine {
    dir: PathBuf,
    /// Read by the rest of the node (status, ring) without going through Raft.
    data: Arc<RwLock<SmData>>,
    current: Arc<RwLock<Option<SnapshotFile>>>,
}

fn snapshot_error(e: impl std::error::Error + 'static) -> StorageError<Nid> {
    StorageIOError::<Nid>::write_snapshot(None, &e).into()
}

impl StateMachine {
    /// Opens the state machine in `dir`, restoring the latest snapshot if there is one.
    pub fn open(dir: &Path) -> Result<StateMachine, StorageError<Nid>> {
        std::fs::create_dir_all(dir).map_err(|e| StorageIOError::<Nid>::read_snapshot(None, &e))?;
        let path = dir.join(SNAPSHOT_FILE);
        let (data, current) = match std::fs::read(&path) {
            Ok(b) => {
                let file: SnapshotFile = serde_json::from_slice(&b)
                    .map_err(|e| StorageIOError::<Nid>::read_snapshot(None, &e))?;
                let data: SmData = serde_json::from_slice(&file.data)
                    .map_err(|e| StorageIOError::<Nid>::read_snapshot(None, &e))?;
                (data, Some(file))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (SmData::default(), None),
            Err(e) => return Err(StorageIOError::<Nid>::read_snapshot(None, &e).into()),
        };
        Ok(StateMachine {
            dir: dir.to_path_buf(),
            data: Arc::new(RwLock::new(data)),
            current: Arc::new(RwLock::new(current)),
        })
    }

    /// The shared state, for readers outside Raft.
    pub fn shared(&self) -> Arc<RwLock<SmData>> {
        self.data.clone()
    }

    fn save(&self, file: SnapshotFile) -> Result<(), StorageError<Nid>> {
        let bytes = serde_json::to_vec(&file).map_err(snapshot_error)?;
        write_atomic(&self.dir.join(SNAPSHOT_FILE), &bytes).map_err(snapshot_error)?;
        *self.current.write() = Some(file);
        Ok(())
    }
}

/// Applies a committed membership to the state: the voters and every node's address.
pub(super) fn apply_membership(state: &mut ClusterState, m: &openraft::Membership<Nid, NodeAddr>) {
    let voters: BTreeSet<Nid> = m.voter_ids().collect();
    let nodes: BTreeMap<Nid, NodeAddr> = m.nodes().map(|(id, n)| (*id, n.clone())).collect();
    state.apply_membership(&voters, &nodes);
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<Nid>> {
        let data = self.data.read().clone();
        let bytes = serde_json::to_vec(&data).map_err(snapshot_error)?;
        let snapshot_id = match data.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, ulid::Ulid::new()),
            None => format!("none-{}", ulid::Ulid::new()),
        };
        let meta = SnapshotMeta {
            last_log_id: data.last_applied,
            last_membership: data.last_membership.clone(),
            snapshot_id,
        };
        self.save(SnapshotFile {
            meta: meta.clone(),
            data: bytes.clone(),
        })?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<Nid>>, StoredMembership<Nid, NodeAddr>), StorageError<Nid>> {
        let d = self.data.read();
        Ok((d.last_applied, d.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError<Nid>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut d = self.data.write();
        let mut out = Vec::new();
        for entry in entries {
            let log_id = *entry.get_log_id();
            d.last_applied = Some(log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(CommandResult::Ignored),
                EntryPayload::Normal(cmd) => {
                    let r = d.state.apply(&cmd);
                    out.push(r);
                }
                EntryPayload::Membership(m) => {
                    apply_membership(&mut d.state, &m);
                    d.last_membership = StoredMembership::new(Some(log_id), m);
                    out.push(CommandResult::Applied);
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<Nid>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<Nid, NodeAddr>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<Nid>> {
        let bytes = snapshot.into_inner();
        let signature = meta.signature();
        let read_err = |e: &std::io::Error| {
            StorageError::from(StorageIOError::<Nid>::read_snapshot(
                Some(signature.clone()),
                e,
            ))
        };
        if bytes.len() > SNAPSHOT_BYTES_MAX {
            let e = std::io::Error::other(format!(
                "snapshot {} is {} bytes, over the limit of {SNAPSHOT_BYTES_MAX}",
                meta.snapshot_id,
                bytes.len()
            ));
            return Err(read_err(&e));
        }
        let data: SmData =
            serde_json::from_slice(&bytes).map_err(|e| read_err(&std::io::Error::other(e)))?;
        self.save(SnapshotFile {
            meta: meta.clone(),
            data: bytes,
        })?;
        let mut d = self.data.write();
        *d = data;
        // The metadata is authoritative for what the snapshot covers.
        d.last_applied = meta.last_log_id;
        d.last_membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<Nid>> {
        Ok(self.current.read().as_ref().map(|f| Snapshot {
            meta: f.meta.clone(),
            snapshot: Box::new(Cursor::new(f.data.clone())),
        }))
    }
}
