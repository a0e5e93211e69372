//! `MemStorage`: an in-memory store implementing both seams, for tests (the PromQL
//! conformance runner, API tests) and tools that need a throwaway store.
//!
//! It keeps every series in a sorted map behind one lock. It has no WAL, no chunks and
//! no limits beyond memory, so it is not meant for production data.

use super::{
    AppendError, Appendable, Appender, Querier, Queryable, Sample, SelectHints, Series, SeriesRef,
    SeriesSet, StorageError,
};
use crate::labels::{Labels, Matcher};
use parking_lot::RwLock;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The samples of one series and their start times (0 = unknown), side by side.
#[derive(Default)]
struct Stored {
    samples: Vec<Sample>,
    start_times: Vec<i64>,
}

/// Samples of every series, keyed by labels, plus the refs handed out.
#[derive(Default)]
struct Inner {
    series: BTreeMap<Labels, Stored>,
    refs: HashMap<SeriesRef, Labels>,
    next_ref: SeriesRef,
    ref_of: HashMap<Labels, SeriesRef>,
}

/// An in-memory `Appendable + Queryable` with the TSDB's append rules (no
/// out-of-order window; an identical duplicate is ignored, a different one refused).
#[derive(Clone, Default)]
pub struct MemStorage {
    inner: Arc<RwLock<Inner>>,
}

impl MemStorage {
    /// A new, empty store.
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// Number of series held.
    pub fn num_series(&self) -> usize {
        self.inner.read().series.len()
    }
}

impl Appendable for MemStorage {
    fn appender(&self) -> Box<dyn Appender> {
        Box::new(MemAppender {
            store: self.inner.clone(),
            pending: Vec::new(),
            last_pending: HashMap::new(),
        })
    }
}

/// One transaction against a `MemStorage`: samples wait here until `commit`.
struct MemAppender {
    store: Arc<RwLock<Inner>>,
    pending: Vec<(Labels, Sample, i64)>,
    /// The newest pending sample per series, to check order within the batch.
    last_pending: HashMap<Labels, Sample>,
}

impl Appender for MemAppender {
    fn append(
        &mut self,
        series_ref: SeriesRef,
        labels: &Labels,
        t: i64,
        v: f64,
    ) -> Result<SeriesRef, AppendError> {
        self.append_with_start_time(series_ref, labels, t, v, 0)
    }

    fn append_with_start_time(
        &mut self,
        series_ref: SeriesRef,
        labels: &Labels,
        t: i64,
        v: f64,
        start_time: i64,
    ) -> Result<SeriesRef, AppendError> {
        let mut inner = self.store.write();
        let labels = match inner.refs.get(&series_ref) {
            Some(l) if series_ref != 0 && l == labels => l.clone(),
            _ => labels.clone(),
        };
        if labels.is_empty() {
            return Err(AppendError::InvalidLabels(labels.to_string()));
        }
        let last = self.last_pending.get(&labels).copied().or_else(|| {
            inner
                .series
                .get(&labels)
                .and_then(|s| s.samples.last().copied())
        });
        if let Some(last) = last {
            if t < last.t {
                return Err(AppendError::OutOfOrder);
            }
            if t == last.t {
                if last.v.to_bits() != v.to_bits() {
                    return Err(AppendError::DuplicateSampleForTimestamp);
                }
                return Ok(ref_for(&mut inner, &labels));
            }
        }
        let r = ref_for(&mut inner, &labels);
        let s = Sample { t, v };
        self.last_pending.insert(labels.clone(), s);
        self.pending.push((labels, s, start_time));
        Ok(r)
    }

    fn commit(self: Box<Self>) -> Result<(), AppendError> {
        let mut inner = self.store.write();
        for (labels, s, st) in self.pending {
            let stored = inner.series.entry(labels).or_default();
            stored.samples.push(s);
            stored.start_times.push(st);
        }
        Ok(())
    }

    fn rollback(self: Box<Self>) {}
}

/// The ref of `labels`, assigning one on first sight.
fn ref_for(inner: &mut Inner, labels: &Labels) -> SeriesRef {
    if let Some(r) = inner.ref_of.get(labels) {
        return *r;
    }
    inner.next_ref += 1;
    let r = inner.next_ref;
    inner.ref_of.insert(labels.clone(), r);
    inner.refs.insert(r, labels.clone());
    r
}

impl Queryable for MemStorage {
    fn querier(&self, mint: i64, maxt: i64) -> Result<Box<dyn Querier>, StorageError> {
        Ok(Box::new(MemQuerier {
            store: self.inner.clone(),
            mint,
            maxt,
        }))
    }
}

/// A read view of a `MemStorage` over `[mint, maxt]`.
struct MemQuerier {
    store: Arc<RwLock<Inner>>,
    mint: i64,
    maxt: i64,
}

impl MemQuerier {
    /// Series matching every matcher with their samples in range; series without
    /// samples in range are left out, as the TSDB does.
    /// The matching series with samples in the querier's range; with
    /// `newest_at`, only each one's newest sample at or before that time (the
    /// `SelectHints::newest_only` hint, honoured here so that the PromQL
    /// conformance suite checks that the engine only gives it where it holds).
    fn matching(
        &self,
        matchers: &[Matcher],
        with_samples: bool,
        newest_at: Option<i64>,
    ) -> Vec<Series> {
        let inner = self.store.read();
        let mut out = Vec::new();
        for (labels, stored) in &inner.series {
            if !matchers.iter().all(|m| m.matches(labels.get(&m.name))) {
                continue;
            }
            let samples = &stored.samples;
            let mut lo = samples.partition_point(|s| s.t < self.mint);
            let mut hi = samples.partition_point(|s| s.t <= self.maxt);
            if let Some(t) = newest_at {
                hi = hi.min(samples.partition_point(|s| s.t <= t));
                lo = lo.max(hi.saturating_sub(1));
            }
            if lo >= hi {
                continue;
            }
            let mut s = Series::new(labels.clone(), Vec::new());
            if with_samples {
                s.samples = samples[lo..hi].to_vec();
                let sts = &stored.start_times[lo..hi];
                if sts.iter().any(|&st| st != 0) {
                    s.start_times = sts.to_vec();
                }
            }
            out.push(s);
        }
        out
    }
}

impl Querier for MemQuerier {
    fn select(&self, hints: &SelectHints, matchers: &[Matcher]) -> Result<SeriesSet, StorageError> {
        let newest_at = hints.newest_only.then_some(hints.end_ms);
        let series = self.matching(matchers, !hints.series_only, newest_at);
        Ok(Box::new(series.into_iter().map(Ok)))
    }

    fn label_values(&self, name: &str, matchers: &[Matcher]) -> Result<Vec<String>, StorageError> {
        let mut set = BTreeSet::new();
        for s in self.matching(matchers, false, None) {
            let v = s.labels.get(name);
            if !v.is_empty() {
                set.insert(v.to_string());
            }
        }
        Ok(set.into_iter().collect())
    }

    fn label_names(&self, matchers: &[Matcher]) -> Result<Vec<String>, StorageError> {
        let mut set = BTreeSet::new();
        for s in self.matching(matchers, false, None) {
            for l in s.labels.iter() {
                set.insert(l.name.to_string());
            }
        }
        Ok(set.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_the_storage_conformance_suite() {
        crate::storage::conformance::run_all(&MemStorage::new);
    }

    #[test]
    fn keeps_start_times_with_their_samples() {
        let store = MemStorage::new();
        let a = Labels::from_pairs(&[("__name__", "a")]);
        let b = Labels::from_pairs(&[("__name__", "b")]);
        let mut app = store.appender();
        app.append_with_start_time(0, &a, 1000, 1.0, 500).unwrap();
        app.append(0, &a, 2000, 2.0).unwrap();
        app.append_with_start_time(0, &a, 3000, 3.0, 2500).unwrap();
        app.append(0, &b, 1000, 1.0).unwrap();
        app.commit().unwrap();
        let q = store.querier(2000, 3000).unwrap();
        let m = [Matcher::new(crate::labels::MatchType::Regexp, "__name__", ".+").unwrap()];
        let got: Vec<Series> = q
            .select(&SelectHints::default(), &m)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got.len(), 1, "b has no sample in range");
        assert_eq!(got[0].start_times, vec![0, 2500]);
        let q = store.querier(0, 3000).unwrap();
        let got: Vec<Series> = q
            .select(&SelectHints::default(), &m)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got[0].start_times, vec![500, 0, 2500]);
        assert!(
            got[1].start_times.is_empty(),
            "no start times: none reported"
        );
    }
}
