//! The head block: the most recent samples in memory, with an inverted index, backed
//! by the write-ahead log and by memory-mapped files for full chunks.
//!
//! Each series keeps its full chunks in `chunks_head/` (read back through memmap2)
//! and only its open chunk in memory, so head memory per series stays small. A new
//! series is queued for the WAL at once and written, with every other series queued
//! since, just before the next record of any appender (so that a series record
//! always precedes any sample that refers to it, whatever order concurrent
//! appenders commit in); samples are written at commit. Records are
//! snappy-compressed when that makes them shorter.

use super::chunkenc::{XorChunk, XorIterator, ENCODING_XOR, SAMPLES_PER_CHUNK};
use super::head_chunks::{HeadChunkFiles, HeadChunkMeta};
use super::postings::{self, PostingsSource};
use super::record::{self, Record, RefSample, RefSeries, RefTombstone};
use super::tombstones::{Interval, TombstoneStore};
use super::TsdbError;
use crate::fxhash::HashMap as FxMap;
use crate::labels::{Labels, Matcher};
use crate::storage::{
    check_order, AppendError, Appender, Sample, SelectHints, Series, SeriesRef, SeriesSet,
    StorageError,
};
use crate::wal::{self, Log, LogOptions};
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// The WAL's directory inside the data directory.
pub const WAL_DIR: &str = "wal";
/// Most series in one record of a checkpoint written by `checkpoint_records`.
const SNAPSHOT_SERIES_PER_RECORD: usize = 1000;
/// A record of `checkpoint_records` is closed once it holds this many samples.
const SNAPSHOT_SAMPLES_PER_RECORD: usize = 100_000;

/// How a head is set up.
#[derive(Debug, Clone)]
pub struct HeadOptions {
    /// The block range: head chunks never cross a multiple of it, so each chunk
    /// falls into exactly one block.
    pub chunk_range_ms: i64,
    /// Options for the WAL in `<dir>/wal`; `None` runs the head without a WAL, for
    /// a store whose samples are logged elsewhere (a WAL group's Raft log) and
    /// replayed into it from there. Such a head starts empty on every open.
    pub wal: Option<LogOptions>,
}

/// A full chunk that lives in `chunks_head/`.
#[derive(Debug, Clone, Copy)]
struct MappedChunk {
    chunk_ref: u64,
    mint: i64,
    maxt: i64,
}

/// The chunk currently being appended to.
#[derive(Debug)]
struct OpenChunk {
    chunk: XorChunk,
    mint: i64,
    maxt: i64,
    /// The chunk is cut before a sample at or after this time (a block boundary).
    next_at: i64,
}

/// Mutable state of one series.
#[derive(Debug, Default)]
struct SeriesData {
    mapped: Vec<MappedChunk>,
    open: Option<OpenChunk>,
    /// Timestamp and value bits of the newest committed sample.
    last: Option<(i64, u64)>,
}

/// One series in the head.
#[derive(Debug)]
struct MemSeries {
    series_ref: u64,
    labels: Labels,
    data: Mutex<SeriesData>,
}

/// The in-memory inverted index: label name → value → sorted series refs.
#[derive(Debug, Default)]
struct MemPostings {
    by_label: HashMap<String, HashMap<String, Vec<u64>>>,
    all: Vec<u64>,
}

impl MemPostings {
    fn add(&mut self, series_ref: u64, labels: &Labels) {
        for l in labels.iter() {
            let list = self
                .by_label
                .entry(l.name.to_string())
                .or_default()
                .entry(l.value.to_string())
                .or_default();
            insert_sorted(list, series_ref);
        }
        insert_sorted(&mut self.all, series_ref);
    }

    fn remove(&mut self, dead: &std::collections::HashSet<u64>) {
        self.all.retain(|r| !dead.contains(r));
        for values in self.by_label.values_mut() {
            for list in values.values_mut() {
                list.retain(|r| !dead.contains(r));
            }
            values.retain(|_, l| !l.is_empty());
        }
        self.by_label.retain(|_, v| !v.is_empty());
    }
}

fn insert_sorted(list: &mut Vec<u64>, r: u64) {
    // Refs are handed out in increasing order, so this is nearly always a push.
    match list.last() {
        Some(&last) if last >= r => {
            if let Err(i) = list.binary_search(&r) {
                list.insert(i, r);
            }
        }
        _ => list.push(r),
    }
}

impl MemPostings {
    fn sorted_values(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .by_label
            .get(name)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Series refs matching all `matchers`, sorted.
    fn select(&self, matchers: &[Matcher]) -> Vec<u64> {
        match postings::postings_for_matchers(self, matchers) {
            Ok(refs) => refs,
            Err(never) => match never {},
        }
    }
}

impl PostingsSource for MemPostings {
    type Error = Infallible;

    fn postings(&self, name: &str, value: &str) -> Result<Vec<u64>, Infallible> {
        Ok(self
            .by_label
            .get(name)
            .and_then(|v| v.get(value))
            .cloned()
            .unwrap_or_default())
    }

    fn all_postings(&self) -> Result<Vec<u64>, Infallible> {
        Ok(self.all.clone())
    }

    fn label_values(&self, name: &str) -> Result<Vec<String>, Infallible> {
        Ok(self.sorted_values(name))
    }

    fn remove_postings(
        &self,
        name: &str,
        value: &str,
        refs: &mut Vec<u64>,
    ) -> Result<(), Infallible> {
        if let Some(list) = self.by_label.get(name).and_then(|v| v.get(value)) {
            postings::remove_listed(refs, list.len(), |i| list[i]);
        }
        Ok(())
    }

    fn remove_values(
        &self,
        name: &str,
        reject: &mut dyn FnMut(&str) -> bool,
        refs: &mut Vec<u64>,
    ) -> Result<(), Infallible> {
        let Some(values) = self.by_label.get(name) else {
            return Ok(());
        };
        for (_, list) in values.iter().filter(|(v, _)| reject(v)) {
            if refs.is_empty() {
                break;
            }
            postings::remove_listed(refs, list.len(), |i| list[i]);
        }
        Ok(())
    }

    fn postings_for_values(
        &self,
        name: &str,
        keep: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Vec<Vec<u64>>, Infallible> {
        Ok(self
            .by_label
            .get(name)
            .map(|m| {
                m.iter()
                    .filter(|(v, _)| keep(v))
                    .map(|(_, l)| l.clone())
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// The series with one label hash: nearly always one, so without a `Vec`'s
/// separate allocation.
#[derive(Debug)]
enum HashSlot {
    One(Arc<MemSeries>),
    Many(Vec<Arc<MemSeries>>),
}

impl HashSlot {
    fn as_slice(&self) -> &[Arc<MemSeries>] {
        match self {
            HashSlot::One(s) => std::slice::from_ref(s),
            HashSlot::Many(v) => v,
        }
    }
}

/// Slots in one page of a `RefTable`.
const REF_PAGE_SLOTS: usize = 1024;

/// The series by ref, in pages of `REF_PAGE_SLOTS` consecutive refs. Every
/// appended sample looks its series up here. Refs are handed out in increasing
/// order and a target's series are usually created together, so the series of
/// one scrape sit side by side in a few pages: a lookup is a probe of the small
/// page map (which stays in cache) and an index, where a map keyed by ref cost a
/// cache miss or two per sample. A page is dropped when its last series is.
#[derive(Debug, Default)]
struct RefTable {
    pages: FxMap<u64, Box<RefPage>>,
    len: usize,
}

#[derive(Debug)]
struct RefPage {
    slots: Box<[Option<Arc<MemSeries>>]>,
    used: usize,
}

impl RefTable {
    fn split(series_ref: u64) -> (u64, usize) {
        let slots = REF_PAGE_SLOTS as u64;
        (series_ref / slots, (series_ref % slots) as usize)
    }

    fn get(&self, series_ref: &u64) -> Option<&Arc<MemSeries>> {
        let (page, slot) = Self::split(*series_ref);
        self.pages.get(&page)?.slots[slot].as_ref()
    }

    fn contains_key(&self, series_ref: &u64) -> bool {
        self.get(series_ref).is_some()
    }

    fn insert(&mut self, series_ref: u64, series: Arc<MemSeries>) {
        let (page, slot) = Self::split(series_ref);
        let page = self.pages.entry(page).or_insert_with(|| {
            Box::new(RefPage {
                slots: (0..REF_PAGE_SLOTS).map(|_| None).collect(),
                used: 0,
            })
        });
        if page.slots[slot].replace(series).is_none() {
            page.used += 1;
            self.len += 1;
        }
    }

    fn remove(&mut self, series_ref: &u64) -> Option<Arc<MemSeries>> {
        let (page_no, slot) = Self::split(*series_ref);
        let page = self.pages.get_mut(&page_no)?;
        let removed = page.slots[slot].take()?;
        page.used -= 1;
        self.len -= 1;
        if page.used == 0 {
            self.pages.remove(&page_no);
        }
        Some(removed)
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Every series, in no particular order.
    fn values(&self) -> impl Iterator<Item = &Arc<MemSeries>> {
        self.pages.values().flat_map(|p| p.slots.iter().flatten())
    }

    /// Every series ref, in no particular order.
    fn keys(&self) -> impl Iterator<Item = &u64> {
        self.values().map(|s| &s.series_ref)
    }
}

/// The series registry: by label hash and by ref.
#[derive(Debug, Default)]
struct SeriesIndex {
    by_hash: FxMap<u64, HashSlot>,
    by_ref: RefTable,
}

impl SeriesIndex {
    fn get_by_labels(&self, hash: u64, labels: &Labels) -> Option<&Arc<MemSeries>> {
        self.by_hash
            .get(&hash)
            .and_then(|v| v.as_slice().iter().find(|s| &s.labels == labels))
    }

    /// Registers a new series under its label hash and its ref.
    fn insert(&mut self, hash: u64, series: Arc<MemSeries>) {
        match self.by_hash.entry(hash) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(HashSlot::One(series.clone()));
            }
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let slot = e.get_mut();
                let mut all = match std::mem::replace(slot, HashSlot::Many(Vec::new())) {
                    HashSlot::One(s) => vec![s],
                    HashSlot::Many(v) => v,
                };
                all.push(series.clone());
                *slot = HashSlot::Many(all);
            }
        }
        self.by_ref.insert(series.series_ref, series);
    }

    /// Forgets the series `series_ref`.
    fn remove(&mut self, series_ref: u64) {
        let Some(s) = self.by_ref.remove(&series_ref) else {
            return;
        };
        let hash = s.labels.map_hash();
        let std::collections::hash_map::Entry::Occupied(mut e) = self.by_hash.entry(hash) else {
            return;
        };
        let rest: Vec<Arc<MemSeries>> = e
            .get()
            .as_slice()
            .iter()
            .filter(|x| x.series_ref != series_ref)
            .cloned()
            .collect();
        match rest.len() {
            0 => {
                e.remove();
            }
            1 => {
                let mut rest = rest;
                if let Some(one) = rest.pop() {
                    e.insert(HashSlot::One(one));
                }
            }
            _ => {
                e.insert(HashSlot::Many(rest));
            }
        }
    }
}

/// The WAL and its reusable buffers, behind one lock.
struct WalWriter {
    log: Log,
    buf: Vec<u8>,
    /// Series created since the last record was written. They go into the WAL as
    /// one record just before the next record (any sample of theirs comes later),
    /// which compresses far better than a record per series.
    pending_series: Vec<RefSeries>,
    snappy: snap::raw::Encoder,
    scratch: Vec<u8>,
    packed: Vec<u8>,
}

impl WalWriter {
    fn new(log: Log) -> WalWriter {
        WalWriter {
            log,
            buf: Vec::new(),
            pending_series: Vec::new(),
            snappy: snap::raw::Encoder::new(),
            scratch: Vec::new(),
            packed: Vec::new(),
        }
    }

    /// Writes the pending series, then the record `encode` appends to an empty
    /// buffer. Both are compressed when that makes them shorter.
    fn write(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> Result<(), wal::WalError> {
        self.flush_series()?;
        self.buf.clear();
        encode(&mut self.buf);
        self.append_buf()
    }

    /// Writes the series created since the last record, if any.
    fn flush_series(&mut self) -> Result<(), wal::WalError> {
        if self.pending_series.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        record::encode_series(&self.pending_series, &mut self.buf);
        self.append_buf()?;
        self.pending_series.clear();
        Ok(())
    }

    fn append_buf(&mut self) -> Result<(), wal::WalError> {
        record::compress_into(
            &self.buf,
            &mut self.snappy,
            &mut self.scratch,
            &mut self.packed,
        );
        self.log.append(&self.packed).map(|_| ())
    }
}

/// The head block.
pub struct Head {
    dir: PathBuf,
    opts: HeadOptions,
    series: RwLock<SeriesIndex>,
    postings: RwLock<MemPostings>,
    next_ref: AtomicU64,
    /// `None` when the head runs without a WAL.
    wal: Mutex<Option<WalWriter>>,
    chunk_files: HeadChunkFiles,
    tombstones: RwLock<TombstoneStore>,
    /// Smallest and largest committed timestamps; `i64::MAX`/`i64::MIN` when empty.
    min_time: AtomicI64,
    max_time: AtomicI64,
    /// Samples before this time are out of bounds: they belong to persisted blocks.
    min_valid_time: AtomicI64,
    /// Counters for the server's own metrics.
    pub stats: HeadStats,
}

/// Counters the head keeps for `/metrics`.
#[derive(Debug, Default)]
pub struct HeadStats {
    pub samples_appended: AtomicU64,
    pub out_of_order_samples: AtomicU64,
    pub out_of_bounds_samples: AtomicU64,
    pub series_created: AtomicU64,
    pub series_removed: AtomicU64,
}

impl Head {
    /// Opens the head in `dir`: rebuilds series from the WAL (checkpoint first, then
    /// segments) and their full chunks from `chunks_head/`.
    pub fn open(dir: &Path, opts: HeadOptions, min_valid_time: i64) -> Result<Head, TsdbError> {
        std::fs::create_dir_all(dir)?;
        let chunks_dir = dir.join("chunks_head");
        if opts.wal.is_none() && chunks_dir.exists() {
            // Without a WAL no series record survives a restart, so nothing could
            // refer to the old head chunks: the head is rebuilt from its source.
            std::fs::remove_dir_all(&chunks_dir)?;
        }
        let chunk_files = HeadChunkFiles::open(&chunks_dir)?;
        let wal_dir = dir.join(WAL_DIR);
        let log = match &opts.wal {
            Some(o) => Some(Log::open(&wal_dir, o.clone())?),
            None => None,
        };
        let head = Head {
            dir: dir.to_path_buf(),
            opts,
            series: RwLock::new(SeriesIndex::default()),
            postings: RwLock::new(MemPostings::default()),
            next_ref: AtomicU64::new(1),
            wal: Mutex::new(log.map(WalWriter::new)),
            chunk_files,
            tombstones: RwLock::new(TombstoneStore::default()),
            min_time: AtomicI64::new(i64::MAX),
            max_time: AtomicI64::new(i64::MIN),
            min_valid_time: AtomicI64::new(min_valid_time),
            stats: HeadStats::default(),
        };
        head.replay()?;
        Ok(head)
    }

    fn replay(&self) -> Result<(), TsdbError> {
        let started = std::time::Instant::now();
        // Full chunks on disk, grouped by series, applied once the series is known.
        let mut mapped: HashMap<u64, Vec<MappedChunk>> = HashMap::new();
        let min_valid = self.min_valid_time.load(Ordering::Relaxed);
        self.chunk_files.iterate(&mut |m: HeadChunkMeta| {
            if m.encoding == ENCODING_XOR && m.maxt_ms >= min_valid {
                mapped.entry(m.series_ref).or_default().push(MappedChunk {
                    chunk_ref: m.chunk_ref,
                    mint: m.mint_ms,
                    maxt: m.maxt_ms,
                });
            }
            Ok(())
        })?;
        let mut records = 0u64;
        let mut unknown_refs = 0u64;
        // WAL refs of series logged again under another ref (the same labels), mapped
        // to the ref the head keeps, as Prometheus's replay does with `multiRef`.
        let mut remap: HashMap<u64, u64> = HashMap::new();
        let mut apply = |rec: Vec<u8>| -> Result<(), TsdbError> {
            records += 1;
            self.replay_record(&rec, &mut mapped, &mut remap, &mut unknown_refs)
        };
        if self.wal.lock().is_none() {
            return Ok(());
        }
        let wal_dir = self.dir.join(WAL_DIR);
        let checkpoint = wal::checkpoint::latest(&wal_dir)?;
        if let Some(cp) = &checkpoint {
            for item in cp.reader()? {
                let (_, rec) = item?;
                apply(rec)?;
            }
        }
        let reader = {
            let mut w = self.wal.lock();
            let Some(w) = w.as_mut() else {
                return Ok(());
            };
            let first = first_index_after_checkpoint(&w.log, checkpoint.as_ref());
            w.log.reader(first)?
        };
        for item in reader {
            let (_, rec) = item?;
            apply(rec)?;
        }
        if unknown_refs > 0 {
            tracing::warn!(
                unknown_refs,
                "WAL replay found samples for series it has no record of"
            );
        }
        tracing::info!(
            records,
            series = self.num_series(),
            duration_ms = started.elapsed().as_millis() as u64,
            "WAL replay completed"
        );
        Ok(())
    }

    /// Applies one WAL record (series, samples or tombstones) to the head during a
    /// replay. `mapped` holds the full chunks on disk not yet claimed by a series,
    /// `remap` the refs of series logged again under another ref.
    fn replay_record(
        &self,
        rec: &[u8],
        mapped: &mut HashMap<u64, Vec<MappedChunk>>,
        remap: &mut HashMap<u64, u64>,
        unknown_refs: &mut u64,
    ) -> Result<(), TsdbError> {
        let min_valid = self.min_valid_time.load(Ordering::Relaxed);
        match record::decode(rec)? {
            Record::Series(series) => {
                for s in series {
                    let kept =
                        self.restore_series(s.series_ref, s.labels, mapped.remove(&s.series_ref));
                    if kept != s.series_ref {
                        remap.insert(s.series_ref, kept);
                    }
                }
            }
            Record::Samples(samples) => {
                let idx = self.series.read();
                for s in samples {
                    let r = remap.get(&s.series_ref).copied().unwrap_or(s.series_ref);
                    let Some(series) = idx.by_ref.get(&r) else {
                        *unknown_refs += 1;
                        continue;
                    };
                    if s.t < min_valid {
                        continue;
                    }
                    let mut d = series.data.lock();
                    if d.last.is_none_or(|(lt, _)| s.t > lt) {
                        self.append_to_series(series, &mut d, s.t, s.v)?;
                        self.note_time(s.t);
                    }
                }
            }
            Record::Tombstones(ts) => {
                add_wal_tombstones(&mut self.tombstones.write(), ts, remap);
            }
        }
        Ok(())
    }

    /// Loads the records of a checkpoint (`wal::checkpoint` format, as
    /// `checkpoint_records` writes them) into the head; samples before the head's
    /// minimum valid time (already in blocks) are skipped. For a head without a
    /// WAL, filled from a snapshot.
    pub fn load_checkpoint(&self, dir: &Path) -> Result<u64, TsdbError> {
        let mut mapped = HashMap::new();
        let mut remap = HashMap::new();
        let mut unknown_refs = 0u64;
        let mut records = 0u64;
        for item in wal::open_read_only(dir)? {
            let (_, rec) = item?;
            records += 1;
            self.replay_record(&rec, &mut mapped, &mut remap, &mut unknown_refs)?;
        }
        if unknown_refs > 0 {
            tracing::warn!(
                unknown_refs,
                dir = %dir.display(),
                "checkpoint holds samples for series it has no record of"
            );
        }
        Ok(records)
    }

    /// The head's content as checkpoint records: every series with samples, then
    /// their samples (tombstones applied), records closed at
    /// `SNAPSHOT_SERIES_PER_RECORD` series or `SNAPSHOT_SAMPLES_PER_RECORD` samples. Series are numbered from 1 in label order.
    pub fn checkpoint_records(self: &Arc<Self>) -> Result<Vec<Vec<u8>>, TsdbError> {
        let mut out = Vec::new();
        let mut series: Vec<RefSeries> = Vec::new();
        let mut samples: Vec<RefSample> = Vec::new();
        let flush =
            |series: &mut Vec<RefSeries>, samples: &mut Vec<RefSample>, out: &mut Vec<Vec<u8>>| {
                if series.is_empty() {
                    return;
                }
                let mut buf = Vec::new();
                record::encode_series(series, &mut buf);
                out.push(buf);
                let mut buf = Vec::new();
                record::encode_samples(samples, &mut buf);
                out.push(buf);
                series.clear();
                samples.clear();
            };
        for (series_ref, s) in (1u64..).zip(self.series_in_range(i64::MIN, i64::MAX)) {
            let s = s?;
            samples.extend(s.samples.iter().map(|x| RefSample {
                series_ref,
                t: x.t,
                v: x.v,
            }));
            series.push(RefSeries {
                series_ref,
                labels: s.labels,
            });
            if series.len() >= SNAPSHOT_SERIES_PER_RECORD
                || samples.len() >= SNAPSHOT_SAMPLES_PER_RECORD
            {
                flush(&mut series, &mut samples, &mut out);
            }
        }
        flush(&mut series, &mut samples, &mut out);
        Ok(out)
    }

    /// Empties the head (series, postings, tombstones, head chunk files) and sets
    /// its minimum valid time: before a snapshot replaces the database's content.
    /// The caller makes sure no appender is open.
    pub fn reset(&self, min_valid_time: i64) -> Result<(), TsdbError> {
        *self.series.write() = SeriesIndex::default();
        *self.postings.write() = MemPostings::default();
        *self.tombstones.write() = TombstoneStore::default();
        self.chunk_files.truncate_before(i64::MAX)?;
        self.min_time.store(i64::MAX, Ordering::Relaxed);
        self.max_time.store(i64::MIN, Ordering::Relaxed);
        self.min_valid_time.store(min_valid_time, Ordering::Relaxed);
        Ok(())
    }

    /// Recreates a series from a WAL series record with its original ref, and
    /// returns the ref the head keeps it under: an earlier ref when the same labels
    /// were already restored (its mapped chunks are then dropped; the WAL still
    /// holds their samples).
    fn restore_series(
        &self,
        series_ref: u64,
        labels: Labels,
        mapped: Option<Vec<MappedChunk>>,
    ) -> u64 {
        let mut idx = self.series.write();
        if idx.by_ref.contains_key(&series_ref) {
            return series_ref;
        }
        let hash = labels.map_hash();
        if let Some(existing) = idx.get_by_labels(hash, &labels) {
            return existing.series_ref;
        }
        let mut data = SeriesData::default();
        if let Some(mut chunks) = mapped {
            chunks.sort_by_key(|c| c.mint);
            if let Some(last) = chunks.last() {
                // The last sample of a full chunk: restore `last` from it so WAL
                // samples already inside mapped chunks are skipped.
                if let Ok(bytes) = self.chunk_files.chunk(last.chunk_ref) {
                    if let Some(s) = XorIterator::new(&bytes).last() {
                        data.last = Some((s.t, s.v.to_bits()));
                    }
                }
                self.note_time(chunks[0].mint);
                self.note_time(last.maxt);
            }
            data.mapped = chunks;
        }
        let series = Arc::new(MemSeries {
            series_ref,
            labels: labels.clone(),
            data: Mutex::new(data),
        });
        idx.insert(hash, series);
        self.postings.write().add(series_ref, &labels);
        self.next_ref.fetch_max(series_ref + 1, Ordering::Relaxed);
        series_ref
    }

    /// Finds or creates the series for `labels`; a new series is logged to the WAL.
    /// The series for `labels`, created (and logged to the WAL) if it is new.
    fn get_or_create(&self, labels: &Labels) -> Result<Arc<MemSeries>, AppendError> {
        let hash = labels.map_hash();
        if let Some(s) = self.series.read().get_by_labels(hash, labels) {
            return Ok(s.clone());
        }
        if labels.is_empty() {
            return Err(AppendError::InvalidLabels(labels.to_string()));
        }
        let mut idx = self.series.write();
        if let Some(s) = idx.get_by_labels(hash, labels) {
            return Ok(s.clone());
        }
        let series_ref = self.next_ref.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = self.wal.lock().as_mut() {
            w.pending_series.push(RefSeries {
                series_ref,
                labels: labels.clone(),
            });
        }
        let series = Arc::new(MemSeries {
            series_ref,
            labels: labels.clone(),
            data: Mutex::new(SeriesData::default()),
        });
        idx.insert(hash, series.clone());
        self.postings.write().add(series_ref, labels);
        self.stats.series_created.fetch_add(1, Ordering::Relaxed);
        Ok(series)
    }

    fn note_time(&self, t: i64) {
        self.min_time.fetch_min(t, Ordering::Relaxed);
        self.max_time.fetch_max(t, Ordering::Relaxed);
    }

    /// Appends one sample to a series whose lock the caller holds; the caller has
    /// checked that `t` is newer than the last sample, and notes `t` in the head's
    /// time range (`note_time`).
    fn append_to_series(
        &self,
        series: &MemSeries,
        d: &mut SeriesData,
        t: i64,
        v: f64,
    ) -> Result<(), TsdbError> {
        let cut = match &d.open {
            None => true,
            Some(o) => o.chunk.num_samples() >= SAMPLES_PER_CHUNK || t >= o.next_at,
        };
        if cut {
            // Write the full chunk before letting go of it, so a failed write leaves
            // the series as it was.
            if let Some(o) = &d.open {
                let chunk_ref = self.chunk_files.write_chunk(
                    series.series_ref,
                    o.mint,
                    o.maxt,
                    ENCODING_XOR,
                    o.chunk.bytes(),
                )?;
                d.mapped.push(MappedChunk {
                    chunk_ref,
                    mint: o.mint,
                    maxt: o.maxt,
                });
            }
            let range = self.opts.chunk_range_ms;
            d.open = Some(OpenChunk {
                chunk: XorChunk::new(),
                mint: t,
                maxt: t,
                next_at: t.div_euclid(range) * range + range,
            });
        }
        let o = d.open.as_mut().expect("open chunk exists after cut");
        o.chunk.append(t, v);
        o.maxt = t;
        d.last = Some((t, v.to_bits()));
        Ok(())
    }

    /// A new append transaction.
    pub fn appender(self: &Arc<Self>) -> HeadAppender {
        HeadAppender {
            head: self.clone(),
            samples: Vec::new(),
            wal_samples: Vec::new(),
        }
    }

    /// Number of series in the head.
    pub fn num_series(&self) -> usize {
        self.series.read().by_ref.len()
    }

    /// Smallest committed timestamp, if any sample is in the head.
    pub fn min_time(&self) -> Option<i64> {
        let t = self.min_time.load(Ordering::Relaxed);
        (t != i64::MAX).then_some(t)
    }

    /// Largest committed timestamp, if any sample is in the head.
    pub fn max_time(&self) -> Option<i64> {
        let t = self.max_time.load(Ordering::Relaxed);
        (t != i64::MIN).then_some(t)
    }

    /// The block range the head cuts chunks at.
    pub fn chunk_range_ms(&self) -> i64 {
        self.opts.chunk_range_ms
    }

    /// The earliest time a sample may still be appended (older ones are out of
    /// bounds).
    pub fn appendable_min_valid_time(&self) -> i64 {
        let min_valid = self.min_valid_time.load(Ordering::Relaxed);
        match self.max_time() {
            // Like Prometheus: nothing older than half a block range before the newest
            // sample, and never into a persisted block.
            Some(maxt) => min_valid.max(maxt.saturating_sub(self.opts.chunk_range_ms / 2)),
            None => min_valid,
        }
    }

    /// The label set of the series `series_ref`, shared with the head's own copy:
    /// an appender given this `Labels` with the ref recognises it by pointer,
    /// without comparing the label bytes.
    pub fn series_labels(&self, series_ref: SeriesRef) -> Option<Labels> {
        self.series
            .read()
            .by_ref
            .get(&series_ref)
            .map(|s| s.labels.clone())
    }

    /// Whether the head holds a series with exactly `labels`.
    pub fn has_series(&self, labels: &Labels) -> bool {
        self.series
            .read()
            .get_by_labels(labels.map_hash(), labels)
            .is_some()
    }

    /// What an append of (`labels`, `t`, `v`) would answer now, without creating
    /// the series or changing anything: `Ok(true)` to append, `Ok(false)` for an
    /// identical duplicate, or the refusal (out of bounds, out of order, duplicate).
    pub fn check_append(&self, labels: &Labels, t: i64, v: f64) -> Result<bool, AppendError> {
        self.check_append_hashed(labels, labels.map_hash(), t, v)
    }

    /// `check_append` with `hash` = `labels.map_hash()`, computed by the caller.
    pub fn check_append_hashed(
        &self,
        labels: &Labels,
        hash: u64,
        t: i64,
        v: f64,
    ) -> Result<bool, AppendError> {
        debug_assert_eq!(hash, labels.map_hash());
        if t < self.appendable_min_valid_time() {
            return Err(AppendError::OutOfBounds);
        }
        let series = self.series.read().get_by_labels(hash, labels).cloned();
        match series {
            Some(s) => check_order(s.data.lock().last, t, v),
            None => Ok(true),
        }
    }

    /// All series with their samples in [mint, maxt], tombstones applied, in label order.
    pub fn select(
        self: &Arc<Self>,
        mint: i64,
        maxt: i64,
        hints: &SelectHints,
        matchers: &[Matcher],
    ) -> Result<SeriesSet, StorageError> {
        let refs = self.postings.read().select(matchers);
        let mut series: Vec<Arc<MemSeries>> = {
            let idx = self.series.read();
            refs.iter()
                .filter_map(|r| idx.by_ref.get(r).cloned())
                .collect()
        };
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        let head = self.clone();
        let series_only = hints.series_only;
        let newest_at = hints.newest_only.then_some(hints.end_ms.min(maxt));
        Ok(Box::new(series.into_iter().filter_map(move |s| {
            if series_only {
                // Only series with data in the range, as blocks answer (and as
                // Prometheus's series API does).
                let d = s.data.lock();
                let in_range = d.mapped.iter().any(|c| c.maxt >= mint && c.mint <= maxt)
                    || d.open
                        .as_ref()
                        .is_some_and(|o| o.maxt >= mint && o.mint <= maxt);
                drop(d);
                return in_range.then(|| {
                    Ok(Series {
                        labels: s.labels.clone(),
                        samples: Vec::new(),
                        start_times: Vec::new(),
                    })
                });
            }
            let samples = match newest_at {
                Some(at) => head.newest_sample(&s, mint, at),
                None => head.series_samples(&s, mint, maxt),
            };
            match samples {
                Ok(samples) if samples.is_empty() => None,
                Ok(samples) => Some(Ok(Series {
                    labels: s.labels.clone(),
                    samples,
                    start_times: Vec::new(),
                })),
                Err(e) => Some(Err(e)),
            }
        })))
    }

    /// The newest sample of one series in [mint, at], tombstones applied (none
    /// or one). The series' last committed sample answers without decoding
    /// anything when it is not after `at` and nothing of the series is deleted.
    fn newest_sample(
        &self,
        s: &MemSeries,
        mint: i64,
        at: i64,
    ) -> Result<Vec<Sample>, StorageError> {
        if self.tombstones.read().get(s.series_ref).is_none() {
            if let Some((t, bits)) = s.data.lock().last.filter(|(t, _)| *t <= at) {
                return Ok(if t >= mint {
                    vec![Sample {
                        t,
                        v: f64::from_bits(bits),
                    }]
                } else {
                    Vec::new()
                });
            }
        }
        let mut samples = self.series_samples(s, mint, at)?;
        if samples.len() > 1 {
            samples.drain(..samples.len() - 1);
        }
        Ok(samples)
    }

    /// The samples of one series in [mint, maxt], with tombstones applied.
    fn series_samples(
        &self,
        s: &MemSeries,
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Sample>, StorageError> {
        let (mapped, open_bytes) = {
            let d = s.data.lock();
            let mapped: Vec<MappedChunk> = d
                .mapped
                .iter()
                .filter(|c| c.maxt >= mint && c.mint <= maxt)
                .copied()
                .collect();
            let open = d
                .open
                .as_ref()
                .filter(|o| o.maxt >= mint && o.mint <= maxt)
                .map(|o| o.chunk.bytes().to_vec());
            (mapped, open)
        };
        let mut out = Vec::new();
        let mut push_chunk = |bytes: &[u8]| -> Result<(), StorageError> {
            let mut it = XorIterator::new(bytes);
            out.extend(it.by_ref().filter(|x| x.t >= mint && x.t <= maxt));
            match it.error() {
                Some(e) => Err(StorageError::Corruption {
                    path: "head chunk".to_string(),
                    reason: e.to_string(),
                }),
                None => Ok(()),
            }
        };
        for c in mapped {
            let bytes = self
                .chunk_files
                .chunk(c.chunk_ref)
                .map_err(|e| StorageError::Other(e.to_string()))?;
            push_chunk(&bytes)?;
        }
        if let Some(b) = open_bytes {
            push_chunk(&b)?;
        }
        if let Some(iv) = self.tombstones.read().get(s.series_ref) {
            out.retain(|x| !iv.contains(x.t));
        }
        Ok(out)
    }

    /// Sorted label values of `name` among series matching `matchers`.
    pub fn label_values(&self, name: &str, matchers: &[Matcher]) -> Vec<String> {
        if matchers.is_empty() {
            return self.postings.read().sorted_values(name);
        }
        let mut out = BTreeSet::new();
        for s in self.matching_series(matchers) {
            let v = s.labels.get(name);
            if !v.is_empty() {
                out.insert(v.to_string());
            }
        }
        out.into_iter().collect()
    }

    /// Sorted label names among series matching `matchers`.
    pub fn label_names(&self, matchers: &[Matcher]) -> Vec<String> {
        if matchers.is_empty() {
            let mut v: Vec<String> = self.postings.read().by_label.keys().cloned().collect();
            v.sort();
            return v;
        }
        let mut out = BTreeSet::new();
        for s in self.matching_series(matchers) {
            for l in s.labels.iter() {
                out.insert(l.name.to_string());
            }
        }
        out.into_iter().collect()
    }

    fn matching_series(&self, matchers: &[Matcher]) -> Vec<Arc<MemSeries>> {
        let refs = self.postings.read().select(matchers);
        let idx = self.series.read();
        refs.iter()
            .filter_map(|r| idx.by_ref.get(r).cloned())
            .collect()
    }

    /// Marks samples of matching series in [mint, maxt] as deleted, within each
    /// series' present time span; logged to the WAL.
    pub fn delete(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<(), TsdbError> {
        let series = self.matching_series(matchers);
        if series.is_empty() {
            return Ok(());
        }
        // Like Prometheus, delete only between each series' first and last sample
        // and not beyond: a tombstone reaching into the future would hide (and
        // keep out of blocks) every sample appended after the delete.
        let stones: Vec<RefTombstone> = series
            .iter()
            .filter_map(|s| {
                let d = s.data.lock();
                let first = d
                    .mapped
                    .first()
                    .map(|c| c.mint)
                    .or(d.open.as_ref().map(|o| o.mint))?;
                let (last, _) = d.last?;
                let (t0, t1) = (mint.max(first), maxt.min(last));
                (t0 <= t1).then_some(RefTombstone {
                    series_ref: s.series_ref,
                    mint: t0,
                    maxt: t1,
                })
            })
            .collect();
        if stones.is_empty() {
            return Ok(());
        }
        if let Some(w) = self.wal.lock().as_mut() {
            w.write(|buf| record::encode_tombstones(&stones, buf))?;
            w.log.sync()?;
        }
        let mut tomb = self.tombstones.write();
        for s in stones {
            tomb.add(
                s.series_ref,
                Interval {
                    mint: s.mint,
                    maxt: s.maxt,
                },
            );
        }
        Ok(())
    }

    /// Labels of every series that has samples in [mint, maxt), sorted, with their
    /// samples in that range (tombstones applied): the input for cutting a block.
    pub fn series_in_range(self: &Arc<Self>, mint: i64, maxt_exclusive: i64) -> SeriesSet {
        let all = self.postings.read().all.clone();
        let mut series: Vec<Arc<MemSeries>> = {
            let idx = self.series.read();
            all.iter()
                .filter_map(|r| idx.by_ref.get(r).cloned())
                .collect()
        };
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        let head = self.clone();
        Box::new(series.into_iter().filter_map(move |s| {
            match head.series_samples(&s, mint, maxt_exclusive - 1) {
                Ok(samples) if samples.is_empty() => None,
                Ok(samples) => Some(Ok(Series {
                    labels: s.labels.clone(),
                    samples,
                    start_times: Vec::new(),
                })),
                Err(e) => Some(Err(e)),
            }
        }))
    }

    /// Drops everything before `mint` (now persisted in blocks): chunks, series left
    /// without samples, tombstones; checkpoints the WAL and removes old segments.
    pub fn truncate(&self, mint: i64) -> Result<(), TsdbError> {
        self.min_valid_time.fetch_max(mint, Ordering::Relaxed);
        let mut dead = std::collections::HashSet::new();
        let mut new_min = i64::MAX;
        {
            let idx = self.series.read();
            for s in idx.by_ref.values() {
                let mut d = s.data.lock();
                d.mapped.retain(|c| c.maxt >= mint);
                if d.open.as_ref().is_some_and(|o| o.maxt < mint) {
                    d.open = None;
                }
                let first = d
                    .mapped
                    .first()
                    .map(|c| c.mint)
                    .or(d.open.as_ref().map(|o| o.mint));
                match first {
                    Some(t) => new_min = new_min.min(t.max(mint)),
                    None => {
                        dead.insert(s.series_ref);
                    }
                }
            }
        }
        if !dead.is_empty() {
            let mut idx = self.series.write();
            // A series an appender holds (created or found by `append`, not yet
            // committed) has no sample yet but will get one: keep it, as
            // Prometheus keeps series with a pending commit. Checked under the
            // write lock, where nobody can look a series up anew: the index holds
            // two references (by ref and by hash), anyone else a third. The data
            // is checked again too, for a commit that landed since the scan.
            dead.retain(|r| {
                idx.by_ref.get(r).is_some_and(|s| {
                    let d = s.data.lock();
                    Arc::strong_count(s) <= 2 && d.mapped.is_empty() && d.open.is_none()
                })
            });
            for r in &dead {
                idx.remove(*r);
            }
            drop(idx);
            self.postings.write().remove(&dead);
            self.stats
                .series_removed
                .fetch_add(dead.len() as u64, Ordering::Relaxed);
        }
        self.min_time.store(new_min, Ordering::Relaxed);
        if new_min == i64::MAX {
            self.max_time.store(i64::MIN, Ordering::Relaxed);
        }
        self.tombstones.write().truncate_before(mint);
        self.chunk_files.truncate_before(mint)?;
        self.checkpoint(mint)
    }

    /// Rewrites the WAL's older segments as a checkpoint holding only what is still
    /// in the head (live series, samples at or after `mint`, their tombstones), then
    /// removes those segments.
    fn checkpoint(&self, mint: i64) -> Result<(), TsdbError> {
        if self.wal.lock().is_none() {
            return Ok(());
        }
        let wal_dir = self.dir.join(WAL_DIR);
        let previous = wal::checkpoint::latest(&wal_dir)?;
        let (reader, upto_index, last_segment) = {
            let mut w = self.wal.lock();
            let Some(w) = w.as_mut() else {
                return Ok(());
            };
            w.log.sync()?;
            w.log.cut_segment()?;
            let upto = w.log.next_index();
            let last_segment = w
                .log
                .segments()
                .iter()
                .map(|s| s.number)
                .max()
                .unwrap_or(0)
                .saturating_sub(1);
            let first = first_index_after_checkpoint(&w.log, previous.as_ref());
            (w.log.reader(first)?, upto, last_segment)
        };
        let live: std::collections::HashSet<u64> =
            self.series.read().by_ref.keys().copied().collect();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut emit = |rec: Vec<u8>| -> Result<(), TsdbError> {
            let mut buf = Vec::new();
            match record::decode(&rec)? {
                Record::Series(s) => {
                    let s: Vec<RefSeries> = s
                        .into_iter()
                        .filter(|x| live.contains(&x.series_ref))
                        .collect();
                    if !s.is_empty() {
                        record::encode_series(&s, &mut buf);
                    }
                }
                Record::Samples(s) => {
                    let s: Vec<RefSample> = s
                        .into_iter()
                        .filter(|x| x.t >= mint && live.contains(&x.series_ref))
                        .collect();
                    if !s.is_empty() {
                        record::encode_samples(&s, &mut buf);
                    }
                }
                Record::Tombstones(s) => {
                    let s: Vec<RefTombstone> = s
                        .into_iter()
                        .filter(|x| x.maxt >= mint && live.contains(&x.series_ref))
                        .collect();
                    if !s.is_empty() {
                        record::encode_tombstones(&s, &mut buf);
                    }
                }
            }
            if !buf.is_empty() {
                out.push(buf);
            }
            Ok(())
        };
        if let Some(cp) = &previous {
            for item in cp.reader()? {
                let (_, rec) = item?;
                emit(rec)?;
            }
        }
        for item in reader {
            let (index, rec) = item?;
            if index >= upto_index {
                break;
            }
            emit(rec)?;
        }
        wal::checkpoint::write(&wal_dir, last_segment, out.iter().map(|r| r.as_slice()))?;
        wal::checkpoint::delete_before(&wal_dir, last_segment)?;
        if let Some(w) = self.wal.lock().as_mut() {
            w.log.remove_segments_before(upto_index)?;
        }
        Ok(())
    }

    /// Flushes the WAL to disk (on shutdown): written out and, unless its policy is
    /// `Never`, fsynced.
    pub fn sync(&self) -> Result<(), TsdbError> {
        if let Some(w) = self.wal.lock().as_mut() {
            w.flush_series()?;
            w.log.fsync()?;
        }
        self.chunk_files.sync()?;
        Ok(())
    }

    /// Bytes of the WAL's segment files, for `/metrics` and size-based retention.
    pub fn wal_size_bytes(&self) -> u64 {
        self.wal
            .lock()
            .as_ref()
            .map_or(0, |w| w.log.segments().iter().map(|s| s.size_bytes).sum())
    }
}

/// The first WAL index to read after `checkpoint`: the first record of the first
/// segment it does not cover. Segments it covers are normally deleted right after
/// it is written, but a crash in between leaves them, and reading them again would
/// bring back series the checkpoint dropped.
fn first_index_after_checkpoint(
    log: &Log,
    checkpoint: Option<&wal::checkpoint::Checkpoint>,
) -> u64 {
    let Some(cp) = checkpoint else {
        return log.first_index();
    };
    log.segments()
        .iter()
        .find(|s| s.number > cp.last_segment)
        .map_or(log.next_index(), |s| s.first_index)
}

/// One transaction against the head.
pub struct HeadAppender {
    head: Arc<Head>,
    samples: Vec<(Arc<MemSeries>, i64, f64)>,
    /// Scratch for the WAL record of this transaction's samples.
    wal_samples: Vec<RefSample>,
}

impl Appender for HeadAppender {
    fn append(
        &mut self,
        series_ref: SeriesRef,
        labels: &Labels,
        t: i64,
        v: f64,
    ) -> Result<SeriesRef, AppendError> {
        // Checked before the series is looked up, as Prometheus fails fast: an
        // out-of-bounds sample must not create (and log) a series that gets none.
        if t < self.head.appendable_min_valid_time() {
            self.head
                .stats
                .out_of_bounds_samples
                .fetch_add(1, Ordering::Relaxed);
            return Err(AppendError::OutOfBounds);
        }
        let series = match self.lookup(series_ref, labels) {
            Some(s) => s,
            None => self.head.get_or_create(labels)?,
        };
        let append = self.check(&series.data.lock(), t, v)?;
        let r = series.series_ref;
        if append {
            self.samples.push((series, t, v));
        }
        Ok(r)
    }

    fn commit(mut self: Box<Self>) -> Result<(), AppendError> {
        if self.samples.is_empty() {
            return Ok(());
        }
        self.wal_samples.clear();
        self.wal_samples
            .extend(self.samples.iter().map(|(s, t, v)| RefSample {
                series_ref: s.series_ref,
                t: *t,
                v: *v,
            }));
        if let Some(w) = self.head.wal.lock().as_mut() {
            let samples = &self.wal_samples;
            w.write(|buf| record::encode_samples(samples, buf))
                .and_then(|_| w.log.sync())
                .map_err(|e| AppendError::Storage(e.to_string()))?;
        }
        let mut appended = 0u64;
        let mut failure = None;
        let (mut mint, mut maxt) = (i64::MAX, i64::MIN);
        for (series, t, v) in self.samples.drain(..) {
            let mut d = series.data.lock();
            // Checked again under the lock: another transaction may have committed a
            // newer sample since `append` looked. Such samples are dropped, as in
            // Prometheus's commit.
            if d.last.is_some_and(|(lt, _)| t <= lt) {
                self.head
                    .stats
                    .out_of_order_samples
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // The WAL has the sample already, so a failure here (writing a full chunk
            // to `chunks_head/`) loses nothing durable: replay restores it.
            match self.head.append_to_series(&series, &mut d, t, v) {
                Ok(()) => {
                    appended += 1;
                    mint = mint.min(t);
                    maxt = maxt.max(t);
                }
                Err(e) => {
                    failure.get_or_insert_with(|| AppendError::Storage(e.to_string()));
                }
            }
        }
        if appended > 0 {
            self.head.note_time(mint);
            self.head.note_time(maxt);
        }
        self.head
            .stats
            .samples_appended
            .fetch_add(appended, Ordering::Relaxed);
        failure.map_or(Ok(()), Err)
    }

    fn rollback(self: Box<Self>) {}
}

impl HeadAppender {
    /// Whether a sample at `t` may follow the series' newest sample: `Ok(true)` to
    /// append, `Ok(false)` for an identical duplicate (accepted and ignored, as in
    /// Prometheus), or the reason it is refused.
    fn check(&self, d: &SeriesData, t: i64, v: f64) -> Result<bool, AppendError> {
        let r = check_order(d.last, t, v);
        if r == Err(AppendError::OutOfOrder) {
            self.head
                .stats
                .out_of_order_samples
                .fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn lookup(&self, series_ref: SeriesRef, labels: &Labels) -> Option<Arc<MemSeries>> {
        if series_ref == 0 {
            return None;
        }
        let idx = self.head.series.read();
        // The caller passes the label set it got the ref with, which is nearly
        // always the series' own (shared) buffer: comparing the pointers first
        // spares reading both label sets.
        idx.by_ref
            .get(&series_ref)
            .filter(|s| s.labels.ptr_eq(labels) || &s.labels == labels)
            .cloned()
    }
}

/// Adds tombstones from a WAL record, with series refs mapped through `remap`
/// (a series logged under a second ref is kept under its first).
fn add_wal_tombstones(tomb: &mut TombstoneStore, ts: Vec<RefTombstone>, remap: &HashMap<u64, u64>) {
    for t in ts {
        let series_ref = remap.get(&t.series_ref).copied().unwrap_or(t.series_ref);
        tomb.add(
            series_ref,
            Interval {
                mint: t.mint,
                maxt: t.maxt,
            },
        );
    }
}

/// Reads what a head's WAL holds (its checkpoint, then its segments) without
/// changing any file, for inspection tools such as `hearth tsdb dump`. A torn tail
/// ends the log as recovery would end it. Series come sorted by labels, with
/// tombstones applied; samples a block already holds may appear too.
pub fn read_wal_series(dir: &Path) -> Result<Vec<Series>, TsdbError> {
    let wal_dir = dir.join(WAL_DIR);
    if !wal_dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut labels: HashMap<u64, Labels> = HashMap::new();
    let mut by_labels: HashMap<Labels, u64> = HashMap::new();
    // Refs of series logged again under another ref, as in `Head::replay`.
    let mut remap: HashMap<u64, u64> = HashMap::new();
    let mut samples: HashMap<u64, Vec<Sample>> = HashMap::new();
    let mut tomb = TombstoneStore::default();
    let mut apply = |rec: Vec<u8>| -> Result<(), TsdbError> {
        match record::decode(&rec)? {
            Record::Series(series) => {
                for s in series {
                    if labels.contains_key(&s.series_ref) {
                        continue;
                    }
                    match by_labels.get(&s.labels) {
                        Some(&kept) => {
                            remap.insert(s.series_ref, kept);
                        }
                        None => {
                            by_labels.insert(s.labels.clone(), s.series_ref);
                            labels.insert(s.series_ref, s.labels);
                        }
                    }
                }
            }
            Record::Samples(ss) => {
                for s in ss {
                    let r = remap.get(&s.series_ref).copied().unwrap_or(s.series_ref);
                    let list = samples.entry(r).or_default();
                    if list.last().is_none_or(|l| s.t > l.t) {
                        list.push(Sample { t: s.t, v: s.v });
                    }
                }
            }
            Record::Tombstones(ts) => add_wal_tombstones(&mut tomb, ts, &remap),
        }
        Ok(())
    };
    if let Some(cp) = wal::checkpoint::latest(&wal_dir)? {
        for item in cp.reader()? {
            apply(item?.1)?;
        }
    }
    for item in wal::open_for_inspection(&wal_dir)? {
        apply(item?.1)?;
    }
    let mut out: Vec<Series> = samples
        .into_iter()
        .filter_map(|(r, mut s)| {
            let l = labels.get(&r)?.clone();
            if let Some(iv) = tomb.get(r) {
                s.retain(|x| !iv.contains(x.t));
            }
            (!s.is_empty()).then_some(Series {
                labels: l,
                samples: s,
                start_times: Vec::new(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::FsyncPolicy;

    proptest::proptest! {
        /// The head's own overrides (lists searched in place, not copied) select
        /// what matching every series by hand selects.
        #[test]
        fn mem_postings_agree_with_brute_force(
            series in postings::tests::label_sets(),
            ms in postings::tests::matchers(),
        ) {
            let mut index = MemPostings::default();
            for (r, l) in series.iter().enumerate() {
                index.add(r as u64, l);
            }
            proptest::prop_assert_eq!(
                index.select(&ms),
                postings::tests::brute_force(&series, &ms),
                "matchers {:?}",
                ms
            );
        }
    }

    fn open_head(dir: &Path) -> Arc<Head> {
        let opts = HeadOptions {
            chunk_range_ms: 2 * 3600 * 1000,
            wal: Some(LogOptions {
                fsync: FsyncPolicy::Never,
                ..Default::default()
            }),
        };
        Arc::new(Head::open(dir, opts, i64::MIN).unwrap())
    }

    fn all(head: &Arc<Head>) -> Vec<Series> {
        let m = Matcher::new(crate::labels::MatchType::Regexp, "__name__", ".+").unwrap();
        head.select(i64::MIN, i64::MAX, &SelectHints::default(), &[m])
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Regression: truncation used to drop a series created by a transaction that
    /// had not committed yet, so the committed sample ended up in no series at all.
    #[test]
    fn truncation_keeps_series_with_uncommitted_samples() {
        let dir = tempfile::tempdir().unwrap();
        let head = open_head(dir.path());
        let mut app: Box<dyn Appender> = Box::new(head.appender());
        let l = Labels::from_pairs(&[("__name__", "fresh")]);
        app.append(0, &l, 10_000_000, 1.0).unwrap();
        head.truncate(5_000_000).unwrap();
        app.commit().unwrap();
        let got = all(&head);
        assert_eq!(got.len(), 1, "the series must survive truncation");
        assert_eq!(
            got[0].samples,
            vec![Sample {
                t: 10_000_000,
                v: 1.0
            }]
        );
    }

    #[test]
    fn rolled_back_series_are_collected_by_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let head = open_head(dir.path());
        let mut app: Box<dyn Appender> = Box::new(head.appender());
        app.append(0, &Labels::from_pairs(&[("__name__", "gone")]), 1, 1.0)
            .unwrap();
        app.rollback();
        assert_eq!(head.num_series(), 1);
        head.truncate(0).unwrap();
        assert_eq!(head.num_series(), 0);
    }

    #[test]
    fn full_chunks_are_mapped_and_read_back_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let l = Labels::from_pairs(&[("__name__", "long")]);
        let want: Vec<Sample> = (0..1000)
            .map(|i| Sample {
                t: i * 15_000,
                v: i as f64 * 0.5,
            })
            .collect();
        {
            let head = open_head(dir.path());
            let mut app: Box<dyn Appender> = Box::new(head.appender());
            for s in &want {
                app.append(0, &l, s.t, s.v).unwrap();
            }
            app.commit().unwrap();
            let d = head.series.read().by_ref.values().next().unwrap().clone();
            assert!(
                d.data.lock().mapped.len() >= 8,
                "1000 samples make at least 8 full chunks in chunks_head"
            );
            assert_eq!(all(&head)[0].samples, want);
            head.sync().unwrap();
        }
        let head = open_head(dir.path());
        assert_eq!(all(&head)[0].samples, want, "after replay");
    }
}
