//! Immutable blocks: writing a block directory in Prometheus's format from a sorted
//! series set, and reading one back through memory-mapped index and chunk files.

use super::chunkenc::{ChunkCutter, XorChunk, XorIterator, ENCODING_XOR};
use super::chunks::{ChunkReader, ChunkWriter};
use super::index::{ChunkMeta, IndexReader, IndexWriter};
use super::meta::{BlockDesc, BlockMeta, BlockMetaCompaction, BlockStats};
use super::tombstones::{self, Interval, TombstoneStore};
use super::TsdbError;
use crate::labels::{Labels, Matcher};
use crate::storage::{Sample, SelectHints, Series, SeriesSet, StorageError};
use parking_lot::RwLock;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use ulid::Ulid;

/// Suffix of a block directory still being written; removed at startup.
pub const TMP_FOR_CREATION: &str = ".tmp-for-creation";

/// What a new block descends from.
#[derive(Debug, Clone, Default)]
pub struct BlockLineage {
    /// Compaction level: 1 for a block cut from the head or backfilled.
    pub level: u32,
    /// Level-1 ancestors (empty for a new level-1 block: it is its own source).
    pub sources: Vec<Ulid>,
    /// Direct inputs of a compaction.
    pub parents: Vec<BlockMeta>,
}

/// Writes `series` (sorted by labels, samples in [mint, maxt)) as a new block under
/// `parent_dir`. Returns `None` and writes nothing when no series has a sample.
///
/// Samples are cut into chunks as Prometheus's head cuts them with a chunk range
/// of `chunk_range_ms` (its block range, two hours by default): a block written
/// from the head, a backfilled block and a compacted block then hold the same
/// chunks as Prometheus's for the same samples. For compaction the range stays
/// the level-1 block range: cuts depend only on the samples since the last range
/// boundary, so the output has the chunks its inputs had when written by this rule
/// (Prometheus's compactor copies its inputs' chunks).
pub fn write_block(
    parent_dir: &Path,
    mint: i64,
    maxt: i64,
    chunk_range_ms: i64,
    lineage: BlockLineage,
    series: SeriesSet,
) -> Result<Option<BlockMeta>, TsdbError> {
    let ulid = Ulid::new();
    let final_dir = parent_dir.join(ulid.to_string());
    let tmp_dir = parent_dir.join(format!("{ulid}{TMP_FOR_CREATION}"));
    std::fs::create_dir_all(&tmp_dir)?;
    let result = write_block_files(&tmp_dir, ulid, mint, maxt, chunk_range_ms, lineage, series);
    match result {
        Ok(Some(meta)) => {
            std::fs::rename(&tmp_dir, &final_dir)?;
            sync_dir(parent_dir)?;
            Ok(Some(meta))
        }
        Ok(None) => {
            std::fs::remove_dir_all(&tmp_dir)?;
            Ok(None)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp_dir);
            Err(e)
        }
    }
}

fn write_block_files(
    dir: &Path,
    ulid: Ulid,
    mint: i64,
    maxt: i64,
    chunk_range_ms: i64,
    lineage: BlockLineage,
    series: SeriesSet,
) -> Result<Option<BlockMeta>, TsdbError> {
    let mut chunk_writer = ChunkWriter::create(&dir.join("chunks"))?;
    let mut entries: Vec<(Labels, Vec<ChunkMeta>)> = Vec::new();
    let mut symbols: BTreeSet<String> = BTreeSet::new();
    let mut stats = BlockStats::default();
    let mut prev: Option<Labels> = None;
    for s in series {
        let s = s?;
        if s.samples.is_empty() {
            continue;
        }
        assert!(
            prev.as_ref().is_none_or(|p| p < &s.labels),
            "block series must be sorted and unique"
        );
        let metas = write_series_chunks(&mut chunk_writer, &s.samples, chunk_range_ms, mint, maxt)?;
        for l in s.labels.iter() {
            if !symbols.contains(l.name) {
                symbols.insert(l.name.to_string());
            }
            if !symbols.contains(l.value) {
                symbols.insert(l.value.to_string());
            }
        }
        stats.num_samples += s.samples.len() as u64;
        stats.num_series += 1;
        stats.num_chunks += metas.len() as u64;
        prev = Some(s.labels.clone());
        entries.push((s.labels, metas));
    }
    if entries.is_empty() {
        return Ok(None);
    }
    chunk_writer.finish()?;
    let mut iw = IndexWriter::create(&dir.join("index"))?;
    iw.add_symbols(symbols.iter().map(String::as_str))?;
    for (labels, metas) in &entries {
        iw.add_series(labels, metas)?;
    }
    iw.finish()?;
    tombstones::write(dir, &TombstoneStore::default())?;
    stats.num_float_samples = stats.num_samples;
    let mut sources = lineage.sources;
    if sources.is_empty() {
        sources.push(ulid);
    }
    let meta = BlockMeta {
        ulid,
        min_time: mint,
        max_time: maxt,
        stats,
        compaction: BlockMetaCompaction {
            level: lineage.level.max(1),
            sources,
            parents: lineage
                .parents
                .iter()
                .map(|p| BlockDesc {
                    ulid: p.ulid,
                    min_time: p.min_time,
                    max_time: p.max_time,
                })
                .collect(),
            ..Default::default()
        },
        version: 1,
    };
    meta.write(dir)?;
    sync_dir(dir)?;
    Ok(Some(meta))
}

/// Writes one series' samples (sorted, in [mint, maxt)) as XOR chunks, cut where
/// `ChunkCutter` says, and returns their metas for the index.
fn write_series_chunks(
    chunk_writer: &mut ChunkWriter,
    samples: &[Sample],
    chunk_range_ms: i64,
    mint: i64,
    maxt: i64,
) -> Result<Vec<ChunkMeta>, TsdbError> {
    let mut metas = Vec::new();
    let mut cutter = ChunkCutter::new(chunk_range_ms);
    let mut open: Option<(XorChunk, i64)> = None;
    for x in samples {
        assert!(x.t >= mint && x.t < maxt, "sample outside block range");
        let open_bytes = open.as_ref().map_or(0, |(c, _)| c.bytes().len());
        if cutter.starts_chunk(x.t, open_bytes) {
            if let Some((c, first_t)) = open.take() {
                metas.push(finish_chunk(chunk_writer, &c, first_t)?);
            }
            open = Some((XorChunk::new(), x.t));
        }
        if let Some((c, _)) = open.as_mut() {
            c.append(x.t, x.v);
        }
    }
    if let Some((c, first_t)) = open {
        metas.push(finish_chunk(chunk_writer, &c, first_t)?);
    }
    Ok(metas)
}

fn finish_chunk(
    chunk_writer: &mut ChunkWriter,
    chunk: &XorChunk,
    first_t: i64,
) -> Result<ChunkMeta, TsdbError> {
    let chunk_ref = chunk_writer.write_chunk(ENCODING_XOR, chunk.bytes())?;
    Ok(ChunkMeta {
        mint: first_t,
        maxt: chunk.last_timestamp().unwrap_or(first_t),
        chunk_ref,
    })
}

/// fsyncs a directory so that renames and new files in it are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// An open, immutable block.
pub struct Block {
    dir: PathBuf,
    /// Identity and time range, copied out of `meta` because every query reads them.
    ulid: Ulid,
    min_time: i64,
    max_time: i64,
    /// `meta.json` as on disk; only `stats.num_tombstones` changes, on delete.
    meta: RwLock<BlockMeta>,
    index: IndexReader,
    chunks: ChunkReader,
    /// Deleted ranges; the only part of a block that changes after it is written.
    /// Held for writing while the tombstones file and meta.json are rewritten.
    tombstones: RwLock<TombstoneStore>,
    /// Sizes of the small files, for size-based retention (Prometheus counts them).
    tombstones_bytes: AtomicU64,
    meta_bytes: AtomicU64,
}

impl Block {
    /// Opens the block in `dir`.
    pub fn open(dir: &Path) -> Result<Block, TsdbError> {
        let meta = BlockMeta::read(dir)?;
        let meta_bytes = std::fs::metadata(dir.join(super::meta::META_FILENAME))?.len();
        let index = IndexReader::open(&dir.join("index"))?;
        let chunks = ChunkReader::open(&dir.join("chunks"))?;
        let (tombstones, tombstones_bytes) = tombstones::read(dir)?;
        Ok(Block {
            dir: dir.to_path_buf(),
            ulid: meta.ulid,
            min_time: meta.min_time,
            max_time: meta.max_time,
            meta: RwLock::new(meta),
            index,
            chunks,
            tombstones: RwLock::new(tombstones),
            tombstones_bytes: AtomicU64::new(tombstones_bytes),
            meta_bytes: AtomicU64::new(meta_bytes),
        })
    }

    /// The block's metadata as its `meta.json` now says (tombstone count included).
    pub fn meta(&self) -> BlockMeta {
        self.meta.read().clone()
    }

    pub fn ulid(&self) -> Ulid {
        self.ulid
    }

    /// Start of the block's range (inclusive), in ms.
    pub fn min_time(&self) -> i64 {
        self.min_time
    }

    /// End of the block's range (exclusive), in ms.
    pub fn max_time(&self) -> i64 {
        self.max_time
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes on disk: index, chunks, tombstones and meta.json, as Prometheus's
    /// `Block.Size` counts them for size-based retention.
    pub fn size_bytes(&self) -> u64 {
        self.index.size_bytes()
            + self.chunks.size_bytes()
            + self.tombstones_bytes.load(Ordering::Relaxed)
            + self.meta_bytes.load(Ordering::Relaxed)
    }

    /// Number of tombstone intervals.
    pub fn num_tombstones(&self) -> u64 {
        self.tombstones.read().total()
    }

    /// Matching series with samples in [mint, maxt], in label order.
    pub fn select(
        self: &Arc<Self>,
        mint: i64,
        maxt: i64,
        hints: &SelectHints,
        matchers: &[Matcher],
    ) -> Result<SeriesSet, StorageError> {
        let ids = self.index.postings_for_matchers(matchers).map_err(io_err)?;
        let block = self.clone();
        let series_only = hints.series_only;
        let newest_at = hints.newest_only.then_some(hints.end_ms.min(maxt));
        Ok(Box::new(ids.into_iter().filter_map(
            move |id| match block.read_series(id, mint, maxt, series_only, newest_at) {
                Ok(Some(s)) => Some(Ok(s)),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            },
        )))
    }

    /// One series' samples in [mint, maxt]; with `newest_at`, only its newest
    /// sample in [mint, newest_at] (`SelectHints::newest_only`).
    fn read_series(
        &self,
        id: u64,
        mint: i64,
        maxt: i64,
        series_only: bool,
        newest_at: Option<i64>,
    ) -> Result<Option<Series>, StorageError> {
        let (labels, metas) = self.index.series(id).map_err(io_err)?;
        let maxt = newest_at.unwrap_or(maxt);
        let in_range = metas.iter().any(|c| c.maxt >= mint && c.mint <= maxt);
        if !in_range {
            return Ok(None);
        }
        if series_only {
            return Ok(Some(Series {
                labels,
                samples: Vec::new(),
                start_times: Vec::new(),
            }));
        }
        let deleted = self.tombstones.read().get(id).cloned();
        let disjoint = || metas.windows(2).all(|w| w[0].maxt < w[1].mint);
        if newest_at.is_some() && deleted.is_none() && disjoint() {
            // The newest sample is in the newest chunk that starts in range, or
            // nowhere in range: the chunks before it end before it starts.
            let Some(c) = metas.iter().rev().find(|c| c.mint <= maxt) else {
                return Ok(None);
            };
            let newest = self.newest_in_chunk(c, maxt)?;
            return Ok(newest
                .filter(|s| s.t >= mint)
                .map(|s| Series::new(labels, vec![s])));
        }
        let mut samples: Vec<Sample> = Vec::new();
        for c in metas.iter().filter(|c| c.maxt >= mint && c.mint <= maxt) {
            let Some(data) = self.xor_chunk(c)? else {
                continue;
            };
            let mut it = XorIterator::new(data);
            if c.mint >= mint && c.maxt <= maxt {
                // All of the chunk is kept: room for it at once (the header's
                // count is at most u16::MAX). A chunk cut by the range reserves
                // nothing, so memory stays in proportion to the samples kept.
                samples.reserve(it.num_samples());
            }
            // Samples are in time order: decoding stops at the first one after
            // `maxt` (the rest of the chunk is not needed).
            for s in it.by_ref() {
                if s.t > maxt {
                    break;
                }
                if s.t >= mint {
                    samples.push(s);
                }
            }
            self.check_decoded(c, &it)?;
        }
        if let Some(iv) = deleted {
            samples.retain(|s| !iv.contains(s.t));
        }
        if newest_at.is_some() && samples.len() > 1 {
            samples.drain(..samples.len() - 1);
        }
        if samples.is_empty() {
            return Ok(None);
        }
        Ok(Some(Series::new(labels, samples)))
    }

    /// A chunk's bytes, or None for an encoding other than XOR (native-histogram
    /// chunks are not supported yet; they are skipped).
    fn xor_chunk(&self, c: &ChunkMeta) -> Result<Option<&[u8]>, StorageError> {
        let (enc, data) = self.chunks.chunk(c.chunk_ref).map_err(io_err)?;
        Ok((enc == ENCODING_XOR).then_some(data))
    }

    /// The newest sample of chunk `c` at or before `at`.
    fn newest_in_chunk(&self, c: &ChunkMeta, at: i64) -> Result<Option<Sample>, StorageError> {
        let Some(data) = self.xor_chunk(c)? else {
            return Ok(None);
        };
        let mut it = XorIterator::new(data);
        let newest = it.by_ref().take_while(|s| s.t <= at).last();
        self.check_decoded(c, &it)?;
        Ok(newest)
    }

    /// A decoding error of chunk `c` as the corruption it is.
    fn check_decoded(&self, c: &ChunkMeta, it: &XorIterator<'_>) -> Result<(), StorageError> {
        match it.error() {
            Some(e) => Err(StorageError::Corruption {
                path: self.dir.join("chunks").display().to_string(),
                reason: format!("chunk {:#x}: {e}", c.chunk_ref),
            }),
            None => Ok(()),
        }
    }

    /// Label values of `name` among series matching `matchers`.
    pub fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
    ) -> Result<Vec<String>, StorageError> {
        if matchers.is_empty() {
            return self.index.label_values(name).map_err(io_err);
        }
        let mut out = BTreeSet::new();
        for id in self.index.postings_for_matchers(matchers).map_err(io_err)? {
            let (labels, _) = self.index.series(id).map_err(io_err)?;
            let v = labels.get(name);
            if !v.is_empty() {
                out.insert(v.to_string());
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Label names among series matching `matchers`.
    pub fn label_names(&self, matchers: &[Matcher]) -> Result<Vec<String>, StorageError> {
        if matchers.is_empty() {
            return self.index.label_names().map_err(io_err);
        }
        let mut out = BTreeSet::new();
        for id in self.index.postings_for_matchers(matchers).map_err(io_err)? {
            let (labels, _) = self.index.series(id).map_err(io_err)?;
            for l in labels.iter() {
                out.insert(l.name.to_string());
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Records deletion of matching series' samples in [mint, maxt] in the block's
    /// tombstones file, and the new tombstone count in meta.json, as Prometheus's
    /// `Block.Delete` does: only series with a chunk in the range get a tombstone,
    /// clamped to the series' own time span. Returns whether anything matched.
    pub fn delete(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<bool, TsdbError> {
        if maxt < self.min_time || mint >= self.max_time {
            return Ok(false);
        }
        let mut stones = Vec::new();
        for id in self.index.postings_for_matchers(matchers)? {
            let (_, metas) = self.index.series(id)?;
            if !metas.iter().any(|c| c.maxt >= mint && c.mint <= maxt) {
                continue;
            }
            let (Some(first), Some(last)) = (metas.first(), metas.last()) else {
                continue;
            };
            stones.push((id, mint.max(first.mint), maxt.min(last.maxt)));
        }
        if stones.is_empty() {
            return Ok(false);
        }
        let mut tomb = self.tombstones.write();
        let mut updated = tomb.clone();
        for (id, mint, maxt) in stones {
            updated.add(id, Interval { mint, maxt });
        }
        let bytes = tombstones::write(&self.dir, &updated)?;
        self.tombstones_bytes.store(bytes, Ordering::Relaxed);
        let mut meta = self.meta.write();
        let mut new_meta = meta.clone();
        new_meta.stats.num_tombstones = updated.total();
        let meta_bytes = new_meta.write(&self.dir)?;
        self.meta_bytes.store(meta_bytes, Ordering::Relaxed);
        *meta = new_meta;
        *tomb = updated;
        Ok(true)
    }

    /// Every series with its samples in [mint, maxt] (tombstones applied), for
    /// compaction, which passes the output block's range so that a sample outside
    /// its input's declared range (a foreign block's fault) cannot break the writer.
    pub fn all_series(self: &Arc<Self>, mint: i64, maxt: i64) -> Result<SeriesSet, StorageError> {
        let ids = self.index.all_postings().map_err(io_err)?;
        let block = self.clone();
        Ok(Box::new(ids.into_iter().filter_map(move |id| {
            match block.read_series(id, mint, maxt, false, None) {
                Ok(Some(s)) => Some(Ok(s)),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            }
        })))
    }
}

fn io_err<E: std::fmt::Display>(e: E) -> StorageError {
    StorageError::Other(e.to_string())
}
