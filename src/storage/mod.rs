//! The storage seams: every writer appends through `Appendable`, every reader reads
//! through `Queryable`.
//!
//! Scraping, rule evaluation, the remote-write receiver and (in a cluster) the Raft
//! state machine write through `Appendable`; PromQL, `/federate`, remote read and the
//! API's series and label endpoints read through `Queryable`. The TSDB implements
//! both; later the cluster's replicated appender and fan-out querier do too, and all
//! of them must pass the suite in `conformance`.

pub mod conformance;
pub mod memory;
mod merge;

pub use merge::merge_series_sets;

use crate::labels::{Labels, Matcher};

/// A sample value that marks a series as stale: a NaN with this exact bit pattern
/// (Prometheus's `value.StaleNaN`). It is stored and returned bit for bit.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether `v` is the staleness marker (and not just any NaN).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// The staleness marker as an `f64`.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// One float sample: milliseconds since the epoch and a value.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub t: i64,
    pub v: f64,
}

impl PartialEq for Sample {
    /// Bitwise on the value, so NaNs (and the stale marker) compare as stored.
    fn eq(&self, other: &Sample) -> bool {
        self.t == other.t && self.v.to_bits() == other.v.to_bits()
    }
}

/// A reference to a series inside one `Appendable`, returned by `append` so callers
/// (a scrape loop) can skip the label lookup next time. 0 means "not known".
pub type SeriesRef = u64;

/// Why an append was refused. The messages are Prometheus's, since clients
/// (remote-write senders, scrape error logs) match on them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppendError {
    #[error("out of order sample")]
    OutOfOrder,
    #[error("duplicate sample for timestamp")]
    DuplicateSampleForTimestamp,
    #[error("out of bounds")]
    OutOfBounds,
    #[error("label set is empty or has no metric name: {0}")]
    InvalidLabels(String),
    #[error("storage failure: {0}")]
    Storage(String),
    /// The store cannot take writes now but may soon (a replicated store without a
    /// quorum): the caller should retry.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// Whether a sample at `t` with value `v` may follow a series' newest sample
/// `last` (timestamp, value bits): `Ok(true)` to append, `Ok(false)` for an
/// identical duplicate (accepted and ignored, as in Prometheus), or why not.
pub fn check_order(last: Option<(i64, u64)>, t: i64, v: f64) -> Result<bool, AppendError> {
    match last {
        Some((lt, _)) if t < lt => Err(AppendError::OutOfOrder),
        Some((lt, lv)) if t == lt && lv != v.to_bits() => {
            Err(AppendError::DuplicateSampleForTimestamp)
        }
        Some((lt, _)) if t == lt => Ok(false),
        _ => Ok(true),
    }
}

/// A read or write failed for a reason other than the sample itself.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("corrupted data in {path}: {reason}")]
    Corruption { path: String, reason: String },
    #[error("{0}")]
    Other(String),
}

/// Something that hands out appenders.
pub trait Appendable: Send + Sync {
    /// A new transaction. Nothing it appends is visible to readers or durable until
    /// `commit` returns `Ok`.
    fn appender(&self) -> Box<dyn Appender>;

    /// A transaction for a writer that treats any refused sample as a refusal of
    /// the whole transaction and rolls it back (the remote-write receiver). The
    /// store may then report a refusal at `commit` instead of at `append`, which
    /// lets a replicated store check each sample once instead of twice. By
    /// default the same as `appender`.
    fn batch_appender(&self) -> Box<dyn Appender> {
        self.appender()
    }
}

/// One append transaction. It is consumed by `commit` or `rollback`, so it cannot be
/// used afterwards; dropping it without either rolls back.
pub trait Appender: Send {
    /// Adds a sample for the series `labels`. `series_ref` is a hint from an earlier
    /// append of the same series in this `Appendable` (0 when unknown); the returned
    /// ref is the one to pass next time. Out-of-order, duplicate and out-of-bounds
    /// samples are refused here, one by one, and the rest of the batch goes on.
    fn append(
        &mut self,
        series_ref: SeriesRef,
        labels: &Labels,
        t: i64,
        v: f64,
    ) -> Result<SeriesRef, AppendError>;

    /// `append` with the sample's start time (ms): when the counter it belongs to
    /// started counting (OpenMetrics' created timestamp, OTel's start time); 0 means
    /// unknown. PromQL uses start times to spot counter resets and to avoid
    /// extrapolating before a counter began. A store that keeps no start times
    /// (the TSDB, so far) drops it: this default does.
    fn append_with_start_time(
        &mut self,
        series_ref: SeriesRef,
        labels: &Labels,
        t: i64,
        v: f64,
        _start_time: i64,
    ) -> Result<SeriesRef, AppendError> {
        self.append(series_ref, labels, t, v)
    }

    /// Makes everything appended so far durable (per the fsync policy) and visible.
    fn commit(self: Box<Self>) -> Result<(), AppendError>;

    /// Discards everything appended so far.
    fn rollback(self: Box<Self>);
}

/// Hints a querier may use to read less; it must return correct results without them.
#[derive(Debug, Clone, Default)]
pub struct SelectHints {
    /// Start of the range the caller needs, in ms (inclusive).
    pub start_ms: i64,
    /// End of the range the caller needs, in ms (inclusive).
    pub end_ms: i64,
    /// Only the label sets are needed, not samples (the series API).
    pub series_only: bool,
    /// Only each series' newest sample at or before `end_ms` is needed (stale
    /// marker or not): an instant vector selector evaluated at a single time. A
    /// querier may leave the older samples out; it must keep that one.
    pub newest_only: bool,
}

/// One series with its samples in the queried range, in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<Sample>,
    /// The samples' start times (ms, 0 = unknown), one per sample, or empty when
    /// the store keeps none for this series (see `Appender::append_with_start_time`).
    pub start_times: Vec<i64>,
}

impl Series {
    /// A series without start times.
    pub fn new(labels: Labels, samples: Vec<Sample>) -> Series {
        Series {
            labels,
            samples,
            start_times: Vec::new(),
        }
    }

    /// The start time of sample `i` (0 when unknown).
    pub fn start_time(&self, i: usize) -> i64 {
        self.start_times.get(i).copied().unwrap_or(0)
    }

    /// Keeps the samples (and their start times) for which `keep` holds.
    pub fn retain_samples(&mut self, keep: impl Fn(&Sample) -> bool) {
        if self.start_times.len() != self.samples.len() {
            self.start_times.clear();
            self.samples.retain(keep);
            return;
        }
        let mut j = 0;
        for i in 0..self.samples.len() {
            if keep(&self.samples[i]) {
                self.samples[j] = self.samples[i];
                self.start_times[j] = self.start_times[i];
                j += 1;
            }
        }
        self.samples.truncate(j);
        self.start_times.truncate(j);
    }
}

/// Series in label order, produced lazily.
pub type SeriesSet = Box<dyn Iterator<Item = Result<Series, StorageError>> + Send>;

/// Something that can be read over a time range.
pub trait Queryable: Send + Sync {
    /// A reader of samples with `mint <= t <= maxt` (both inclusive, as Prometheus).
    fn querier(&self, mint: i64, maxt: i64) -> Result<Box<dyn Querier>, StorageError>;
}

/// A read view over a fixed time range.
pub trait Querier: Send {
    /// Every series matching all `matchers`, sorted by labels, with its samples in
    /// the querier's range. At least one matcher must not match the empty string.
    fn select(&self, hints: &SelectHints, matchers: &[Matcher]) -> Result<SeriesSet, StorageError>;

    /// Sorted, unique values of label `name` among series matching `matchers`
    /// (all series when `matchers` is empty).
    fn label_values(&self, name: &str, matchers: &[Matcher]) -> Result<Vec<String>, StorageError>;

    /// Sorted, unique label names among series matching `matchers` (all series when
    /// `matchers` is empty).
    fn label_names(&self, matchers: &[Matcher]) -> Result<Vec<String>, StorageError>;

    /// Problems that did not stop the reads made so far but leave their results
    /// incomplete (a cluster peer that did not answer), each message once. Callers
    /// pass them on as Prometheus's `warnings`. A local store has none.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}
