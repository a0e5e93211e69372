//! A query's peak memory is bounded by `--query.max-samples`, not by the data
//! size (issue 4): the same range query runs over a TSDB holding 1x, 4x and 16x
//! the data, with the same sample limit, while a counting global allocator
//! records the heap's high-water mark during each query.
//!
//! With data under the limit the query answers; with more it fails with
//! Prometheus's "too many samples" error. Either way the peak heap growth during
//! the query stays under a fixed number of bytes per allowed sample, and the
//! failing queries over 4x and 16x the data peak no higher than the answering one
//! over 1x (with some slack): an engine that read all the data before checking
//! the limit, or held it all, would peak 4 and 16 times higher and fail here.
//!
//! Everything runs in one `#[test]`, so no other test thread allocates meanwhile.

use hearth::labels::Labels;
use hearth::promql::{self, Engine, EngineOptions, QueryError};
use hearth::storage::Appendable;
use hearth::tsdb::db::{Db, DbOptions};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting the bytes in use and their high-water mark.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = IN_USE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        IN_USE.fetch_sub(l.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new_size) };
        if !q.is_null() {
            IN_USE.fetch_sub(l.size(), Ordering::Relaxed);
            grew(new_size);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const SERIES: usize = 40;
const STEP_MS: i64 = 15_000;
/// Samples per series in the smallest store.
const BASE_SAMPLES: i64 = 500;
/// The query's sample limit: above the smallest store's 20,000 samples, below
/// the larger stores'.
const MAX_SAMPLES: usize = 30_000;

/// Heap growth allowed per permitted sample: a raw sample, its copy as a point,
/// the step's window and result, with room to spare. Fixed, whatever the data.
const BYTES_PER_SAMPLE: usize = 256;

/// A TSDB in `dir` with `SERIES` counters of `n` samples each, 15 s apart.
fn store(dir: &std::path::Path, n: i64) -> Db {
    let db = Db::open(dir, DbOptions::default()).expect("open tsdb");
    let mut app = db.appender();
    for s in 0..SERIES {
        let labels = Labels::from_pairs(&[
            ("__name__", "mem_test_total"),
            ("series", &format!("{s:03}")),
        ]);
        for i in 0..n {
            app.append(0, &labels, i * STEP_MS, (i * (s as i64 + 1)) as f64)
                .expect("append");
        }
    }
    app.commit().expect("commit");
    db
}

/// Runs a range query over the store's whole time range and returns its outcome
/// and the peak heap growth while it ran.
fn query_peak(db: &Db, n: i64) -> (Result<usize, QueryError>, usize) {
    let engine = Engine::new(EngineOptions {
        max_samples: MAX_SAMPLES,
        ..EngineOptions::default()
    });
    let q = promql::parse("sum(rate(mem_test_total[5m]))").expect("parse");
    let end = (n - 1) * STEP_MS;
    let base = IN_USE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = engine
        .range_query(db, &q, 0, end, 60_000, None)
        .map(|res| match res.value {
            promql::Value::Matrix(m) => m.iter().map(|s| s.floats.len()).sum(),
            _ => 0,
        });
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    (r, peak)
}

#[test]
fn peak_memory_is_bounded_by_max_samples_not_data_size() {
    let bound = MAX_SAMPLES * BYTES_PER_SAMPLE;
    let mut peaks = Vec::new();
    for factor in [1, 4, 16] {
        let n = BASE_SAMPLES * factor;
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = store(tmp.path(), n);
        let (r, peak) = query_peak(&db, n);
        eprintln!(
            "{} samples stored: peak heap growth {peak} bytes (bound {bound}), {}",
            SERIES as i64 * n,
            match &r {
                Ok(points) => format!("answered with {points} points"),
                Err(e) => format!("failed: {e}"),
            }
        );
        match (factor, &r) {
            (1, Ok(points)) => assert!(*points > 0, "the small query has an answer"),
            (1, Err(e)) => panic!("the query over data under the limit failed: {e}"),
            (_, Err(QueryError::TooManySamples(_))) => {}
            (_, other) => panic!("{factor}x the data must hit the sample limit, got {other:?}"),
        }
        assert!(
            peak <= bound,
            "{factor}x the data: the query's heap grew by {peak} bytes, over {bound} \
             ({BYTES_PER_SAMPLE} bytes per allowed sample)"
        );
        peaks.push(peak);
    }
    // Failing early over more data costs no more than answering over less.
    for (i, p) in peaks.iter().enumerate().skip(1) {
        assert!(
            *p <= 2 * peaks[0],
            "peak heap growth rose with the data: {peaks:?} (run {i})"
        );
    }
}
