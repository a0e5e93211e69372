//! The database: a head plus the blocks on disk, with the background work that cuts
//! blocks from the head, compacts them and enforces retention.

use super::block::{self, Block, BlockLineage, TMP_FOR_CREATION};
use super::head::{Head, HeadOptions};
use super::meta::BlockMeta;
use super::TsdbError;
use crate::labels::{Labels, Matcher};
use crate::storage::{
    merge_series_sets, AppendError, Appendable, Appender, Querier, Queryable, SelectHints,
    SeriesSet, StorageError,
};
use crate::wal::LogOptions;
use parking_lot::{Mutex, RwLock};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Two hours: Prometheus's default block range.
pub const DEFAULT_BLOCK_DURATION_MS: i64 = 2 * 3600 * 1000;
/// Fifteen days: Prometheus's default retention.
pub const DEFAULT_RETENTION_MS: i64 = 15 * 24 * 3600 * 1000;
/// Compacted blocks never span more than 31 days.
pub const MAX_BLOCK_DURATION_CAP_MS: i64 = 31 * 24 * 3600 * 1000;

/// How the database is set up.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Blocks whose end is older than this (relative to the newest block) are dropped.
    pub retention_ms: i64,
    /// Oldest blocks are dropped while blocks + WAL + head chunks exceed this; 0 is no limit.
    pub retention_size_bytes: u64,
    /// Range of blocks cut from the head, and of head chunks.
    pub min_block_duration_ms: i64,
    /// Largest block compaction may produce.
    pub max_block_duration_ms: i64,
    pub wal: LogOptions,
}

impl Default for DbOptions {
    fn default() -> DbOptions {
        DbOptions {
            retention_ms: DEFAULT_RETENTION_MS,
            retention_size_bytes: 0,
            min_block_duration_ms: DEFAULT_BLOCK_DURATION_MS,
            max_block_duration_ms: default_max_block_duration(DEFAULT_RETENTION_MS),
            wal: LogOptions::default(),
        }
    }
}

/// Prometheus's default: 10% of retention, capped at 31 days, at least one block range.
pub fn default_max_block_duration(retention_ms: i64) -> i64 {
    (retention_ms / 10).clamp(DEFAULT_BLOCK_DURATION_MS, MAX_BLOCK_DURATION_CAP_MS)
}

/// The local TSDB.
pub struct Db {
    dir: PathBuf,
    opts: DbOptions,
    head: Arc<Head>,
    /// Open blocks, sorted by min time.
    blocks: RwLock<Vec<Arc<Block>>>,
    /// Held while cutting, compacting or dropping blocks: one at a time.
    compaction: Mutex<()>,
    /// The data directory's `lock` file, held while the database is open.
    _lock: super::lock::DirLock,
}

impl Db {
    /// Opens (creating) the database in `dir`: removes half-written blocks, opens the
    /// blocks, finishes compactions a crash interrupted, replays the WAL into the
    /// head, and applies retention.
    pub fn open(dir: &Path, opts: DbOptions) -> Result<Db, TsdbError> {
        Db::open_with_wal(dir, opts, true)
    }

    /// Opens the database without a WAL of its own (`opts.wal` is unused): for a
    /// store whose samples are logged elsewhere, a WAL group's Raft log, which
    /// replays them into it after every open. Its head starts empty; its blocks
    /// are kept.
    pub fn open_without_wal(dir: &Path, opts: DbOptions) -> Result<Db, TsdbError> {
        Db::open_with_wal(dir, opts, false)
    }

    /// Opens the database without a WAL, then loads the head checkpoint of a
    /// snapshot (`Db::snapshot`) into its head: samples the checkpoint holds past
    /// the blocks in `dir` go to the head, the rest is already in blocks.
    pub fn open_without_wal_from(
        dir: &Path,
        opts: DbOptions,
        snapshot: &Path,
    ) -> Result<Db, TsdbError> {
        let db = Db::open_with_wal(dir, opts, false)?;
        let cp = snapshot_checkpoint_dir(snapshot);
        if cp.is_dir() {
            db.head.load_checkpoint(&cp)?;
        }
        Ok(db)
    }

    /// Writes a snapshot of the database into `dst` (created; it must not hold
    /// anything yet): every block, hard-linked (copied where links fail), and the
    /// head as a WAL checkpoint `wal/checkpoint.00000000` of series and sample
    /// records (`wal::checkpoint`, the TSDB record format). Blocks are not cut or
    /// compacted meanwhile, so the blocks and the head fit together.
    pub fn snapshot(&self, dst: &Path) -> Result<SnapshotInfo, TsdbError> {
        let _guard = self.compaction.lock();
        std::fs::create_dir_all(dst).map_err(snapshot_io("create directory", dst))?;
        let blocks = self.blocks.read().clone();
        for b in &blocks {
            let to = dst.join(b.ulid().to_string());
            link_tree(b.dir(), &to)?;
        }
        let records = self.head.checkpoint_records()?;
        let wal_dir = dst.join(super::head::WAL_DIR);
        std::fs::create_dir_all(&wal_dir).map_err(snapshot_io("create directory", &wal_dir))?;
        crate::wal::checkpoint::write(&wal_dir, 0, records.iter().map(|r| r.as_slice()))?;
        block::sync_dir(dst).map_err(snapshot_io("sync", dst))?;
        Ok(SnapshotInfo {
            blocks: blocks.len(),
            head_records: records.len(),
        })
    }

    /// Replaces the whole content of the database with a snapshot in `src` (as
    /// `Db::snapshot` writes it): the current blocks are deleted, the snapshot's
    /// blocks hard-linked in, the head emptied and filled from the snapshot's
    /// checkpoint. The caller makes sure nothing appends meanwhile.
    pub fn restore_snapshot(&self, src: &Path) -> Result<(), TsdbError> {
        let _guard = self.compaction.lock();
        let old = std::mem::take(&mut *self.blocks.write());
        for b in &old {
            remove_block_dir(b.dir())?;
        }
        let mut blocks = Vec::new();
        for e in std::fs::read_dir(src).map_err(snapshot_io("read directory", src))? {
            let e = e.map_err(snapshot_io("read directory", src))?;
            let name = e.file_name().to_string_lossy().to_string();
            if ulid::Ulid::from_string(&name).is_err() || !e.path().is_dir() {
                continue;
            }
            let to = self.dir.join(&name);
            link_tree(&e.path(), &to)?;
            blocks.push(Arc::new(Block::open(&to)?));
        }
        blocks.sort_by_key(|b| b.min_time());
        let min_valid = blocks
            .iter()
            .map(|b| b.max_time())
            .max()
            .unwrap_or(i64::MIN);
        block::sync_dir(&self.dir).map_err(snapshot_io("sync", &self.dir))?;
        *self.blocks.write() = blocks;
        self.head.reset(min_valid)?;
        let cp = snapshot_checkpoint_dir(src);
        if cp.is_dir() {
            self.head.load_checkpoint(&cp)?;
        }
        Ok(())
    }

    fn open_with_wal(dir: &Path, opts: DbOptions, wal: bool) -> Result<Db, TsdbError> {
        std::fs::create_dir_all(dir)?;
        let lock = super::lock::DirLock::acquire(dir)?;
        let mut blocks = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if name.ends_with(TMP_FOR_CREATION) || name.ends_with(TMP_FOR_DELETION) {
                tracing::info!(dir = %path.display(), "removing unfinished block directory");
                std::fs::remove_dir_all(&path)?;
                continue;
            }
            if ulid::Ulid::from_string(&name).is_err() {
                continue;
            }
            let b = Block::open(&path)?;
            if b.meta().compaction.deletable {
                remove_block_dir(&path)?;
                continue;
            }
            blocks.push(Arc::new(b));
        }
        // A block that is the parent of another was compacted (or rewritten) into
        // it, and the process stopped before deleting it: finish the job, as
        // Prometheus's reloadBlocks does, instead of reading its samples twice.
        let parents: HashSet<ulid::Ulid> = blocks
            .iter()
            .flat_map(|b| b.meta().compaction.parents)
            .map(|p| p.ulid)
            .collect();
        let (stale, mut blocks): (Vec<_>, Vec<_>) = blocks
            .into_iter()
            .partition(|b| parents.contains(&b.ulid()));
        for b in stale {
            tracing::info!(ulid = %b.ulid(), "removing block already compacted into another");
            remove_block_dir(b.dir())?;
        }
        blocks.sort_by_key(|b| b.min_time());
        let min_valid = blocks
            .iter()
            .map(|b| b.max_time())
            .max()
            .unwrap_or(i64::MIN);
        let head = Head::open(
            dir,
            HeadOptions {
                chunk_range_ms: opts.min_block_duration_ms,
                wal: wal.then(|| opts.wal.clone()),
            },
            min_valid,
        )?;
        let db = Db {
            dir: dir.to_path_buf(),
            opts,
            head: Arc::new(head),
            blocks: RwLock::new(blocks),
            compaction: Mutex::new(()),
            _lock: lock,
        };
        db.apply_retention()?;
        Ok(db)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn head(&self) -> &Arc<Head> {
        &self.head
    }

    /// Metadata of the open blocks, oldest first, as their meta.json files say.
    pub fn blocks(&self) -> Vec<BlockMeta> {
        self.blocks.read().iter().map(|b| b.meta()).collect()
    }

    /// Cuts blocks from the head while it spans more than 1.5 block ranges, then
    /// compacts blocks and applies retention. Called periodically.
    pub fn compact(&self) -> Result<(), TsdbError> {
        let _guard = self.compaction.lock();
        let range = self.opts.min_block_duration_ms;
        while let (Some(hmin), Some(hmax)) = (self.head.min_time(), self.head.max_time()) {
            if hmax - hmin <= range / 2 * 3 {
                break;
            }
            let mint = hmin.div_euclid(range) * range;
            let maxt = mint + range;
            self.cut_head_block(mint, maxt)?;
        }
        while self.compact_blocks_once()? {}
        self.apply_retention()?;
        Ok(())
    }

    /// Writes the head's samples in [mint, maxt) as a block, then truncates the head.
    fn cut_head_block(&self, mint: i64, maxt: i64) -> Result<(), TsdbError> {
        let started = std::time::Instant::now();
        let series = self.head.series_in_range(mint, maxt);
        let meta = block::write_block(
            &self.dir,
            mint,
            maxt,
            self.opts.min_block_duration_ms,
            BlockLineage {
                level: 1,
                ..Default::default()
            },
            series,
        )?;
        if let Some(meta) = meta {
            let b = Block::open(&self.dir.join(meta.ulid.to_string()))?;
            tracing::info!(
                ulid = %meta.ulid, mint, maxt,
                series = meta.stats.num_series,
                duration_ms = started.elapsed().as_millis() as u64,
                "wrote block from head"
            );
            let mut blocks = self.blocks.write();
            blocks.push(Arc::new(b));
            blocks.sort_by_key(|b| b.min_time());
        }
        self.head.truncate(maxt)
    }

    /// Compaction ranges: the block range times 3, 9, 27 … up to the maximum.
    fn ranges(&self) -> Vec<i64> {
        let mut out = vec![self.opts.min_block_duration_ms];
        while let Some(&last) = out.last() {
            let next = last * 3;
            if next > self.opts.max_block_duration_ms {
                break;
            }
            out.push(next);
        }
        out
    }

    /// Plans and runs one compaction; returns whether it did anything.
    fn compact_blocks_once(&self) -> Result<bool, TsdbError> {
        let blocks = self.blocks.read().clone();
        let metas: Vec<BlockMeta> = blocks.iter().map(|b| b.meta()).collect();
        let Some(plan) = plan_compaction(&metas, &self.ranges()) else {
            return Ok(false);
        };
        let inputs: Vec<Arc<Block>> = plan.iter().map(|&i| blocks[i].clone()).collect();
        let input_metas: Vec<BlockMeta> = plan.iter().map(|&i| metas[i].clone()).collect();
        let mint = input_metas.iter().map(|m| m.min_time).min().unwrap_or(0);
        let maxt = input_metas.iter().map(|m| m.max_time).max().unwrap_or(0);
        let mut sources: Vec<ulid::Ulid> = input_metas
            .iter()
            .flat_map(|m| m.compaction.sources.iter().copied())
            .collect();
        sources.sort();
        sources.dedup();
        let level = input_metas
            .iter()
            .map(|m| m.compaction.level)
            .max()
            .unwrap_or(1)
            + 1;
        self.replace_blocks(
            &inputs,
            mint,
            maxt,
            BlockLineage {
                level,
                sources,
                parents: input_metas,
            },
        )?;
        tracing::info!(inputs = inputs.len(), mint, maxt, "compacted blocks");
        Ok(true)
    }

    /// Writes the samples of `inputs` in [mint, maxt) as one new block (none if no
    /// sample is left), swaps it in for them, and deletes their directories.
    fn replace_blocks(
        &self,
        inputs: &[Arc<Block>],
        mint: i64,
        maxt: i64,
        lineage: BlockLineage,
    ) -> Result<Option<BlockMeta>, TsdbError> {
        let mut sets = Vec::new();
        for b in inputs {
            // Block ranges are half-open, chunk reads closed: stop 1 ms short.
            sets.push(b.all_series(mint, maxt - 1)?);
        }
        let meta = block::write_block(
            &self.dir,
            mint,
            maxt,
            self.opts.min_block_duration_ms,
            lineage,
            merge_series_sets(sets),
        )?;
        let new_block = match &meta {
            Some(m) => Some(Arc::new(Block::open(&self.dir.join(m.ulid.to_string()))?)),
            None => None,
        };
        {
            let mut all = self.blocks.write();
            all.retain(|b| !inputs.iter().any(|i| Arc::ptr_eq(i, b)));
            if let Some(b) = new_block {
                all.push(b);
            }
            all.sort_by_key(|b| b.min_time());
        }
        for b in inputs {
            remove_block_dir(b.dir())?;
        }
        Ok(meta)
    }

    /// Rewrites every block that has tombstones without the deleted samples, like
    /// Prometheus's `CleanTombstones` (the admin API's `clean_tombstones`). The new
    /// block is a level-1 block whose parent is the old one.
    pub fn clean_tombstones(&self) -> Result<(), TsdbError> {
        let _guard = self.compaction.lock();
        let blocks = self.blocks.read().clone();
        for b in blocks {
            if b.num_tombstones() == 0 {
                continue;
            }
            let meta = b.meta();
            let written = self.replace_blocks(
                std::slice::from_ref(&b),
                meta.min_time,
                meta.max_time,
                BlockLineage {
                    level: 1,
                    sources: Vec::new(),
                    parents: vec![meta.clone()],
                },
            )?;
            tracing::info!(
                old = %meta.ulid,
                new = ?written.map(|m| m.ulid.to_string()),
                "rewrote block without deleted samples"
            );
        }
        Ok(())
    }

    /// Bytes the head holds on disk: the whole WAL directory (checkpoints
    /// included) and `chunks_head/`, as Prometheus's `Head.Size` counts them.
    pub fn head_size_bytes(&self) -> u64 {
        dir_size_bytes(&self.dir.join(super::head::WAL_DIR))
            + dir_size_bytes(&self.dir.join("chunks_head"))
    }

    /// Drops whole blocks past the time or size retention, as Prometheus's
    /// `BeyondTimeRetention` and `BeyondSizeRetention` choose them: blocks are
    /// taken newest first (by max time); a block whose end lies at least the
    /// retention time before the newest block's end goes, with every older one;
    /// and once the head plus the blocks so far exceed the size limit, the block
    /// that crossed it goes, with every older one.
    fn apply_retention(&self) -> Result<(), TsdbError> {
        let mut blocks = self.blocks.read().clone();
        blocks.sort_by_key(|b| std::cmp::Reverse(b.max_time()));
        let Some(newest_maxt) = blocks.first().map(|b| b.max_time()) else {
            return Ok(());
        };
        let mut cut = blocks.len();
        if self.opts.retention_ms > 0 {
            if let Some(i) = (1..blocks.len())
                .find(|&i| newest_maxt - blocks[i].max_time() >= self.opts.retention_ms)
            {
                cut = cut.min(i);
            }
        }
        if self.opts.retention_size_bytes > 0 {
            let mut total = self.head_size_bytes();
            for (i, b) in blocks.iter().enumerate() {
                total += b.size_bytes();
                if total > self.opts.retention_size_bytes {
                    cut = cut.min(i);
                    break;
                }
            }
        }
        let drop = &blocks[cut..];
        if drop.is_empty() {
            return Ok(());
        }
        self.blocks
            .write()
            .retain(|b| !drop.iter().any(|d| Arc::ptr_eq(d, b)));
        for b in drop {
            tracing::info!(ulid = %b.ulid(), "dropping block past retention");
            remove_block_dir(b.dir())?;
        }
        Ok(())
    }

    /// Deletes samples of matching series in [mint, maxt] (inclusive): tombstones in
    /// the head and in every overlapping block; compaction removes the data.
    pub fn delete(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<(), TsdbError> {
        let _guard = self.compaction.lock();
        for b in self.blocks.read().iter() {
            b.delete(matchers, mint, maxt)?;
        }
        self.head.delete(matchers, mint, maxt)
    }

    /// Flushes everything to disk (on shutdown).
    pub fn close(&self) -> Result<(), TsdbError> {
        self.head.sync()
    }
}

/// What `Db::snapshot` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub blocks: usize,
    pub head_records: usize,
}

/// Maps an I/O error of a snapshot step on `path` to `TsdbError::Snapshot`.
fn snapshot_io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TsdbError {
    let path = path.display().to_string();
    move |source| TsdbError::Snapshot {
        action,
        path,
        source,
    }
}

/// The head checkpoint inside a snapshot directory.
fn snapshot_checkpoint_dir(snapshot: &Path) -> PathBuf {
    crate::wal::checkpoint::checkpoint_path(&snapshot.join(super::head::WAL_DIR), 0)
}

/// Recreates the tree `from` at `to`, hard-linking every file (blocks are never
/// modified in place, only replaced), copying where a link cannot be made.
fn link_tree(from: &Path, to: &Path) -> Result<(), TsdbError> {
    std::fs::create_dir_all(to).map_err(snapshot_io("create directory", to))?;
    for e in std::fs::read_dir(from).map_err(snapshot_io("read directory", from))? {
        let e = e.map_err(snapshot_io("read directory", from))?;
        let src = e.path();
        let dst = to.join(e.file_name());
        let md = e.metadata().map_err(snapshot_io("stat", &src))?;
        if md.is_dir() {
            link_tree(&src, &dst)?;
        } else if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).map_err(snapshot_io("copy", &src))?;
        }
    }
    block::sync_dir(to).map_err(snapshot_io("sync", to))?;
    Ok(())
}

/// Suffix of a block directory being deleted; removed at startup.
const TMP_FOR_DELETION: &str = ".tmp-for-deletion";

/// Renames a block directory out of the way first, so a crash mid-delete leaves a
/// directory that startup recognises and removes.
fn remove_block_dir(dir: &Path) -> Result<(), TsdbError> {
    let mut name = dir.as_os_str().to_os_string();
    name.push(TMP_FOR_DELETION);
    let tmp = PathBuf::from(name);
    std::fs::rename(dir, &tmp)?;
    std::fs::remove_dir_all(&tmp)?;
    block::sync_dir(dir.parent().unwrap_or(Path::new(".")))?;
    Ok(())
}

/// Total size of the files under `dir`; files that vanish meanwhile count 0.
fn dir_size_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(md) if md.is_dir() => dir_size_bytes(&e.path()),
            Ok(md) => md.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Chooses blocks to compact together, as Prometheus's leveled compactor plans
/// (`tsdb/compact.go`); returns indexes into `metas`, oldest first.
///
/// 1. The first run of overlapping blocks, whatever their age.
/// 2. Otherwise, leaving out the newest block (by min time, so that a fresh block
///    cut from the head can be backed up before it is merged): for each range
///    above the smallest, the blocks inside one aligned window of that range,
///    when there are at least two and they fill the window or end before the
///    newest block still considered starts. Windows holding a block whose
///    compaction failed are skipped.
/// 3. Otherwise one block worth rewriting for its tombstones: newest first, a
///    block of at least the middle range with more than 5% tombstones per series,
///    or a smaller one that is deleted entirely.
pub fn plan_compaction(metas: &[BlockMeta], ranges: &[i64]) -> Option<Vec<usize>> {
    let mut order: Vec<usize> = (0..metas.len()).collect();
    order.sort_by_key(|&i| metas[i].min_time);
    let overlapping = overlapping_blocks(metas, &order);
    if !overlapping.is_empty() {
        return Some(overlapping);
    }
    let (_, considered) = order.split_last()?;
    if let Some(group) = select_for_ranges(metas, considered, ranges) {
        return Some(group);
    }
    let middle = ranges.get(ranges.len() / 2).copied().unwrap_or(i64::MAX);
    for &i in considered.iter().rev() {
        let m = &metas[i];
        let stats = &m.stats;
        if m.max_time - m.min_time < middle {
            if stats.num_tombstones > 0 && stats.num_tombstones >= stats.num_series {
                return Some(vec![i]);
            }
            break;
        }
        if stats.num_tombstones as f64 / (stats.num_series + 1) as f64 > 0.05 {
            return Some(vec![i]);
        }
    }
    None
}

/// The first run of blocks (in `order`, sorted by min time) that overlap.
fn overlapping_blocks(metas: &[BlockMeta], order: &[usize]) -> Vec<usize> {
    let mut out = Vec::new();
    let Some(&first) = order.first() else {
        return out;
    };
    let mut max_seen = metas[first].max_time;
    for w in order.windows(2) {
        let (prev, cur) = (w[0], w[1]);
        if metas[cur].min_time < max_seen {
            if out.is_empty() {
                out.push(prev);
            }
            out.push(cur);
        } else if !out.is_empty() {
            break;
        }
        max_seen = max_seen.max(metas[cur].max_time);
    }
    out
}

/// Step 2 of `plan_compaction` over `considered` (sorted by min time).
fn select_for_ranges(
    metas: &[BlockMeta],
    considered: &[usize],
    ranges: &[i64],
) -> Option<Vec<usize>> {
    let high_time = metas[*considered.last()?].min_time;
    for &range in ranges.iter().skip(1) {
        for part in split_by_range(metas, considered, range) {
            if part.iter().any(|&i| metas[i].compaction.failed) {
                continue;
            }
            let mint = metas[part[0]].min_time;
            let maxt = metas[part[part.len() - 1]].max_time;
            if part.len() > 1 && (maxt - mint == range || maxt <= high_time) {
                return Some(part);
            }
        }
    }
    None
}

/// Groups blocks (sorted by min time) by the aligned window of `range` each falls
/// into; blocks that stick out of their window (misaligned, or larger) are left
/// out.
fn split_by_range(metas: &[BlockMeta], sorted: &[usize], range: i64) -> Vec<Vec<usize>> {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let window_start = metas[sorted[i]].min_time.div_euclid(range) * range;
        let window_end = window_start + range;
        if metas[sorted[i]].max_time > window_end {
            i += 1;
            continue;
        }
        let mut group = Vec::new();
        while i < sorted.len() && metas[sorted[i]].max_time <= window_end {
            group.push(sorted[i]);
            i += 1;
        }
        parts.push(group);
    }
    parts
}

impl Db {
    /// What appending (`labels`, `t`, `v`) would answer now, without changing
    /// anything (`Head::check_append`): lets a replicated writer refuse a sample
    /// before it is logged rather than have it dropped when it is applied.
    pub fn check_append(&self, labels: &Labels, t: i64, v: f64) -> Result<bool, AppendError> {
        self.head.check_append(labels, t, v)
    }

    /// `check_append` for a caller that has `labels.map_hash()` at hand already.
    pub fn check_append_hashed(
        &self,
        labels: &Labels,
        hash: u64,
        t: i64,
        v: f64,
    ) -> Result<bool, AppendError> {
        self.head.check_append_hashed(labels, hash, t, v)
    }
}

impl Appendable for Db {
    fn appender(&self) -> Box<dyn Appender> {
        Box::new(self.head.appender())
    }
}

impl Queryable for Db {
    fn querier(&self, mint: i64, maxt: i64) -> Result<Box<dyn Querier>, StorageError> {
        let blocks: Vec<Arc<Block>> = self
            .blocks
            .read()
            .iter()
            .filter(|b| b.max_time() > mint && b.min_time() <= maxt)
            .cloned()
            .collect();
        Ok(Box::new(DbQuerier {
            head: self.head.clone(),
            blocks,
            mint,
            maxt,
        }))
    }
}

/// Reads the head and the blocks overlapping a time range.
struct DbQuerier {
    head: Arc<Head>,
    blocks: Vec<Arc<Block>>,
    mint: i64,
    maxt: i64,
}

impl Querier for DbQuerier {
    fn select(&self, hints: &SelectHints, matchers: &[Matcher]) -> Result<SeriesSet, StorageError> {
        // Newest first, so the head's sample wins if a timestamp appears twice.
        let mut sets = vec![self.head.select(self.mint, self.maxt, hints, matchers)?];
        for b in self.blocks.iter().rev() {
            sets.push(b.select(self.mint, self.maxt, hints, matchers)?);
        }
        Ok(merge_series_sets(sets))
    }

    fn label_values(&self, name: &str, matchers: &[Matcher]) -> Result<Vec<String>, StorageError> {
        let mut out = self.head.label_values(name, matchers);
        for b in &self.blocks {
            out.extend(b.label_values(name, matchers)?);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn label_names(&self, matchers: &[Matcher]) -> Result<Vec<String>, StorageError> {
        let mut out = self.head.label_names(matchers);
        for b in &self.blocks {
            out.extend(b.label_names(matchers)?);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}
