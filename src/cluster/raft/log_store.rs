//! A Raft group's log and vote, durable on disk, for the meta group and every WAL
//! group alike: log entries are records of a `wal::Log` (record index = Raft log
//! index, payload = the entry as its type configuration encodes it: JSON for the
//! meta group, `docs/format/wal-group-entry.md` for WAL groups), and the vote and
//! last purged log id live in a small file replaced atomically.
//!
//! File operations run inline on the async caller: openraft calls the store from
//! one task per group and waits for the flush anyway, so a blocking fsync here
//! costs one runtime worker for its duration and keeps the store simple.
//!
//! The newest entries appended are also kept in memory (`Inner::recent`): openraft
//! reads every entry back right after appending it, to send it to each follower
//! and to apply it once committed, and serving those reads from memory spares
//! opening, reading, checking and decoding the segment files each time. The
//! files stay the only durable copy: the tail is a cache of them, emptied on
//! every truncation and never read past what was appended.

use super::{HearthConfig, Nid};
use crate::cluster::write_atomic;
use crate::wal::{Log, LogOptions, WalError};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    Entry, LogId, OptionalSend, RaftLogId, RaftLogReader, StorageError, StorageIOError, Vote,
};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Name of the file holding the vote and the last purged log id.
const STATE_FILE: &str = "log_state.json";
/// Directory of the WAL segments inside the store's directory.
const LOG_DIR: &str = "log";
/// Most entries one read returns, so a lagging follower gets its catch-up in
/// bounded batches.
const READ_ENTRIES_MAX: u64 = 4096;
/// Most entries kept in memory after they are appended (`Inner::recent`).
const RECENT_ENTRIES_MAX: usize = 256;
/// Most bytes (of their log records) those entries may take.
const RECENT_BYTES_MAX: usize = 32 << 20;
/// How often at most the committed log id is written to `STATE_FILE`
/// (`save_committed`): it is a hint for restarts, not needed for safety, and
/// writing it atomically costs two fsyncs.
const COMMITTED_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// What `STATE_FILE` holds.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct PersistedState {
    vote: Option<Vote<Nid>>,
    last_purged: Option<LogId<Nid>>,
    /// The last committed log id known, so a restarted node re-applies its log up
    /// to it before hearing from a leader.
    #[serde(default)]
    committed: Option<LogId<Nid>>,
}

struct Inner<C: HearthConfig> {
    dir: PathBuf,
    wal: Log,
    state: PersistedState,
    /// Id of the last entry in the log, or `last_purged` when the log is empty.
    last: Option<LogId<Nid>>,
    /// The newest entries appended, by consecutive index, the last one being
    /// `last` (empty or a suffix of the log): what `read_range` serves without
    /// touching the files. Bounded by `RECENT_ENTRIES_MAX` and `RECENT_BYTES_MAX`.
    recent: VecDeque<(Entry<C>, usize)>,
    /// Sum of the record sizes in `recent`.
    recent_bytes: usize,
    /// When `STATE_FILE` was last written (`save_committed` waits
    /// `COMMITTED_SAVE_INTERVAL` after it).
    committed_saved: Option<Instant>,
}

/// The Raft log store. Cheap to clone: clones share one log (openraft reads through
/// a clone while appending through the original).
pub struct LogStore<C: HearthConfig> {
    inner: Arc<Mutex<Inner<C>>>,
    /// Segment files deleted by purges, for `/metrics`.
    segments_purged: Arc<AtomicU64>,
    config: PhantomData<fn() -> C>,
}

impl<C: HearthConfig> Clone for LogStore<C> {
    fn clone(&self) -> LogStore<C> {
        LogStore {
            inner: self.inner.clone(),
            segments_purged: self.segments_purged.clone(),
            config: PhantomData,
        }
    }
}

impl<C: HearthConfig> LogStore<C> {
    /// The count of segment files purges deleted (shared with the store).
    pub fn segments_purged(&self) -> Arc<AtomicU64> {
        self.segments_purged.clone()
    }
}

fn io_error(e: impl std::error::Error + 'static) -> StorageError<Nid> {
    StorageIOError::<Nid>::write_logs(&e).into()
}

fn read_error(e: impl std::error::Error + 'static) -> StorageError<Nid> {
    StorageIOError::<Nid>::read_logs(&e).into()
}

/// Why a log store did not open.
#[derive(Debug, thiserror::Error)]
pub enum LogOpenError {
    /// A segment of the log failed its checks (frame CRC, segment sequence): the
    /// log cannot be trusted.
    #[error("Raft log in {dir}: {source}")]
    Corrupted {
        dir: String,
        #[source]
        source: WalError,
    },
    #[error("Raft log in {dir}: {source}")]
    Storage {
        dir: String,
        #[source]
        source: StorageError<Nid>,
    },
}

fn read_state(dir: &Path) -> Result<PersistedState, StorageError<Nid>> {
    match std::fs::read(dir.join(STATE_FILE)) {
        Ok(b) => {
            serde_json::from_slice(&b).map_err(|e| StorageIOError::<Nid>::read_vote(&e).into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PersistedState::default()),
        Err(e) => Err(StorageIOError::<Nid>::read_vote(&e).into()),
    }
}

/// Empties the store in `dir` (its log, its last purged and committed ids) but
/// keeps its vote, so this replica never votes twice in a term it voted in and
/// Raft treats it as a member whose log is empty: the leader then sends it the
/// snapshot and the log again.
pub fn reset_keeping_vote(dir: &Path) -> Result<(), StorageError<Nid>> {
    let vote = read_state(dir).ok().and_then(|s| s.vote);
    let write_err =
        |e: std::io::Error| -> StorageError<Nid> { StorageIOError::<Nid>::write_logs(&e).into() };
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(write_err(e)),
    }
    std::fs::create_dir_all(dir).map_err(write_err)?;
    let state = PersistedState {
        vote,
        ..Default::default()
    };
    let bytes = serde_json::to_vec(&state).map_err(|e| StorageIOError::<Nid>::write_vote(&e))?;
    write_atomic(&dir.join(STATE_FILE), &bytes)
        .map_err(|e| StorageIOError::<Nid>::write_vote(&e).into())
}

impl<C: HearthConfig> LogStore<C> {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, wal_opts: LogOptions) -> Result<LogStore<C>, StorageError<Nid>> {
        Self::open_checked(dir, wal_opts).map_err(|e| match e {
            LogOpenError::Corrupted { source, .. } => read_error(source),
            LogOpenError::Storage { source, .. } => source,
        })
    }

    /// Opens (or creates) the store in `dir`, telling a damaged log
    /// (`LogOpenError::Corrupted`) apart from other failures.
    pub fn open_checked(dir: &Path, wal_opts: LogOptions) -> Result<LogStore<C>, LogOpenError> {
        let storage = |source: StorageError<Nid>| LogOpenError::Storage {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| storage(StorageIOError::<Nid>::read_vote(&e).into()))?;
        let state = read_state(dir).map_err(storage)?;
        let wal = Log::open(&dir.join(LOG_DIR), wal_opts).map_err(|e| match e {
            e @ WalError::Corruption { .. } => LogOpenError::Corrupted {
                dir: dir.display().to_string(),
                source: e,
            },
            e => storage(read_error(e)),
        })?;
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            wal,
            state,
            last: None,
            recent: VecDeque::new(),
            recent_bytes: 0,
            committed_saved: None,
        };
        inner.last = inner.read_last().map_err(storage)?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
            segments_purged: Arc::new(AtomicU64::new(0)),
            config: PhantomData,
        })
    }
}

impl<C: HearthConfig> Inner<C> {
    /// First index that holds a live (not purged) entry.
    fn live_start(&self) -> u64 {
        let after_purged = self.state.last_purged.map_or(0, |l| l.index + 1);
        after_purged.max(self.wal.first_index())
    }

    fn read_last(&mut self) -> Result<Option<LogId<Nid>>, StorageError<Nid>> {
        let next = self.wal.next_index();
        if next > self.live_start() {
            let e = self.read_range(next - 1, next)?;
            if let Some(e) = e.last() {
                return Ok(Some(*e.get_log_id()));
            }
        }
        Ok(self.state.last_purged)
    }

    fn read_range(&mut self, start: u64, end: u64) -> Result<Vec<Entry<C>>, StorageError<Nid>> {
        let start = start.max(self.live_start());
        let end = end
            .min(self.wal.next_index())
            .min(start.saturating_add(READ_ENTRIES_MAX));
        if start >= end {
            return Ok(Vec::new());
        }
        if let Some(cached) = self.read_recent(start, end) {
            return Ok(cached);
        }
        let mut out = Vec::with_capacity((end - start) as usize);
        for rec in self.wal.reader(start).map_err(read_error)? {
            let (index, payload) = rec.map_err(read_error)?;
            if index >= end {
                break;
            }
            let entry = C::decode_entry(&payload).map_err(|reason| {
                read_error(std::io::Error::other(format!(
                    "raft log {}: record {index}: {reason}",
                    self.wal.dir().display()
                )))
            })?;
            // The record index is the Raft index: a mismatch means the files were
            // mixed up, and serving the entry would corrupt the group.
            if entry.get_log_id().index != index {
                return Err(read_error(std::io::Error::other(format!(
                    "raft log {}: record {index} holds entry {}",
                    self.wal.dir().display(),
                    entry.get_log_id().index
                ))));
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// The entries [start, end) from `recent`, if it holds all of them.
    fn read_recent(&self, start: u64, end: u64) -> Option<Vec<Entry<C>>> {
        let first = self.recent.front()?.0.get_log_id().index;
        let last = self.recent.back()?.0.get_log_id().index;
        if start < first || end > last + 1 {
            return None;
        }
        let skip = (start - first) as usize;
        let out: Vec<Entry<C>> = self
            .recent
            .iter()
            .skip(skip)
            .take((end - start) as usize)
            .map(|(e, _)| e.clone())
            .collect();
        debug_assert!(out
            .iter()
            .zip(start..)
            .all(|(e, i)| e.get_log_id().index == i));
        Some(out)
    }

    /// Keeps `entry`, just written with a record of `bytes` bytes, in `recent`.
    fn remember(&mut self, entry: Entry<C>, bytes: usize) {
        let index = entry.get_log_id().index;
        if self
            .recent
            .back()
            .is_some_and(|(e, _)| e.get_log_id().index + 1 != index)
        {
            self.forget_recent();
        }
        self.recent.push_back((entry, bytes));
        self.recent_bytes += bytes;
        while self.recent.len() > RECENT_ENTRIES_MAX || self.recent_bytes > RECENT_BYTES_MAX {
            let Some((_, b)) = self.recent.pop_front() else {
                break;
            };
            self.recent_bytes -= b;
        }
    }

    fn forget_recent(&mut self) {
        self.recent.clear();
        self.recent_bytes = 0;
    }

    /// Drops the entries up to `index` (inclusive) from `recent`.
    fn forget_recent_through(&mut self, index: u64) {
        while let Some((e, b)) = self.recent.front() {
            if e.get_log_id().index > index {
                break;
            }
            self.recent_bytes -= *b;
            self.recent.pop_front();
        }
    }

    /// Writes one entry at its index (not synced).
    fn append_one(&mut self, entry: Entry<C>) -> Result<(), StorageError<Nid>> {
        let index = entry.get_log_id().index;
        let next = self.wal.next_index();
        if index != next {
            // Whatever follows, the tail in memory no longer ends where the
            // log does.
            self.forget_recent();
        }
        if index > next {
            // After a snapshot was installed past the end of the log, the next
            // entry follows the snapshot, not the old log.
            self.wal.reset(index).map_err(io_error)?;
        } else if index < next {
            // openraft truncates conflicting entries first; this keeps the
            // record index equal to the Raft index whatever happens.
            let keep = index.checked_sub(1);
            match keep {
                Some(k) if k + 1 > self.wal.first_index() => {
                    self.wal.truncate_after(k).map_err(io_error)?
                }
                _ => self.wal.reset(index).map_err(io_error)?,
            }
        }
        let payload = C::encode_entry(&entry).map_err(|reason| {
            io_error(std::io::Error::other(format!(
                "raft log {}: encoding entry {index}: {reason}",
                self.wal.dir().display()
            )))
        })?;
        if let Err(e) = self.wal.append(&payload) {
            self.forget_recent();
            return Err(io_error(e));
        }
        self.last = Some(*entry.get_log_id());
        self.remember(entry, payload.len());
        Ok(())
    }

    fn save_state(&mut self) -> Result<(), StorageError<Nid>> {
        let bytes =
            serde_json::to_vec(&self.state).map_err(|e| StorageIOError::<Nid>::write_vote(&e))?;
        write_atomic(&self.dir.join(STATE_FILE), &bytes)
            .map_err(|e| StorageIOError::<Nid>::write_vote(&e))?;
        self.committed_saved = Some(Instant::now());
        Ok(())
    }
}

impl<C: HearthConfig> LogStore<C> {
    /// Appends `payload` as the first entry of a new term led by `me` and records a
    /// vote for `me` in that term, with no Raft running on this store. Used only
    /// to re-form a WAL group whose other voters were removed from the cluster for
    /// good (`WalGroups::reform`): the new term is above every term this replica
    /// has seen, so the entry supersedes nothing it has, and once Raft restarts the
    /// entry's membership is in effect and this node can be elected by it.
    pub async fn append_as_new_term(
        &mut self,
        me: Nid,
        payload: openraft::EntryPayload<C>,
    ) -> Result<LogId<Nid>, StorageError<Nid>> {
        let mut inner = self.inner.lock().await;
        let vote_term = inner.state.vote.map_or(0, |v| v.leader_id().term);
        let log_term = inner.last.map_or(0, |l| l.leader_id.term);
        let term = vote_term.max(log_term) + 1;
        let index = inner.last.map_or(0, |l| l.index + 1);
        let log_id = LogId::new(openraft::CommittedLeaderId::new(term, me), index);
        let entry = Entry::<C> { log_id, payload };
        inner.append_one(entry)?;
        inner.wal.sync().map_err(io_error)?;
        inner.state.vote = Some(Vote::new(term, me));
        inner.save_state()?;
        Ok(log_id)
    }
}

impl<C: HearthConfig> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError<Nid>> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => e.saturating_add(1),
            Bound::Excluded(e) => *e,
            Bound::Unbounded => u64::MAX,
        };
        self.inner.lock().await.read_range(start, end)
    }
}

impl<C: HearthConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = LogStore<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<Nid>> {
        let inner = self.inner.lock().await;
        Ok(LogState {
            last_purged_log_id: inner.state.last_purged,
            last_log_id: inner.last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<Nid>) -> Result<(), StorageError<Nid>> {
        let mut inner = self.inner.lock().await;
        inner.state.vote = Some(*vote);
        inner.save_state()
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<Nid>>,
    ) -> Result<(), StorageError<Nid>> {
        let mut inner = self.inner.lock().await;
        if inner.state.committed == committed {
            return Ok(());
        }
        inner.state.committed = committed;
        // openraft calls this on every commit, and an atomic write costs two
        // fsyncs. The committed id only lets a restarted replica apply its log
        // before it hears from a leader (who then says how far to apply), so it
        // is written at most every `COMMITTED_SAVE_INTERVAL`; the vote, which
        // safety needs, is written each time it changes (`save_vote`), and
        // carries the newest committed id known with it.
        let due = inner
            .committed_saved
            .is_none_or(|at| at.elapsed() >= COMMITTED_SAVE_INTERVAL);
        if !due {
            return Ok(());
        }
        inner.save_state()
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<Nid>>, StorageError<Nid>> {
        Ok(self.inner.lock().await.state.committed)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<Nid>>, StorageError<Nid>> {
        Ok(self.inner.lock().await.state.vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<Nid>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.inner.lock().await;
        for entry in entries {
            inner.append_one(entry)?;
        }
        let synced = inner.wal.sync();
        if synced.is_err() {
            // What was not synced must not be served from memory either.
            inner.forget_recent();
        }
        drop(inner);
        match synced {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                callback.log_io_completed(Err(std::io::Error::other(msg)));
                Err(io_error(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<Nid>) -> Result<(), StorageError<Nid>> {
        let mut inner = self.inner.lock().await;
        let index = log_id.index;
        if index >= inner.wal.next_index() {
            return Ok(());
        }
        if index > inner.wal.first_index() {
            inner.wal.truncate_after(index - 1).map_err(io_error)?;
        } else {
            inner.wal.reset(index).map_err(io_error)?;
        }
        inner.forget_recent();
        inner.wal.sync().map_err(io_error)?;
        inner.last = inner.read_last()?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<Nid>) -> Result<(), StorageError<Nid>> {
        let mut inner = self.inner.lock().await;
        if inner
            .state
            .last_purged
            .is_some_and(|p| p.index >= log_id.index)
        {
            return Ok(());
        }
        // Record the purge first: a crash before the segments go leaves entries the
        // store already ignores.
        inner.state.last_purged = Some(log_id);
        inner.save_state()?;
        inner.forget_recent_through(log_id.index);
        let removed = if log_id.index + 1 >= inner.wal.next_index() {
            let before = inner.wal.segments().len();
            inner.wal.reset(log_id.index + 1).map_err(io_error)?;
            before.saturating_sub(inner.wal.segments().len())
        } else {
            inner
                .wal
                .remove_segments_before(log_id.index + 1)
                .map_err(io_error)?
        };
        self.segments_purged
            .fetch_add(removed as u64, Ordering::Relaxed);
        if inner.last.is_none_or(|l| l.index <= log_id.index) {
            inner.last = Some(log_id);
        }
        Ok(())
    }
}
