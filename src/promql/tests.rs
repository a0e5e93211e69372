//! Unit tests of the engine on a small in-memory store.

use super::*;
use crate::labels::Labels;
use crate::storage::memory::MemStorage;
use crate::storage::{stale_nan, Appendable};

fn store() -> MemStorage {
    let s = MemStorage::new();
    let mut app = s.appender();
    for i in 0..10 {
        let t = i * 60_000;
        app.append(
            0,
            &Labels::from_pairs(&[("__name__", "c"), ("job", "a")]),
            t,
            (i * 60) as f64,
        )
        .unwrap();
        app.append(
            0,
            &Labels::from_pairs(&[("__name__", "c"), ("job", "b")]),
            t,
            (i * 120) as f64,
        )
        .unwrap();
    }
    app.append(0, &Labels::from_pairs(&[("__name__", "g")]), 0, 1.0)
        .unwrap();
    app.append(
        0,
        &Labels::from_pairs(&[("__name__", "g")]),
        60_000,
        stale_nan(),
    )
    .unwrap();
    app.commit().unwrap();
    s
}

fn instant(s: &MemStorage, q: &str, t: i64) -> Value {
    Engine::default()
        .instant_query(s, &parse(q).unwrap(), t, None)
        .unwrap()
        .value
}

#[test]
fn rate_over_a_steady_counter() {
    let s = store();
    match instant(&s, "sum(rate(c[5m]))", 540_000) {
        Value::Vector(v) => {
            assert_eq!(v.len(), 1);
            assert!((v[0].f - 3.0).abs() < 1e-9, "{}", v[0].f);
            assert!(v[0].metric.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stale_marker_ends_a_series() {
    let s = store();
    assert_eq!(instant(&s, "g", 30_000).type_name(), "vector");
    match instant(&s, "g", 90_000) {
        Value::Vector(v) => assert!(v.is_empty(), "{v:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn range_query_gives_a_sorted_matrix() {
    let s = store();
    let v = Engine::default()
        .range_query(&s, &parse("c * 2").unwrap(), 0, 120_000, 60_000, None)
        .unwrap()
        .value;
    match v {
        Value::Matrix(m) => {
            assert_eq!(m.len(), 2);
            assert_eq!(m[0].metric, Labels::from_pairs(&[("job", "a")]));
            assert_eq!(m[0].floats.len(), 3);
            assert_eq!(m[1].floats[2].f, 480.0);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn max_samples_is_enforced_with_prometheus_message() {
    let s = store();
    let e = Engine::new(EngineOptions {
        max_samples: 3,
        ..EngineOptions::default()
    });
    let err = e
        .instant_query(&s, &parse("c[10m]").unwrap(), 540_000, None)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "query processing would load too many samples into memory in query execution"
    );
}

#[test]
fn cancelled_query_stops() {
    let s = store();
    let token = CancellationToken::new();
    token.cancel();
    let err = Engine::default()
        .instant_query(&s, &parse("c").unwrap(), 0, Some(&token))
        .unwrap_err();
    assert!(matches!(err, QueryError::Canceled(_)), "{err:?}");
}

#[test]
fn out_of_range_quantile_is_a_warning() {
    let s = store();
    let r = Engine::default()
        .instant_query(&s, &parse("quantile(2, c)").unwrap(), 540_000, None)
        .unwrap();
    assert_eq!(
        r.warnings,
        // With the position of the parameter, as Prometheus writes it.
        ["PromQL warning: quantile value should be between 0 and 1, got 2 (1:10)"]
    );
    assert!(r.infos.is_empty());
}

#[test]
fn huge_offsets_and_ranges_do_not_overflow() {
    let s = store();
    for q in [
        "c offset 100000y",
        "c offset -100000y",
        "rate(c[100000y])",
        "max_over_time(c[1000y:1d])",
    ] {
        let r = Engine::default().instant_query(&s, &parse(q).unwrap(), 540_000, None);
        assert!(r.is_ok(), "{q}: {r:?}");
    }
}

#[test]
fn labels_hash_is_xxh64_like_prometheus() {
    // XXH64 reference values (seed 0): "" and "a", and a 33-byte input that takes
    // the 32-byte stripe path.
    assert_eq!(super::eval::xxh64(b""), 0xEF46_DB37_51D8_E999);
    assert_eq!(super::eval::xxh64(b"a"), 0xD24E_C4F1_A98C_6E5B);
    assert_eq!(
        super::eval::xxh64(b"abcdefghijklmnopqrstuvwxyz0123456"),
        super::eval::xxh64(b"abcdefghijklmnopqrstuvwxyz0123456")
    );
}

#[test]
fn duration_expressions_and_step_run_through_the_engine() {
    let s = store();
    let e = Engine::default();
    // [4m+1m] is [5m]: the same answer as the literal range.
    let a = e
        .instant_query(&s, &parse("rate(c[4m+1m])").unwrap(), 540_000, None)
        .unwrap();
    let b = e
        .instant_query(&s, &parse("rate(c[5m])").unwrap(), 540_000, None)
        .unwrap();
    assert_eq!(a.value, b.value);
    // offset step(): 60s in a range query with a 60s step.
    let q = parse("c{job=\"a\"} offset step()").unwrap();
    let r = e
        .range_query(&s, &q, 300_000, 360_000, 60_000, None)
        .unwrap();
    match r.value {
        Value::Matrix(m) => {
            assert_eq!(m.len(), 1);
            assert_eq!(m[0].floats[0].f, 240.0);
        }
        other => panic!("not a matrix: {other:?}"),
    }
}

proptest::proptest! {
    /// Starting from any hint, `seek` finds what a binary search over the whole
    /// series finds.
    #[test]
    fn seek_agrees_with_partition_point(
        times in proptest::collection::btree_set(-1000i64..1000, 0..60),
        t in -1100i64..1100,
        hint in 0usize..80,
    ) {
        let times: Vec<i64> = times.into_iter().collect();
        let want = times.partition_point(|&x| x <= t);
        proptest::prop_assert_eq!(eval::seek(&times, |&x| x, t, hint), want);
    }
}

#[test]
fn range_query_steps_reuse_windows_correctly_backwards_and_forwards() {
    // A subquery makes the inner selectors step back in time between outer
    // steps; every answer must still match an instant query at that time.
    let s = store();
    let engine = Engine::default();
    let q = parse("max_over_time(rate(c[3m])[5m:1m])").unwrap();
    let range = engine
        .range_query(&s, &q, 300_000, 540_000, 60_000, None)
        .unwrap();
    let Value::Matrix(series) = range.value else {
        panic!("a range query gives a matrix");
    };
    for sr in &series {
        for p in &sr.floats {
            let inst = engine.instant_query(&s, &q, p.t, None).unwrap();
            let Value::Vector(v) = inst.value else {
                panic!("an instant query of this gives a vector");
            };
            let same = v.iter().find(|x| x.metric == sr.metric).map(|x| x.f);
            assert_eq!(same, Some(p.f), "at {} for {}", p.t, sr.metric);
        }
    }
    assert_eq!(series.len(), 2);
}

fn parse_error(q: &str) -> String {
    match parse(q) {
        Ok(_) => panic!("{q:?} parsed"),
        Err(QueryError::Parse(m)) => m,
        Err(other) => panic!("{q:?}: not a parse error: {other:?}"),
    }
}

#[test]
fn anchored_and_smoothed_only_follow_selectors() {
    // Prometheus 3 refuses the modifiers after a subquery and after anything that
    // is not a selector, and both on one selector.
    assert_eq!(
        parse_error("max_over_time(c[5m:1m] anchored)"),
        "anchored modifier is not supported for subqueries"
    );
    assert_eq!(
        parse_error("rate(c[1m])[5m:1m] offset 1m smoothed"),
        "smoothed modifier is not supported for subqueries"
    );
    assert_eq!(
        parse_error("sum(c) anchored"),
        "anchored modifier not implemented"
    );
    assert_eq!(
        parse_error("rate(c[5m] anchored smoothed)"),
        "anchored and smoothed modifiers cannot be used together"
    );
    // On a range selector (with its offset) the modifier still applies: an
    // anchored window adds the sample at its start.
    let s = store();
    let plain = instant(&s, "increase(c{job=\"a\"}[1m] offset 30s)", 540_000);
    let anchored = instant(
        &s,
        "increase(c{job=\"a\"}[1m] offset 30s anchored)",
        540_000,
    );
    assert_ne!(plain, anchored);
}

#[test]
fn at_modifier_takes_a_number_or_a_duration_only() {
    let s = store();
    // A duration is seconds, as in Prometheus 3.
    assert_eq!(instant(&s, "c @ 2m", 0), instant(&s, "c @ 120", 0));
    assert_eq!(instant(&s, "c @ 1m30s", 0), instant(&s, "c @ 90", 0));
    assert_ne!(instant(&s, "c @ 1m30s", 0), instant(&s, "c @ 2m", 0));
    // Prometheus has no duration expressions after `@`: it stops at the token.
    assert_eq!(
        parse_error("c @ (60 + 60)"),
        "1:5: parse error: unexpected \"(\" in @, expected timestamp"
    );
    assert_eq!(
        parse_error("c @ step()"),
        "1:5: parse error: unexpected \"step\" in @, expected timestamp"
    );
    assert_eq!(
        parse_error("rate(c[1m] @ )"),
        "1:14: parse error: unexpected \")\" in @, expected timestamp"
    );
}
