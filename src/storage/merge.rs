//! Merging sorted series sets: the same series from several sources (head and blocks,
//! or several cluster groups) becomes one series, merged in time.

use super::{Sample, Series, SeriesSet, StorageError};

/// Merges series sets that are each sorted by labels into one sorted set. Series with
/// equal labels are merged in time; for equal timestamps the first set's sample wins.
pub fn merge_series_sets(sets: Vec<SeriesSet>) -> SeriesSet {
    if sets.len() == 1 {
        return sets.into_iter().next().expect("one set");
    }
    let heads = sets.iter().map(|_| None).collect();
    Box::new(Merge { sets, heads })
}

struct Merge {
    sets: Vec<SeriesSet>,
    /// The next series of each input, read ahead; `None` once that input is done.
    heads: Vec<Option<Series>>,
}

impl Iterator for Merge {
    type Item = Result<Series, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        for (set, head) in self.sets.iter_mut().zip(self.heads.iter_mut()) {
            if head.is_none() {
                match set.next() {
                    None => {}
                    Some(Err(e)) => return Some(Err(e)),
                    Some(Ok(s)) => *head = Some(s),
                }
            }
        }
        let min = self
            .heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.as_ref().map(|s| (i, &s.labels)))
            .min_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(&b.0)))
            .map(|(i, _)| i)?;
        let mut out = self.heads[min].take().expect("min head present");
        for head in self.heads.iter_mut().skip(min + 1) {
            if head.as_ref().is_some_and(|s| s.labels == out.labels) {
                let other = head.take().expect("head present");
                out = merge_series(out, &other);
            }
        }
        Some(Ok(out))
    }
}

/// Merges two copies of one series in time, keeping start times aligned with the
/// samples when either copy has them; on equal timestamps `a` wins.
fn merge_series(a: Series, b: &Series) -> Series {
    if a.start_times.is_empty() && b.start_times.is_empty() {
        let samples = merge_samples(&a.samples, &b.samples);
        return Series { samples, ..a };
    }
    let mut out = Series::new(a.labels.clone(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < a.samples.len() || j < b.samples.len() {
        let take_a =
            j >= b.samples.len() || (i < a.samples.len() && a.samples[i].t <= b.samples[j].t);
        if take_a {
            if j < b.samples.len() && a.samples[i].t == b.samples[j].t {
                j += 1;
            }
            out.samples.push(a.samples[i]);
            out.start_times.push(a.start_time(i));
            i += 1;
        } else {
            out.samples.push(b.samples[j]);
            out.start_times.push(b.start_time(j));
            j += 1;
        }
    }
    out
}

/// Merges two time-sorted sample lists; on equal timestamps `a` wins.
pub fn merge_samples(a: &[Sample], b: &[Sample]) -> Vec<Sample> {
    if b.is_empty() {
        return a.to_vec();
    }
    if a.is_empty() {
        return b.to_vec();
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    // Copies of a series in different blocks usually do not overlap in time:
    // then the merge is two copies.
    if a[a.len() - 1].t < b[0].t {
        out.extend_from_slice(a);
        out.extend_from_slice(b);
        return out;
    }
    if b[b.len() - 1].t < a[0].t {
        out.extend_from_slice(b);
        out.extend_from_slice(a);
        return out;
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].t < b[j].t {
            out.push(a[i]);
            i += 1;
        } else if b[j].t < a[i].t {
            out.push(b[j]);
            j += 1;
        } else {
            out.push(a[i]);
            i += 1;
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Labels;

    fn series(name: &str, ts: &[i64]) -> Series {
        Series {
            labels: Labels::from_pairs(&[("__name__", name)]),
            samples: ts.iter().map(|&t| Sample { t, v: t as f64 }).collect(),
            start_times: Vec::new(),
        }
    }

    fn set(v: Vec<Series>) -> SeriesSet {
        Box::new(v.into_iter().map(Ok))
    }

    #[test]
    fn merges_by_labels_and_time() {
        let a = set(vec![series("a", &[1, 3]), series("c", &[1])]);
        let b = set(vec![series("a", &[2, 3, 4]), series("b", &[5])]);
        let out: Vec<Series> = merge_series_sets(vec![a, b]).map(Result::unwrap).collect();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], series("a", &[1, 2, 3, 4]));
        assert_eq!(out[1], series("b", &[5]));
        assert_eq!(out[2], series("c", &[1]));
    }

    #[test]
    fn merging_keeps_start_times_with_their_samples() {
        let mut a = series("a", &[1, 3]);
        a.start_times = vec![0, 2];
        let b = series("a", &[2, 3, 4]);
        let out: Vec<Series> = merge_series_sets(vec![set(vec![a]), set(vec![b])])
            .map(Result::unwrap)
            .collect();
        let ts: Vec<i64> = out[0].samples.iter().map(|s| s.t).collect();
        assert_eq!(ts, vec![1, 2, 3, 4]);
        assert_eq!(out[0].start_times, vec![0, 0, 2, 0]);
    }
}
