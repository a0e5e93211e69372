//! The rule manager's timing under tokio's paused clock: groups evaluate at
//! their aligned times, a slow evaluation makes the schedule drop ticks and count
//! them, `for` and `keep_firing_for` take effect on time, and firing alerts are
//! sent again once per resend delay. Wall time comes from a `Clock` following
//! tokio's clock; sent alerts are captured through the manager's `NotifyFn`.

use super::manager::{NotifyFn, RuleManager, RuleOptions};
use crate::clock::Clock;
use crate::labels::Matcher;
use crate::promql::Engine;
use crate::storage::memory::MemStorage;
use crate::storage::{Queryable, SelectHints};
use parking_lot::Mutex;
use serde_json::Value as Json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The wall time the tests start at: not aligned to anything.
const START_MS: i64 = 1_700_000_003_217;

/// Each call of the notify hook: wall time (ms) and the alerts it got.
type Sent = Arc<Mutex<Vec<(i64, Vec<Json>)>>>;

struct Rig {
    manager: RuleManager,
    store: MemStorage,
    sent: Sent,
    _dir: tempfile::TempDir,
}

/// A manager on a `MemStorage` running `rules`, whose notify hook records each
/// call and, on call number `slow.0` (from 1), takes `slow.1` of tokio time.
fn rig(rules: &str, options: RuleOptions, slow: Option<(usize, Duration)>) -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rules.yml");
    std::fs::write(&path, rules).expect("write rules");
    let cfg = crate::config::Config::parse(
        &format!("rule_files: ['{}']\n", path.display()),
        "prometheus.yml",
    )
    .expect("config");
    let clock = Clock::starting_at_ms(START_MS);
    let sent: Sent = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let (s2, c2) = (sent.clone(), clock.clone());
    let notify: NotifyFn = Arc::new(move |alerts| {
        s2.lock().push((c2.now_ms(), alerts));
        let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
        Box::pin(async move {
            if let Some((at, d)) = slow {
                if n == at {
                    tokio::time::sleep(d).await;
                }
            }
        })
    });
    let store = MemStorage::new();
    let manager = RuleManager::with_options(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        Engine::default(),
        options,
    )
    .with_clock(clock)
    .with_notify(notify);
    manager.apply_config(&cfg).expect("apply config");
    Rig {
        manager,
        store,
        sent,
        _dir: dir,
    }
}

/// Lets tokio's paused clock run `ms` forward, timers firing on the way.
async fn run_for(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// The timestamps of the samples stored for `metric`.
fn sample_times(s: &MemStorage, metric: &str) -> Vec<i64> {
    let m = [Matcher::equal("__name__", metric)];
    let Ok(q) = s.querier(i64::MIN, i64::MAX) else {
        return Vec::new();
    };
    let Ok(set) = q.select(&SelectHints::default(), &m) else {
        return Vec::new();
    };
    set.flatten()
        .flat_map(|series| series.samples.into_iter().map(|p| p.t))
        .collect()
}

fn ms_of(rfc3339: &Json) -> i64 {
    rfc3339
        .as_str()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_millisecond())
        .unwrap_or(i64::MIN)
}

#[tokio::test(start_paused = true)]
async fn groups_evaluate_one_interval_after_their_aligned_time_then_every_interval() {
    let r = rig(
        "groups:\n  - name: every10s\n    interval: 10s\n    rules:\n      - record: r\n        expr: vector(1)\n",
        RuleOptions::default(),
        None,
    );
    run_for(65_000).await;
    let g = r.manager.groups()[0].clone();
    let first = g.eval_timestamp(START_MS) + 10_000;
    assert!(first > START_MS && first <= START_MS + 10_000, "{first}");
    let want: Vec<i64> = (0..7)
        .map(|i| first + i * 10_000)
        .filter(|t| *t <= START_MS + 65_000)
        .collect();
    assert!(want.len() >= 6, "{want:?}");
    for t in &want {
        assert_eq!(
            (t - g.offset_ms()).rem_euclid(10_000),
            0,
            "aligned to the phase"
        );
    }
    let times: Vec<i64> = r.sent.lock().iter().map(|(t, _)| *t).collect();
    assert_eq!(times, want, "evaluated at the aligned times, on time");
    assert_eq!(
        sample_times(&r.store, "r"),
        want,
        "samples carry those times"
    );
    assert_eq!(g.iterations_missed(), 0);
    r.manager.stop();
}

#[tokio::test(start_paused = true)]
async fn a_slow_evaluation_drops_ticks_and_counts_them() {
    // The second evaluation takes 25 s of a 10 s interval.
    let r = rig(
        "groups:\n  - name: slow\n    interval: 10s\n    rules:\n      - record: r\n        expr: vector(1)\n",
        RuleOptions::default(),
        Some((2, Duration::from_secs(25))),
    );
    run_for(11_000).await;
    let first = r.sent.lock()[0].0;
    // Up to first + 45 s: evaluations at first, first+10 (slow, done at
    // first+35), then the tick of first+20 that waited is taken at first+35 with
    // one interval missed, so it evaluates at first+30, then first+40.
    let until = first + 45_000;
    run_for((until - (START_MS + 11_000)) as u64).await;
    let times: Vec<i64> = r.sent.lock().iter().map(|(t, _)| *t).collect();
    assert_eq!(
        times,
        [first, first + 10_000, first + 35_000, first + 40_000],
        "notify times"
    );
    assert_eq!(
        sample_times(&r.store, "r"),
        [first, first + 10_000, first + 30_000, first + 40_000],
        "evaluation timestamps"
    );
    let g = r.manager.groups()[0].clone();
    assert_eq!(g.iterations_missed(), 1);
    let metrics = r.manager.render_metrics();
    assert!(
        metrics.contains("prometheus_rule_group_iterations_missed_total{rule_group=")
            && metrics.lines().any(|l| l
                .starts_with("prometheus_rule_group_iterations_missed_total{")
                && l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("prometheus_rule_group_iterations_total{") && l.ends_with(" 5")),
        "4 run + 1 missed: {metrics}"
    );
    r.manager.stop();
}

/// The alerts of the first notify call that had any, with its time.
fn first_sent(sent: &Sent) -> Option<(i64, Vec<Json>)> {
    sent.lock().iter().find(|(_, a)| !a.is_empty()).cloned()
}

#[tokio::test(start_paused = true)]
async fn pending_alert_fires_when_its_for_has_passed() {
    let r = rig(
        "groups:\n  - name: g\n    interval: 10s\n    rules:\n      - alert: Held\n        expr: vector(1)\n        for: 30s\n",
        RuleOptions::default(),
        None,
    );
    // The first evaluation is within one interval.
    run_for(11_000).await;
    let first = r.sent.lock()[0].0;
    let g = r.manager.groups()[0].clone();
    // Pending (and not sent) until `for` has passed since the first evaluation.
    let end = first + 30_000;
    run_for((end - 1 - (START_MS + 11_000)) as u64).await;
    assert_eq!(g.rules[0].state(), super::AlertState::Pending);
    assert!(first_sent(&r.sent).is_none(), "pending alerts are not sent");
    run_for(2).await;
    assert_eq!(g.rules[0].state(), super::AlertState::Firing);
    let (at, alerts) = first_sent(&r.sent).expect("sent once firing");
    assert_eq!(
        at,
        first + 30_000,
        "fires at the evaluation `for` after activation"
    );
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["labels"]["alertname"], "Held");
    assert_eq!(ms_of(&alerts[0]["startsAt"]), first + 30_000);
    r.manager.stop();
}

#[tokio::test(start_paused = true)]
async fn keep_firing_for_holds_a_resolved_alert_firing() {
    // The expression matches while the evaluation time is before START + 30 s.
    let until_s = (START_MS + 30_000) as f64 / 1000.0;
    let r = rig(
        &format!("groups:\n  - name: g\n    interval: 10s\n    rules:\n      - alert: Flap\n        expr: vector(time()) < {until_s}\n        keep_firing_for: 20s\n"),
        RuleOptions::default(),
        None,
    );
    run_for(100_000).await;
    let sent = r.sent.lock().clone();
    let first = sent[0].0;
    // The first evaluation at or after START + 30 s no longer matches; the alert
    // keeps firing for 20 s from there and is resolved at the evaluation after.
    let stops = (first..)
        .step_by(10_000)
        .find(|t| *t >= START_MS + 30_000)
        .unwrap_or(first);
    let resolved: Vec<(i64, i64)> = sent
        .iter()
        .flat_map(|(t, alerts)| alerts.iter().map(move |a| (*t, ms_of(&a["endsAt"]))))
        .filter(|(t, ends)| ends <= t)
        .collect();
    assert_eq!(
        resolved.first().copied(),
        Some((stops + 20_000, stops + 20_000)),
        "resolved (endsAt = now) 20 s after the expression stopped matching: {sent:?}"
    );
    let firing_until: Vec<i64> = sent
        .iter()
        .filter(|(t, alerts)| alerts.iter().any(|a| ms_of(&a["endsAt"]) > *t))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(
        firing_until.first().copied(),
        Some(first),
        "fires at once (no `for`)"
    );
    let g = r.manager.groups()[0].clone();
    assert_eq!(g.rules[0].state(), super::AlertState::Inactive);
    r.manager.stop();
}

#[tokio::test(start_paused = true)]
async fn firing_alerts_are_resent_once_per_resend_delay() {
    let r = rig(
        "groups:\n  - name: g\n    interval: 10s\n    rules:\n      - alert: Always\n        expr: vector(1)\n",
        RuleOptions {
            resend_delay_ms: 30_000,
            ..RuleOptions::default()
        },
        None,
    );
    run_for(100_000).await;
    let sent = r.sent.lock().clone();
    let first = sent[0].0;
    let with_alerts: Vec<i64> = sent
        .iter()
        .filter(|(_, a)| !a.is_empty())
        .map(|(t, _)| *t)
        .collect();
    // Sent at once, then at the first evaluation more than 30 s after the last send.
    let want: Vec<i64> = [0, 40_000, 80_000]
        .iter()
        .map(|d| first + d)
        .filter(|t| *t <= START_MS + 100_000)
        .collect();
    assert_eq!(
        with_alerts,
        want,
        "all notify calls: {:?}",
        sent.iter().map(|(t, a)| (t, a.len())).collect::<Vec<_>>()
    );
    // `endsAt` of a firing alert: 4 × max(interval, resend delay) ahead.
    let a = &sent.iter().find(|(_, a)| !a.is_empty()).expect("sent").1[0];
    assert_eq!(ms_of(&a["endsAt"]), first + 4 * 30_000);
    r.manager.stop();
}
