//! WAL groups: one Raft group per node, whose log is the WAL of the samples that
//! node appends. Every replica's state machine applies committed batches into a
//! local TSDB of that group (`tsdb::Db` without a WAL of its own: the Raft log is
//! the WAL, and a restart replays it into the head).
//!
//! `WalGroups` holds every group this node is a replica of, opened from the data
//! directory at start and on demand when a leader first contacts this node; the
//! `WalGroups` gRPC service (`WalGroupsService`) carries every group's Raft RPCs,
//! told apart by group id, and the forwarded writes. No openraft type leaves this
//! module.

use super::group_snapshot;
use super::log_store::{self, LogOpenError, LogStore};
use super::network::CommitNotices;
use super::service::{handle_append, handle_install_snapshot, handle_vote};
use super::{HearthConfig, Nid, Payload, RaftOpError, RaftOptions};
use crate::cluster::grpc_client::{Connections, CONTROL_ANSWER_BYTES_MAX};
use crate::cluster::pb;
use crate::cluster::series_ids::{self, SeriesIds};
use crate::cluster::state::{NodeAddr, NodeId};
use crate::cluster::wal_batch::{self, BatchSeries, IdSeries};
use crate::labels::Labels;
use crate::storage::check_order;
use crate::storage::{AppendError, SeriesRef};
use crate::tsdb::db::{Db, DbOptions};
use crate::wal::LogOptions;
use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Config, Entry, EntryPayload, LogId, OptionalSend, RaftLogId, RaftSnapshotBuilder, SnapshotMeta,
    SnapshotPolicy, StorageError, StorageIOError, StoredMembership,
};
use parking_lot::{Mutex, RwLock};
use prost::Message;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// A sample batch (`cluster::wal_batch`), carried as encoded bytes: the leader
/// encodes it once, and the same bytes go to the log and to every replica. Shared
/// between clones: openraft clones entries to replicate and apply them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch(pub Arc<[u8]>);

impl Payload for Batch {
    fn to_bytes(&self) -> Vec<u8> {
        self.0.to_vec()
    }

    fn from_bytes(b: &[u8]) -> Result<Batch, String> {
        Ok(Batch(b.into()))
    }
}

/// As bytes, like the `Vec<u8>` it was (openraft wants entries serializable).
impl Serialize for Batch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.as_ref().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Batch, D::Error> {
        Ok(Batch(Vec::<u8>::deserialize(d)?.into()))
    }
}

/// What applying one entry did, which the leader that proposed it learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied (a batch's samples appended, a retirement's ids retired).
    Applied,
    /// Not applied, the same on every replica: a batch whose series ids, or a
    /// retirement whose ids, were chosen in another term than its entry's.
    StaleTerm,
    /// Not applied, the same on every replica: a batch naming a series id that
    /// was retired before it; the leader admits it again with new ids.
    RetiredId,
}

openraft::declare_raft_types!(
    /// openraft's type configuration for a WAL group.
    pub GroupConfig:
        D = Batch,
        R = Outcome,
        NodeId = NodeId,
        Node = NodeAddr,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = super::ticks::TickAlignedRuntime,
);

impl HearthConfig for GroupConfig {
    /// A WAL group's log record is the entry as the protobuf `Entry` of
    /// `proto/cluster.proto` (`docs/format/wal-group-entry.md`).
    fn encode_entry(e: &Entry<Self>) -> Result<Vec<u8>, String> {
        Ok(super::convert::entry_to_pb(e).encode_to_vec())
    }

    fn decode_entry(b: &[u8]) -> Result<Entry<Self>, String> {
        let pb = pb::Entry::decode(b).map_err(|e| format!("protobuf: {e}"))?;
        super::convert::entry_from_pb(pb).map_err(|e| e.to_string())
    }
}

type GroupRaft = openraft::Raft<GroupConfig>;

/// Directory of a group's Raft log inside its directory.
const RAFT_DIR: &str = "raft";
/// Directory of a group's TSDB inside its directory.
const TSDB_DIR: &str = "tsdb";
/// Most log entries kept behind a snapshot for lagging followers.
const GROUP_LOG_TAIL_MAX: u64 = 1000;
/// Suffix of a group directory being deleted (`WalGroups::remove`).
const REMOVING_SUFFIX: &str = ".removing";
/// Size of one chunk of a snapshot archive sent to a follower.
const SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;
/// How long `WalGroup::tell_commit` waits before asking the other voter again.
const TELL_COMMIT_RETRY: Duration = Duration::from_millis(50);

/// A write to a WAL group failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GroupWriteError {
    #[error("WAL group {group}: this node is not its leader")]
    NotLeader {
        group: u64,
        leader: Option<(NodeId, NodeAddr)>,
    },
    #[error("WAL group {group}: not committed within {timeout:?} (no quorum?)")]
    Timeout { group: u64, timeout: Duration },
    #[error("WAL group {group}: {reason}")]
    Fatal { group: u64, reason: String },
    /// Committed, but the group's other voter did not hear of the commit within
    /// the time left (`WalGroup::tell_commit`): not acknowledged.
    #[error(
        "WAL group {group}: committed, but the other replica did not confirm \
         learning of it within {timeout:?}"
    )]
    Unconfirmed { group: u64, timeout: Duration },
    /// A sample of the batch is refused (out of order, duplicate with another
    /// value, out of bounds) against what the group holds: nothing was logged.
    #[error("WAL group {group}: {error} (series {series}, timestamp {t})")]
    Refused {
        group: u64,
        error: AppendError,
        series: String,
        t: i64,
    },
}

impl GroupWriteError {
    /// The gRPC status a forwarded write answers with. A refusal's message starts
    /// with the `AppendError` text, which `forward_write` reads back.
    fn to_status(&self) -> Status {
        match self {
            GroupWriteError::NotLeader { .. } => Status::failed_precondition(self.to_string()),
            GroupWriteError::Refused {
                error, series, t, ..
            } => Status::invalid_argument(format!("{error}\n{series} {t}")),
            _ => Status::unavailable(self.to_string()),
        }
    }
}

/// The refusal a forwarded write's `InvalidArgument` status names.
fn refusal_from_status(group: u64, s: &Status) -> GroupWriteError {
    let (kind, detail) = s.message().split_once('\n').unwrap_or((s.message(), ""));
    let error = [
        AppendError::OutOfOrder,
        AppendError::DuplicateSampleForTimestamp,
        AppendError::OutOfBounds,
    ]
    .into_iter()
    .find(|e| e.to_string() == kind);
    match error {
        Some(error) => {
            let (series, t) = detail.rsplit_once(' ').unwrap_or((detail, ""));
            GroupWriteError::Refused {
                group,
                error,
                series: series.to_string(),
                t: t.parse().unwrap_or_default(),
            }
        }
        None => GroupWriteError::Fatal {
            group,
            reason: format!("forwarded write refused: {}", s.message()),
        },
    }
}

/// The newest sample of a series this node admitted as the group's leader, and
/// the write (`Admissions::next_write`) that admitted it.
#[derive(Debug, Clone, Copy)]
struct AdmittedLast {
    t: i64,
    v_bits: u64,
    write: u64,
    /// The series' id in the group (`SeriesIds`).
    id: u32,
    /// The newest write whose batch defined `id` (carried its label set), or
    /// `DEFINED_UNSURE` after such a write failed. A batch defines the id again
    /// while that write may not be applied yet (it is at or after the oldest
    /// write in flight): entries reach the log in the order their writes are
    /// proposed, not admitted, so a batch admitted later may be logged first.
    defined_by: u64,
}

/// `AdmittedLast::defined_by` once the write that defined the id failed: whether
/// its entry is committed is unknown, so every later batch defines it again.
const DEFINED_UNSURE: u64 = u64::MAX;

/// What this node admitted as the group's leader in its current term: the newest
/// sample per series, kept after the write that admitted it finished. A batch is
/// checked against it, so concurrent writes cannot log a sample that applying
/// would then drop, and a series known here costs one probe of this map instead
/// of a lookup in the TSDB's head. It stays true once its writes are applied,
/// since only entries admitted here are appended to the group while this node
/// leads it in this term; a write that failed leaves it at least as strict as
/// the TSDB (the entry may still be committed). A new term (another leader may
/// have written meanwhile) empties it.
///
/// It also assigns series ids (docs/format/wal-group-entry.md): a series new here
/// takes the id the group's table (`SeriesIds`, what this replica applied) has
/// for it, else the next free id. A new term starts numbering at the table's
/// next free id once this replica applied every entry before the term's first,
/// so no id defined by an entry that may be committed is assigned again.
///
/// Each series known here has a slot, which this node's writers remember as the
/// series' ref (`SlotRef`): a batch that names its series' slots is admitted
/// without hashing or probing a map for them. A slot keeps its series until it
/// is freed (`trim`), which starts a new generation of the slots: refs from an
/// older one are looked up by labels again.
struct Admissions {
    /// The Raft term the entries were admitted in.
    term: u64,
    /// The next id to assign in this term.
    next_id: u32,
    /// Label set → its slot.
    index: crate::fxhash::HashMap<PendingKey, u32>,
    slots: Vec<AdmissionSlot>,
    /// Slots holding no series.
    free: Vec<u32>,
    /// The generation of the slots, also readable without the lock.
    generation: Arc<AtomicU32>,
    /// Writes admitted and not finished (applied here, or failed).
    in_flight: BTreeSet<u64>,
    /// The number of the next write admitted.
    next_write: u64,
    /// Ids proposed for retirement and not known applied (`retire_unused_ids`):
    /// not assigned to a series again, though the table still defines them.
    retiring: BTreeSet<u32>,
}

impl Default for Admissions {
    fn default() -> Admissions {
        Admissions {
            term: 0,
            next_id: 0,
            index: Default::default(),
            slots: Vec::new(),
            free: Vec::new(),
            generation: Arc::new(AtomicU32::new(new_slot_generation())),
            in_flight: BTreeSet::new(),
            next_write: 0,
            retiring: BTreeSet::new(),
        }
    }
}

/// A generation of admission slots never used before in this process, by any
/// group (a replica opened again starts afresh), and never 0 (a `SeriesRef` of 0
/// means "none").
fn new_slot_generation() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    loop {
        let g = NEXT.fetch_add(1, Ordering::Relaxed);
        if g != 0 {
            return g;
        }
    }
}

/// A series known to `Admissions`, and its newest admitted sample (None: none
/// in this term, or forgotten).
struct AdmissionSlot {
    key: PendingKey,
    last: Option<AdmittedLast>,
}

/// Where a series sits in its group's `Admissions` (as the group's replica on
/// this node numbers them): what `ReplicatedAppender` returns as a series ref,
/// valid while the generation it was given in lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRef {
    pub generation: u32,
    pub slot: u32,
}

impl SlotRef {
    /// The ref a `SeriesRef` holds (0 and refs of other stores: None).
    pub fn from_series_ref(r: SeriesRef) -> Option<SlotRef> {
        let (generation, slot) = ((r >> 32) as u32, r as u32);
        (generation != 0 && slot != 0).then(|| SlotRef {
            generation,
            slot: slot - 1,
        })
    }

    pub fn series_ref(self) -> SeriesRef {
        (u64::from(self.generation) << 32) | u64::from(self.slot + 1)
    }
}

/// The slots of a batch's series, in order, as `WalGroup::write` takes them.
#[derive(Debug, Clone, Copy)]
pub struct BatchSlots<'a> {
    pub generation: u32,
    pub slots: &'a [u32],
}

/// Most series `Admissions` keeps; past it, the series of finished writes
/// are forgotten (their samples are in the TSDB, which is checked instead).
const ADMITTED_SERIES_MAX: usize = 1 << 18;

impl Admissions {
    /// Forgets every admitted sample for a new `term`, whose ids start at
    /// `next_id`. The series keep their slots.
    fn enter_term(&mut self, term: u64, next_id: u32) {
        self.term = term;
        self.next_id = next_id;
        self.forget_where(|_| true);
    }

    /// Frees the slots of series whose newest admitted sample came from a
    /// finished write, or that have none.
    fn trim(&mut self) {
        let oldest = self.in_flight.first().copied().unwrap_or(u64::MAX);
        let mut freed = false;
        for (n, s) in self.slots.iter_mut().enumerate() {
            if s.key.labels.is_empty() || s.last.is_some_and(|l| l.write >= oldest) {
                continue;
            }
            self.index.remove(&s.key);
            *s = AdmissionSlot {
                key: PendingKey::free(),
                last: None,
            };
            self.free.push(n as u32);
            freed = true;
        }
        if freed {
            self.next_generation();
        }
    }

    /// `trim` once more than `ADMITTED_SERIES_MAX` series have slots. Only
    /// between batches: a batch being admitted holds slot numbers.
    fn trim_if_full(&mut self) {
        if self.index.len() > ADMITTED_SERIES_MAX {
            self.trim();
        }
    }

    fn next_generation(&mut self) {
        self.generation
            .store(new_slot_generation(), Ordering::Relaxed);
    }

    /// The slot of `labels` (whose `Labels::map_hash` is `hash`), taken for it
    /// when it has none.
    fn slot_for(&mut self, labels: &Labels, hash: u64) -> u32 {
        if let Some(&n) = self
            .index
            .get(&ProbeKey(hash, labels) as &dyn PendingLookup)
        {
            return n;
        }
        let key = PendingKey {
            hash,
            labels: labels.clone(),
        };
        let slot = AdmissionSlot {
            key: key.clone(),
            last: None,
        };
        let n = match self.free.pop() {
            Some(n) => {
                self.slots[n as usize] = slot;
                n
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(key, n);
        n
    }

    /// The slot a batch named for `labels`, if it is still theirs, else theirs
    /// looked up (or taken).
    fn slot_named(&mut self, named: Option<u32>, labels: &Labels) -> u32 {
        if let Some(n) = named {
            if self
                .slots
                .get(n as usize)
                .is_some_and(|s| s.key.labels.ptr_eq(labels) || s.key.labels == *labels)
            {
                return n;
            }
        }
        self.slot_for(labels, labels.map_hash())
    }

    /// The newest sample admitted for `labels`.
    fn last(&self, hash: u64, labels: &Labels) -> Option<&AdmittedLast> {
        let n = *self
            .index
            .get(&ProbeKey(hash, labels) as &dyn PendingLookup)?;
        self.slots[n as usize].last.as_ref()
    }

    fn last_mut(&mut self, key: &PendingKey) -> Option<&mut AdmittedLast> {
        let n = *self.index.get(key)?;
        self.slots[n as usize].last.as_mut()
    }

    /// The newest samples admitted, of every series.
    fn lasts(&self) -> impl Iterator<Item = &AdmittedLast> {
        self.slots.iter().filter_map(|s| s.last.as_ref())
    }

    /// Forgets the newest admitted sample of every series `forget` picks.
    fn forget_where(&mut self, mut forget: impl FnMut(&AdmittedLast) -> bool) {
        for s in &mut self.slots {
            if s.last.as_ref().is_some_and(&mut forget) {
                s.last = None;
            }
        }
    }

    /// The ids of series admitted by a write that may be in flight: a series'
    /// newest write is at or after the oldest write in flight.
    fn ids_in_flight(&self) -> crate::fxhash::HashSet<u32> {
        let Some(&oldest) = self.in_flight.first() else {
            return Default::default();
        };
        self.lasts()
            .filter(|l| l.write >= oldest)
            .map(|l| l.id)
            .collect()
    }

    /// Forgets the label → id of every series whose id `ids` has retired, so the
    /// next batch of such a series takes a new id.
    fn forget_retired(&mut self, ids: &SeriesIds) {
        self.forget_where(|l| ids.is_retired(l.id));
    }
}

type Pending = Mutex<Admissions>;

/// A label set as the key of `Admissions::last`, with its `Labels::map_hash`
/// computed once per batch series (label sets are long).
#[derive(Clone)]
struct PendingKey {
    hash: u64,
    labels: Labels,
}

impl PendingKey {
    /// The key of a free slot (no series has empty labels).
    fn free() -> PendingKey {
        PendingKey {
            hash: 0,
            labels: Labels::empty(),
        }
    }
}

impl std::hash::Hash for PendingKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for PendingKey {
    fn eq(&self, other: &PendingKey) -> bool {
        self.hash == other.hash
            && (self.labels.ptr_eq(&other.labels) || self.labels == other.labels)
    }
}

impl Eq for PendingKey {}

/// A label set with its hash, as `Admissions::last` is probed with: by a
/// `PendingKey`, or by borrowed labels, without cloning them (`ProbeKey`).
trait PendingLookup {
    fn parts(&self) -> (u64, &Labels);
}

impl PendingLookup for PendingKey {
    fn parts(&self) -> (u64, &Labels) {
        (self.hash, &self.labels)
    }
}

/// Borrowed labels and their `Labels::map_hash`, to probe `Admissions::last`.
struct ProbeKey<'a>(u64, &'a Labels);

impl PendingLookup for ProbeKey<'_> {
    fn parts(&self) -> (u64, &Labels) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn PendingLookup + 'a> for PendingKey {
    fn borrow(&self) -> &(dyn PendingLookup + 'a) {
        self
    }
}

/// Hashes as `PendingKey` does, so the map finds a key by either.
impl std::hash::Hash for dyn PendingLookup + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.parts().0);
    }
}

impl PartialEq for dyn PendingLookup + '_ {
    fn eq(&self, other: &Self) -> bool {
        let ((a, l), (b, m)) = (self.parts(), other.parts());
        a == b && (l.ptr_eq(m) || l == m)
    }
}

impl Eq for dyn PendingLookup + '_ {}

/// Counters of one group's state machine, for tests and `/metrics`.
#[derive(Debug, Default)]
pub struct ApplyStats {
    /// Log entries applied since this process opened the group (after a restart,
    /// those after the newest snapshot).
    pub entries_applied: AtomicU64,
    /// Log index of the last entry applied, by entry or snapshot (0: none).
    pub applied_index: AtomicU64,
    /// Snapshots this replica built.
    pub snapshots_built: AtomicU64,
    /// Snapshots this replica installed from a leader.
    pub snapshots_installed: AtomicU64,
    /// Bytes of the archive of the newest snapshot built or installed.
    pub snapshot_bytes: AtomicU64,
    /// Log index of the newest snapshot (0: none).
    pub snapshot_index: AtomicU64,
    /// Whole log segment files deleted after snapshots.
    pub segments_purged: Arc<AtomicU64>,
    /// Samples the TSDB took.
    pub samples_applied: AtomicU64,
    /// Times this replica's copy of the group was dropped because its log was
    /// damaged, to be sent again by the leader (at most 1: counted at open).
    pub replicas_dropped: AtomicU64,
    /// Batches not applied because their series ids were assigned in another
    /// term than their entry's (a write admitted by a leader that lost and
    /// regained leadership before proposing it): the same on every replica.
    pub batches_stale: AtomicU64,
    /// Series ids live (defined and not retired) in the group's id table.
    pub series_ids: AtomicU64,
    /// Series ids retired in the group's id table (with those a snapshot it
    /// started from or installed had retired).
    pub series_ids_retired: AtomicU64,
    /// Writes this replica, as leader, admitted again because their batch named
    /// a series id retired before it was logged.
    pub writes_readmitted: AtomicU64,
    /// Commit notices this leader left out (`network::CommitNotices`).
    pub commit_notices_deferred: Arc<AtomicU64>,
    /// Samples the TSDB refused (out of order, duplicate, out of bounds): the same
    /// on every replica, since every replica applies the same log in order. The
    /// leader checks batches before logging them, so this stays 0 unless a write
    /// timed out and was committed later.
    pub samples_refused: AtomicU64,
}

impl ApplyStats {
    /// Counts the live and retired ids of `ids`, the group's id table.
    fn count_ids(&self, ids: &SeriesIds) {
        self.series_ids
            .store(ids.defined() as u64, Ordering::Relaxed);
        self.series_ids_retired
            .store(ids.retired() as u64, Ordering::Relaxed);
    }
}

/// What the state machine has applied. Not persisted: the TSDB head has no WAL of
/// its own, so after a restart it starts from the newest snapshot's and the log
/// after it is applied again.
#[derive(Debug, Default)]
struct Applied {
    last: Option<LogId<Nid>>,
    membership: StoredMembership<Nid, NodeAddr>,
}

/// A WAL group's state machine: applies committed batches into the group's TSDB.
#[derive(Clone)]
struct GroupStateMachine {
    group_id: u64,
    /// The group's directory, where its snapshots live.
    dir: PathBuf,
    db: Arc<Db>,
    applied: Arc<Mutex<Applied>>,
    stats: Arc<ApplyStats>,
    /// Held while entries are applied and while a snapshot is taken or installed,
    /// so a snapshot is the TSDB exactly as its last log id left it.
    apply_lock: Arc<tokio::sync::Mutex<()>>,
    /// Series applied before from version 1 batches, by the hash of their label
    /// bytes: the TSDB's own label set of the series and its ref (which the TSDB
    /// checks against the labels, so a stale one after a snapshot install only
    /// costs a lookup).
    series: Arc<Mutex<crate::fxhash::HashMap<u64, (Labels, SeriesRef)>>>,
    /// The group's series ids, which version 2 batches name series by: state
    /// machine state, in the group's snapshots.
    ids: Arc<Mutex<SeriesIds>>,
}

/// Most series a state machine remembers (`GroupStateMachine::series`); past it
/// the map is emptied and refilled by the series still written.
const APPLY_SERIES_CACHE_MAX: usize = 1 << 20;

/// What a snapshot's `meta.json` holds: openraft's snapshot metadata.
type GroupSnapshotMeta = SnapshotMeta<Nid, NodeAddr>;

fn snapshot_read_error(meta: Option<&GroupSnapshotMeta>, reason: String) -> StorageError<Nid> {
    StorageIOError::<Nid>::read_snapshot(
        meta.map(|m| m.signature()),
        &std::io::Error::other(reason),
    )
    .into()
}

fn snapshot_write_error(meta: Option<&GroupSnapshotMeta>, reason: String) -> StorageError<Nid> {
    StorageIOError::<Nid>::write_snapshot(
        meta.map(|m| m.signature()),
        &std::io::Error::other(reason),
    )
    .into()
}

/// The newest finished snapshot of the group in `dir`, with its metadata.
fn newest_snapshot(dir: &Path) -> Result<Option<(PathBuf, GroupSnapshotMeta)>, String> {
    let Some((_, path)) = group_snapshot::list(dir).map_err(|e| e.to_string())?.pop() else {
        return Ok(None);
    };
    let meta_path = path.join(group_snapshot::META_FILE);
    let bytes = std::fs::read(&meta_path).map_err(|e| format!("{}: {e}", meta_path.display()))?;
    let meta: GroupSnapshotMeta =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", meta_path.display()))?;
    Ok(Some((path, meta)))
}

/// The series id table a snapshot directory holds; empty for a snapshot taken
/// before batches named series by id (it has no table file).
fn load_series_ids(snapshot: &Path) -> Result<SeriesIds, String> {
    let path = snapshot.join(series_ids::SNAPSHOT_FILE);
    match std::fs::read(&path) {
        Ok(b) => SeriesIds::decode(&b).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SeriesIds::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn apply_error(log_id: LogId<Nid>, reason: String) -> StorageError<Nid> {
    StorageIOError::<Nid>::apply(log_id, &std::io::Error::other(reason)).into()
}

impl GroupStateMachine {
    /// Commits what applying a batch appended and counts its samples.
    fn commit_applied(
        &self,
        app: Box<dyn crate::storage::Appender>,
        log_id: LogId<Nid>,
        applied: u64,
        refused: u64,
    ) -> Result<(), StorageError<Nid>> {
        app.commit()
            .map_err(|e| apply_error(log_id, e.to_string()))?;
        self.stats
            .samples_applied
            .fetch_add(applied, Ordering::Relaxed);
        self.stats
            .samples_refused
            .fetch_add(refused, Ordering::Relaxed);
        Ok(())
    }

    /// Applies one command: a sample batch or a retirement of series ids.
    /// Refused samples are counted and skipped, the way a TSDB append treats
    /// them; a command that does not decode, or names a series id the group's
    /// table does not define (or defines otherwise), stops the group rather than
    /// apply something else than what the leader logged. A version 2 batch whose
    /// ids were assigned in another term than its entry's, or that names a
    /// retired id, is not applied at all (its ids may mean other series now):
    /// the write it came from is admitted again.
    fn apply_command(
        &self,
        log_id: LogId<Nid>,
        batch: &Batch,
    ) -> Result<Outcome, StorageError<Nid>> {
        let bad = |e: wal_batch::BatchError| {
            apply_error(
                log_id,
                format!("WAL group {} entry {}: {e}", self.group_id, log_id.index),
            )
        };
        let view = match wal_batch::decode_command(&batch.0).map_err(bad)? {
            wal_batch::Command::Batch(view) => view,
            wal_batch::Command::Retire(r) => return self.apply_retire(log_id, &r),
        };
        match view.ids_term {
            None => self
                .apply_labelled(log_id, &view)
                .map(|()| Outcome::Applied),
            Some(term) if term != log_id.leader_id.term => {
                self.stats.batches_stale.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    group = self.group_id,
                    index = log_id.index,
                    ids_term = term,
                    entry_term = log_id.leader_id.term,
                    "WAL group entry not applied: its series ids were assigned in another term"
                );
                Ok(Outcome::StaleTerm)
            }
            Some(_) => self.apply_ids(log_id, &view),
        }
    }

    /// Applies a retirement of series ids: every id must be defined or retired
    /// already (checked before any is retired); their label sets are freed and
    /// later batches naming them are not applied. A retirement chosen in another
    /// term than its entry's is not applied, like such a batch.
    fn apply_retire(
        &self,
        log_id: LogId<Nid>,
        r: &wal_batch::Retirement,
    ) -> Result<Outcome, StorageError<Nid>> {
        if r.term != log_id.leader_id.term {
            self.stats.batches_stale.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                group = self.group_id,
                index = log_id.index,
                ids_term = r.term,
                entry_term = log_id.leader_id.term,
                "WAL group retirement not applied: its ids were chosen in another term"
            );
            return Ok(Outcome::StaleTerm);
        }
        let mut ids = self.ids.lock();
        for &id in &r.ids {
            if !ids.is_retired(id) {
                ids.get_mut(id).map_err(|e| {
                    apply_error(
                        log_id,
                        format!(
                            "WAL group {} entry {}: retirement: {e}",
                            self.group_id, log_id.index
                        ),
                    )
                })?;
            }
        }
        let mut retired = 0usize;
        for &id in &r.ids {
            // Checked above: defined or retired already.
            if ids.retire(id).unwrap_or(false) {
                retired += 1;
            }
        }
        self.stats.count_ids(&ids);
        tracing::debug!(
            group = self.group_id,
            index = log_id.index,
            retired,
            live = ids.defined(),
            "WAL group series ids retired"
        );
        Ok(Outcome::Applied)
    }

    /// Applies a version 2 batch: a batch naming a retired id is not applied at
    /// all; then definitions, so a batch that contradicts the id table is refused
    /// before any of its samples is appended; then each series' samples, found by
    /// index in the table.
    fn apply_ids(
        &self,
        log_id: LogId<Nid>,
        view: &wal_batch::BatchView<'_>,
    ) -> Result<Outcome, StorageError<Nid>> {
        let bad = |e: String| {
            apply_error(
                log_id,
                format!("WAL group {} entry {}: {e}", self.group_id, log_id.index),
            )
        };
        let mut ids = self.ids.lock();
        if let Some(id) = view
            .series
            .iter()
            .filter_map(|s| s.id)
            .find(|&id| ids.is_retired(id))
        {
            self.stats.batches_stale.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                group = self.group_id,
                index = log_id.index,
                id,
                "WAL group entry not applied: it names a retired series id"
            );
            return Ok(Outcome::RetiredId);
        }
        for s in &view.series {
            let id = s.id.ok_or_else(|| bad("a series without an id".into()))?;
            match s.labels {
                Some(encoded) => {
                    let labels = wal_batch::labels(encoded).map_err(|e| bad(e.to_string()))?;
                    ids.define(id, labels).map_err(|e| bad(e.to_string()))?;
                }
                None => {
                    ids.get_mut(id).map_err(|e| bad(e.to_string()))?;
                }
            }
        }
        self.stats.count_ids(&ids);
        let mut app = crate::storage::Appendable::appender(self.db.as_ref());
        let (mut applied, mut refused) = (0u64, 0u64);
        for s in &view.series {
            let id = s.id.ok_or_else(|| bad("a series without an id".into()))?;
            let slot = ids.get_mut(id).map_err(|e| bad(e.to_string()))?;
            let before = slot.series_ref;
            for smp in &view.samples[s.samples.clone()] {
                match app.append(slot.series_ref, &slot.labels, smp.t, smp.v) {
                    Ok(r) => {
                        slot.series_ref = r;
                        applied += 1;
                    }
                    Err(AppendError::Storage(reason)) => {
                        app.rollback();
                        return Err(apply_error(log_id, reason));
                    }
                    Err(_) => refused += 1,
                }
            }
            if slot.series_ref != before {
                // The head's own label set, so the next append of this series
                // matches it by pointer instead of comparing bytes.
                if let Some(l) = self.db.head().series_labels(slot.series_ref) {
                    slot.labels = l;
                }
            }
        }
        drop(ids);
        self.commit_applied(app, log_id, applied, refused)
            .map(|()| Outcome::Applied)
    }

    /// Applies a version 1 batch, whose series carry their label sets.
    fn apply_labelled(
        &self,
        log_id: LogId<Nid>,
        view: &wal_batch::BatchView<'_>,
    ) -> Result<(), StorageError<Nid>> {
        let bad = |e: wal_batch::BatchError| {
            apply_error(
                log_id,
                format!("WAL group {} entry {}: {e}", self.group_id, log_id.index),
            )
        };
        let mut app = crate::storage::Appendable::appender(self.db.as_ref());
        let (mut applied, mut refused) = (0u64, 0u64);
        let mut known = self.series.lock();
        if known.len() > APPLY_SERIES_CACHE_MAX {
            known.clear();
        }
        for s in &view.series {
            let (encoded, samples) = (s.labels.unwrap_or_default(), &s.samples);
            // A series applied before is known by its label bytes: no `Labels`
            // to build, and the TSDB's ref from last time.
            let hash = xxhash_rust::xxh3::xxh3_64(encoded);
            let (labels, mut series_ref) = match known.get(&hash) {
                Some((l, r)) if l.encoded() == encoded => (l.clone(), *r),
                _ => (wal_batch::labels(encoded).map_err(bad)?, 0),
            };
            let before = series_ref;
            for smp in &view.samples[samples.clone()] {
                match app.append(series_ref, &labels, smp.t, smp.v) {
                    Ok(r) => {
                        series_ref = r;
                        applied += 1;
                    }
                    Err(AppendError::Storage(reason)) => {
                        app.rollback();
                        return Err(apply_error(log_id, reason));
                    }
                    Err(_) => refused += 1,
                }
            }
            if series_ref != before {
                // The head's own label set, so the next append of this series
                // matches it by pointer instead of comparing bytes.
                let labels = self.db.head().series_labels(series_ref).unwrap_or(labels);
                known.insert(hash, (labels, series_ref));
            }
        }
        drop(known);
        self.commit_applied(app, log_id, applied, refused)
    }
}

impl RaftSnapshotBuilder<GroupConfig> for GroupStateMachine {
    /// Snapshots the group's TSDB (blocks plus a head checkpoint) into
    /// `snapshot-<index>-<ulid>/` with nothing applied meanwhile, removes older
    /// snapshots, and hands openraft the archive.
    async fn build_snapshot(&mut self) -> Result<Snapshot<GroupConfig>, StorageError<Nid>> {
        let _applying = self.apply_lock.clone().lock_owned().await;
        let (last, membership) = {
            let a = self.applied.lock();
            (a.last, a.membership.clone())
        };
        let index = last.map_or(0, |l| l.index);
        let name = group_snapshot::dir_name(index);
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: membership,
            snapshot_id: name.clone(),
        };
        let (dir, db, group) = (self.dir.clone(), self.db.clone(), self.group_id);
        let meta_json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| snapshot_write_error(Some(&meta), e.to_string()))?;
        // The id table as the entries up to `last` left it (nothing is applied
        // while the lock is held).
        let ids = self.ids.lock().encode();
        let started = std::time::Instant::now();
        let archive = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
            let final_dir = dir.join(&name);
            let tmp = group_snapshot::tmp_path(&final_dir);
            let info = db.snapshot(&tmp).map_err(|e| e.to_string())?;
            crate::cluster::write_atomic(&tmp.join(series_ids::SNAPSHOT_FILE), &ids)
                .map_err(|e| e.to_string())?;
            crate::cluster::write_atomic(&tmp.join(group_snapshot::META_FILE), &meta_json)
                .map_err(|e| e.to_string())?;
            group_snapshot::publish(&tmp, &final_dir).map_err(|e| e.to_string())?;
            group_snapshot::remove_others(&dir, &final_dir).map_err(|e| e.to_string())?;
            let archive = group_snapshot::pack(&final_dir).map_err(|e| e.to_string())?;
            tracing::info!(
                group,
                index,
                blocks = info.blocks,
                head_records = info.head_records,
                bytes = archive.len(),
                "WAL group snapshot taken"
            );
            Ok(archive)
        })
        .await
        .map_err(|e| snapshot_write_error(Some(&meta), e.to_string()))?
        .map_err(|e| snapshot_write_error(Some(&meta), format!("WAL group {group}: {e}")))?;
        tracing::debug!(
            group,
            duration_ms = started.elapsed().as_millis() as u64,
            "snapshot"
        );
        self.stats.snapshots_built.fetch_add(1, Ordering::Relaxed);
        self.stats
            .snapshot_bytes
            .store(archive.len() as u64, Ordering::Relaxed);
        self.stats.snapshot_index.store(index, Ordering::Relaxed);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(archive)),
        })
    }
}

impl RaftStateMachine<GroupConfig> for GroupStateMachine {
    type SnapshotBuilder = GroupStateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<Nid>>, StoredMembership<Nid, NodeAddr>), StorageError<Nid>> {
        let a = self.applied.lock();
        Ok((a.last, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<Nid>>
    where
        I: IntoIterator<Item = Entry<GroupConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let _applying = self.apply_lock.lock().await;
        let mut out = Vec::new();
        for entry in entries {
            let log_id = *entry.get_log_id();
            self.stats.entries_applied.fetch_add(1, Ordering::Relaxed);
            self.stats
                .applied_index
                .store(log_id.index, Ordering::Relaxed);
            let done = match &entry.payload {
                EntryPayload::Blank => Outcome::Applied,
                EntryPayload::Normal(batch) => self.apply_command(log_id, batch)?,
                EntryPayload::Membership(m) => {
                    self.applied.lock().membership = StoredMembership::new(Some(log_id), m.clone());
                    Outcome::Applied
                }
            };
            self.applied.lock().last = Some(log_id);
            out.push(done);
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

    /// Checks and unpacks the leader's archive into a snapshot directory, then
    /// replaces the TSDB's content with it.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<Nid, NodeAddr>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<Nid>> {
        let _applying = self.apply_lock.clone().lock_owned().await;
        let archive = snapshot.into_inner();
        let bytes = archive.len() as u64;
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let (dir, db, group) = (self.dir.clone(), self.db.clone(), self.group_id);
        let meta_json = serde_json::to_vec_pretty(meta)
            .map_err(|e| snapshot_read_error(Some(meta), e.to_string()))?;
        let ids = tokio::task::spawn_blocking(move || -> Result<SeriesIds, String> {
            let final_dir = dir.join(group_snapshot::dir_name(index));
            let tmp = group_snapshot::tmp_path(&final_dir);
            group_snapshot::unpack(&archive, &tmp).map_err(|e| e.to_string())?;
            // Read before anything is replaced: a table that fails its checks
            // fails the install.
            let ids = load_series_ids(&tmp)?;
            // The receiver's own record of what the snapshot covers.
            crate::cluster::write_atomic(&tmp.join(group_snapshot::META_FILE), &meta_json)
                .map_err(|e| e.to_string())?;
            group_snapshot::publish(&tmp, &final_dir).map_err(|e| e.to_string())?;
            db.restore_snapshot(&final_dir).map_err(|e| e.to_string())?;
            group_snapshot::remove_others(&dir, &final_dir).map_err(|e| e.to_string())?;
            tracing::info!(
                group,
                index,
                bytes,
                series_ids = ids.defined(),
                "WAL group snapshot installed"
            );
            Ok(ids)
        })
        .await
        .map_err(|e| snapshot_read_error(Some(meta), e.to_string()))?
        .map_err(|e| snapshot_read_error(Some(meta), format!("WAL group {group}: {e}")))?;
        self.stats.count_ids(&ids);
        *self.ids.lock() = ids;
        self.series.lock().clear();
        {
            let mut a = self.applied.lock();
            a.last = meta.last_log_id;
            a.membership = meta.last_membership.clone();
        }
        self.stats
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        self.stats.snapshot_bytes.store(bytes, Ordering::Relaxed);
        self.stats.snapshot_index.store(index, Ordering::Relaxed);
        self.stats.applied_index.store(index, Ordering::Relaxed);
        Ok(())
    }

    /// The newest snapshot, packed as an archive. Taken with applying paused,
    /// like building one: a snapshot being built meanwhile would have its
    /// unfinished directory removed by the listing here, and the one packed here
    /// could be deleted by the build when it finishes.
    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<GroupConfig>>, StorageError<Nid>> {
        let _applying = self.apply_lock.clone().lock_owned().await;
        let dir = self.dir.clone();
        let found = tokio::task::spawn_blocking(
            move || -> Result<Option<(GroupSnapshotMeta, Vec<u8>)>, String> {
                let Some((path, meta)) = newest_snapshot(&dir)? else {
                    return Ok(None);
                };
                let archive = group_snapshot::pack(&path).map_err(|e| e.to_string())?;
                Ok(Some((meta, archive)))
            },
        )
        .await
        .map_err(|e| snapshot_read_error(None, e.to_string()))?
        .map_err(|e| snapshot_read_error(None, format!("WAL group {}: {e}", self.group_id)))?;
        Ok(found.map(|(meta, archive)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(archive)),
        }))
    }
}

/// Opens the Raft log of the group in `dir`. A log that fails its checks (a
/// segment's CRC or sequence) is not trusted, repaired or served: this replica's
/// whole copy of the group (log, TSDB, snapshots) is dropped, keeping only its
/// vote, and the log opens empty, so the group's leader sends the snapshot and the
/// log again. The flag says whether that happened.
fn open_log(
    dir: &Path,
    group_id: u64,
    wal_opts: LogOptions,
) -> Result<(LogStore<GroupConfig>, bool), String> {
    let raft_dir = dir.join(RAFT_DIR);
    match LogStore::<GroupConfig>::open_checked(&raft_dir, wal_opts.clone()) {
        Ok(log) => return Ok((log, false)),
        Err(LogOpenError::Corrupted { source, .. }) => {
            tracing::error!(
                group = group_id,
                error = %source,
                "WAL group log is damaged: dropping this replica's copy of the group (log, TSDB, snapshots) to receive it again from its peers"
            );
        }
        Err(e) => return Err(e.to_string()),
    }
    drop_copy(dir).map_err(|e| format!("dropping the damaged copy: {e}"))?;
    log_store::reset_keeping_vote(&raft_dir).map_err(|e| e.to_string())?;
    let log = LogStore::<GroupConfig>::open(&raft_dir, wal_opts).map_err(|e| e.to_string())?;
    Ok((log, true))
}

/// Removes a group's TSDB and snapshots from `dir` (the log is reset apart).
fn drop_copy(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_name() == RAFT_DIR {
            continue;
        }
        if e.file_type()?.is_dir() {
            std::fs::remove_dir_all(e.path())?;
        } else {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// A write `WalGroup::admit` let through, in flight until dropped (applied here,
/// failed, or abandoned).
struct Admitted<'a> {
    pending: &'a Pending,
    write: u64,
    /// The series whose ids this write's batch defined.
    defined: Vec<PendingKey>,
    /// Set once the batch is applied here: its definitions are in the table.
    applied: bool,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let mut p = self.pending.lock();
        p.in_flight.remove(&self.write);
        if !self.applied {
            // The entry may be committed later or never: later batches define
            // these ids again until one of them is applied.
            for key in &self.defined {
                if let Some(l) = p.last_mut(key) {
                    if l.defined_by == self.write {
                        l.defined_by = DEFINED_UNSURE;
                    }
                }
            }
        }
    }
}

/// What `WalGroup::admit` let through: the write's number, its batch as the log
/// holds it (version 2), and the series it defines.
struct Admission {
    write: u64,
    batch: Vec<u8>,
    defined: Vec<PendingKey>,
}

/// What openraft answers a queued proposal with.
type ProposalReceiver = <<GroupConfig as openraft::RaftTypeConfig>::Responder as openraft::raft::responder::Responder<GroupConfig>>::Receiver;

/// One WAL group on this node: its Raft instance and the TSDB its state machine
/// applies into. Cheap to clone.
#[derive(Clone)]
pub struct WalGroup {
    group_id: u64,
    raft: GroupRaft,
    db: Arc<Db>,
    stats: Arc<ApplyStats>,
    pending: Arc<Pending>,
    /// `Admissions::generation`, read without the lock.
    slot_generation: Arc<AtomicU32>,
    /// Whether the leader leaves out commit notices, shared with its transport.
    notices: Arc<CommitNotices>,
    /// Writes this replica finished as leader, for `notice_commit_soon`.
    writes_done: Arc<AtomicU64>,
    /// The group's directory, for `WalGroups::reform` and `WalGroups::remove`.
    dir: PathBuf,
    node_id: NodeId,
    config: Arc<Config>,
    wal_opts: LogOptions,
    /// Kept so a re-formed group's new Raft continues from what was applied.
    sm: GroupStateMachine,
    /// When the newest `tell_commit` round that succeeded started; the lock lets
    /// one round run at a time, for every write waiting.
    told: Arc<tokio::sync::Mutex<Option<std::time::Instant>>>,
    /// The leader's retiring of unused series ids.
    retire: Arc<RetireState>,
    /// Held from a batch's admission until openraft has it queued, so batches
    /// enter the log in the order they were admitted (see `write_slotted`).
    propose_order: Arc<tokio::sync::Mutex<()>>,
    /// Tests: milliseconds a write waits between its admission and handing its
    /// batch to openraft.
    #[cfg(test)]
    pause_after_admit: Arc<AtomicU64>,
}

/// When the leader last looked for series ids to retire, and the lock that lets
/// one retirement be proposed at a time.
struct RetireState {
    /// The head's `series_removed` count when the leader last looked (`u64::MAX`
    /// at open: the first write looks, as ids of series the head no longer holds
    /// may be in the snapshot the group started from).
    removed_checked: AtomicU64,
    /// Held while a retirement is chosen and proposed.
    busy: Arc<tokio::sync::Mutex<()>>,
}

impl Default for RetireState {
    fn default() -> RetireState {
        RetireState {
            removed_checked: AtomicU64::new(u64::MAX),
            busy: Arc::new(tokio::sync::Mutex::new(())),
        }
    }
}

/// How long a retirement the leader proposes after a write may take.
const RETIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after its last write a leader that leaves out commit notices sends
/// a heartbeat round (`WalGroup::notice_commit_soon`).
const COMMIT_NOTICE_DELAY: Duration = Duration::from_millis(100);

/// Whether a replica applied its whole log: with its current term's leader
/// restored after a restart, the log may hold entries of that term that define
/// ids and are not applied yet.
fn whole_log_applied(m: &openraft::RaftMetrics<Nid, NodeAddr>) -> bool {
    m.last_applied.map(|l| l.index) >= m.last_log_index
}

/// How many times one write is admitted again after its batch named an id
/// retired before it was logged. Ids proposed for retirement are not assigned,
/// so a second retry means something else is wrong.
const READMIT_MAX: usize = 3;

impl WalGroup {
    /// Opens the group in `dir` (its log and TSDB) and starts Raft; the committed
    /// part of the log is applied into the TSDB as Raft starts.
    async fn open(
        dir: &Path,
        group_id: u64,
        node_id: NodeId,
        raft_opts: &RaftOptions,
        db_opts: &DbOptions,
    ) -> Result<WalGroup, RaftOpError> {
        let storage_err = |reason: String| RaftOpError::Storage {
            path: dir.display().to_string(),
            reason,
        };
        let fsync = raft_opts.log_fsync();
        let wal_opts = LogOptions {
            fsync,
            segment_size_bytes: raft_opts.group_segment_size_bytes,
            repair: false,
            preallocate_bytes: fsync.preallocate_bytes(),
        };
        let (log, dropped) = open_log(dir, group_id, wal_opts.clone()).map_err(storage_err)?;
        // A restart starts from the newest snapshot: its head checkpoint goes into
        // the head (the blocks are in the TSDB's directory already), and Raft
        // applies the log after it.
        let newest = newest_snapshot(dir).map_err(storage_err)?;
        let db_dir = dir.join(TSDB_DIR);
        let opts = db_opts.clone();
        let from = newest.as_ref().map(|(p, _)| p.clone());
        let db = tokio::task::spawn_blocking(move || match from {
            Some(snap) => Db::open_without_wal_from(&db_dir, opts, &snap),
            None => Db::open_without_wal(&db_dir, opts),
        })
        .await
        .map_err(|e| storage_err(e.to_string()))?
        .map_err(|e| storage_err(e.to_string()))?;
        let db = Arc::new(db);
        let ids = match &newest {
            Some((path, _)) => load_series_ids(path).map_err(storage_err)?,
            None => SeriesIds::default(),
        };
        let stats = Arc::new(ApplyStats {
            series_ids: AtomicU64::new(ids.defined() as u64),
            series_ids_retired: AtomicU64::new(ids.retired() as u64),
            segments_purged: log.segments_purged(),
            replicas_dropped: AtomicU64::new(u64::from(dropped)),
            ..Default::default()
        });
        let applied = match &newest {
            Some((path, meta)) => {
                let index = meta.last_log_id.map_or(0, |l| l.index);
                stats.snapshot_index.store(index, Ordering::Relaxed);
                if let Ok(md) = std::fs::metadata(path) {
                    tracing::info!(group = group_id, index, dir = %path.display(), modified = ?md.modified().ok(), "WAL group opened from snapshot");
                }
                Applied {
                    last: meta.last_log_id,
                    membership: meta.last_membership.clone(),
                }
            }
            None => Applied::default(),
        };
        let sm = GroupStateMachine {
            group_id,
            dir: dir.to_path_buf(),
            db: db.clone(),
            applied: Arc::new(Mutex::new(applied)),
            stats: stats.clone(),
            apply_lock: Arc::new(tokio::sync::Mutex::new(())),
            series: Arc::new(Mutex::new(Default::default())),
            ids: Arc::new(Mutex::new(ids)),
        };
        let entries = raft_opts.group_snapshot_entries.max(1);
        let (heartbeat, election_min, election_max) = raft_opts.group_timing();
        let config = Config {
            cluster_name: format!("hearth-wal-{group_id}"),
            heartbeat_interval: heartbeat,
            election_timeout_min: election_min,
            election_timeout_max: election_max,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(entries),
            // A tail of the log stays for followers a little behind, so they do
            // not need the whole snapshot.
            max_in_snapshot_log_to_keep: (entries / 4).min(GROUP_LOG_TAIL_MAX),
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            // No timer heartbeats, and elections by the group's owner only, until
            // the reconciler says otherwise (`repair::group_timers`): a group led
            // by its owner sends its followers only its writes, and a nudge when
            // writes stop.
            enable_heartbeat: false,
            enable_elect: group_id == node_id,
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| RaftOpError::Rejected(e.to_string()))?,
        );
        let notices = Arc::new(CommitNotices::new(stats.commit_notices_deferred.clone()));
        let raft = GroupRaft::new(
            node_id,
            config.clone(),
            super::network::Network::group(group_id, notices.clone()),
            log,
            sm.clone(),
        )
        .await
        .map_err(|e| RaftOpError::Fatal(e.to_string()))?;
        let admissions = Admissions::default();
        let slot_generation = admissions.generation.clone();
        Ok(WalGroup {
            group_id,
            raft,
            db,
            stats,
            pending: Arc::new(Mutex::new(admissions)),
            slot_generation,
            notices,
            writes_done: Arc::default(),
            dir: dir.to_path_buf(),
            node_id,
            config,
            wal_opts,
            sm,
            told: Arc::new(tokio::sync::Mutex::new(None)),
            propose_order: Arc::new(tokio::sync::Mutex::new(())),
            #[cfg(test)]
            pause_after_admit: Arc::default(),
            retire: Arc::default(),
        })
    }

    /// The group's id: the id of the node it belongs to.
    pub fn id(&self) -> u64 {
        self.group_id
    }

    /// The group's TSDB on this node.
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// The state machine's counters.
    pub fn stats(&self) -> &ApplyStats {
        &self.stats
    }

    /// Whether this replica's log holds a membership.
    pub async fn is_initialized(&self) -> Result<bool, RaftOpError> {
        self.raft
            .is_initialized()
            .await
            .map_err(|e| RaftOpError::Fatal(e.to_string()))
    }

    /// Forms the group with `voters`. A group that exists already is left alone
    /// (`Ok(false)`).
    pub async fn initialize(
        &self,
        voters: BTreeMap<NodeId, NodeAddr>,
    ) -> Result<bool, RaftOpError> {
        match self.raft.initialize(voters).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(RaftError::APIError(InitializeError::NotInMembers(e))) => {
                Err(RaftOpError::Rejected(format!("cannot initialize: {e}")))
            }
            Err(RaftError::Fatal(f)) => Err(RaftOpError::Fatal(f.to_string())),
        }
    }

    /// The leader this replica knows of, with its address.
    pub fn leader(&self) -> Option<(NodeId, NodeAddr)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id).cloned()?;
        Some((id, addr))
    }

    /// Whether this node is the group's leader as far as it knows (no clone of
    /// the Raft metrics, unlike `leader`).
    pub fn leads(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    /// The voters of the group's effective membership.
    pub fn voters(&self) -> BTreeSet<NodeId> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config.membership().voter_ids().collect()
    }

    /// Whether this node is a voter of the group in its replica's view. Read in
    /// place: every `Select` naming the group asks, and copying the metrics (the
    /// replication map, the membership) was a few per cent of a small `Select`.
    pub fn is_voter(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.node_id)
    }

    /// Whether Raft itself has this node as a voter of its effective membership.
    /// Asked of the Raft core rather than its published metrics, which show a
    /// membership only a moment after it took effect (longer on a loaded machine).
    pub async fn is_voter_now(&self) -> Result<bool, RaftOpError> {
        let me = self.node_id;
        self.raft
            .with_raft_state(move |st| {
                st.membership_state
                    .effective()
                    .membership()
                    .voter_ids()
                    .any(|v| v == me)
            })
            .await
            .map_err(|e| RaftOpError::Fatal(e.to_string()))
    }

    /// The learners of the group's effective membership.
    pub fn learners(&self) -> BTreeSet<NodeId> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config.membership().learner_ids().collect()
    }

    /// Whether this replica leads the group now.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.node_id) && m.state == openraft::ServerState::Leader
    }

    /// Switches the group's timer heartbeats (sent while leading) and elections
    /// (started after the election timeout) on or off; `repair::group_timers`
    /// decides which. openraft's ticks, which drive both, run only while one of
    /// them can happen, or while this node leads a membership it is no longer a
    /// voter of (a tick steps it down): a follower that may not campaign and a
    /// leader without timer heartbeats have nothing to do on a tick.
    pub fn set_timers(&self, heartbeat: bool, elect: bool) {
        let switches = self.raft.runtime_config();
        switches.heartbeat(heartbeat);
        switches.elect(elect);
        let tick = if self.is_leader() {
            heartbeat || !self.is_voter()
        } else {
            elect
        };
        switches.tick(tick);
    }

    /// As the group's leader: its last log index, and whether another replica
    /// has not yet matched it. `None` on a replica that does not lead.
    pub fn leader_progress(&self) -> Option<(u64, bool)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        if m.state != openraft::ServerState::Leader {
            return None;
        }
        let last = m.last_log_index.unwrap_or(0);
        let behind = m.replication.as_ref().is_some_and(|r| {
            r.iter()
                .any(|(id, matched)| *id != self.node_id && matched.map_or(0, |l| l.index) < last)
        });
        Some((last, behind))
    }

    /// Whether the leader may leave out commit notices: while it is the owner
    /// and sends no timer heartbeats, and the group has no learners.
    pub fn set_defer_commit_notices(&self, defer: bool) {
        self.notices.set_defer(defer && self.learners().is_empty());
    }

    /// After a write, when the leader leaves out commit notices: one heartbeat
    /// round `COMMIT_NOTICE_DELAY` later unless another write finished
    /// meanwhile, so followers learn the commit of the last write of a run
    /// within moments (the writes before learn it from the entries after them).
    fn notice_commit_soon(&self) {
        if !self.notices.defers() {
            return;
        }
        let done = self.writes_done.fetch_add(1, Ordering::Relaxed) + 1;
        let g = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(COMMIT_NOTICE_DELAY).await;
            if g.writes_done.load(Ordering::Relaxed) == done {
                g.nudge().await;
            }
        });
    }

    /// One heartbeat round now, timers or not: the followers learn the leader's
    /// commit index, and one that lags is sent what it lacks.
    pub async fn nudge(&self) {
        self.notices.new_round();
        if let Err(e) = self.raft.trigger().heartbeat().await {
            tracing::debug!(group = self.group_id, error = %e, "WAL group heartbeat");
        }
    }

    /// The last log index this replica applied to its TSDB (0: none).
    pub fn applied_index(&self) -> u64 {
        let m = self.raft.metrics().borrow().clone();
        m.last_applied.map_or(0, |l| l.index)
    }

    /// Adds `id` as a learner (on the leader) and waits until it has caught up
    /// with the log, by snapshot first when the log it needs was purged.
    pub async fn add_learner(
        &self,
        id: NodeId,
        addr: NodeAddr,
        timeout: Duration,
    ) -> Result<(), RaftOpError> {
        let group = self.group_id;
        match tokio::time::timeout(timeout, self.raft.add_learner(id, addr, true)).await {
            Err(_) => Err(RaftOpError::Rejected(format!(
                "WAL group {group}: learner {id} did not catch up within {timeout:?}"
            ))),
            Ok(r) => r
                .map(|_| ())
                .map_err(|e| RaftOpError::Rejected(format!("WAL group {group}: {e}"))),
        }
    }

    /// Makes `voters` the group's voters (on the leader; each must be a caught-up
    /// learner or a voter already) and removes every other node from the group,
    /// learners included. openraft goes through a joint configuration, so both the
    /// old and the new voters must have a quorum.
    pub async fn set_voters(
        &self,
        voters: BTreeSet<NodeId>,
        timeout: Duration,
    ) -> Result<(), RaftOpError> {
        use openraft::ChangeMembers;
        let group = self.group_id;
        let failed = |e: String| RaftOpError::Rejected(format!("WAL group {group}: {e}"));
        let change = async {
            if self.voters() != voters {
                self.raft
                    .change_membership(ChangeMembers::ReplaceAllVoters(voters.clone()), false)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
            }
            let extra: BTreeSet<NodeId> = self.learners().difference(&voters).copied().collect();
            if !extra.is_empty() {
                self.raft
                    .change_membership(ChangeMembers::RemoveNodes(extra), false)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
            }
            Ok(())
        };
        match tokio::time::timeout(timeout, change).await {
            Err(_) => Err(failed(format!(
                "membership change to {voters:?} not committed within {timeout:?}"
            ))),
            Ok(r) => r,
        }
    }

    /// What the `WalGroups.Held` RPC says about this replica.
    fn held(&self) -> pb::HeldGroup {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        pb::HeldGroup {
            group_id: self.group_id,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            leader_id: m.current_leader,
            applied_index: m.last_applied.map_or(0, |l| l.index),
        }
    }

    /// The current Raft term of this replica.
    fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// What appending (`labels`, `t`, `v`) to this group would answer now, as a
    /// TSDB append answers (`Ok(false)`: an identical duplicate, to be skipped):
    /// checked against samples admitted here as leader in the current term, else
    /// against this replica's TSDB.
    pub fn check_sample(&self, labels: &Labels, t: i64, v: f64) -> Result<bool, AppendError> {
        let hash = labels.map_hash();
        let term = self.term();
        let admitted = {
            let p = self.pending.lock();
            (p.term == term)
                .then(|| p.last(hash, labels).map(|l| (l.t, l.v_bits)))
                .flatten()
        };
        match admitted {
            Some(last) => check_order(Some(last), t, v),
            None => self.db.check_append_hashed(labels, hash, t, v),
        }
    }

    /// The slot of `labels` in this replica's admissions: `hint` (a ref this
    /// returned before) while its generation lasts, else looked up by labels.
    pub fn slot_of(&self, hint: SeriesRef, labels: &Labels) -> SlotRef {
        if let Some(r) = SlotRef::from_series_ref(hint) {
            if r.generation == self.slot_generation.load(Ordering::Relaxed) {
                return r;
            }
        }
        let mut p = self.pending.lock();
        // A replica that does not lead (its writes are forwarded) names slots
        // too, and admits nothing that would trim them.
        p.trim_if_full();
        let slot = p.slot_for(labels, labels.map_hash());
        SlotRef {
            generation: p.generation.load(Ordering::Relaxed),
            slot,
        }
    }

    /// Frees the admission slots of series no write in flight admitted, which
    /// ends their generation (as past `ADMITTED_SERIES_MAX` series).
    #[cfg(test)]
    pub(crate) fn trim_admissions(&self) {
        self.pending.lock().trim();
    }

    /// Checks every sample of `series` and, if none is refused, records the
    /// batch's newest sample per series as admitted and encodes the batch for
    /// the log, naming each series by its id. The write is in flight until its
    /// `Admitted` is dropped. `slots`, when given, names the series' slots in
    /// `Admissions` (one per series, from `slot_of`); a slot no longer theirs is
    /// looked up again.
    fn admit(
        &self,
        series: &[BatchSeries],
        slots: Option<BatchSlots<'_>>,
    ) -> Result<Admission, GroupWriteError> {
        let group = self.group_id;
        let (term, log_applied) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.current_term, whole_log_applied(&m))
        };
        let min_valid = self.db.head().appendable_min_valid_time();
        let mut guard = self.pending.lock();
        let p = &mut *guard;
        if p.term != term {
            // Ids of this term start past every id an entry in the log may
            // define, which takes having applied them all: the entries before
            // the term's first, and after a restart that kept this node leader
            // in the same term, the entries it logged in this term before.
            if !log_applied {
                return Err(GroupWriteError::NotLeader {
                    group,
                    leader: None,
                });
            }
            p.enter_term(term, self.sm.ids.lock().next_id());
        }
        if u64::from(p.next_id) + series.len() as u64 > wal_batch::SERIES_ID_MAX {
            return Err(GroupWriteError::Fatal {
                group,
                reason: "series ids exhausted".into(),
            });
        }
        p.trim_if_full();
        // Slots named in an older generation may have other series now.
        let slots = slots
            .filter(|b| {
                b.generation == p.generation.load(Ordering::Relaxed)
                    && b.slots.len() == series.len()
            })
            .map(|b| b.slots);
        let write = p.next_write;
        // A batch defines an id again while the write that defined it may not
        // be applied here yet.
        let oldest = p.in_flight.first().copied().unwrap_or(write);
        // Each series is recorded as it passes; a refusal later in the batch
        // puts back what each series had before, in reverse (refusals are rare).
        let mut before: Vec<(u32, Option<AdmittedLast>)> = Vec::with_capacity(series.len());
        // Each series' id and whether this batch defines it (None: no samples).
        let mut named: Vec<Option<(u32, bool)>> = Vec::with_capacity(series.len());
        let mut defined = Vec::new();
        let mut refused = None;
        for (i, s) in series.iter().enumerate() {
            let n = p.slot_named(slots.map(|sl| sl[i]), &s.labels);
            let slot_last = p.slots[n as usize].last;
            before.push((n, slot_last));
            let (mut last, known) = match slot_last {
                Some(mut last) => {
                    let define = last.defined_by >= oldest;
                    if define {
                        last.defined_by = write;
                        defined.push(p.slots[n as usize].key.clone());
                    }
                    named.push(Some((last.id, define)));
                    (last, true)
                }
                None => {
                    // Not admitted here before: the first sample is checked against
                    // the TSDB, the rest against the one before them.
                    let Some(first) = s.samples.first() else {
                        named.push(None);
                        continue;
                    };
                    let k = p.slots[n as usize].key.clone();
                    if let Err(error) = self
                        .db
                        .check_append_hashed(&k.labels, k.hash, first.t, first.v)
                    {
                        refused = Some((error, s, first.t));
                        break;
                    }
                    // An id this replica applied the definition of is referred
                    // to; else the series gets the next id.
                    // Not one proposed for retirement.
                    let applied_id = self
                        .sm
                        .ids
                        .lock()
                        .find(&k.labels, k.hash)
                        .filter(|id| !p.retiring.contains(id));
                    let (id, defined_by) = match applied_id {
                        Some(id) => (id, 0),
                        None => {
                            let id = p.next_id;
                            p.next_id += 1;
                            defined.push(k);
                            (id, write)
                        }
                    };
                    named.push(Some((id, defined_by == write)));
                    let last = AdmittedLast {
                        t: first.t,
                        v_bits: first.v.to_bits(),
                        write,
                        id,
                        defined_by,
                    };
                    (last, false)
                }
            };
            last.write = write;
            for smp in &s.samples[usize::from(!known)..] {
                let checked = if smp.t < min_valid {
                    Err(AppendError::OutOfBounds)
                } else {
                    check_order(Some((last.t, last.v_bits)), smp.t, smp.v)
                };
                match checked {
                    Ok(true) => (last.t, last.v_bits) = (smp.t, smp.v.to_bits()),
                    Ok(false) => {}
                    Err(error) => {
                        refused = Some((error, s, smp.t));
                        break;
                    }
                }
            }
            p.slots[n as usize].last = Some(last);
            if refused.is_some() {
                break;
            }
        }
        if let Some((error, refused_series, t)) = refused {
            // Ids assigned here stay unused: a gap in the table.
            for (n, b) in before.into_iter().rev() {
                p.slots[n as usize].last = b;
            }
            return Err(GroupWriteError::Refused {
                group,
                error,
                series: refused_series.labels.to_string(),
                t,
            });
        }
        p.next_write += 1;
        p.in_flight.insert(write);
        drop(guard);
        let batch: Vec<IdSeries<'_>> = series
            .iter()
            .zip(&named)
            .filter_map(|(s, n)| {
                let (id, define) = (*n)?;
                Some(IdSeries {
                    id,
                    define: define.then_some(&s.labels),
                    samples: &s.samples,
                })
            })
            .collect();
        Ok(Admission {
            write,
            batch: wal_batch::encode_ids(term, &batch),
            defined,
        })
    }

    /// Checks `series` against what the group holds (a refused sample refuses the
    /// whole batch, and nothing is logged), appends them to the log as one batch
    /// and returns its index once a quorum has it on disk and this node applied
    /// it, or an error within `timeout`. A batch not applied because it named a
    /// series id retired before it was logged is admitted again (new ids) and
    /// proposed again; after a success, the leader may retire unused ids
    /// (`retire_after_write`).
    pub async fn write(
        &self,
        series: &[BatchSeries],
        timeout: Duration,
    ) -> Result<u64, GroupWriteError> {
        self.write_slotted(series, None, timeout).await
    }

    /// `write`, with the series' slots (`slot_of`) when the writer knows them.
    pub async fn write_slotted(
        &self,
        series: &[BatchSeries],
        slots: Option<BatchSlots<'_>>,
        timeout: Duration,
    ) -> Result<u64, GroupWriteError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut propose_timeout = timeout;
        let mut readmitted = 0;
        let index = loop {
            self.wait_admission_ready(deadline).await;
            // Admission checks each sample against the newest one admitted before
            // it, so the log must take batches in admission order: two writers of
            // one series, admitted t1 then t2, must not be logged t2 then t1, or
            // t1 would be refused when applied after it had been acknowledged.
            let Ok(order) = tokio::time::timeout_at(deadline, self.propose_order.lock()).await
            else {
                return Err(GroupWriteError::Timeout {
                    group: self.group_id,
                    timeout,
                });
            };
            let admission = self.admit(series, slots)?;
            let write = admission.write;
            let mut admitted = Admitted {
                pending: &self.pending,
                write,
                defined: admission.defined,
                applied: false,
            };
            #[cfg(test)]
            {
                let ms = self.pause_after_admit.load(Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let queued = self.queue_proposal(admission.batch).await;
            drop(order);
            let (index, outcome) = self.proposal_outcome(queued?, propose_timeout).await?;
            match outcome {
                Outcome::Applied => {
                    admitted.applied = true;
                    break index;
                }
                // Logged in another term than its ids were assigned in, and not
                // applied: admitted again, it gets this term's ids.
                Outcome::StaleTerm => {
                    return Err(GroupWriteError::NotLeader {
                        group: self.group_id,
                        leader: None,
                    })
                }
                Outcome::RetiredId => {
                    drop(admitted);
                    self.forget_retired(write);
                    self.stats.writes_readmitted.fetch_add(1, Ordering::Relaxed);
                    readmitted += 1;
                    propose_timeout =
                        deadline.saturating_duration_since(tokio::time::Instant::now());
                    if propose_timeout.is_zero() {
                        return Err(GroupWriteError::Timeout {
                            group: self.group_id,
                            timeout,
                        });
                    }
                    if readmitted > READMIT_MAX {
                        return Err(GroupWriteError::Fatal {
                            group: self.group_id,
                            reason: format!(
                                "the batch named retired series ids {readmitted} times"
                            ),
                        });
                    }
                }
            }
        };
        self.tell_commit(deadline, timeout).await?;
        self.retire_after_write();
        self.notice_commit_soon();
        Ok(index)
    }

    /// After a batch was not applied because it named an id retired before it
    /// was logged: forgets the label → id of every series whose id is retired,
    /// and the batch's own series whose newest admitted sample was its own (not
    /// applied: admitted again, they are checked against the TSDB), so admitting
    /// it again names its series by live or new ids. A series a later write
    /// admitted newer samples of stays: admitted again, the batch's older
    /// samples are refused (they could no longer be applied in order).
    fn forget_retired(&self, write: u64) {
        let mut p = self.pending.lock();
        p.forget_retired(&self.sm.ids.lock());
        // Only the batch's own series were admitted by its write.
        p.forget_where(|l| l.write == write);
    }

    /// Waits, until `deadline` at most, for this replica to be ready to admit
    /// writes when it leads the group: it admitted in its current term already,
    /// or it applied its whole log (`whole_log_applied`), so `admit` may number
    /// series ids for the term.
    async fn wait_admission_ready(&self, deadline: tokio::time::Instant) {
        let me = self.node_id;
        let pending = self.pending.clone();
        let mut metrics = self.raft.metrics();
        let ready = metrics.wait_for(move |m| {
            m.current_leader != Some(me)
                || pending.lock().term == m.current_term
                || whole_log_applied(m)
        });
        let _ = tokio::time::timeout_at(deadline, ready).await;
    }

    /// Once a write succeeded: when the head removed series since the leader
    /// last looked, looks for series ids to retire, in the background.
    fn retire_after_write(&self) {
        let removed = self.db.head().stats.series_removed.load(Ordering::Relaxed);
        if self.retire.removed_checked.load(Ordering::Relaxed) == removed {
            return;
        }
        let Ok(busy) = self.retire.busy.clone().try_lock_owned() else {
            // One at a time; the next write looks again.
            return;
        };
        self.retire
            .removed_checked
            .store(removed, Ordering::Relaxed);
        let g = self.clone();
        tokio::spawn(async move {
            let _busy = busy;
            if let Err(e) = g.retire_unused_locked(RETIRE_TIMEOUT).await {
                tracing::debug!(group = g.group_id, error = %e, "retiring series ids");
            }
        });
    }

    /// As the group's leader, retires the series ids whose series the group's
    /// head no longer holds and that no write in flight uses: proposes one
    /// retirement entry at a time (at most `RETIRE_IDS_MAX` ids each) until none
    /// is left. Returns how many ids were retired. Does nothing while another
    /// retirement is proposed, or on a replica not leading the group.
    pub async fn retire_unused_ids(&self, timeout: Duration) -> Result<usize, GroupWriteError> {
        let Ok(_busy) = self.retire.busy.try_lock() else {
            return Ok(0);
        };
        self.retire_unused_locked(timeout).await
    }

    /// `retire_unused_ids`, with `RetireState::busy` held by the caller.
    async fn retire_unused_locked(&self, timeout: Duration) -> Result<usize, GroupWriteError> {
        let mut total = 0;
        while let Some((term, ids)) = self.retire_candidates() {
            let n = ids.len();
            let result = self
                .propose(wal_batch::encode_retire(term, &ids), timeout)
                .await;
            {
                let mut p = self.pending.lock();
                for id in &ids {
                    p.retiring.remove(id);
                }
            }
            match result? {
                (_, Outcome::Applied) => total += n,
                _ => break,
            }
            if n < wal_batch::RETIRE_IDS_MAX {
                break;
            }
        }
        Ok(total)
    }

    /// The ids to retire next, sorted, with the term they are chosen in: live ids
    /// whose series the head does not hold, not used by a write in flight, nor
    /// proposed for retirement already. They are marked as proposed (`admit`
    /// assigns them to no series) and forgotten by label, so no write admitted
    /// from now on names them. None when there are none, or this replica does not
    /// lead the group or has not admitted in its current term yet.
    fn retire_candidates(&self) -> Option<(u64, Vec<u32>)> {
        if !self.is_leader() {
            return None;
        }
        let term = self.term();
        // Copied out (label sets are shared pointers) so that applying goes on
        // while the head is asked.
        let live: Vec<(u32, Labels)> = self
            .sm
            .ids
            .lock()
            .live_ids()
            .map(|(id, s)| (id, s.labels.clone()))
            .collect();
        let head = self.db.head();
        let mut unused: Vec<u32> = live
            .into_iter()
            .filter(|(_, l)| !head.has_series(l))
            .map(|(id, _)| id)
            .collect();
        if unused.is_empty() {
            return None;
        }
        let mut p = self.pending.lock();
        if p.term != term {
            return None;
        }
        let in_flight = p.ids_in_flight();
        unused.retain(|id| !in_flight.contains(id) && !p.retiring.contains(id));
        unused.truncate(wal_batch::RETIRE_IDS_MAX);
        if unused.is_empty() {
            return None;
        }
        p.retiring.extend(unused.iter().copied());
        let chosen: crate::fxhash::HashSet<u32> = unused.iter().copied().collect();
        p.forget_where(|l| chosen.contains(&l.id));
        Some((term, unused))
    }

    /// In a group of two voters, waits until the other voter knows that what this
    /// leader committed so far is committed. A follower learns of a commit from
    /// the leader's next message; should the leader die before sending it, the
    /// survivor holds the entry on disk but cannot apply it, and alone it cannot
    /// elect itself to commit it: an acknowledged sample would be unreadable
    /// until the leader returns or is removed. With three or more voters the
    /// survivors elect a leader, which commits it.
    ///
    /// One round (openraft's read-index heartbeats, which carry the leader's
    /// commit index and which the voter answers only once it has taken it) serves
    /// every write committed before the round started; writes committed during a
    /// round wait for the next.
    async fn tell_commit(
        &self,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<(), GroupWriteError> {
        let two_voters = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.membership_config
                .membership()
                .get_joint_config()
                .iter()
                .any(|c| c.len() == 2)
        };
        if !two_voters {
            return Ok(());
        }
        let committed_at = std::time::Instant::now();
        let group = self.group_id;
        let unconfirmed = GroupWriteError::Unconfirmed { group, timeout };
        let Ok(mut told) = tokio::time::timeout_at(deadline, self.told.lock()).await else {
            return Err(unconfirmed);
        };
        loop {
            if told.is_some_and(|t| t >= committed_at) {
                return Ok(());
            }
            let started = std::time::Instant::now();
            match tokio::time::timeout_at(deadline, self.raft.get_read_log_id()).await {
                Err(_) => return Err(unconfirmed),
                Ok(Ok(_)) => *told = Some(started),
                // Another leader was elected: with two voters that took this
                // voter's vote, and the new leader's log holds the entry, which
                // it commits before anything else.
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                    return Ok(())
                }
                // No answer from the other voter in time: ask again until the
                // deadline.
                Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
                    tokio::time::sleep_until(
                        deadline.min(tokio::time::Instant::now() + TELL_COMMIT_RETRY),
                    )
                    .await;
                    if tokio::time::Instant::now() >= deadline {
                        return Err(unconfirmed);
                    }
                }
                Ok(Err(e)) => {
                    return Err(GroupWriteError::Fatal {
                        group,
                        reason: e.to_string(),
                    })
                }
            }
        }
    }

    /// Proposes one command and waits until this replica applied it: its log
    /// index and what applying it did.
    async fn propose(
        &self,
        batch: Vec<u8>,
        timeout: Duration,
    ) -> Result<(u64, Outcome), GroupWriteError> {
        let queued = {
            let _order = self.propose_order.lock().await;
            self.queue_proposal(batch).await?
        };
        self.proposal_outcome(queued, timeout).await
    }

    /// Hands `batch` to openraft's queue without waiting for it to be applied
    /// (an unbounded channel: this does not wait for the log).
    async fn queue_proposal(&self, batch: Vec<u8>) -> Result<ProposalReceiver, GroupWriteError> {
        self.raft
            .client_write_ff(Batch(batch.into()))
            .await
            .map_err(|e| GroupWriteError::Fatal {
                group: self.group_id,
                reason: e.to_string(),
            })
    }

    /// Waits, within `timeout`, until this replica applied a queued proposal:
    /// its log index and what applying it did.
    async fn proposal_outcome(
        &self,
        queued: ProposalReceiver,
        timeout: Duration,
    ) -> Result<(u64, Outcome), GroupWriteError> {
        let group = self.group_id;
        match tokio::time::timeout(timeout, queued).await {
            Err(_) => Err(GroupWriteError::Timeout { group, timeout }),
            Ok(Err(_)) => Err(GroupWriteError::Fatal {
                group,
                reason: "the group's Raft stopped before answering".into(),
            }),
            Ok(Ok(Ok(resp))) => Ok((resp.log_id.index, resp.data)),
            Ok(Ok(Err(ClientWriteError::ForwardToLeader(f)))) => Err(GroupWriteError::NotLeader {
                group,
                leader: f.leader_id.zip(f.leader_node),
            }),
            Ok(Ok(Err(e))) => Err(GroupWriteError::Fatal {
                group,
                reason: e.to_string(),
            }),
        }
    }

    async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(group = self.group_id, error = %e, "WAL group shutdown");
        }
    }
}

/// A `hearth_wal_group_*` metric: name, type, help and how to read it.
type MetricDef = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ApplyStats) -> u64,
);

/// Every WAL group this node is a replica of. Cheap to clone.
#[derive(Clone)]
pub struct WalGroups {
    inner: Arc<GroupsInner>,
}

struct GroupsInner {
    /// `<cluster dir>/groups`: one subdirectory per group, named by its id.
    dir: PathBuf,
    node_id: NodeId,
    raft: RaftOptions,
    db: DbOptions,
    groups: RwLock<BTreeMap<u64, WalGroup>>,
    /// Held while a group is being opened, so it is opened once.
    opening: tokio::sync::Mutex<()>,
    /// Connections to peers for `Held` and forwarded writes.
    channels: Connections,
    /// Set once `open_existing` has opened every group found on disk.
    existing_opened: std::sync::atomic::AtomicBool,
    /// Whether the node's own storage (outside WAL groups) holds nothing: told by
    /// the server at start; in cluster mode nothing writes into it afterwards.
    own_storage_empty: std::sync::atomic::AtomicBool,
}

impl WalGroups {
    /// An empty registry over `dir`; `open_existing` opens the groups found there.
    pub fn new(dir: &Path, node_id: NodeId, raft: RaftOptions, db: DbOptions) -> WalGroups {
        WalGroups {
            inner: Arc::new(GroupsInner {
                dir: dir.to_path_buf(),
                node_id,
                raft,
                db,
                groups: RwLock::new(BTreeMap::new()),
                opening: tokio::sync::Mutex::new(()),
                channels: Connections::default(),
                existing_opened: std::sync::atomic::AtomicBool::new(false),
                own_storage_empty: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The node this registry's replicas belong to.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// Opens every group found in the registry's directory (a restart: each
    /// replays its committed log into its TSDB).
    pub async fn open_existing(&self) -> Result<(), RaftOpError> {
        let dir = &self.inner.dir;
        let io_err = |e: std::io::Error| RaftOpError::Storage {
            path: dir.display().to_string(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let mut ids = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io_err)? {
            let e = e.map_err(io_err)?;
            // A replica whose removal a crash interrupted.
            if e.file_name().to_string_lossy().ends_with(REMOVING_SUFFIX) {
                std::fs::remove_dir_all(e.path()).map_err(io_err)?;
                continue;
            }
            if let Some(id) = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
                ids.push(id);
            }
        }
        for id in ids {
            self.get_or_open(id).await?;
        }
        self.inner
            .existing_opened
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Whether every group this node held when it started is open (`open_existing`
    /// is done): from then on, a group not held here was never created here.
    pub fn existing_opened(&self) -> bool {
        self.inner
            .existing_opened
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The connections to peers that `fetch_held` and `forward_write` reuse.
    pub fn peer_channels(&self) -> &Connections {
        &self.inner.channels
    }

    /// The group `id` if this node holds it.
    pub fn get(&self, id: u64) -> Option<WalGroup> {
        self.inner.groups.read().get(&id).cloned()
    }

    /// Every group this node holds, by id.
    pub fn all(&self) -> Vec<WalGroup> {
        self.inner.groups.read().values().cloned().collect()
    }

    /// The group `id`, opened (created) if this node does not hold it yet.
    pub async fn get_or_open(&self, id: u64) -> Result<WalGroup, RaftOpError> {
        if let Some(g) = self.get(id) {
            return Ok(g);
        }
        let _opening = self.inner.opening.lock().await;
        if let Some(g) = self.get(id) {
            return Ok(g);
        }
        let dir = self.inner.dir.join(id.to_string());
        let g = WalGroup::open(
            &dir,
            id,
            self.inner.node_id,
            &self.inner.raft,
            &self.inner.db,
        )
        .await?;
        tracing::info!(group = id, dir = %dir.display(), "opened WAL group");
        self.inner.groups.write().insert(id, g.clone());
        Ok(g)
    }

    /// Records whether the node's own storage (outside WAL groups) is empty, which
    /// `held` tells the other members (until then it says it is not).
    pub fn set_own_storage_empty(&self, empty: bool) {
        self.inner
            .own_storage_empty
            .store(empty, std::sync::atomic::Ordering::Release);
    }

    /// What the `WalGroups.Held` RPC answers: every group held, as seen here.
    pub fn held(&self) -> pb::HeldResponse {
        pb::HeldResponse {
            groups: self.all().iter().map(WalGroup::held).collect(),
            own_storage_empty: self
                .inner
                .own_storage_empty
                .load(std::sync::atomic::Ordering::Acquire),
        }
    }

    /// Drops this node's replica of group `id`: stops its Raft and deletes its
    /// directory (log, TSDB, snapshots). Called once the group's leader removed
    /// this node from the group, so the data neither answers reads nor keeps the
    /// disk. The directory is renamed first, so a crash midway leaves nothing that
    /// `open_existing` would take for a group.
    pub async fn remove(&self, id: u64) -> Result<(), RaftOpError> {
        let _opening = self.inner.opening.lock().await;
        let Some(g) = self.inner.groups.write().remove(&id) else {
            return Ok(());
        };
        g.shutdown().await;
        let db = g.db.clone();
        let _ = tokio::task::spawn_blocking(move || db.close()).await;
        let doomed = self.inner.dir.join(format!("{id}{REMOVING_SUFFIX}"));
        let storage_err = |e: std::io::Error| RaftOpError::Storage {
            path: g.dir.display().to_string(),
            reason: e.to_string(),
        };
        std::fs::rename(&g.dir, &doomed).map_err(storage_err)?;
        std::fs::remove_dir_all(&doomed).map_err(storage_err)?;
        tracing::info!(group = id, "dropped this node's replica of the WAL group");
        Ok(())
    }

    /// Re-forms group `id` with this node as its only voter: stops its Raft,
    /// appends that membership as the first entry of a new term, and starts Raft
    /// again over the same TSDB and state machine, so this node elects itself and
    /// the reconciler can add replicas. Only for a group whose other voters were
    /// all removed from the cluster for good: then no quorum can ever form again,
    /// and this replica holds every entry they could have committed with it.
    pub async fn reform(&self, id: u64, addr: NodeAddr) -> Result<(), RaftOpError> {
        let _opening = self.inner.opening.lock().await;
        let Some(old) = self.get(id) else {
            return Err(RaftOpError::Rejected(format!(
                "WAL group {id}: not held by this node"
            )));
        };
        old.shutdown().await;
        let me = self.inner.node_id;
        let storage_err = |reason: String| RaftOpError::Storage {
            path: old.dir.display().to_string(),
            reason,
        };
        let mut log = LogStore::<GroupConfig>::open(&old.dir.join(RAFT_DIR), old.wal_opts.clone())
            .map_err(|e| storage_err(e.to_string()))?;
        let voters: BTreeSet<NodeId> = [me].into();
        let nodes: BTreeMap<NodeId, NodeAddr> = [(me, addr)].into();
        let membership = openraft::Membership::new(vec![voters], nodes);
        let log_id = log
            .append_as_new_term(me, EntryPayload::Membership(membership))
            .await
            .map_err(|e| storage_err(e.to_string()))?;
        let raft = GroupRaft::new(
            me,
            old.config.clone(),
            super::network::Network::group(id, old.notices.clone()),
            log,
            old.sm.clone(),
        )
        .await
        .map_err(|e| RaftOpError::Fatal(e.to_string()))?;
        // Its only voter elects itself at once, owner or not.
        raft.runtime_config().elect(true);
        let g = WalGroup { raft, ..old };
        self.inner.groups.write().insert(id, g);
        tracing::warn!(group = id, term = log_id.leader_id.term, index = log_id.index, "re-formed the WAL group with this node as its only voter: its other voters were removed from the cluster");
        Ok(())
    }

    /// The `hearth_wal_group_*` metrics of every group this node holds, in the
    /// text exposition format.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write as _;
        let groups = self.all();
        let mut out = String::new();
        let metrics: [MetricDef; 14] = [
            (
                "hearth_wal_group_snapshots_built_total",
                "counter",
                "Snapshots of the WAL group this replica built.",
                |s| s.snapshots_built.load(Ordering::Relaxed),
            ),
            (
                "hearth_wal_group_snapshots_installed_total",
                "counter",
                "Snapshots of the WAL group this replica installed from its leader.",
                |s| s.snapshots_installed.load(Ordering::Relaxed),
            ),
            (
                "hearth_wal_group_snapshot_bytes",
                "gauge",
                "Bytes of the archive of the newest snapshot built or installed.",
                |s| s.snapshot_bytes.load(Ordering::Relaxed),
            ),
            (
                "hearth_wal_group_snapshot_index",
                "gauge",
                "Log index of the newest snapshot.",
                |s| s.snapshot_index.load(Ordering::Relaxed),
            ),
            (
                "hearth_wal_group_segments_purged_total",
                "counter",
                "Log segment files deleted after snapshots.",
                |s| s.segments_purged.load(Ordering::Relaxed),
            ),
            (
                "hearth_wal_group_samples_refused_total",
                "counter",
                "Samples of committed entries the group's TSDB refused when applying them.",
                |s| s.samples_refused.load(Ordering::Relaxed),
            ),
            (
                "hearth_wal_group_replicas_dropped_total",
                "counter",
                "Times this replica's copy of the group was dropped at start because its log failed its checks, to be sent again by the leader.",
                |s| s.replicas_dropped.load(Ordering::Relaxed),
            ),
            (
                "hearth_wal_group_batches_stale_total",
                "counter",
                "Committed entries not applied because their series ids were assigned in another term than their entry's, or a batch named a retired series id (the write was retried).",
                |s| s.batches_stale.load(Ordering::Relaxed),
            ),
            (
                "hearth_wal_group_series_ids",
                "gauge",
                "Live series ids (defined, not retired) in the WAL group's id table.",
                |s| s.series_ids.load(Ordering::Relaxed),
            ),
            (
                "hearth_wal_group_series_ids_retired_total",
                "counter",
                "Series ids retired in the WAL group's id table (their series left the head).",
                |s| s.series_ids_retired.load(Ordering::Relaxed),
            ),
            (
                "hearth_wal_group_writes_readmitted_total",
                "counter",
                "Writes this leader admitted again because their batch named a series id retired before it was logged.",
                |s| s.writes_readmitted.load(Ordering::Relaxed),
            ),
            (
                "hearth_wal_group_commit_notices_deferred_total",
                "counter",
                "Commit notices (empty AppendEntries sent because the commit index moved) this leader left out: followers learn the commit index from the next entries or heartbeat round.",
                |s| s.commit_notices_deferred.load(Ordering::Relaxed),
            ),
            (
                "hearth_wal_group_entries_applied_total",
                "counter",
                "Log entries applied since the group was opened.",
                |s| s.entries_applied.load(Ordering::Relaxed),
            ),
            (
                "hearth_wal_group_applied_index",
                "gauge",
                "Log index of the last entry this replica applied (by entry or snapshot).",
                |s| s.applied_index.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, get) in metrics {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for g in &groups {
                let _ = writeln!(out, "{name}{{group=\"{}\"}} {}", g.id(), get(g.stats()));
            }
        }
        let _ = writeln!(
            out,
            "# HELP hearth_wal_group_voter 1 for each voter of the WAL group in this replica's view of its membership.\n# TYPE hearth_wal_group_voter gauge"
        );
        for g in &groups {
            for v in g.voters() {
                let _ = writeln!(
                    out,
                    "hearth_wal_group_voter{{group=\"{}\",node=\"{v}\"}} 1",
                    g.id()
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP hearth_wal_group_leader Whether this replica leads the WAL group.\n# TYPE hearth_wal_group_leader gauge"
        );
        for g in &groups {
            let _ = writeln!(
                out,
                "hearth_wal_group_leader{{group=\"{}\"}} {}",
                g.id(),
                u8::from(g.is_leader())
            );
        }
        out
    }

    /// The gRPC service carrying every group's Raft RPCs and forwarded writes.
    pub fn service(&self) -> pb::wal_groups_server::WalGroupsServer<WalGroupsService> {
        pb::wal_groups_server::WalGroupsServer::new(WalGroupsService {
            groups: self.clone(),
        })
        .max_decoding_message_size(crate::cluster::query_service::MESSAGE_BYTES_MAX)
    }

    /// Stops every group's Raft and flushes its TSDB.
    pub async fn shutdown(&self) {
        for g in self.all() {
            g.shutdown().await;
            let db = g.db.clone();
            let _ = tokio::task::spawn_blocking(move || db.close()).await;
        }
    }
}

/// Serves the `WalGroups` gRPC service.
pub struct WalGroupsService {
    groups: WalGroups,
}

impl WalGroupsService {
    async fn group(&self, id: u64) -> Result<WalGroup, Status> {
        self.groups
            .get_or_open(id)
            .await
            .map_err(|e| Status::unavailable(format!("WAL group {id}: {e}")))
    }
}

#[tonic::async_trait]
impl pb::wal_groups_server::WalGroups for WalGroupsService {
    async fn append_entries(
        &self,
        req: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        let req = req.into_inner();
        let g = self.group(req.group_id).await?;
        handle_append(&g.raft, req).await
    }

    async fn vote(
        &self,
        req: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        let req = req.into_inner();
        let g = self.group(req.group_id).await?;
        handle_vote(&g.raft, req).await
    }

    async fn install_snapshot(
        &self,
        req: Request<pb::InstallSnapshotRequest>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        let req = req.into_inner();
        let g = self.group(req.group_id).await?;
        handle_install_snapshot(&g.raft, req).await
    }

    async fn held(
        &self,
        _req: Request<pb::HeldRequest>,
    ) -> Result<Response<pb::HeldResponse>, Status> {
        Ok(Response::new(self.groups.held()))
    }

    async fn write(
        &self,
        req: Request<pb::GroupWriteRequest>,
    ) -> Result<Response<pb::GroupWriteResponse>, Status> {
        let timeout = FORWARDED_WRITE_TIMEOUT;
        let req = req.into_inner();
        let Some(g) = self.groups.get(req.group_id) else {
            return Err(Status::failed_precondition(format!(
                "WAL group {}: not held by this node",
                req.group_id
            )));
        };
        let series = wal_batch::decode(&req.batch)
            .map_err(|e| Status::invalid_argument(format!("WAL group {}: {e}", req.group_id)))?;
        match g.write(&series, timeout).await {
            Ok(index) => Ok(Response::new(pb::GroupWriteResponse { index })),
            Err(e) => Err(e.to_status()),
        }
    }
}

/// One WAL group as one of its replicas sees it (the `WalGroups.Held` RPC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub group_id: u64,
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    /// The leader the replica knows of.
    pub leader: Option<NodeId>,
    /// The last log index the replica applied (0: none).
    pub applied_index: u64,
}

impl From<pb::HeldGroup> for GroupView {
    fn from(g: pb::HeldGroup) -> GroupView {
        GroupView {
            group_id: g.group_id,
            voters: g.voters.into_iter().collect(),
            learners: g.learners.into_iter().collect(),
            leader: g.leader_id,
            applied_index: g.applied_index,
        }
    }
}

/// One member's answer: the groups it holds and whether its own storage (outside
/// WAL groups) is empty.
pub type Holdings = (Vec<GroupView>, bool);

/// A `WalGroups.Held` answer as `Holdings`.
pub fn holdings(r: pb::HeldResponse) -> Holdings {
    let views = r.groups.into_iter().map(GroupView::from).collect();
    (views, r.own_storage_empty)
}

/// Asks the node at `address` which WAL groups it holds, and whether its own
/// storage (outside them) is empty.
pub async fn fetch_held(
    channels: &Connections,
    address: &str,
    timeout: Duration,
) -> Result<Holdings, String> {
    let answer: Result<pb::HeldResponse, Status> = channels
        .unary(
            address,
            "/hearth.cluster.v1.WalGroups/Held",
            &pb::HeldRequest {},
            timeout,
            CONTROL_ANSWER_BYTES_MAX,
        )
        .await;
    if answer.is_err() {
        channels.forget(address);
    }
    match answer {
        Err(s) if s.code() == tonic::Code::DeadlineExceeded => Err(s.message().to_string()),
        Err(s) => Err(format!("{address}: {}", s.message())),
        Ok(r) => Ok(holdings(r)),
    }
}

/// How long a forwarded write may wait for its commit on the leader.
const FORWARDED_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `batch` to `address`, the leader of group `group_id`, and waits for the
/// commit.
pub async fn forward_write(
    channels: &Connections,
    address: &str,
    group_id: u64,
    batch: Vec<u8>,
    timeout: Duration,
) -> Result<u64, GroupWriteError> {
    let fatal = |reason: String| GroupWriteError::Fatal {
        group: group_id,
        reason,
    };
    let answer: Result<pb::GroupWriteResponse, Status> = channels
        .unary(
            address,
            "/hearth.cluster.v1.WalGroups/Write",
            &pb::GroupWriteRequest { group_id, batch },
            timeout,
            CONTROL_ANSWER_BYTES_MAX,
        )
        .await;
    // A refusal or "not the leader" is an answer; anything else may be the
    // connection's fault.
    let answered = match &answer {
        Ok(_) => true,
        Err(s) => matches!(
            s.code(),
            tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument
        ),
    };
    if !answered {
        channels.forget(address);
    }
    match answer {
        Ok(r) => Ok(r.index),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => Err(GroupWriteError::NotLeader {
            group: group_id,
            leader: None,
        }),
        Err(s) if s.code() == tonic::Code::InvalidArgument => {
            Err(refusal_from_status(group_id, &s))
        }
        Err(s) if s.code() == tonic::Code::DeadlineExceeded => Err(GroupWriteError::Timeout {
            group: group_id,
            timeout,
        }),
        Err(s) => Err(fatal(format!("forwarding to {address}: {}", s.message()))),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The state machine's application of version 1 and 2 batches, its series id
    //! table across snapshots, and its refusal of entries that contradict it.
    use super::*;
    use crate::labels::{MatchType, Matcher};
    use crate::storage::{Queryable, Sample, SelectHints};
    use openraft::CommittedLeaderId;

    /// A state machine over `dir`, opened as `WalGroup::open` opens it.
    fn state_machine(dir: &Path) -> GroupStateMachine {
        let newest = newest_snapshot(dir).unwrap();
        let db_dir = dir.join(TSDB_DIR);
        let db = match &newest {
            Some((snap, _)) => Db::open_without_wal_from(&db_dir, DbOptions::default(), snap),
            None => Db::open_without_wal(&db_dir, DbOptions::default()),
        }
        .unwrap();
        let ids = match &newest {
            Some((path, _)) => load_series_ids(path).unwrap(),
            None => SeriesIds::default(),
        };
        let applied = newest
            .map(|(_, m)| Applied {
                last: m.last_log_id,
                membership: m.last_membership,
            })
            .unwrap_or_default();
        GroupStateMachine {
            group_id: 1,
            dir: dir.to_path_buf(),
            db: Arc::new(db),
            applied: Arc::new(Mutex::new(applied)),
            stats: Arc::default(),
            apply_lock: Arc::default(),
            series: Arc::default(),
            ids: Arc::new(Mutex::new(ids)),
        }
    }

    fn entry(term: u64, index: u64, batch: Vec<u8>) -> Entry<GroupConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Batch(batch.into())),
        }
    }

    pub(crate) fn series(i: usize) -> Labels {
        Labels::from_pairs(&[("__name__", "m"), ("i", &i.to_string())])
    }

    fn samples(ts: &[i64]) -> wal_batch::BatchSamples {
        ts.iter().map(|&t| Sample { t, v: t as f64 }).collect()
    }

    /// Every series of `g`'s TSDB with its sample timestamps.
    pub(crate) fn read_group(g: &WalGroup) -> BTreeMap<String, Vec<i64>> {
        read(&g.sm)
    }

    /// Every series of the state machine's TSDB with its sample timestamps.
    fn read(sm: &GroupStateMachine) -> BTreeMap<String, Vec<i64>> {
        let q = sm.db.querier(i64::MIN, i64::MAX).unwrap();
        let m = Matcher::new(MatchType::Equal, "__name__", "m").unwrap();
        let hints = SelectHints {
            start_ms: i64::MIN,
            end_ms: i64::MAX,
            ..Default::default()
        };
        q.select(&hints, &[m])
            .unwrap()
            .map(|s| {
                let s = s.unwrap();
                (
                    s.labels.to_string(),
                    s.samples.iter().map(|x| x.t).collect(),
                )
            })
            .collect()
    }

    fn ids_batch(term: u64, s: &[(u32, Option<&Labels>, &[Sample])]) -> Vec<u8> {
        let s: Vec<IdSeries<'_>> = s
            .iter()
            .map(|&(id, define, samples)| IdSeries {
                id,
                define,
                samples,
            })
            .collect();
        wal_batch::encode_ids(term, &s)
    }

    #[tokio::test]
    async fn version_1_and_2_batches_apply_and_ids_name_their_series() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = state_machine(dir.path());
        let (a, b) = (series(0), series(1));
        let v1 = wal_batch::encode(&[BatchSeries {
            labels: a.clone(),
            samples: samples(&[1000, 2000]),
        }]);
        let s3 = samples(&[3000]);
        let s4 = samples(&[4000]);
        let s5 = samples(&[5000, 6000]);
        let out = sm
            .apply(vec![
                entry(1, 1, v1),
                // Ids defined, then referred to; id 1 left a gap (a refused write).
                entry(
                    1,
                    2,
                    ids_batch(1, &[(0, Some(&a), &s3), (2, Some(&b), &s3)]),
                ),
                entry(1, 3, ids_batch(1, &[(2, None, &s4), (0, None, &s4)])),
                // Defined again with the same labels (its first definition may
                // not have been applied when the leader admitted this).
                entry(1, 4, ids_batch(1, &[(0, Some(&a), &s5)])),
            ])
            .await
            .unwrap();
        assert_eq!(out, vec![Outcome::Applied; 4]);
        let got = read(&sm);
        assert_eq!(
            got[&a.to_string()],
            vec![1000, 2000, 3000, 4000, 5000, 6000]
        );
        assert_eq!(got[&b.to_string()], vec![3000, 4000]);
        assert_eq!(sm.stats.series_ids.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_batch_with_ids_of_another_term_is_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = state_machine(dir.path());
        let a = series(0);
        let s = samples(&[1000]);
        let out = sm
            .apply(vec![entry(3, 1, ids_batch(2, &[(0, Some(&a), &s)]))])
            .await
            .unwrap();
        assert_eq!(out, vec![Outcome::StaleTerm]);
        assert!(read(&sm).is_empty());
        assert_eq!(sm.stats.batches_stale.load(Ordering::Relaxed), 1);
        // Its definition never took effect.
        let err = sm
            .apply(vec![entry(3, 2, ids_batch(3, &[(0, None, &s)]))])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not defined"), "{err}");
    }

    #[tokio::test]
    async fn entries_contradicting_the_id_table_are_errors_and_append_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = state_machine(dir.path());
        let (a, b) = (series(0), series(1));
        let s = samples(&[1000]);
        let s2 = samples(&[2000]);
        sm.apply(vec![entry(1, 1, ids_batch(1, &[(0, Some(&a), &s)]))])
            .await
            .unwrap();
        let bad = [
            // A reference to an id never defined, after a good series.
            ids_batch(1, &[(0, None, &s2), (5, None, &s2)]),
            // Id 0 defined again as another series.
            ids_batch(1, &[(0, Some(&b), &s2)]),
            // An id far past the table's end.
            ids_batch(1, &[(u32::MAX, Some(&b), &s2)]),
        ];
        for (i, batch) in bad.into_iter().enumerate() {
            let r = sm.apply(vec![entry(1, 2 + i as u64, batch)]).await;
            assert!(r.is_err(), "bad entry {i} applied");
        }
        assert_eq!(read(&sm)[&a.to_string()], vec![1000]);
        assert!(!read(&sm).contains_key(&b.to_string()));
    }

    #[tokio::test]
    async fn ids_defined_before_a_snapshot_name_series_after_install_and_restart() {
        let (leader_dir, follower_dir) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut leader = state_machine(leader_dir.path());
        let (a, b) = (series(0), series(1));
        let (s1, s2) = (samples(&[1000]), samples(&[2000]));
        leader
            .apply(vec![entry(
                1,
                1,
                ids_batch(1, &[(0, Some(&a), &s1), (1, Some(&b), &s1)]),
            )])
            .await
            .unwrap();
        let snap = leader.build_snapshot().await.unwrap();
        // Entry 2 only refers to ids the snapshot defines.
        let after = entry(1, 2, ids_batch(1, &[(1, None, &s2), (0, None, &s2)]));

        let mut follower = state_machine(follower_dir.path());
        follower
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();
        follower.apply(vec![after.clone()]).await.unwrap();
        let want: BTreeMap<String, Vec<i64>> = [
            (a.to_string(), vec![1000, 2000]),
            (b.to_string(), vec![1000, 2000]),
        ]
        .into();
        assert_eq!(read(&follower), want);

        // A restart starts from the newest snapshot and applies the log after it.
        drop(leader);
        let mut restarted = state_machine(leader_dir.path());
        assert_eq!(restarted.applied.lock().last.map(|l| l.index), Some(1));
        restarted.apply(vec![after]).await.unwrap();
        assert_eq!(read(&restarted), want);
    }

    fn retire_entry(term: u64, index: u64, ids: &[u32]) -> Entry<GroupConfig> {
        entry(term, index, wal_batch::encode_retire(term, ids))
    }

    /// Regression for series id retirement: a batch naming a retired id is not
    /// applied (not even its other series or definitions), on every replica
    /// alike; the id table and the TSDB end the same on both.
    #[tokio::test]
    async fn a_batch_naming_a_retired_id_is_stale_on_every_replica() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b, c) = (series(0), series(1), series(2));
        let (s1, s2, s3) = (samples(&[1000]), samples(&[2000]), samples(&[3000]));
        let log = vec![
            entry(
                1,
                1,
                ids_batch(1, &[(0, Some(&a), &s1), (1, Some(&b), &s1)]),
            ),
            retire_entry(1, 2, &[0]),
            // Names retired id 0 beside live id 1 and a new id 2.
            entry(
                1,
                3,
                ids_batch(1, &[(1, None, &s2), (0, None, &s2), (2, Some(&c), &s2)]),
            ),
            // Defines retired id 0 again.
            entry(1, 4, ids_batch(1, &[(0, Some(&a), &s3)])),
            // The write admitted again: a new id for a.
            entry(
                1,
                5,
                ids_batch(1, &[(1, None, &s2), (3, Some(&a), &s2), (2, Some(&c), &s2)]),
            ),
            // Retired again: a no-op.
            retire_entry(1, 6, &[0]),
        ];
        let mut outs = Vec::new();
        let mut tables = Vec::new();
        let mut reads = Vec::new();
        for dir in [&d1, &d2] {
            let mut sm = state_machine(dir.path());
            outs.push(sm.apply(log.clone()).await.unwrap());
            tables.push(sm.ids.lock().encode());
            reads.push(read(&sm));
            assert_eq!(sm.stats.batches_stale.load(Ordering::Relaxed), 2);
            assert_eq!(sm.stats.series_ids.load(Ordering::Relaxed), 3);
            assert_eq!(sm.stats.series_ids_retired.load(Ordering::Relaxed), 1);
            // Id 2's definition in the stale batch did not take effect first:
            // entry 5 defined it.
            assert!(!sm.ids.lock().is_retired(2));
        }
        use Outcome::{Applied, RetiredId};
        assert_eq!(
            outs[0],
            vec![Applied, Applied, RetiredId, RetiredId, Applied, Applied]
        );
        assert_eq!(outs[0], outs[1]);
        assert_eq!(tables[0], tables[1]);
        assert_eq!(reads[0], reads[1]);
        let want: BTreeMap<String, Vec<i64>> = [
            (a.to_string(), vec![1000, 2000]),
            (b.to_string(), vec![1000, 2000]),
            (c.to_string(), vec![2000]),
        ]
        .into();
        assert_eq!(reads[0], want);
    }

    #[tokio::test]
    async fn retirements_of_undefined_ids_are_errors_and_of_another_term_stale() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = state_machine(dir.path());
        let a = series(0);
        let s = samples(&[1000]);
        sm.apply(vec![entry(1, 1, ids_batch(1, &[(0, Some(&a), &s)]))])
            .await
            .unwrap();
        // Chosen in term 1, logged in term 2: not applied.
        let out = sm
            .apply(vec![entry(2, 2, wal_batch::encode_retire(1, &[0]))])
            .await
            .unwrap();
        assert_eq!(out, vec![Outcome::StaleTerm]);
        assert_eq!(sm.ids.lock().defined(), 1);
        // Id 5 was never defined: corrupt, and id 0 is not retired either.
        let e = sm
            .apply(vec![retire_entry(2, 3, &[0, 5])])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("series id 5 is not defined"), "{e}");
        assert!(!sm.ids.lock().is_retired(0));
        // A retirement that does not decode stops the group too.
        let mut torn = wal_batch::encode_retire(2, &[0, 1]);
        torn.pop();
        assert!(sm.apply(vec![entry(2, 3, torn)]).await.is_err());
    }

    #[tokio::test]
    async fn retired_ids_survive_snapshots_install_and_restart() {
        let (leader_dir, follower_dir) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut leader = state_machine(leader_dir.path());
        let (a, b) = (series(0), series(1));
        let s1 = samples(&[1000]);
        leader
            .apply(vec![
                entry(
                    1,
                    1,
                    ids_batch(1, &[(0, Some(&a), &s1), (1, Some(&b), &s1)]),
                ),
                retire_entry(1, 2, &[0]),
            ])
            .await
            .unwrap();
        let snap = leader.build_snapshot().await.unwrap();
        let after = entry(1, 3, ids_batch(1, &[(0, None, &samples(&[2000]))]));
        let mut follower = state_machine(follower_dir.path());
        follower
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();
        assert_eq!(follower.stats.series_ids_retired.load(Ordering::Relaxed), 1);
        assert_eq!(
            follower.apply(vec![after.clone()]).await.unwrap(),
            vec![Outcome::RetiredId]
        );
        drop(leader);
        let mut restarted = state_machine(leader_dir.path());
        assert!(restarted.ids.lock().is_retired(0));
        assert_eq!(restarted.ids.lock().next_id(), 2);
        assert_eq!(
            restarted.apply(vec![after]).await.unwrap(),
            vec![Outcome::RetiredId]
        );
        let snap_file = newest_snapshot(leader_dir.path()).unwrap().unwrap().0;
        let bytes = std::fs::read(snap_file.join(series_ids::SNAPSHOT_FILE)).unwrap();
        assert_eq!(&bytes[..8], b"HSIDS002");
    }

    /// A group of one voter on this node, formed and led by it.
    pub(crate) async fn one_voter_group(dir: &Path) -> (WalGroups, WalGroup) {
        let me = 1;
        let groups = WalGroups::new(
            &dir.join("groups"),
            me,
            crate::cluster::raft::RaftOptions::default(),
            DbOptions::default(),
        );
        let g = groups.get_or_open(me).await.unwrap();
        let addr = NodeAddr {
            grpc_address: "127.0.0.1:1".into(),
            http_address: String::new(),
        };
        assert!(g.initialize([(me, addr)].into()).await.unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !g.is_leader() {
            assert!(std::time::Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (groups, g)
    }

    fn one(labels: &Labels, t: i64) -> BatchSeries {
        BatchSeries {
            labels: labels.clone(),
            samples: samples(&[t]),
        }
    }

    /// Series churn in a real one-voter group: 21 series leave the head by head
    /// garbage collection after a block is cut, the leader retires their ids
    /// after the next write, the table's live count drops, and series written
    /// afterwards (new ones, and one of the retired) take new ids.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn churned_series_ids_are_retired_by_the_leader() {
        let dir = tempfile::tempdir().unwrap();
        let (groups, g) = one_voter_group(dir.path()).await;
        let timeout = Duration::from_secs(10);
        let hour = 3_600_000i64;
        let churned: Vec<BatchSeries> = (0..21).map(|i| one(&series(i), 1000)).collect();
        g.write(&churned, timeout).await.unwrap();
        let keep = series(100);
        g.write(&[one(&keep, 1000)], timeout).await.unwrap();
        g.write(&[one(&keep, 4 * hour)], timeout).await.unwrap();
        let ids_before = g.sm.ids.lock().next_id();
        assert_eq!(ids_before, 22);
        assert_eq!(g.stats().series_ids.load(Ordering::Relaxed), 22);

        // Cuts [0, 2h) into a block and drops the series left without samples.
        let db = g.db().clone();
        tokio::task::spawn_blocking(move || db.compact())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            g.db().head().stats.series_removed.load(Ordering::Relaxed),
            21
        );

        // The next write finds the head removed series, and the leader retires
        // their ids in the background.
        let fresh = series(200);
        g.write(&[one(&fresh, 4 * hour + 1)], timeout)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while g.stats().series_ids_retired.load(Ordering::Relaxed) < 21 {
            assert!(std::time::Instant::now() < deadline, "ids not retired");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(g.stats().series_ids_retired.load(Ordering::Relaxed), 21);
        assert_eq!(g.stats().series_ids.load(Ordering::Relaxed), 2);
        {
            let ids = g.sm.ids.lock();
            assert_eq!(ids.next_id(), 23);
            assert!((0..21).all(|id| ids.is_retired(id)));
            assert!(metrics_has(
                &groups,
                "hearth_wal_group_series_ids_retired_total{group=\"1\"} 21"
            ));
        }
        // Nothing to retire now.
        assert_eq!(g.retire_unused_ids(timeout).await.unwrap(), 0);

        // A retired series written again takes a new id, as does a new one.
        let back = series(3);
        g.write(
            &[one(&back, 4 * hour + 2), one(&series(300), 4 * hour + 2)],
            timeout,
        )
        .await
        .unwrap();
        {
            let mut ids = g.sm.ids.lock();
            assert_eq!(ids.next_id(), 25);
            assert_eq!(ids.find(&back, back.map_hash()), Some(23));
            assert_eq!(ids.defined(), 4);
            assert!(ids.get_mut(3).is_err());
        }
        let got = read(&g.sm);
        assert_eq!(got[&back.to_string()], vec![1000, 4 * hour + 2]);
        assert_eq!(got.len(), 24);
        groups.shutdown().await;
    }

    fn assert_out_of_order(e: &GroupWriteError) {
        assert!(
            matches!(
                e,
                GroupWriteError::Refused {
                    error: AppendError::OutOfOrder,
                    ..
                }
            ),
            "{e}"
        );
    }

    /// A batch that names its series' admission slots is admitted by them; a
    /// slot named for other labels, or of a generation that ended, is looked
    /// up again, so the samples land where they belong and are checked against
    /// the right series either way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admission_slots_name_series_until_their_generation_ends() {
        let dir = tempfile::tempdir().unwrap();
        let (groups, g) = one_voter_group(dir.path()).await;
        let timeout = Duration::from_secs(10);
        let (a, b) = (series(0), series(1));
        let (ra, rb) = (g.slot_of(0, &a), g.slot_of(0, &b));
        assert_eq!(ra.generation, rb.generation);
        assert_ne!(ra.slot, rb.slot);
        assert_eq!(g.slot_of(ra.series_ref(), &a), ra);
        assert_eq!(SlotRef::from_series_ref(ra.series_ref()), Some(ra));
        assert_eq!(SlotRef::from_series_ref(0), None);
        let named = |slots: &'static [u32], generation| Some(BatchSlots { generation, slots });
        let (sa, sb): (&'static [u32], &'static [u32]) = match (ra.slot, rb.slot) {
            (0, 1) => (&[0, 1], &[1, 0]),
            _ => panic!("slots of a fresh group: {ra:?} {rb:?}"),
        };
        g.write_slotted(
            &[one(&a, 1000), one(&b, 1000)],
            named(sa, ra.generation),
            timeout,
        )
        .await
        .unwrap();
        // Slots swapped: each names the other series.
        g.write_slotted(
            &[one(&a, 2000), one(&b, 2000)],
            named(sb, ra.generation),
            timeout,
        )
        .await
        .unwrap();
        // Admitted by its slot, a's older sample is refused.
        let e = g
            .write_slotted(&[one(&a, 1500)], named(&[0], ra.generation), timeout)
            .await
            .unwrap_err();
        assert_out_of_order(&e);

        g.trim_admissions();
        let ra2 = g.slot_of(ra.series_ref(), &a);
        assert_ne!(ra2.generation, ra.generation);
        // b takes a's old slot: a batch naming slots of the ended generation
        // is looked up by labels.
        let rb2 = g.slot_of(0, &b);
        assert_eq!(rb2.generation, ra2.generation);
        assert_eq!((ra2.slot, rb2.slot), (1, 0));
        g.write_slotted(
            &[one(&a, 3000), one(&b, 3000)],
            named(sa, ra.generation),
            timeout,
        )
        .await
        .unwrap();
        // Forgotten by the trim, a's older sample is refused by the TSDB.
        let e = g
            .write_slotted(&[one(&a, 2500)], named(sa, ra.generation), timeout)
            .await
            .unwrap_err();
        assert_out_of_order(&e);
        let got = read(&g.sm);
        assert_eq!(got[&a.to_string()], vec![1000, 2000, 3000]);
        assert_eq!(got[&b.to_string()], vec![1000, 2000, 3000]);
        groups.shutdown().await;
    }

    /// Two writers of one series: the first is admitted, then (paused) hands
    /// its batch to openraft only after the second, newer one was admitted.
    /// Both are acknowledged and both samples are in the TSDB: the second waits
    /// for the first to be queued, so the log takes them in admission order and
    /// applying the first after the second never refuses it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_admitted_first_is_logged_first() {
        let dir = tempfile::tempdir().unwrap();
        let (groups, g) = one_voter_group(dir.path()).await;
        let a = series(0);
        let timeout = Duration::from_secs(10);
        g.pause_after_admit.store(300, Ordering::Relaxed);
        let first = {
            let (g, a) = (g.clone(), a.clone());
            tokio::spawn(async move { g.write(&[one(&a, 1000)], timeout).await })
        };
        // The first is admitted and paused before this one is admitted.
        tokio::time::sleep(Duration::from_millis(100)).await;
        g.pause_after_admit.store(0, Ordering::Relaxed);
        g.write(&[one(&a, 2000)], timeout).await.unwrap();
        first.await.unwrap().unwrap();
        assert_eq!(read(&g.sm)[&a.to_string()], vec![1000, 2000]);
        assert_eq!(g.stats.samples_refused.load(Ordering::Relaxed), 0);
        groups.shutdown().await;
    }

    fn metrics_has(groups: &WalGroups, line: &str) -> bool {
        groups.render_metrics().lines().any(|l| l == line)
    }

    /// A batch the leader admitted with an id retired before the batch was
    /// logged is not applied; the leader forgets the id, admits the write again
    /// with a new id, and the write succeeds with every sample.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_naming_a_retired_id_is_admitted_again() {
        let dir = tempfile::tempdir().unwrap();
        let (groups, g) = one_voter_group(dir.path()).await;
        let timeout = Duration::from_secs(10);
        let (a, b) = (series(0), series(1));
        g.write(&[one(&a, 1000), one(&b, 1000)], timeout)
            .await
            .unwrap();
        // Retire a's id behind the leader's back: its admissions still name
        // a by id 0, as when a batch was admitted before a retirement and logged
        // after it.
        let (_, out) = g
            .propose(wal_batch::encode_retire(g.term(), &[0]), timeout)
            .await
            .unwrap();
        assert_eq!(out, Outcome::Applied);
        let sample_2 = BatchSeries {
            labels: a.clone(),
            samples: samples(&[2000, 3000]),
        };
        g.write(&[sample_2, one(&b, 2000)], timeout).await.unwrap();
        assert_eq!(g.stats().writes_readmitted.load(Ordering::Relaxed), 1);
        assert_eq!(g.stats().batches_stale.load(Ordering::Relaxed), 1);
        let got = read(&g.sm);
        assert_eq!(got[&a.to_string()], vec![1000, 2000, 3000]);
        assert_eq!(got[&b.to_string()], vec![1000, 2000]);
        assert_eq!(g.sm.ids.lock().find(&a, a.map_hash()), Some(2));
        groups.shutdown().await;
    }
}
