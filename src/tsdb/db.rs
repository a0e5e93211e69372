//! The database: a head plus the blocks on disk, with the background work that cuts
//! blocks from the head, compacts them and enforces retention.

use super::block::{self, Block, BlockLineage, TMP_FOR_CREATION};
use super::head::{Head, HeadOptions};
use super::meta::BlockMeta;
use super::TsdbError;
use crate::labels::Matcher;
use crate::storage::{
    merge_series_sets, Appendable, Appender, Querier, Queryable, SelectHints, SeriesSet,
    StorageError,
};
use crate::wal::LogOptions;
use parking_lot::{Mutex, RwLock};
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
}

impl Db {
    /// Opens (creating) the database in `dir`: removes half-written blocks, opens the
    /// blocks, and replays the WAL into the head.
    pub fn open(dir: &Path, opts: DbOptions) -> Result<Db, TsdbError> {
        std::fs::create_dir_all(dir)?;
        let mut blocks = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if name.ends_with(TMP_FOR_CREATION) || name.ends_with(".tmp-for-deletion") {
                tracing::info!(dir = %path.display(), "removing unfinished block directory");
                std::fs::remove_dir_all(&path)?;
                continue;
            }
            if ulid::Ulid::from_string(&name).is_err() {
                continue;
            }
            let b = Block::open(&path)?;
            if b.meta().compaction.deletable {
                std::fs::remove_dir_all(&path)?;
                continue;
            }
            blocks.push(Arc::new(b));
        }
        blocks.sort_by_key(|b| b.meta().min_time);
        let min_valid = blocks
            .iter()
            .map(|b| b.meta().max_time)
            .max()
            .unwrap_or(i64::MIN);
        let head = Head::open(
            dir,
            HeadOptions {
                chunk_range_ms: opts.min_block_duration_ms,
                wal: opts.wal.clone(),
            },
            min_valid,
        )?;
        Ok(Db {
            dir: dir.to_path_buf(),
            opts,
            head: Arc::new(head),
            blocks: RwLock::new(blocks),
            compaction: Mutex::new(()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn head(&self) -> &Arc<Head> {
        &self.head
    }

    /// Metadata of the open blocks, oldest first.
    pub fn blocks(&self) -> Vec<BlockMeta> {
        self.blocks
            .read()
            .iter()
            .map(|b| b.meta().clone())
            .collect()
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
            blocks.sort_by_key(|b| b.meta().min_time);
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
        let Some(plan) = plan_compaction(&blocks, &self.ranges()) else {
            return Ok(false);
        };
        let inputs: Vec<Arc<Block>> = plan.iter().map(|&i| blocks[i].clone()).collect();
        let mint = inputs.iter().map(|b| b.meta().min_time).min().unwrap_or(0);
        let maxt = inputs.iter().map(|b| b.meta().max_time).max().unwrap_or(0);
        let mut sets = Vec::new();
        for b in &inputs {
            sets.push(b.all_series()?);
        }
        let mut sources: Vec<ulid::Ulid> = inputs
            .iter()
            .flat_map(|b| b.meta().compaction.sources.clone())
            .collect();
        sources.sort();
        sources.dedup();
        let level = inputs
            .iter()
            .map(|b| b.meta().compaction.level)
            .max()
            .unwrap_or(1)
            + 1;
        let meta = block::write_block(
            &self.dir,
            mint,
            maxt,
            self.opts.min_block_duration_ms,
            BlockLineage {
                level,
                sources,
                parents: inputs.iter().map(|b| b.meta().clone()).collect(),
            },
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
            all.sort_by_key(|b| b.meta().min_time);
        }
        for b in &inputs {
            remove_block_dir(b.dir())?;
        }
        tracing::info!(inputs = inputs.len(), mint, maxt, "compacted blocks");
        Ok(true)
    }

    /// Drops whole blocks past the time or size retention.
    fn apply_retention(&self) -> Result<(), TsdbError> {
        let blocks = self.blocks.read().clone();
        let Some(newest_maxt) = blocks.iter().map(|b| b.meta().max_time).max() else {
            return Ok(());
        };
        let mut drop: Vec<Arc<Block>> = blocks
            .iter()
            .filter(|b| newest_maxt - b.meta().max_time > self.opts.retention_ms)
            .cloned()
            .collect();
        if self.opts.retention_size_bytes > 0 {
            let mut total: u64 =
                self.head.wal_size_bytes() + blocks.iter().map(|b| b.size_bytes()).sum::<u64>();
            for b in blocks.iter() {
                if total <= self.opts.retention_size_bytes {
                    break;
                }
                total = total.saturating_sub(b.size_bytes());
                if !drop.iter().any(|d| Arc::ptr_eq(d, b)) {
                    drop.push(b.clone());
                }
            }
        }
        if drop.is_empty() {
            return Ok(());
        }
        self.blocks
            .write()
            .retain(|b| !drop.iter().any(|d| Arc::ptr_eq(d, b)));
        for b in &drop {
            tracing::info!(ulid = %b.meta().ulid, "dropping block past retention");
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

/// Renames a block directory out of the way first, so a crash mid-delete leaves a
/// directory that startup recognises and removes.
fn remove_block_dir(dir: &Path) -> Result<(), TsdbError> {
    let tmp = dir.with_extension("tmp-for-deletion");
    std::fs::rename(dir, &tmp)?;
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}

/// Chooses blocks to compact together (indexes into `blocks`, sorted by min time):
/// overlapping blocks first; then, for each range above the smallest, the blocks
/// inside one aligned window when they fill it or a newer block exists past it;
/// then a block with many tombstones on its own. The newest block is left alone
/// unless it overlaps.
pub fn plan_compaction(blocks: &[Arc<Block>], ranges: &[i64]) -> Option<Vec<usize>> {
    // Overlaps.
    for i in 1..blocks.len() {
        let prev_max = blocks[..i]
            .iter()
            .map(|b| b.meta().max_time)
            .max()
            .unwrap_or(i64::MIN);
        if blocks[i].meta().min_time < prev_max {
            let mut group: Vec<usize> = (0..i)
                .filter(|&j| blocks[j].meta().max_time > blocks[i].meta().min_time)
                .collect();
            group.push(i);
            return Some(group);
        }
    }
    if blocks.len() < 2 {
        return tombstone_heavy(blocks);
    }
    let newest = blocks.len() - 1;
    let newest_min = blocks[newest].meta().min_time;
    for &r in ranges.iter().skip(1) {
        let mut i = 0;
        while i < newest {
            let w = blocks[i].meta().min_time.div_euclid(r) * r;
            let mut group = Vec::new();
            let mut j = i;
            while j < newest && blocks[j].meta().max_time <= w + r && blocks[j].meta().min_time >= w
            {
                group.push(j);
                j += 1;
            }
            if group.len() >= 2 {
                let gmin = blocks[group[0]].meta().min_time;
                let gmax = blocks[*group.last().expect("non-empty")].meta().max_time;
                if (gmin == w && gmax == w + r) || w + r <= newest_min {
                    return Some(group);
                }
            }
            i = j.max(i + 1);
        }
    }
    tombstone_heavy(blocks)
}

/// A block where more than 5% of series carry tombstones is rewritten alone.
fn tombstone_heavy(blocks: &[Arc<Block>]) -> Option<Vec<usize>> {
    blocks
        .iter()
        .position(|b| {
            let t = b.num_tombstones();
            t > 0 && t * 20 > b.meta().stats.num_series
        })
        .map(|i| vec![i])
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
            .filter(|b| b.meta().max_time > mint && b.meta().min_time <= maxt)
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
