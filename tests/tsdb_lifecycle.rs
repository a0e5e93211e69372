//! The TSDB's lifecycle at the `Db` level, through the public API: cutting blocks
//! from the head, restarts (checkpoint, segments, mmapped head chunks), leveled
//! compaction, deletes, retention and out-of-bounds appends.

mod common;

use hearth::labels::{Labels, MatchType, Matcher};
use hearth::storage::{AppendError, Appendable, Sample, SelectHints, Series, StorageError};
use hearth::tsdb::block::{self, Block, BlockLineage};
use hearth::tsdb::db::{plan_compaction, Db, DbOptions};
use hearth::tsdb::meta::{BlockMeta, BlockStats};
use hearth::wal::{FsyncPolicy, LogOptions};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MIN_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const RANGE_MS: i64 = 2 * HOUR_MS;
/// A start time that is not a multiple of two hours, so alignment is tested.
const T0: i64 = 1_700_000_000_000;
/// A multiple of 18 hours (so also of 2 h and 6 h): compaction windows start here.
const A18: i64 = 26_235 * 18 * HOUR_MS;

/// The expected content of a database: labels → samples in time order.
type Data = BTreeMap<Labels, Vec<Sample>>;

fn opts() -> DbOptions {
    DbOptions {
        wal: LogOptions {
            fsync: FsyncPolicy::Never,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn series_labels(i: usize) -> Labels {
    Labels::from_pairs(&[
        ("__name__", "lifecycle"),
        ("job", "test"),
        ("series", &i.to_string()),
    ])
}

fn value(i: usize, t: i64) -> f64 {
    (t / 1000) as f64 * 0.25 + i as f64
}

fn all() -> Vec<Matcher> {
    vec![Matcher::new(MatchType::Regexp, "__name__", ".+").unwrap()]
}

fn hints() -> SelectHints {
    SelectHints {
        start_ms: i64::MIN,
        end_ms: i64::MAX,
        series_only: false,
        newest_only: false,
    }
}

/// Appends `n_series` series every `step_ms` in [from, to), time-major (as a scraper
/// would), committing every 100 steps; records what was appended in `data`.
fn append_range(db: &Db, data: &mut Data, n_series: usize, from: i64, to: i64, step_ms: i64) {
    let mut app = db.appender();
    let mut steps = 0;
    let mut t = from;
    while t < to {
        for i in 0..n_series {
            let l = series_labels(i);
            app.append(0, &l, t, value(i, t))
                .unwrap_or_else(|e| panic!("append {l} at {t}: {e}"));
            data.entry(l)
                .or_default()
                .push(Sample { t, v: value(i, t) });
        }
        steps += 1;
        if steps % 100 == 0 {
            app.commit().unwrap();
            app = db.appender();
        }
        t += step_ms;
    }
    app.commit().unwrap();
}

fn collect(set: hearth::storage::SeriesSet) -> Vec<Series> {
    set.collect::<Result<Vec<_>, StorageError>>().unwrap()
}

/// Everything a `Db` query over all time returns.
fn query_all(db: &Db) -> Data {
    use hearth::storage::Queryable;
    let q = db.querier(i64::MIN, i64::MAX).unwrap();
    collect(q.select(&hints(), &all()).unwrap())
        .into_iter()
        .map(|s| (s.labels, s.samples))
        .collect()
}

fn open_block(dir: &Path, m: &BlockMeta) -> Arc<Block> {
    Arc::new(Block::open(&dir.join(m.ulid.to_string())).unwrap())
}

/// Checks that the database holds exactly `want`, and that each sample lives in
/// exactly one place (the head or one block, each inside its range): the merged
/// query would hide a sample stored twice.
fn assert_exactly_once(db: &Db, want: &Data) {
    let got = query_all(db);
    assert_same_data(&got, want, "Db query");
    let mut seen: HashMap<(Labels, i64), String> = HashMap::new();
    let mut note = |s: Series, place: String| {
        for x in s.samples {
            if let Some(prev) = seen.insert((s.labels.clone(), x.t), place.clone()) {
                panic!("{} at {} is stored in {prev} and in {place}", s.labels, x.t);
            }
        }
    };
    for s in collect(
        db.head()
            .select(i64::MIN, i64::MAX, &hints(), &all())
            .unwrap(),
    ) {
        note(s, "the head".to_string());
    }
    for m in db.blocks() {
        let b = open_block(db.dir(), &m);
        for s in collect(b.select(i64::MIN, i64::MAX, &hints(), &all()).unwrap()) {
            for x in &s.samples {
                assert!(
                    x.t >= m.min_time && x.t < m.max_time,
                    "{} at {} lies outside block {} [{}, {})",
                    s.labels,
                    x.t,
                    m.ulid,
                    m.min_time,
                    m.max_time
                );
            }
            note(s, format!("block {}", m.ulid));
        }
    }
    let total: usize = want.values().map(Vec::len).sum();
    assert_eq!(seen.len(), total, "samples stored across head and blocks");
}

fn assert_same_data(got: &Data, want: &Data, what: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: series differ"
    );
    for (l, w) in want {
        let g = &got[l];
        assert_eq!(g.len(), w.len(), "{what}: sample count of {l}");
        for (a, b) in g.iter().zip(w) {
            assert_eq!(a, b, "{what}: {l}");
        }
    }
}

/// Samples of `data` with `mint <= t < maxt`, for per-block expectations.
fn slice(data: &Data, mint: i64, maxt: i64) -> Data {
    data.iter()
        .map(|(l, s)| {
            (
                l.clone(),
                s.iter()
                    .filter(|x| x.t >= mint && x.t < maxt)
                    .copied()
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, s)| !s.is_empty())
        .collect()
}

fn remove_range(data: &mut Data, l: &Labels, mint: i64, maxt: i64) {
    if let Some(s) = data.get_mut(l) {
        s.retain(|x| x.t < mint || x.t > maxt);
        if s.is_empty() {
            data.remove(l);
        }
    }
}

/// Checks a block's meta.json (as on disk) against what it should hold.
fn assert_block_stats(dir: &Path, m: &BlockMeta, want: &Data) {
    let on_disk = BlockMeta::read(&dir.join(m.ulid.to_string())).unwrap();
    assert_eq!(&on_disk, m, "meta.json of {} equals Db::blocks()", m.ulid);
    let samples: usize = want.values().map(Vec::len).sum();
    // Chunk boundaries follow Prometheus's cutting rules (`chunkenc::ChunkCutter`);
    // what must hold is that meta.json counts the chunks the index refers to, and
    // that none holds more than twice the 120-sample target.
    let index = hearth::tsdb::index::IndexReader::open(&dir.join(m.ulid.to_string()).join("index"))
        .unwrap();
    let mut chunks = 0usize;
    for id in index.all_postings().unwrap() {
        let (_, metas) = index.series(id).unwrap();
        chunks += metas.len();
    }
    let min_chunks: usize = want.values().map(|s| s.len().div_ceil(240)).sum();
    assert!(chunks >= min_chunks, "at most 240 samples per chunk");
    assert_eq!(on_disk.stats.num_samples, samples as u64, "numSamples");
    assert_eq!(
        on_disk.stats.num_float_samples, samples as u64,
        "numFloatSamples"
    );
    assert_eq!(on_disk.stats.num_series, want.len() as u64, "numSeries");
    assert_eq!(on_disk.stats.num_chunks, chunks as u64, "numChunks");
}

fn series_set(data: &Data) -> hearth::storage::SeriesSet {
    let v: Vec<Result<Series, StorageError>> = data
        .iter()
        .map(|(l, s)| Ok(Series::new(l.clone(), s.clone())))
        .collect();
    Box::new(v.into_iter())
}

/// Writes a level-1 block holding `data`'s samples in [mint, maxt).
fn write_l1_block(dir: &Path, data: &Data, mint: i64, maxt: i64) -> BlockMeta {
    block::write_block(
        dir,
        mint,
        maxt,
        2 * HOUR_MS,
        BlockLineage {
            level: 1,
            ..Default::default()
        },
        series_set(&slice(data, mint, maxt)),
    )
    .unwrap()
    .expect("block has samples")
}

/// Generated data for `n_series` series every `step_ms` in [from, to).
fn gen_data(n_series: usize, from: i64, to: i64, step_ms: i64) -> Data {
    let mut d = Data::new();
    for i in 0..n_series {
        let s: Vec<Sample> = (0..)
            .map(|k| from + k * step_ms)
            .take_while(|&t| t < to)
            .map(|t| Sample { t, v: value(i, t) })
            .collect();
        d.insert(series_labels(i), s);
    }
    d
}

fn dir_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for p in dir_files(dir) {
        let md = std::fs::metadata(&p).unwrap();
        total += if md.is_dir() { dir_size(&p) } else { md.len() };
    }
    total
}

fn block_ids(db: &Db) -> Vec<String> {
    db.blocks().iter().map(|m| m.ulid.to_string()).collect()
}

// 1. Block cutting and head truncation.

#[test]
fn cut_blocks_are_aligned_with_true_stats_and_the_head_is_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), opts()).unwrap();
    let mut data = Data::new();
    // 7 hours of 5 series every 15 s: the head spans more than 1.5 ranges.
    let end = T0 + 7 * HOUR_MS;
    append_range(&db, &mut data, 5, T0, end, 15_000);
    assert!(db.blocks().is_empty(), "nothing is cut before compact()");
    db.compact().unwrap();

    let metas = db.blocks();
    assert!(!metas.is_empty(), "the head spanned 7 h, so blocks are cut");
    let first = T0.div_euclid(RANGE_MS) * RANGE_MS;
    for (k, m) in metas.iter().enumerate() {
        assert_eq!(m.min_time, first + k as i64 * RANGE_MS, "block {k} start");
        assert_eq!(m.max_time - m.min_time, RANGE_MS, "block {k} length");
        assert_eq!(m.compaction.level, 1);
        assert_eq!(m.compaction.sources, vec![m.ulid]);
        assert_block_stats(tmp.path(), m, &slice(&data, m.min_time, m.max_time));
    }
    let cut_until = metas.last().unwrap().max_time;
    // The head keeps at most 1.5 ranges, and starts where the blocks end.
    let hmin = db.head().min_time().unwrap();
    let hmax = db.head().max_time().unwrap();
    assert!(hmin >= cut_until, "head min {hmin} moved past {cut_until}");
    assert!(hmax - hmin <= RANGE_MS / 2 * 3);
    assert_eq!(
        hmin,
        data.values()
            .flatten()
            .map(|s| s.t)
            .filter(|&t| t >= cut_until)
            .min()
            .unwrap()
    );
    // A checkpoint replaced the WAL segments the blocks cover.
    let wal = tmp.path().join("wal");
    assert!(
        dir_files(&wal).iter().any(|p| p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("checkpoint.")),
        "a checkpoint exists: {:?}",
        dir_files(&wal)
    );
    assert!(
        !wal.join("00000000").exists(),
        "the first segment was dropped"
    );
    assert_exactly_once(&db, &data);
}

#[test]
fn compact_does_nothing_while_the_head_spans_at_most_one_and_a_half_ranges() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), opts()).unwrap();
    let mut data = Data::new();
    append_range(&db, &mut data, 2, T0, T0 + 3 * HOUR_MS + 1, 60_000);
    db.compact().unwrap();
    assert!(db.blocks().is_empty(), "3 h is exactly 1.5 ranges: not yet");
    append_range(
        &db,
        &mut data,
        2,
        T0 + 3 * HOUR_MS + MIN_MS,
        T0 + 3 * HOUR_MS + 2 * MIN_MS,
        60_000,
    );
    db.compact().unwrap();
    assert_eq!(db.blocks().len(), 1);
    assert_exactly_once(&db, &data);
}

// 2. Restarts.

#[test]
fn restart_after_cutting_keeps_every_sample_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut data = Data::new();
    let blocks_before;
    {
        let db = Db::open(tmp.path(), opts()).unwrap();
        append_range(&db, &mut data, 4, T0, T0 + 7 * HOUR_MS, 30_000);
        db.compact().unwrap();
        blocks_before = db.blocks();
        assert!(!blocks_before.is_empty());
        // More samples after the checkpoint, in the new segment.
        append_range(
            &db,
            &mut data,
            4,
            T0 + 7 * HOUR_MS,
            T0 + 8 * HOUR_MS,
            30_000,
        );
        db.close().unwrap();
    }
    let db = Db::open(tmp.path(), opts()).unwrap();
    assert_eq!(db.blocks(), blocks_before, "the same blocks after restart");
    assert_exactly_once(&db, &data);
    // And once more: cut again, restart again.
    append_range(
        &db,
        &mut data,
        4,
        T0 + 8 * HOUR_MS,
        T0 + 11 * HOUR_MS,
        30_000,
    );
    db.compact().unwrap();
    let blocks_after = db.blocks();
    assert!(blocks_after.last().unwrap().max_time > blocks_before.last().unwrap().max_time);
    drop(db);
    let db = Db::open(tmp.path(), opts()).unwrap();
    assert_eq!(db.blocks(), blocks_after);
    assert_exactly_once(&db, &data);
}

#[test]
fn restart_without_cutting_replays_the_wal() {
    let tmp = tempfile::tempdir().unwrap();
    let mut data = Data::new();
    {
        let db = Db::open(tmp.path(), opts()).unwrap();
        append_range(&db, &mut data, 6, T0, T0 + 2 * HOUR_MS, 15_000);
        db.close().unwrap();
    }
    let db = Db::open(tmp.path(), opts()).unwrap();
    assert!(db.blocks().is_empty());
    assert_eq!(db.head().num_series(), 6);
    assert_exactly_once(&db, &data);
    // Appends continue where the WAL ended.
    append_range(
        &db,
        &mut data,
        6,
        T0 + 2 * HOUR_MS,
        T0 + 2 * HOUR_MS + 10 * MIN_MS,
        15_000,
    );
    drop(db);
    let db = Db::open(tmp.path(), opts()).unwrap();
    assert_exactly_once(&db, &data);
}

/// Size of every file under `chunks_head/`.
fn head_chunk_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    dir_files(&dir.join("chunks_head"))
        .into_iter()
        .map(|p| {
            let n = std::fs::metadata(&p).unwrap().len();
            (p, n)
        })
        .collect()
}

#[test]
fn restart_reads_full_chunks_back_from_chunks_head() {
    let tmp = tempfile::tempdir().unwrap();
    let mut data = Data::new();
    {
        let db = Db::open(tmp.path(), opts()).unwrap();
        // One sample a second for 100 min: 6000 samples a series, 50 full chunks.
        append_range(&db, &mut data, 3, A18, A18 + 100 * MIN_MS, 1000);
        db.close().unwrap();
    }
    let before = head_chunk_files(tmp.path());
    assert!(
        !before.is_empty(),
        "full chunks were written to chunks_head/"
    );
    let bytes: u64 = before.iter().map(|(_, n)| n).sum();
    assert!(
        bytes > 3 * 49 * 120,
        "chunks_head holds the full chunks ({bytes} bytes)"
    );
    let db = Db::open(tmp.path(), opts()).unwrap();
    assert_exactly_once(&db, &data);
    // Replay took the full chunks from disk rather than writing them again.
    db.close().unwrap();
    assert_eq!(
        head_chunk_files(tmp.path()),
        before,
        "replay rewrote head chunks"
    );
    // The chunks stay readable across a cut and another restart.
    append_range(
        &db,
        &mut data,
        3,
        A18 + 100 * MIN_MS,
        A18 + 4 * HOUR_MS,
        1000,
    );
    db.compact().unwrap();
    assert!(!db.blocks().is_empty());
    drop(db);
    let db = Db::open(tmp.path(), opts()).unwrap();
    assert_exactly_once(&db, &data);
}

/// Replaces `dst` with a copy of `src`.
fn restore_dir(src: &Path, dst: &Path) {
    if dst.exists() {
        std::fs::remove_dir_all(dst).unwrap();
    }
    copy_dir(src, dst);
}

#[test]
fn a_crash_between_writing_a_block_and_truncating_the_head_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    let mut data = Data::new();
    {
        let db = Db::open(tmp.path(), opts()).unwrap();
        append_range(&db, &mut data, 3, A18, A18 + 5 * HOUR_MS, 20_000);
        db.close().unwrap();
        copy_dir(&tmp.path().join("wal"), &saved.path().join("wal"));
        copy_dir(
            &tmp.path().join("chunks_head"),
            &saved.path().join("chunks_head"),
        );
        db.compact().unwrap();
        assert!(!db.blocks().is_empty());
    }
    // The blocks are there, but the WAL and head chunks are as before the cut.
    restore_dir(&saved.path().join("wal"), &tmp.path().join("wal"));
    restore_dir(
        &saved.path().join("chunks_head"),
        &tmp.path().join("chunks_head"),
    );
    let db = Db::open(tmp.path(), opts()).unwrap();
    assert_exactly_once(&db, &data);
    // The next cut finds a consistent head.
    append_range(
        &db,
        &mut data,
        3,
        A18 + 5 * HOUR_MS,
        A18 + 8 * HOUR_MS,
        20_000,
    );
    db.compact().unwrap();
    assert_exactly_once(&db, &data);
}

#[test]
fn a_crash_after_checkpointing_but_before_dropping_segments_replays_each_record_once() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = tmp.path().join("wal");
    let gone = Labels::from_pairs(&[("__name__", "gone")]);
    let mut data = Data::new();
    let saved_segment;
    {
        let db = Db::open(tmp.path(), opts()).unwrap();
        // `gone` has samples only in the first block; series 0 runs on. Four hours
        // make exactly one cut.
        let mut app = db.appender();
        for k in 0..60 {
            let t = A18 + k * MIN_MS;
            app.append(0, &gone, t, k as f64).unwrap();
            data.entry(gone.clone())
                .or_default()
                .push(Sample { t, v: k as f64 });
        }
        app.commit().unwrap();
        append_range(&db, &mut data, 1, A18, A18 + 4 * HOUR_MS, MIN_MS);
        db.close().unwrap();
        saved_segment = std::fs::read(wal.join("00000000")).unwrap();
        db.compact().unwrap();
        assert_eq!(db.blocks().len(), 1);
        assert!(!wal.join("00000000").exists());
        // `gone` was collected with the cut; it comes back under a new ref.
        let mut app = db.appender();
        let t = A18 + 3 * HOUR_MS + 30 * MIN_MS;
        app.append(0, &gone, t, -1.0).unwrap();
        app.commit().unwrap();
        data.entry(gone.clone())
            .or_default()
            .push(Sample { t, v: -1.0 });
        db.close().unwrap();
    }
    // As if the process had died before deleting the checkpointed segment.
    std::fs::write(wal.join("00000000"), &saved_segment).unwrap();
    let db = Db::open(tmp.path(), opts()).unwrap();
    assert_exactly_once(&db, &data);
}

#[test]
fn replay_merges_a_series_logged_under_two_refs() {
    use hearth::tsdb::record::{self, RefSample, RefSeries, RefTombstone};
    let tmp = tempfile::tempdir().unwrap();
    let x = Labels::from_pairs(&[("__name__", "x")]);
    {
        let mut log = hearth::wal::Log::open(&tmp.path().join("wal"), opts().wal).unwrap();
        let mut buf = Vec::new();
        for (r, from) in [(1u64, 0i64), (2, 10)] {
            buf.clear();
            record::encode_series(
                &[RefSeries {
                    series_ref: r,
                    labels: x.clone(),
                }],
                &mut buf,
            );
            log.append(&buf).unwrap();
            let samples: Vec<RefSample> = (from..from + 10)
                .map(|k| RefSample {
                    series_ref: r,
                    t: A18 + k * 1000,
                    v: k as f64,
                })
                .collect();
            buf.clear();
            record::encode_samples(&samples, &mut buf);
            log.append(&buf).unwrap();
        }
        buf.clear();
        let t15 = A18 + 15 * 1000;
        record::encode_tombstones(
            &[RefTombstone {
                series_ref: 2,
                mint: t15,
                maxt: t15,
            }],
            &mut buf,
        );
        log.append(&buf).unwrap();
        log.close().unwrap();
    }
    let want: Data = [(
        x.clone(),
        (0..20)
            .filter(|&k| k != 15)
            .map(|k| Sample {
                t: A18 + k * 1000,
                v: k as f64,
            })
            .collect(),
    )]
    .into_iter()
    .collect();
    // `hearth tsdb dump` reads the WAL the same way.
    let mut out = Vec::new();
    hearth::cmd::tsdb::dump(tmp.path(), i64::MIN, i64::MAX, &[], &mut out).unwrap();
    let lines: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let want_lines: Vec<String> = want[&x]
        .iter()
        .map(|s| format!("{x} {} {}", hearth::gofloat::g(s.v), s.t))
        .collect();
    assert_eq!(lines, want_lines);
    let db = Db::open(tmp.path(), opts()).unwrap();
    assert_eq!(db.head().num_series(), 1);
    assert_exactly_once(&db, &want);
}

#[test]
fn series_only_selects_honour_the_time_range_in_head_and_blocks() {
    use hearth::storage::Queryable;
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), opts()).unwrap();
    let mut data = Data::new();
    // Series 0 and 1 from the start, series 2 only in the last hour.
    append_range(&db, &mut data, 2, A18, A18 + 6 * HOUR_MS, 5 * MIN_MS);
    let late = series_labels(2);
    let mut app = db.appender();
    app.append(0, &late, A18 + 6 * HOUR_MS, 1.0).unwrap();
    app.commit().unwrap();
    db.compact().unwrap();
    assert!(!db.blocks().is_empty());
    let series_only = SelectHints {
        series_only: true,
        ..hints()
    };
    let names = |mint: i64, maxt: i64| -> Vec<Labels> {
        let q = db.querier(mint, maxt).unwrap();
        collect(q.select(&series_only, &all()).unwrap())
            .into_iter()
            .map(|s| s.labels)
            .collect()
    };
    // The first hour is in a block; the last in the head.
    assert_eq!(
        names(A18, A18 + HOUR_MS),
        vec![series_labels(0), series_labels(1)]
    );
    assert_eq!(
        names(A18 + 5 * HOUR_MS, A18 + 7 * HOUR_MS),
        vec![series_labels(0), series_labels(1), late.clone()]
    );
    assert_eq!(
        names(A18 + 8 * HOUR_MS, A18 + 9 * HOUR_MS),
        Vec::<Labels>::new()
    );
}

// 6. Out of bounds.

#[test]
fn appends_older_than_the_head_are_out_of_bounds_after_a_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), opts()).unwrap();
    let mut data = Data::new();
    append_range(&db, &mut data, 2, T0, T0 + 5 * HOUR_MS, 60_000);
    db.compact().unwrap();
    let cut_until = db.blocks().last().unwrap().max_time;
    let hmax = db.head().max_time().unwrap();
    // A new series: no per-series order to trip over, only the bounds.
    let fresh = Labels::from_pairs(&[("__name__", "fresh")]);
    let series_before = db.head().num_series();
    for t in [cut_until - 1, T0, hmax - RANGE_MS / 2 - 1] {
        let mut app = db.appender();
        assert_eq!(
            app.append(0, &fresh, t, 1.0),
            Err(AppendError::OutOfBounds),
            "t = {t} (blocks end at {cut_until}, head max {hmax})"
        );
        app.rollback();
    }
    assert_eq!(
        db.head().num_series(),
        series_before,
        "refused samples create no series"
    );
    let mut app = db.appender();
    app.append(0, &fresh, hmax - RANGE_MS / 2, 1.0).unwrap();
    app.commit().unwrap();
    // Still out of bounds after a restart: the blocks bound the head.
    drop(db);
    let db = Db::open(tmp.path(), opts()).unwrap();
    let mut app = db.appender();
    assert_eq!(
        app.append(0, &fresh, cut_until - 1, 1.0),
        Err(AppendError::OutOfBounds)
    );
}

#[test]
fn a_series_appended_but_not_committed_survives_head_truncation() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), opts()).unwrap();
    let mut data = Data::new();
    append_range(&db, &mut data, 1, T0, T0 + 5 * HOUR_MS, 60_000);
    let t = db.head().max_time().unwrap();
    // A new series is created by `append`, but has no sample until the commit; a
    // head truncation in between must not collect it.
    let late = Labels::from_pairs(&[("__name__", "late")]);
    let mut app = db.appender();
    app.append(0, &late, t, 42.0).unwrap();
    db.compact().unwrap();
    assert!(!db.blocks().is_empty());
    app.commit().unwrap();
    data.insert(late.clone(), vec![Sample { t, v: 42.0 }]);
    assert_exactly_once(&db, &data);
    drop(db);
    let db = Db::open(tmp.path(), opts()).unwrap();
    assert_exactly_once(&db, &data);
}

// 3. Compaction.

fn meta(name: u64, mint: i64, maxt: i64) -> BlockMeta {
    let mut m = BlockMeta::new(
        ulid::Ulid::from_parts(name, 0),
        mint,
        maxt,
        BlockStats::default(),
    );
    m.compaction.level = 1;
    m
}

fn meta_stats(name: u64, mint: i64, maxt: i64, series: u64, tombstones: u64) -> BlockMeta {
    let mut m = meta(name, mint, maxt);
    m.stats.num_series = series;
    m.stats.num_tombstones = tombstones;
    m
}

/// Prometheus's own planner cases (`tsdb/compact_test.go`,
/// `TestLeveledCompactor_plan`), with ranges 20, 60, 180, 540, 1620.
#[test]
fn planner_agrees_with_prometheus() {
    let ranges = [20, 60, 180, 540, 1620];
    let cases: Vec<(&str, Vec<BlockMeta>, Vec<u64>)> = vec![
        ("a single block", vec![meta(1, 0, 20)], vec![]),
        (
            "two blocks: wait for more",
            vec![meta(1, 0, 20), meta(2, 20, 40)],
            vec![],
        ),
        (
            "three blocks, but the fresh one is ignored",
            vec![meta(1, 0, 20), meta(2, 20, 40), meta(3, 40, 60)],
            vec![],
        ),
        (
            "the parent range is full",
            vec![
                meta(1, 0, 20),
                meta(2, 20, 40),
                meta(3, 40, 60),
                meta(4, 60, 80),
            ],
            vec![1, 2, 3],
        ),
        (
            "next parent range appeared after a gap, but it is the fresh block",
            vec![meta(1, 0, 20), meta(2, 20, 40), meta(3, 60, 80)],
            vec![],
        ),
        (
            "next parent range has a non-fresh block: compact the two",
            vec![
                meta(1, 0, 20),
                meta(2, 20, 40),
                meta(3, 60, 80),
                meta(4, 80, 100),
            ],
            vec![1, 2],
        ),
        (
            "20, 20, 20, 60, 60",
            vec![
                meta(1, 0, 20),
                meta(2, 20, 40),
                meta(3, 40, 60),
                meta(4, 60, 120),
                meta(5, 120, 180),
            ],
            vec![1, 2, 3],
        ),
        (
            "20, 60, 20 (fresh), 60, 240",
            vec![
                meta(2, 20, 40),
                meta(4, 60, 120),
                meta(5, 960, 980),
                meta(6, 120, 180),
                meta(7, 720, 960),
            ],
            vec![2, 4, 6],
        ),
        (
            "a big block with tombstones and no fresh block",
            vec![meta_stats(1, 0, 540, 10, 3)],
            vec![],
        ),
        (
            "a big block with tombstones when a fresh one appears",
            vec![meta_stats(1, 0, 540, 10, 3), meta(2, 540, 560)],
            vec![1],
        ),
        (
            "small blocks are not rewritten for tombstones",
            vec![meta_stats(1, 0, 60, 10, 3), meta(2, 60, 80)],
            vec![],
        ),
        (
            "zero tombstones and zero series never loop",
            vec![meta_stats(1, 0, 540, 0, 0), meta(2, 540, 560)],
            vec![],
        ),
        (
            "the fresh block is the one with the newest min time, not the newest ULID",
            vec![
                meta(5, 0, 360),
                meta(6, 540, 560),
                meta(7, 360, 420),
                meta(8, 420, 540),
            ],
            vec![7, 8],
        ),
        (
            "overlapping 1",
            vec![meta(1, 0, 20), meta(2, 19, 40), meta(3, 40, 60)],
            vec![1, 2],
        ),
        (
            "overlapping 2",
            vec![meta(1, 0, 20), meta(2, 20, 40), meta(3, 30, 50)],
            vec![2, 3],
        ),
        (
            "overlapping 3",
            vec![meta(1, 0, 20), meta(2, 10, 40), meta(3, 30, 50)],
            vec![1, 2, 3],
        ),
        (
            "overlapping 4",
            vec![
                meta(5, 0, 360),
                meta(6, 340, 560),
                meta(7, 360, 420),
                meta(8, 420, 540),
            ],
            vec![5, 6, 7, 8],
        ),
        (
            "overlapping 5",
            vec![
                meta(1, 0, 10),
                meta(2, 9, 20),
                meta(3, 30, 40),
                meta(4, 39, 50),
            ],
            vec![1, 2],
        ),
    ];
    for (name, metas, want) in cases {
        let got: Vec<u64> = plan_compaction(&metas, &ranges)
            .unwrap_or_default()
            .iter()
            .map(|&i| metas[i].ulid.timestamp_ms())
            .collect();
        assert_eq!(got, want, "{name}");
    }
    // A block whose compaction failed is not planned again.
    let mut failed = vec![
        meta(1, 0, 20),
        meta(2, 20, 40),
        meta(3, 40, 60),
        meta(4, 60, 80),
    ];
    failed[1].compaction.failed = true;
    assert_eq!(plan_compaction(&failed, &ranges), None);
}

#[test]
fn compaction_goes_from_2h_to_6h_to_18h_and_leaves_the_newest_block() {
    let tmp = tempfile::tempdir().unwrap();
    let data = gen_data(4, A18, A18 + 20 * HOUR_MS, 60_000);
    let mut l1 = Vec::new();
    for k in 0..10 {
        l1.push(write_l1_block(
            tmp.path(),
            &data,
            A18 + k * RANGE_MS,
            A18 + (k + 1) * RANGE_MS,
        ));
    }
    let db = Db::open(tmp.path(), opts()).unwrap();
    assert_eq!(db.blocks().len(), 10);
    assert_exactly_once(&db, &data);
    db.compact().unwrap();

    let metas = db.blocks();
    assert_eq!(
        metas.len(),
        2,
        "one 18 h block and the newest 2 h block: {metas:#?}"
    );
    let (big, newest) = (&metas[0], &metas[1]);
    assert_eq!((big.min_time, big.max_time), (A18, A18 + 18 * HOUR_MS));
    assert_eq!(big.compaction.level, 3);
    let mut want_sources: Vec<_> = l1[..9].iter().map(|m| m.ulid).collect();
    want_sources.sort();
    assert_eq!(big.compaction.sources, want_sources);
    assert_eq!(big.compaction.parents.len(), 3, "made of three 6 h blocks");
    for (k, p) in big.compaction.parents.iter().enumerate() {
        assert_eq!(
            (p.min_time, p.max_time),
            (
                A18 + k as i64 * 6 * HOUR_MS,
                A18 + (k as i64 + 1) * 6 * HOUR_MS
            )
        );
        assert!(
            !tmp.path().join(p.ulid.to_string()).exists(),
            "parent {} deleted",
            p.ulid
        );
    }
    assert_eq!(newest, &l1[9], "the newest block is left alone");
    assert_block_stats(tmp.path(), big, &slice(&data, big.min_time, big.max_time));
    assert_exactly_once(&db, &data);
    for m in &l1[..9] {
        assert!(!tmp.path().join(m.ulid.to_string()).exists());
    }
    drop(db);
    let db = Db::open(tmp.path(), opts()).unwrap();
    assert_eq!(db.blocks(), metas);
    assert_exactly_once(&db, &data);
}

#[test]
fn compaction_makes_level_2_blocks_with_sources_and_parents() {
    let tmp = tempfile::tempdir().unwrap();
    let data = gen_data(3, A18, A18 + 8 * HOUR_MS, 60_000);
    let l1: Vec<BlockMeta> = (0..4)
        .map(|k| {
            write_l1_block(
                tmp.path(),
                &data,
                A18 + k * RANGE_MS,
                A18 + (k + 1) * RANGE_MS,
            )
        })
        .collect();
    let db = Db::open(tmp.path(), opts()).unwrap();
    db.compact().unwrap();
    let metas = db.blocks();
    assert_eq!(metas.len(), 2);
    let six = &metas[0];
    assert_eq!((six.min_time, six.max_time), (A18, A18 + 6 * HOUR_MS));
    assert_eq!(six.compaction.level, 2);
    let mut src: Vec<_> = l1[..3].iter().map(|m| m.ulid).collect();
    src.sort();
    assert_eq!(six.compaction.sources, src);
    let parents: Vec<_> = six
        .compaction
        .parents
        .iter()
        .map(|p| (p.ulid, p.min_time, p.max_time))
        .collect();
    let want: Vec<_> = l1[..3]
        .iter()
        .map(|m| (m.ulid, m.min_time, m.max_time))
        .collect();
    assert_eq!(parents, want);
    // meta.json says the same (Prometheus's field names).
    let json =
        std::fs::read_to_string(tmp.path().join(six.ulid.to_string()).join("meta.json")).unwrap();
    assert!(
        json.contains("\"level\": 2")
            && json.contains("\"parents\"")
            && json.contains("\"sources\""),
        "{json}"
    );
    assert_eq!(metas[1], l1[3]);
    assert_exactly_once(&db, &data);
}

#[test]
fn compaction_never_exceeds_max_block_duration() {
    let tmp = tempfile::tempdir().unwrap();
    let data = gen_data(2, A18, A18 + 20 * HOUR_MS, 5 * MIN_MS);
    for k in 0..10 {
        write_l1_block(
            tmp.path(),
            &data,
            A18 + k * RANGE_MS,
            A18 + (k + 1) * RANGE_MS,
        );
    }
    let o = DbOptions {
        max_block_duration_ms: 6 * HOUR_MS,
        ..opts()
    };
    let db = Db::open(tmp.path(), o).unwrap();
    db.compact().unwrap();
    let spans: Vec<(i64, u32)> = db
        .blocks()
        .iter()
        .map(|m| ((m.max_time - m.min_time) / HOUR_MS, m.compaction.level))
        .collect();
    assert_eq!(spans, vec![(6, 2), (6, 2), (6, 2), (2, 1)]);
    assert_exactly_once(&db, &data);
}

#[test]
fn compacting_the_heads_blocks_over_a_day_keeps_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), opts()).unwrap();
    let mut data = Data::new();
    // 24 hours through the head, compacting every hour as the server would.
    for h in 0..24 {
        append_range(
            &db,
            &mut data,
            3,
            A18 + h * HOUR_MS,
            A18 + (h + 1) * HOUR_MS,
            2 * MIN_MS,
        );
        db.compact().unwrap();
    }
    let metas = db.blocks();
    assert!(
        metas
            .iter()
            .any(|m| m.compaction.level == 3 && m.max_time - m.min_time == 18 * HOUR_MS),
        "an 18 h block: {metas:#?}"
    );
    for w in metas.windows(2) {
        assert!(w[0].max_time <= w[1].min_time, "blocks do not overlap");
    }
    assert_exactly_once(&db, &data);
    drop(db);
    let db = Db::open(tmp.path(), opts()).unwrap();
    assert_exactly_once(&db, &data);
}

#[test]
fn overlapping_blocks_are_merged_into_one() {
    let tmp = tempfile::tempdir().unwrap();
    // Two blocks over the same hours with interleaved and some shared samples.
    let a = gen_data(3, A18, A18 + 3 * HOUR_MS, 2 * MIN_MS);
    let b = gen_data(3, A18 + HOUR_MS, A18 + 4 * HOUR_MS, 3 * MIN_MS);
    let newer = gen_data(3, A18 + 6 * HOUR_MS, A18 + 8 * HOUR_MS, 10 * MIN_MS);
    let ma = write_l1_block(tmp.path(), &a, A18, A18 + 3 * HOUR_MS);
    let mb = write_l1_block(tmp.path(), &b, A18 + HOUR_MS, A18 + 4 * HOUR_MS);
    let mn = write_l1_block(tmp.path(), &newer, A18 + 6 * HOUR_MS, A18 + 8 * HOUR_MS);
    let mut want = Data::new();
    for d in [&a, &b, &newer] {
        for (l, s) in d {
            let e = want.entry(l.clone()).or_default();
            e.extend_from_slice(s);
            e.sort_by_key(|x| x.t);
            e.dedup_by_key(|x| x.t);
        }
    }
    let db = Db::open(tmp.path(), opts()).unwrap();
    assert_same_data(&query_all(&db), &want, "before compaction");
    db.compact().unwrap();
    let metas = db.blocks();
    assert_eq!(metas.len(), 2, "{metas:#?}");
    let merged = &metas[0];
    assert_eq!((merged.min_time, merged.max_time), (A18, A18 + 4 * HOUR_MS));
    assert_eq!(merged.compaction.level, 2);
    let mut src = vec![ma.ulid, mb.ulid];
    src.sort();
    assert_eq!(merged.compaction.sources, src);
    assert_eq!(metas[1], mn);
    assert_block_stats(
        tmp.path(),
        merged,
        &slice(&want, merged.min_time, merged.max_time),
    );
    assert_exactly_once(&db, &want);
}

#[test]
fn a_compaction_interrupted_before_deleting_its_inputs_is_finished_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let data = gen_data(2, A18, A18 + 8 * HOUR_MS, 10 * MIN_MS);
    let l1: Vec<BlockMeta> = (0..4)
        .map(|k| {
            write_l1_block(
                tmp.path(),
                &data,
                A18 + k * RANGE_MS,
                A18 + (k + 1) * RANGE_MS,
            )
        })
        .collect();
    // Keep copies of the inputs, compact, then put the copies back: as if the
    // process died after writing the new block but before deleting its parents.
    let saved = tempfile::tempdir().unwrap();
    for m in &l1[..3] {
        copy_dir(
            &tmp.path().join(m.ulid.to_string()),
            &saved.path().join(m.ulid.to_string()),
        );
    }
    let db = Db::open(tmp.path(), opts()).unwrap();
    db.compact().unwrap();
    let after = db.blocks();
    drop(db);
    for m in &l1[..3] {
        copy_dir(
            &saved.path().join(m.ulid.to_string()),
            &tmp.path().join(m.ulid.to_string()),
        );
    }
    let db = Db::open(tmp.path(), opts()).unwrap();
    assert_eq!(
        db.blocks(),
        after,
        "parents of a loaded block are deleted at open"
    );
    for m in &l1[..3] {
        assert!(!tmp.path().join(m.ulid.to_string()).exists());
    }
    assert_exactly_once(&db, &data);
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

// 4. Deletes.

/// A database with blocks and a head: 5 series over 7 hours from `A18`.
fn db_with_blocks_and_head(dir: &Path) -> (Db, Data) {
    let db = Db::open(dir, opts()).unwrap();
    let mut data = Data::new();
    append_range(&db, &mut data, 5, A18, A18 + 7 * HOUR_MS, MIN_MS);
    db.compact().unwrap();
    assert_eq!(db.blocks().len(), 2, "two 2 h blocks, 3 h in the head");
    (db, data)
}

#[test]
fn deletes_hide_samples_at_once_and_survive_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, mut data) = db_with_blocks_and_head(tmp.path());
    // Series 1 from the middle of the first block to the middle of the head, and
    // all of series 3's samples in the second block.
    let (s1, s3) = (series_labels(1), series_labels(3));
    let (d1_min, d1_max) = (A18 + HOUR_MS, A18 + 5 * HOUR_MS + 30 * MIN_MS);
    db.delete(&[Matcher::equal("series", "1")], d1_min, d1_max)
        .unwrap();
    remove_range(&mut data, &s1, d1_min, d1_max);
    db.delete(
        &[Matcher::equal("series", "3")],
        A18 + RANGE_MS,
        A18 + 2 * RANGE_MS - 1,
    )
    .unwrap();
    remove_range(&mut data, &s3, A18 + RANGE_MS, A18 + 2 * RANGE_MS - 1);
    assert_exactly_once(&db, &data);

    // The blocks' tombstones are counted in meta.json, as Prometheus does.
    let metas = db.blocks();
    assert_eq!(
        metas[0].stats.num_tombstones, 1,
        "series 1 in the first block"
    );
    assert_eq!(
        metas[1].stats.num_tombstones, 2,
        "series 1 and 3 in the second block"
    );
    for m in &metas {
        let on_disk = BlockMeta::read(&tmp.path().join(m.ulid.to_string())).unwrap();
        assert_eq!(on_disk.stats.num_tombstones, m.stats.num_tombstones);
    }
    // A delete that matches nothing in a block's time range leaves it alone.
    db.delete(
        &[Matcher::equal("series", "0")],
        A18 + 6 * HOUR_MS,
        A18 + 6 * HOUR_MS + 1,
    )
    .unwrap();
    remove_range(
        &mut data,
        &series_labels(0),
        A18 + 6 * HOUR_MS,
        A18 + 6 * HOUR_MS + 1,
    );
    assert_eq!(db.blocks(), metas);

    drop(db);
    let db = Db::open(tmp.path(), opts()).unwrap();
    assert_exactly_once(&db, &data);
    // The head's tombstones also survive a checkpoint: cut the head and restart.
    append_range(
        &db,
        &mut data,
        5,
        A18 + 7 * HOUR_MS,
        A18 + 9 * HOUR_MS,
        MIN_MS,
    );
    db.compact().unwrap();
    assert_eq!(db.blocks().len(), 3);
    assert_exactly_once(&db, &data);
    drop(db);
    let db = Db::open(tmp.path(), opts()).unwrap();
    assert_exactly_once(&db, &data);
}

#[test]
fn a_delete_does_not_hide_samples_appended_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), opts()).unwrap();
    let mut data = Data::new();
    append_range(&db, &mut data, 2, A18, A18 + HOUR_MS, MIN_MS);
    // As the admin API deletes when given no start and end: all time.
    db.delete(&[Matcher::equal("series", "0")], i64::MIN, i64::MAX)
        .unwrap();
    data.remove(&series_labels(0));
    assert_exactly_once(&db, &data);
    // The series is still being written: what comes after the delete stays.
    let mut later = Data::new();
    append_range(&db, &mut later, 2, A18 + HOUR_MS, A18 + 5 * HOUR_MS, MIN_MS);
    for (l, s) in later {
        data.entry(l).or_default().extend(s);
    }
    assert_exactly_once(&db, &data);
    drop(db);
    let db = Db::open(tmp.path(), opts()).unwrap();
    assert_exactly_once(&db, &data);
    // And cutting blocks keeps it too.
    db.compact().unwrap();
    assert!(!db.blocks().is_empty());
    assert_exactly_once(&db, &data);
}

#[test]
fn clean_tombstones_rewrites_blocks_without_the_deleted_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, mut data) = db_with_blocks_and_head(tmp.path());
    let before = db.blocks();
    let s2 = series_labels(2);
    db.delete(
        &[Matcher::equal("series", "2")],
        A18 + 30 * MIN_MS,
        A18 + 90 * MIN_MS,
    )
    .unwrap();
    remove_range(&mut data, &s2, A18 + 30 * MIN_MS, A18 + 90 * MIN_MS);
    // Everything of series 4 in the second block: it disappears from that block.
    db.delete(
        &[Matcher::equal("series", "4")],
        A18 + RANGE_MS,
        A18 + 2 * RANGE_MS - 1,
    )
    .unwrap();
    remove_range(
        &mut data,
        &series_labels(4),
        A18 + RANGE_MS,
        A18 + 2 * RANGE_MS - 1,
    );
    db.clean_tombstones().unwrap();

    let after = db.blocks();
    assert_eq!(after.len(), 2);
    for (old, new) in before.iter().zip(&after) {
        assert_ne!(old.ulid, new.ulid, "rewritten under a new ULID");
        assert!(!tmp.path().join(old.ulid.to_string()).exists());
        assert_eq!((new.min_time, new.max_time), (old.min_time, old.max_time));
        assert_eq!(new.stats.num_tombstones, 0);
        assert_eq!(new.compaction.parents.len(), 1);
        assert_eq!(new.compaction.parents[0].ulid, old.ulid);
        let (stones, _) =
            hearth::tsdb::tombstones::read(&tmp.path().join(new.ulid.to_string())).unwrap();
        assert!(stones.is_empty(), "no tombstones left");
        assert_block_stats(tmp.path(), new, &slice(&data, new.min_time, new.max_time));
    }
    assert_eq!(after[0].stats.num_samples, before[0].stats.num_samples - 61);
    assert_eq!(after[1].stats.num_series, 4);
    assert_exactly_once(&db, &data);
    // Nothing left to clean: a second call changes nothing.
    db.clean_tombstones().unwrap();
    assert_eq!(db.blocks(), after);
}

#[test]
fn compaction_drops_deleted_samples_for_good() {
    let tmp = tempfile::tempdir().unwrap();
    let data0 = gen_data(3, A18, A18 + 8 * HOUR_MS, 5 * MIN_MS);
    for k in 0..4 {
        write_l1_block(
            tmp.path(),
            &data0,
            A18 + k * RANGE_MS,
            A18 + (k + 1) * RANGE_MS,
        );
    }
    let mut data = data0.clone();
    let db = Db::open(tmp.path(), opts()).unwrap();
    db.delete(&[Matcher::equal("series", "0")], A18, A18 + 5 * HOUR_MS)
        .unwrap();
    remove_range(&mut data, &series_labels(0), A18, A18 + 5 * HOUR_MS);
    db.compact().unwrap();
    let metas = db.blocks();
    assert_eq!(metas[0].compaction.level, 2);
    assert_eq!(metas[0].stats.num_tombstones, 0);
    assert_block_stats(
        tmp.path(),
        &metas[0],
        &slice(&data, metas[0].min_time, metas[0].max_time),
    );
    assert_exactly_once(&db, &data);
}

/// `promtool tsdb dump` of copies of the blocks in `dir`, next to an empty `wal/`
/// (promtool replays a WAL in Prometheus's format and insists the directory exists).
fn promtool_dump(dir: &Path) -> String {
    let tmp = tempfile::tempdir().unwrap();
    for b in hearth::cmd::tsdb::block_dirs(dir).unwrap() {
        copy_dir(&b, &tmp.path().join(b.file_name().unwrap()));
    }
    std::fs::create_dir_all(tmp.path().join("wal")).unwrap();
    let out = common::run_ok(common::promtool().args(["tsdb", "dump"]).arg(tmp.path()));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn promtool_honours_the_tombstones_we_write() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, mut data) = db_with_blocks_and_head(tmp.path());
    let metas = db.blocks();
    let cut_until = metas.last().unwrap().max_time;
    db.delete(
        &[Matcher::equal("series", "1")],
        A18 + 10 * MIN_MS,
        A18 + 3 * HOUR_MS,
    )
    .unwrap();
    remove_range(
        &mut data,
        &series_labels(1),
        A18 + 10 * MIN_MS,
        A18 + 3 * HOUR_MS,
    );
    db.delete(&[Matcher::equal("series", "2")], i64::MIN, i64::MAX)
        .unwrap();
    data.remove(&series_labels(2));
    drop(db);
    for m in &metas {
        let stones = tmp.path().join(m.ulid.to_string()).join("tombstones");
        assert!(
            std::fs::metadata(&stones).unwrap().len() > 9,
            "tombstones written"
        );
    }
    let mut want = String::new();
    for (l, s) in slice(&data, i64::MIN, cut_until) {
        for x in s {
            want.push_str(&format!("{l} {} {}\n", hearth::gofloat::g(x.v), x.t));
        }
    }
    let got = promtool_dump(tmp.path());
    assert_eq!(got.lines().count(), want.lines().count());
    assert!(
        got == want,
        "promtool's dump differs from what should be left"
    );
    for m in &metas {
        let id = m.ulid.to_string();
        let out = common::run_ok(
            common::promtool()
                .args(["tsdb", "analyze"])
                .arg(tmp.path())
                .arg(&id),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("Block ID: {id}")), "{text}");
    }
}

// 5. Retention.

#[test]
fn time_retention_drops_blocks_that_end_a_retention_before_the_newest() {
    let tmp = tempfile::tempdir().unwrap();
    let data = gen_data(2, A18, A18 + 12 * HOUR_MS, 10 * MIN_MS);
    // Three blocks far apart, so that no compaction merges them: [k*4h, k*4h+2h).
    let metas: Vec<BlockMeta> = (0..3)
        .map(|k| {
            write_l1_block(
                tmp.path(),
                &data,
                A18 + k * 4 * HOUR_MS,
                A18 + k * 4 * HOUR_MS + RANGE_MS,
            )
        })
        .collect();
    let o = DbOptions {
        // The first block ends exactly 8 h before the newest: dropped (Prometheus
        // drops at >= retention); the second ends 4 h before: kept.
        retention_ms: 8 * HOUR_MS,
        max_block_duration_ms: RANGE_MS,
        ..opts()
    };
    let db = Db::open(tmp.path(), o.clone()).unwrap();
    db.compact().unwrap();
    assert_eq!(db.blocks(), metas[1..].to_vec());
    assert!(!tmp.path().join(metas[0].ulid.to_string()).exists());
    let mut kept = slice(&data, metas[1].min_time, metas[1].max_time);
    for (l, s) in slice(&data, metas[2].min_time, metas[2].max_time) {
        kept.entry(l).or_default().extend(s);
    }
    assert_exactly_once(&db, &kept);
    drop(db);
    // Zero retention means no time limit, as in Prometheus.
    let db = Db::open(
        tmp.path(),
        DbOptions {
            retention_ms: 0,
            ..o
        },
    )
    .unwrap();
    db.compact().unwrap();
    assert_eq!(db.blocks().len(), 2);
}

#[test]
fn size_retention_counts_blocks_wal_and_head_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let data = gen_data(4, A18, A18 + 12 * HOUR_MS, MIN_MS);
    let metas: Vec<BlockMeta> = (0..3)
        .map(|k| {
            write_l1_block(
                tmp.path(),
                &data,
                A18 + k * 4 * HOUR_MS,
                A18 + k * 4 * HOUR_MS + RANGE_MS,
            )
        })
        .collect();
    let block_bytes: Vec<u64> = metas
        .iter()
        .map(|m| dir_size(&tmp.path().join(m.ulid.to_string())))
        .collect();
    // Fill the head (WAL and chunks_head) after the blocks.
    let o = DbOptions {
        max_block_duration_ms: RANGE_MS,
        ..opts()
    };
    {
        let db = Db::open(tmp.path(), o.clone()).unwrap();
        let mut head_data = Data::new();
        append_range(
            &db,
            &mut head_data,
            4,
            A18 + 11 * HOUR_MS,
            A18 + 12 * HOUR_MS,
            5000,
        );
        db.close().unwrap();
    }
    let head_bytes = dir_size(&tmp.path().join("wal")) + dir_size(&tmp.path().join("chunks_head"));
    assert!(dir_size(&tmp.path().join("chunks_head")) > 0);
    assert!(
        head_bytes > block_bytes[0],
        "the head is big enough to matter"
    );
    // Room for the head and the two newest blocks, not for the oldest.
    let limit = head_bytes + block_bytes[1] + block_bytes[2] + block_bytes[0] / 2;
    let db = Db::open(
        tmp.path(),
        DbOptions {
            retention_size_bytes: limit,
            ..o.clone()
        },
    )
    .unwrap();
    db.compact().unwrap();
    assert_eq!(
        block_ids(&db),
        vec![metas[1].ulid.to_string(), metas[2].ulid.to_string()]
    );
    drop(db);
    // The blocks alone would fit; with the head they do not.
    assert!(head_bytes >= block_bytes[1] / 2);
    let limit = head_bytes + block_bytes[2] + block_bytes[1] / 2;
    let db = Db::open(
        tmp.path(),
        DbOptions {
            retention_size_bytes: limit,
            ..o
        },
    )
    .unwrap();
    db.compact().unwrap();
    assert_eq!(block_ids(&db), vec![metas[2].ulid.to_string()]);
}

/// A snapshot (`Db::snapshot`: the blocks plus a head checkpoint) reproduces the
/// database: opened in an empty directory from the snapshot, restored into a
/// database holding other data, and opened over a directory whose blocks moved on
/// since the snapshot (the case of a WAL group restarting from its newest
/// snapshot), every sample is there exactly once.
#[test]
fn a_snapshot_of_blocks_and_a_head_checkpoint_reproduces_the_database() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    let snap = tmp.path().join("snap");
    let db = Db::open_without_wal(&src_dir, opts()).unwrap();
    let mut data = Data::new();
    append_range(&db, &mut data, 5, T0, T0 + 7 * HOUR_MS, 30_000);
    db.compact().unwrap();
    assert!(!db.blocks().is_empty(), "blocks were cut");
    assert!(db.head().num_series() > 0, "the head holds samples too");
    // A tombstone in the head: the snapshot holds the samples without it.
    let del = vec![Matcher::new(MatchType::Equal, "series", "2").unwrap()];
    let (dmin, dmax) = (T0 + 6 * HOUR_MS, T0 + 6 * HOUR_MS + 10 * MIN_MS);
    db.delete(&del, dmin, dmax).unwrap();
    remove_range(&mut data, &series_labels(2), dmin, dmax);
    let info = db.snapshot(&snap).unwrap();
    assert_eq!(info.blocks, db.blocks().len());
    assert!(info.head_records > 0);
    assert_exactly_once(&db, &data);

    // 1. A fresh directory opened from the snapshot's blocks and checkpoint.
    let fresh = tmp.path().join("fresh");
    for m in db.blocks() {
        restore_dir(
            &snap.join(m.ulid.to_string()),
            &fresh.join(m.ulid.to_string()),
        );
    }
    let copy = Db::open_without_wal_from(&fresh, opts(), &snap).unwrap();
    assert_eq!(copy.blocks(), db.blocks(), "the snapshot's blocks");
    assert_exactly_once(&copy, &data);
    drop(copy);

    // 2. Restored over a database holding other samples: only the snapshot's remain.
    let other = tmp.path().join("other");
    let odb = Db::open_without_wal(&other, opts()).unwrap();
    let mut junk = Data::new();
    append_range(&odb, &mut junk, 3, T0 - 9 * HOUR_MS, T0 - HOUR_MS, 60_000);
    odb.compact().unwrap();
    assert!(!odb.blocks().is_empty());
    odb.restore_snapshot(&snap).unwrap();
    assert_exactly_once(&odb, &data);
    // Appends go on where the snapshot ended.
    let mut later = data.clone();
    append_range(
        &odb,
        &mut later,
        5,
        T0 + 7 * HOUR_MS,
        T0 + 8 * HOUR_MS,
        30_000,
    );
    assert_exactly_once(&odb, &later);
    drop(odb);

    // 3. The source moved on (another block cut, the head truncated) after the
    // snapshot; opening its directory from the snapshot and applying what came
    // after again gives each sample once.
    append_range(
        &db,
        &mut data,
        5,
        T0 + 7 * HOUR_MS,
        T0 + 10 * HOUR_MS,
        30_000,
    );
    db.compact().unwrap();
    let blocks_now = db.blocks();
    drop(db);
    let db = Db::open_without_wal_from(&src_dir, opts(), &snap).unwrap();
    assert_eq!(db.blocks(), blocks_now);
    // What came after the snapshot, applied again: samples now in blocks are out
    // of bounds, those in the checkpoint duplicates; both are refused.
    let mut app = db.appender();
    let (mut taken, mut refused) = (0, 0);
    let mut t = T0 + 7 * HOUR_MS;
    while t < T0 + 10 * HOUR_MS {
        for i in 0..5 {
            match app.append(0, &series_labels(i), t, value(i, t)) {
                Ok(_) => taken += 1,
                Err(AppendError::Storage(e)) => panic!("append at {t}: {e}"),
                Err(_) => refused += 1,
            }
        }
        t += 30_000;
    }
    app.commit().unwrap();
    assert!(refused > 0, "samples in blocks are refused");
    assert!(taken > 0, "samples past the blocks go to the head");
    assert_exactly_once(&db, &data);
}

/// The `newest_only` hint over blocks and head, with deletes in both: at any
/// time, each series' newest sample at or before it (and after the querier's
/// start) is the one a full select gives, and nothing after that time comes back.
#[test]
fn newest_only_gives_each_series_newest_sample_from_blocks_and_head() {
    use hearth::storage::Queryable;
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), opts()).unwrap();
    let mut data = Data::new();
    // Five hours of 4 series every 30 s: compaction cuts blocks of the first
    // hours; the rest stays in the head.
    append_range(&db, &mut data, 4, A18, A18 + 5 * HOUR_MS, 30_000);
    db.compact().unwrap();
    assert!(!db.blocks().is_empty(), "compaction cut a block");
    // Deletes in a block and in the head, the second one covering the series'
    // newest samples, so an older sample is the newest left.
    let (s1, s2) = (series_labels(1), series_labels(2));
    let (d1_min, d1_max) = (A18 + HOUR_MS, A18 + HOUR_MS + 10 * MIN_MS);
    db.delete(&[Matcher::equal("series", "1")], d1_min, d1_max)
        .unwrap();
    remove_range(&mut data, &s1, d1_min, d1_max);
    let (d2_min, d2_max) = (A18 + 4 * HOUR_MS, A18 + 5 * HOUR_MS);
    db.delete(&[Matcher::equal("series", "2")], d2_min, d2_max)
        .unwrap();
    remove_range(&mut data, &s2, d2_min, d2_max);

    let lookback = 5 * MIN_MS;
    let ends = [
        A18 - 1,
        A18,
        A18 + 15_000,
        A18 + HOUR_MS + 5 * MIN_MS,
        A18 + HOUR_MS + 12 * MIN_MS,
        A18 + 2 * HOUR_MS - 1,
        A18 + 2 * HOUR_MS,
        A18 + 3 * HOUR_MS + 29_999,
        A18 + 4 * HOUR_MS + 1,
        A18 + 5 * HOUR_MS - 30_000,
        A18 + 6 * HOUR_MS,
    ];
    for end in ends {
        let q = db.querier(end - lookback, end).unwrap();
        let hints = SelectHints {
            start_ms: end - lookback,
            end_ms: end,
            series_only: false,
            newest_only: true,
        };
        let got: BTreeMap<Labels, Sample> = collect(q.select(&hints, &all()).unwrap())
            .into_iter()
            .map(|s| {
                let newest = *s.samples.last().expect("a selected series has a sample");
                assert!(
                    s.samples
                        .iter()
                        .all(|p| p.t <= end && p.t >= end - lookback),
                    "{}: samples outside [{}, {end}]: {:?}",
                    s.labels,
                    end - lookback,
                    s.samples
                );
                (s.labels, newest)
            })
            .collect();
        let want: BTreeMap<Labels, Sample> = data
            .iter()
            .filter_map(|(l, samples)| {
                let p = samples.iter().rev().find(|p| p.t <= end)?;
                (p.t >= end - lookback).then(|| (l.clone(), *p))
            })
            .collect();
        assert_eq!(
            got,
            want,
            "newest samples at {end} (A18 + {} ms)",
            end - A18
        );
    }
}
