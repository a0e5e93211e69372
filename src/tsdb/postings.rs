//! Operations on sorted postings lists: intersection, union and removal, and the
//! matcher-to-postings algorithm shared by the block index and the head's in-memory index.
//!
//! A postings list is a strictly increasing list of series references. Every function
//! here takes and returns such lists; none of them checks the order of its input
//! beyond debug assertions, because the lists come from our own indexes.

use crate::labels::{MatchType, Matcher, METRIC_NAME};
use std::collections::HashSet;

/// When one list is at least this many times longer than the other, the set
/// operations search the long list instead of walking it. Below that, a linear
/// merge touches fewer cache lines than the searches would.
const GALLOP_RATIO: usize = 16;

/// Smallest index `i >= from` with `list[i] >= target` (or `list.len()`), found by
/// doubling the step from `from` and then bisecting the last step. Costs
/// O(log distance), which is what makes walking a short list against a long one cheap.
fn gallop(list: &[u64], from: usize, target: u64) -> usize {
    gallop_by(list.len(), from, target, |i| list[i])
}

/// `gallop` over a sorted list of `len` entries read through `get`, for lists
/// that are not `u64` slices (a block index's big-endian postings).
fn gallop_by(len: usize, from: usize, target: u64, get: impl Fn(usize) -> u64) -> usize {
    if from >= len || get(from) >= target {
        return from;
    }
    // Invariant: get(lo) < target.
    let mut lo = from;
    let mut step = 1;
    let mut hi = from + step;
    while hi < len && get(hi) < target {
        lo = hi;
        step *= 2;
        hi = lo + step;
    }
    // get(lo) < target, and get(hi) >= target or hi >= len: bisect (lo, hi).
    let mut hi = hi.min(len);
    lo += 1;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if get(mid) < target {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Removes from `refs` (sorted) every reference in the sorted list of `len`
/// entries read through `get`, in place. Each reference gallops from where the
/// last one stopped, so a few references against a long list cost a few
/// searches and the list is never copied or decoded as a whole.
pub fn remove_listed(refs: &mut Vec<u64>, len: usize, get: impl Fn(usize) -> u64) {
    if len == 0 {
        return;
    }
    let mut j = 0;
    refs.retain(|&x| {
        j = gallop_by(len, j, x, &get);
        j == len || get(j) != x
    });
}

fn debug_assert_sorted(list: &[u64]) {
    debug_assert!(
        list.windows(2).all(|w| w[0] < w[1]),
        "postings list not strictly increasing"
    );
}

/// The references present in both `a` and `b`.
pub fn intersect(a: &[u64], b: &[u64]) -> Vec<u64> {
    debug_assert_sorted(a);
    debug_assert_sorted(b);
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(small.len());
    if small.is_empty() {
        return out;
    }
    if large.len() / small.len() >= GALLOP_RATIO {
        let mut j = 0;
        for &x in small {
            j = gallop(large, j, x);
            if j == large.len() {
                break;
            }
            if large[j] == x {
                out.push(x);
                j += 1;
            }
        }
        return out;
    }
    let (mut i, mut j) = (0, 0);
    while i < small.len() && j < large.len() {
        let (x, y) = (small[i], large[j]);
        if x == y {
            out.push(x);
        }
        i += (x <= y) as usize;
        j += (y <= x) as usize;
    }
    out
}

/// The references present in every list. Intersects the shortest lists first so
/// that the running result shrinks as fast as possible. No lists gives no references.
pub fn intersect_many(mut lists: Vec<Vec<u64>>) -> Vec<u64> {
    lists.sort_by_key(|l| l.len());
    let mut iter = lists.into_iter();
    let Some(mut acc) = iter.next() else {
        return Vec::new();
    };
    for l in iter {
        if acc.is_empty() {
            break;
        }
        acc = intersect(&acc, &l);
    }
    acc
}

/// The references in `a` or `b`, each once.
pub fn union(a: &[u64], b: &[u64]) -> Vec<u64> {
    debug_assert_sorted(a);
    debug_assert_sorted(b);
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        out.push(x.min(y));
        i += (x <= y) as usize;
        j += (y <= x) as usize;
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// The references in any of the lists, each once. Merges neighbouring pairs in
/// rounds, so every reference is copied O(log k) times for k lists, and each
/// round is a sequential pass that the CPU prefetches well.
pub fn union_many(mut lists: Vec<Vec<u64>>) -> Vec<u64> {
    lists.retain(|l| !l.is_empty());
    while lists.len() > 1 {
        let mut next = Vec::with_capacity(lists.len().div_ceil(2));
        let mut iter = lists.into_iter();
        while let Some(a) = iter.next() {
            match iter.next() {
                Some(b) => next.push(union(&a, &b)),
                None => next.push(a),
            }
        }
        lists = next;
    }
    lists.pop().unwrap_or_default()
}

/// An index that can answer postings queries: the block index reader and the
/// head's in-memory index both implement it, so that `postings_for_matchers` is
/// written once.
pub trait PostingsSource {
    /// Why a lookup failed; `std::convert::Infallible` for in-memory indexes.
    type Error;

    /// The series with label `name` set to `value`, sorted; empty when there are none.
    fn postings(&self, name: &str, value: &str) -> Result<Vec<u64>, Self::Error>;

    /// Every series in the index, sorted.
    fn all_postings(&self) -> Result<Vec<u64>, Self::Error>;

    /// The values of label `name`, sorted and unique; empty when the label is unknown.
    fn label_values(&self, name: &str) -> Result<Vec<String>, Self::Error>;

    /// Removes from `refs` (sorted) the series with label `name` set to `value`.
    /// The default reads the list; an index overrides it to search its list in
    /// place, which matters when `refs` is short and the list is long.
    fn remove_postings(
        &self,
        name: &str,
        value: &str,
        refs: &mut Vec<u64>,
    ) -> Result<(), Self::Error> {
        let list = self.postings(name, value)?;
        remove_listed(refs, list.len(), |i| list[i]);
        Ok(())
    }

    /// Removes from `refs` (sorted) the series whose value of `name` is one for
    /// which `reject` returns true. The default reads the matching lists.
    fn remove_values(
        &self,
        name: &str,
        reject: &mut dyn FnMut(&str) -> bool,
        refs: &mut Vec<u64>,
    ) -> Result<(), Self::Error> {
        for list in self.postings_for_values(name, reject)? {
            if refs.is_empty() {
                break;
            }
            remove_listed(refs, list.len(), |i| list[i]);
        }
        Ok(())
    }

    /// The postings lists of every value of `name` for which `keep` returns true.
    /// The default walks `label_values`; an index can override it to test values
    /// without allocating them.
    fn postings_for_values(
        &self,
        name: &str,
        keep: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Vec<Vec<u64>>, Self::Error> {
        let mut out = Vec::new();
        for v in self.label_values(name)? {
            if keep(&v) {
                out.push(self.postings(name, &v)?);
            }
        }
        Ok(out)
    }
}

/// The series (sorted references) whose labels satisfy every matcher, with
/// Prometheus's semantics: a series lacking a label has the value "" for it, so a
/// matcher that accepts "" also selects series without the label.
///
/// Like Prometheus's `PostingsForMatchers`, matchers that reject "" are resolved to
/// postings and intersected, while matchers that accept "" subtract the series
/// whose value they reject; with nothing to intersect, subtraction starts from all
/// series. An empty matcher list selects nothing, as in Prometheus.
pub fn postings_for_matchers<S: PostingsSource + ?Sized>(
    source: &S,
    matchers: &[Matcher],
) -> Result<Vec<u64>, S::Error> {
    if matchers.is_empty() {
        return Ok(Vec::new());
    }
    // Names that a matching series must have, because some matcher rejects "".
    let must_be_set: HashSet<&str> = matchers
        .iter()
        .filter(|m| !m.matches_empty())
        .map(|m| m.name.as_str())
        .collect();

    // Label equalities first, the metric name's after them, scans of values
    // last: an equality usually names few series (an instance, a pod) where the
    // metric name names many, and a value this source does not hold ends the read
    // before any longer list is read: a source that holds none of the selected
    // series answers a selective query from one lookup. Intersection does not
    // depend on the order.
    let rank = |m: &Matcher| match (m.kind, m.name == METRIC_NAME) {
        (MatchType::Equal, false) => 0,
        (MatchType::Equal, true) => 1,
        _ => 2,
    };
    let ordered = (0..3).flat_map(|r| matchers.iter().filter(move |m| rank(m) == r));

    let mut intersect_with = Vec::new();
    let mut negative = Vec::new();
    for m in ordered {
        let positive = matches!(m.kind, MatchType::Equal | MatchType::Regexp);
        if !m.matches_empty() || (positive && must_be_set.contains(m.name.as_str())) {
            // The label is known to be set, so the matching values' postings are
            // exactly the series this matcher selects.
            let list = matching_postings(source, m)?;
            if list.is_empty() {
                return Ok(Vec::new());
            }
            intersect_with.push(list);
        } else {
            negative.push(m);
        }
    }

    let mut result = if intersect_with.is_empty() {
        source.all_postings()?
    } else {
        intersect_many(intersect_with)
    };
    // Rejected series are removed from the result only now, list by list and in
    // place: the rejected values' lists are often most of the index (`zone!~"…"`)
    // while the result is a few series, so neither a union of them nor a copy of
    // any is made.
    for m in negative {
        if result.is_empty() {
            break;
        }
        remove_rejected(source, m, &mut result)?;
    }
    Ok(result)
}

/// The series whose value of `m.name` is non-empty and accepted by `m`.
fn matching_postings<S: PostingsSource + ?Sized>(
    source: &S,
    m: &Matcher,
) -> Result<Vec<u64>, S::Error> {
    // The empty name is never a real label (the index uses it for "all postings").
    if m.name.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(values) = m.set_matches() {
        return postings_of_values(source, &m.name, &values);
    }
    let lists = source.postings_for_values(&m.name, &mut |v| m.matches(v))?;
    Ok(union_many(lists))
}

/// Removes from `refs` the series whose value of `m.name` is non-empty and
/// rejected by `m`.
fn remove_rejected<S: PostingsSource + ?Sized>(
    source: &S,
    m: &Matcher,
    refs: &mut Vec<u64>,
) -> Result<(), S::Error> {
    if m.name.is_empty() {
        return Ok(());
    }
    // The rejected values are often a short literal set (`!=`, `!~"a|b"`) that
    // needs no scan of all values.
    if let Some(values) = m.rejected_set() {
        for v in values {
            // A series never stores an empty value; "" stands for the label's absence.
            if !v.is_empty() && !refs.is_empty() {
                source.remove_postings(&m.name, v, refs)?;
            }
        }
        return Ok(());
    }
    source.remove_values(&m.name, &mut |v| !m.matches(v), refs)
}

fn postings_of_values<S: PostingsSource + ?Sized>(
    source: &S,
    name: &str,
    values: &[&str],
) -> Result<Vec<u64>, S::Error> {
    let mut lists = Vec::with_capacity(values.len());
    for v in values {
        // A series never stores an empty value; "" stands for the label's absence.
        if !v.is_empty() {
            lists.push(source.postings(name, v)?);
        }
    }
    Ok(union_many(lists))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::labels::Labels;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::convert::Infallible;

    fn sorted_list() -> impl Strategy<Value = Vec<u64>> {
        // Mix dense small ranges with sparse large ones so both the merge and the
        // galloping paths run.
        prop_oneof![
            proptest::collection::btree_set(0u64..64, 0..40),
            proptest::collection::btree_set(0u64..100_000, 0..400),
            proptest::collection::btree_set(0u64..2_000, 0..2_000),
        ]
        .prop_map(|s| s.into_iter().collect())
    }

    fn set(l: &[u64]) -> BTreeSet<u64> {
        l.iter().copied().collect()
    }

    proptest! {
        #[test]
        fn intersect_matches_model(a in sorted_list(), b in sorted_list()) {
            let want: Vec<u64> = set(&a).intersection(&set(&b)).copied().collect();
            prop_assert_eq!(intersect(&a, &b), want);
        }

        #[test]
        fn remove_listed_matches_model(a in sorted_list(), b in sorted_list()) {
            let want: Vec<u64> = set(&a).difference(&set(&b)).copied().collect();
            let mut got = a.clone();
            remove_listed(&mut got, b.len(), |i| b[i]);
            prop_assert_eq!(got, want);
        }

        #[test]
        fn many_match_model(lists in proptest::collection::vec(sorted_list(), 0..7)) {
            let mut union_want = BTreeSet::new();
            for l in &lists {
                union_want.extend(l.iter().copied());
            }
            let mut inter_want: Option<BTreeSet<u64>> = None;
            for l in &lists {
                inter_want = Some(match inter_want {
                    None => set(l),
                    Some(acc) => acc.intersection(&set(l)).copied().collect(),
                });
            }
            let inter_want: Vec<u64> = inter_want.unwrap_or_default().into_iter().collect();
            prop_assert_eq!(union_many(lists.clone()), union_want.into_iter().collect::<Vec<_>>());
            prop_assert_eq!(intersect_many(lists), inter_want);
        }
    }

    #[test]
    fn gallop_finds_lower_bound() {
        let l = [1, 3, 5, 7, 9, 11, 13];
        for from in 0..l.len() {
            for target in 0..16 {
                let want = from + l[from..].partition_point(|&x| x < target);
                assert_eq!(
                    gallop(&l, from, target),
                    want,
                    "from {from} target {target}"
                );
            }
        }
    }

    /// A tiny in-memory index to run `postings_for_matchers` against, as the head will.
    pub(crate) struct MemSource {
        pub series: Vec<Labels>,
        pairs: BTreeMap<(String, String), Vec<u64>>,
    }

    impl MemSource {
        pub fn new(series: Vec<Labels>) -> MemSource {
            let mut pairs: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
            for (id, s) in series.iter().enumerate() {
                for l in s.iter() {
                    pairs
                        .entry((l.name.to_string(), l.value.to_string()))
                        .or_default()
                        .push(id as u64);
                }
            }
            MemSource { series, pairs }
        }
    }

    impl PostingsSource for MemSource {
        type Error = Infallible;
        fn postings(&self, name: &str, value: &str) -> Result<Vec<u64>, Infallible> {
            Ok(self
                .pairs
                .get(&(name.to_string(), value.to_string()))
                .cloned()
                .unwrap_or_default())
        }
        fn all_postings(&self) -> Result<Vec<u64>, Infallible> {
            Ok((0..self.series.len() as u64).collect())
        }
        fn label_values(&self, name: &str) -> Result<Vec<String>, Infallible> {
            Ok(self
                .pairs
                .keys()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .collect())
        }
    }

    #[test]
    fn a_label_value_not_held_ends_the_lookup_before_the_metric_names_list() {
        /// A `MemSource` that records which labels' lists were read.
        struct Logged {
            inner: MemSource,
            read: std::cell::RefCell<Vec<String>>,
        }
        impl PostingsSource for Logged {
            type Error = Infallible;
            fn postings(&self, name: &str, value: &str) -> Result<Vec<u64>, Infallible> {
                self.read.borrow_mut().push(name.to_string());
                self.inner.postings(name, value)
            }
            fn all_postings(&self) -> Result<Vec<u64>, Infallible> {
                self.inner.all_postings()
            }
            fn label_values(&self, name: &str) -> Result<Vec<String>, Infallible> {
                self.inner.label_values(name)
            }
        }
        let series = (0..100)
            .map(|i| Labels::from_pairs(&[("__name__", "up"), ("instance", &format!("host{i}"))]))
            .collect();
        let src = Logged {
            inner: MemSource::new(series),
            read: Default::default(),
        };
        // The metric name comes first, as a selector's matchers do.
        let absent = [
            Matcher::equal(METRIC_NAME, "up"),
            Matcher::equal("instance", "elsewhere"),
        ];
        assert!(postings_for_matchers(&src, &absent).unwrap().is_empty());
        assert_eq!(*src.read.borrow(), ["instance"]);

        src.read.borrow_mut().clear();
        let held = [
            Matcher::equal(METRIC_NAME, "up"),
            Matcher::equal("instance", "host7"),
        ];
        assert_eq!(postings_for_matchers(&src, &held).unwrap(), [7]);
        assert_eq!(*src.read.borrow(), ["instance", METRIC_NAME]);
    }

    /// Random small label sets over a few names and values, some labels absent.
    pub(crate) fn label_sets() -> impl Strategy<Value = Vec<Labels>> {
        let value = prop_oneof![Just(""), Just("x"), Just("y"), Just("zz"), Just("x\ny")];
        proptest::collection::vec(proptest::collection::vec(value, 3), 0..30).prop_map(|rows| {
            let mut seen = BTreeSet::new();
            rows.into_iter()
                .map(|vals| Labels::from_pairs(&[("a", vals[0]), ("b", vals[1]), ("c", vals[2])]))
                .filter(|l| seen.insert(l.clone()))
                .collect()
        })
    }

    pub(crate) fn matchers() -> impl Strategy<Value = Vec<Matcher>> {
        let kind = prop_oneof![
            Just(MatchType::Equal),
            Just(MatchType::NotEqual),
            Just(MatchType::Regexp),
            Just(MatchType::NotRegexp),
        ];
        let name = prop_oneof![Just("a"), Just("b"), Just("c"), Just("missing"), Just("")];
        let value = prop_oneof![
            Just(""),
            Just("x"),
            Just("zz"),
            Just("x|y"),
            Just("x|"),
            Just(".*"),
            Just(".+"),
            Just("z.*"),
            Just("x.y"),
        ];
        proptest::collection::vec((kind, name, value), 1..4).prop_map(|ms| {
            ms.into_iter()
                .map(|(k, n, v)| Matcher::new(k, n, v).expect("test patterns are valid"))
                .collect()
        })
    }

    pub(crate) fn brute_force(series: &[Labels], ms: &[Matcher]) -> Vec<u64> {
        (0..series.len() as u64)
            .filter(|&id| {
                ms.iter()
                    .all(|m| m.matches(series[id as usize].get(&m.name)))
            })
            .collect()
    }

    proptest! {
        #[test]
        fn postings_for_matchers_agrees_with_brute_force(series in label_sets(), ms in matchers()) {
            let src = MemSource::new(series);
            let got = match postings_for_matchers(&src, &ms) {
                Ok(got) => got,
                Err(never) => match never {},
            };
            prop_assert_eq!(got, brute_force(&src.series, &ms), "matchers {:?}", ms);
        }
    }

    #[test]
    fn empty_value_matchers_select_series_without_the_label() {
        let src = MemSource::new(vec![
            Labels::from_pairs(&[("a", "1")]),
            Labels::from_pairs(&[("a", "1"), ("b", "2")]),
            Labels::from_pairs(&[("b", "3")]),
        ]);
        let run = |ms: &[Matcher]| match postings_for_matchers(&src, ms) {
            Ok(v) => v,
            Err(never) => match never {},
        };
        assert_eq!(run(&[Matcher::equal("b", "")]), vec![0]);
        assert_eq!(
            run(&[Matcher::equal("a", "1"), Matcher::equal("b", "")]),
            vec![0]
        );
        let ne = Matcher::new(MatchType::NotEqual, "b", "2").unwrap();
        assert_eq!(run(&[ne]), vec![0, 2]);
        assert_eq!(run(&[]), Vec::<u64>::new());
    }
}
