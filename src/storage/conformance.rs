//! The behaviour every implementation of the storage seams must show.
//!
//! Each check takes a fresh, empty store from `make` and panics with a message saying
//! what went wrong. The TSDB runs the whole suite in `tests/storage_conformance.rs`;
//! the cluster's replicated appender and fan-out querier will run it too.

use super::{stale_nan, AppendError, Appendable, Queryable, Sample, SelectHints, Series};
use crate::labels::{Labels, MatchType, Matcher};

/// Runs every check, each on a new store.
pub fn run_all<S: Appendable + Queryable>(make: &dyn Fn() -> S) {
    commit_makes_samples_visible(&make());
    rollback_discards(&make());
    uncommitted_samples_are_invisible(&make());
    out_of_order_and_duplicates_are_refused(&make());
    special_values_are_kept_bit_for_bit(&make());
    matchers_follow_prometheus(&make());
    label_names_and_values(&make());
    series_ref_hints_are_honoured(&make());
    range_bounds_are_inclusive(&make());
    newest_only_keeps_the_newest_sample(&make());
}

fn lbls(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs)
}

fn m(kind: MatchType, name: &str, value: &str) -> Matcher {
    Matcher::new(kind, name, value).expect("valid matcher")
}

/// All series matching `matchers` over the whole time range.
pub fn select_all<Q: Queryable + ?Sized>(q: &Q, matchers: &[Matcher]) -> Vec<Series> {
    let querier = q.querier(i64::MIN, i64::MAX).expect("querier");
    let hints = SelectHints {
        start_ms: i64::MIN,
        end_ms: i64::MAX,
        series_only: false,
        newest_only: false,
    };
    querier
        .select(&hints, matchers)
        .expect("select")
        .map(|s| s.expect("series"))
        .collect()
}

fn append_commit<S: Appendable>(s: &S, series: &[(Labels, i64, f64)]) {
    let mut app = s.appender();
    for (l, t, v) in series {
        app.append(0, l, *t, *v).expect("append");
    }
    app.commit().expect("commit");
}

fn commit_makes_samples_visible<S: Appendable + Queryable>(s: &S) {
    let up = lbls(&[("__name__", "up"), ("job", "a")]);
    append_commit(s, &[(up.clone(), 1000, 1.0), (up.clone(), 2000, 0.0)]);
    let got = select_all(s, &[Matcher::equal("__name__", "up")]);
    assert_eq!(
        got,
        vec![Series {
            labels: up,
            samples: vec![Sample { t: 1000, v: 1.0 }, Sample { t: 2000, v: 0.0 }],
            start_times: Vec::new(),
        }],
        "committed samples must be returned"
    );
}

fn rollback_discards<S: Appendable + Queryable>(s: &S) {
    let mut app = s.appender();
    app.append(0, &lbls(&[("__name__", "gone")]), 1000, 1.0)
        .expect("append");
    app.rollback();
    let got = select_all(s, &[Matcher::equal("__name__", "gone")]);
    assert!(
        got.iter().all(|s| s.samples.is_empty()),
        "rolled-back samples must not be visible: {got:?}"
    );
}

fn uncommitted_samples_are_invisible<S: Appendable + Queryable>(s: &S) {
    let mut app = s.appender();
    app.append(0, &lbls(&[("__name__", "pending")]), 1000, 1.0)
        .expect("append");
    let got = select_all(s, &[Matcher::equal("__name__", "pending")]);
    assert!(
        got.iter().all(|s| s.samples.is_empty()),
        "uncommitted samples must not be visible: {got:?}"
    );
    app.commit().expect("commit");
    let got = select_all(s, &[Matcher::equal("__name__", "pending")]);
    assert_eq!(got.len(), 1, "committed series must be visible");
    assert_eq!(got[0].samples, vec![Sample { t: 1000, v: 1.0 }]);
}

fn out_of_order_and_duplicates_are_refused<S: Appendable + Queryable>(s: &S) {
    let l = lbls(&[("__name__", "m")]);
    append_commit(s, &[(l.clone(), 2000, 1.0)]);
    let mut app = s.appender();
    assert_eq!(
        app.append(0, &l, 1000, 1.0),
        Err(AppendError::OutOfOrder),
        "an older sample must be refused as out of order"
    );
    assert_eq!(
        app.append(0, &l, 2000, 5.0),
        Err(AppendError::DuplicateSampleForTimestamp),
        "a different value at the same timestamp must be refused"
    );
    // The same value at the same timestamp is accepted and ignored, as in Prometheus.
    app.append(0, &l, 2000, 1.0)
        .expect("identical duplicate is accepted");
    app.append(0, &l, 3000, 3.0).expect("newer sample");
    app.commit().expect("commit");
    let got = select_all(s, &[Matcher::equal("__name__", "m")]);
    assert_eq!(
        got[0].samples,
        vec![Sample { t: 2000, v: 1.0 }, Sample { t: 3000, v: 3.0 }]
    );
}

fn special_values_are_kept_bit_for_bit<S: Appendable + Queryable>(s: &S) {
    let l = lbls(&[("__name__", "special")]);
    let values = [
        f64::NAN,
        stale_nan(),
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        f64::MIN_POSITIVE,
        f64::MAX,
    ];
    let rows: Vec<(Labels, i64, f64)> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| (l.clone(), 1000 * (i as i64 + 1), v))
        .collect();
    append_commit(s, &rows);
    let got = select_all(s, &[Matcher::equal("__name__", "special")]);
    let bits: Vec<u64> = got[0].samples.iter().map(|s| s.v.to_bits()).collect();
    let want: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
    assert_eq!(bits, want, "values must come back bit for bit");
}

fn matchers_follow_prometheus<S: Appendable + Queryable>(s: &S) {
    let a = lbls(&[("__name__", "x"), ("env", "prod"), ("i", "1")]);
    let b = lbls(&[("__name__", "x"), ("env", "dev"), ("i", "2")]);
    let c = lbls(&[("__name__", "x"), ("i", "3")]);
    let d = lbls(&[("__name__", "x"), ("env", "prod\nline"), ("i", "4")]);
    append_commit(
        s,
        &[
            (a.clone(), 1, 1.0),
            (b.clone(), 1, 1.0),
            (c.clone(), 1, 1.0),
            (d.clone(), 1, 1.0),
        ],
    );
    let name = Matcher::equal("__name__", "x");
    let cases: Vec<(Matcher, Vec<&Labels>)> = vec![
        (m(MatchType::Equal, "env", "prod"), vec![&a]),
        (m(MatchType::NotEqual, "env", "prod"), vec![&b, &d, &c]),
        (m(MatchType::Equal, "env", ""), vec![&c]),
        (m(MatchType::NotEqual, "env", ""), vec![&b, &a, &d]),
        (m(MatchType::Regexp, "env", "pro"), vec![]),
        (m(MatchType::Regexp, "env", "prod.*"), vec![&a, &d]),
        (m(MatchType::Regexp, "env", "prod|dev"), vec![&b, &a]),
        (m(MatchType::Regexp, "env", ".*"), vec![&c, &b, &a, &d]),
        (m(MatchType::Regexp, "env", ".+"), vec![&b, &a, &d]),
        (m(MatchType::NotRegexp, "env", "prod.*"), vec![&b, &c]),
        (m(MatchType::Regexp, "env", "dev|"), vec![&b, &c]),
        (m(MatchType::Regexp, "nope", ""), vec![&c, &b, &a, &d]),
    ];
    for (matcher, want) in cases {
        let got = select_all(s, &[name.clone(), matcher.clone()]);
        let got: Vec<&Labels> = got.iter().map(|s| &s.labels).collect();
        let mut want = want;
        want.sort();
        assert_eq!(got, want, "matcher {matcher}");
    }
}

fn label_names_and_values<S: Appendable + Queryable>(s: &S) {
    append_commit(
        s,
        &[
            (lbls(&[("__name__", "a"), ("x", "1")]), 1, 1.0),
            (lbls(&[("__name__", "b"), ("y", "2"), ("x", "3")]), 1, 1.0),
        ],
    );
    let q = s.querier(i64::MIN, i64::MAX).expect("querier");
    assert_eq!(q.label_names(&[]).expect("names"), ["__name__", "x", "y"]);
    assert_eq!(q.label_values("x", &[]).expect("values"), ["1", "3"]);
    assert_eq!(
        q.label_values("x", &[Matcher::equal("__name__", "b")])
            .expect("values"),
        ["3"]
    );
    assert_eq!(
        q.label_names(&[Matcher::equal("__name__", "a")])
            .expect("names"),
        ["__name__", "x"]
    );
    assert!(q.label_values("nope", &[]).expect("values").is_empty());
}

fn series_ref_hints_are_honoured<S: Appendable + Queryable>(s: &S) {
    let l1 = lbls(&[("__name__", "r1")]);
    let l2 = lbls(&[("__name__", "r2")]);
    let mut app = s.appender();
    let r1 = app.append(0, &l1, 1000, 1.0).expect("append");
    let r2 = app.append(0, &l2, 1000, 2.0).expect("append");
    app.commit().expect("commit");
    let mut app = s.appender();
    assert_eq!(app.append(r1, &l1, 2000, 1.5).expect("append"), r1);
    assert_eq!(app.append(r2, &l2, 2000, 2.5).expect("append"), r2);
    app.commit().expect("commit");
    let got = select_all(s, &[m(MatchType::Regexp, "__name__", "r.")]);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].samples.len(), 2);
    assert_eq!(got[1].samples[1], Sample { t: 2000, v: 2.5 });
}

fn range_bounds_are_inclusive<S: Appendable + Queryable>(s: &S) {
    let l = lbls(&[("__name__", "bounds")]);
    let rows: Vec<(Labels, i64, f64)> = (1..=5).map(|i| (l.clone(), i * 1000, i as f64)).collect();
    append_commit(s, &rows);
    let q = s.querier(2000, 4000).expect("querier");
    let hints = SelectHints {
        start_ms: 2000,
        end_ms: 4000,
        series_only: false,
        newest_only: false,
    };
    let got: Vec<Series> = q
        .select(&hints, &[Matcher::equal("__name__", "bounds")])
        .expect("select")
        .map(|s| s.expect("series"))
        .collect();
    let ts: Vec<i64> = got[0].samples.iter().map(|s| s.t).collect();
    assert_eq!(
        ts,
        [2000, 3000, 4000],
        "[mint, maxt] is inclusive at both ends"
    );
}

/// `newest_only` may drop older samples but must keep each series' newest one at
/// or before `end_ms`, a stale marker too (it hides the series from an instant
/// selector), and must not return anything after `end_ms` in its place.
fn newest_only_keeps_the_newest_sample<S: Appendable + Queryable>(s: &S) {
    let live = lbls(&[("__name__", "newest"), ("s", "live")]);
    let stale = lbls(&[("__name__", "newest"), ("s", "stale")]);
    let mut rows: Vec<(Labels, i64, f64)> = (1..=5)
        .map(|i| (live.clone(), i * 1000, i as f64))
        .collect();
    rows.extend([
        (stale.clone(), 1000, 1.0),
        (stale.clone(), 3000, stale_nan()),
    ]);
    append_commit(s, &rows);
    let q = s.querier(1000, 5000).expect("querier");
    let hints = SelectHints {
        start_ms: 1000,
        end_ms: 3500,
        series_only: false,
        newest_only: true,
    };
    let got: Vec<Series> = q
        .select(&hints, &[Matcher::equal("__name__", "newest")])
        .expect("select")
        .map(|s| s.expect("series"))
        .collect();
    assert_eq!(got.len(), 2, "both series are selected: {got:?}");
    for (series, want_t) in got.iter().zip([3000, 3000]) {
        let newest = series.samples.iter().rev().find(|p| p.t <= 3500);
        assert_eq!(
            newest.map(|p| p.t),
            Some(want_t),
            "newest sample at or before end_ms of {} is kept: {series:?}",
            series.labels
        );
    }
    assert!(
        got[1]
            .samples
            .last()
            .is_some_and(|p| p.t <= 3500 && p.v.is_nan()),
        "the stale marker is the newest sample kept: {:?}",
        got[1]
    );
}
