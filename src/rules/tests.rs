//! Tests of rule file parsing and validation, templates, and rule evaluation over a
//! `MemStorage` with evaluation times driven by hand.

use super::group::{AlertState, Group};
use super::template::{self, TemplateData};
use super::RuleGroups;
use crate::labels::{Labels, Matcher};
use crate::promql::Engine;
use crate::storage::memory::MemStorage;
use crate::storage::{Appendable, Queryable, SelectHints};
use std::collections::BTreeMap;

const GOOD: &str = r#"
groups:
  - name: example
    interval: 30s
    labels:
      team: a
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: InstanceDown
        expr: up == 0
        for: 1m
        keep_firing_for: 2m
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.instance }} of {{ $labels.job }} down ({{ $value }})"
"#;

#[test]
fn parses_a_valid_file() {
    let g = RuleGroups::parse(GOOD, "good.yml").unwrap();
    assert_eq!(g.groups.len(), 1);
    assert_eq!(g.num_rules(), 2);
    assert_eq!(g.groups[0].rules[1].for_.as_deref(), Some("1m"));
    assert_eq!(
        g.groups[0].labels.get("team").map(String::as_str),
        Some("a")
    );
}

fn errors(text: &str) -> String {
    match RuleGroups::parse(text, "f.yml") {
        Ok(_) => panic!("expected an error for {text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn validation_messages_are_prometheus_s() {
    let e = errors(
        "groups:\n  - name: g\n    rules:\n      - record: a\n        alert: b\n        expr: up\n",
    );
    assert!(
        e.contains("group \"g\", rule 1, \"b\": only one of 'record' and 'alert' must be set"),
        "{e}"
    );
    let e = errors("groups:\n  - name: g\n    rules:\n      - expr: up\n");
    assert!(e.contains("one of 'record' or 'alert' must be set"), "{e}");
    let e = errors("groups:\n  - name: g\n    rules:\n      - record: a\n");
    assert!(e.contains("field 'expr' must be set in rule"), "{e}");
    let e = errors("groups:\n  - name: g\n    rules:\n      - record: a\n        expr: 'sum(('\n");
    assert!(e.contains("could not parse expression"), "{e}");
    let e =
        errors("groups:\n  - name: g\n    rules:\n      - record: 'bad name'\n        expr: up\n");
    assert!(e.contains("invalid recording rule name: bad name"), "{e}");
    let e = errors("groups:\n  - name: g\n    rules:\n      - record: a\n        expr: up\n        for: 1m\n        annotations:\n          x: y\n");
    assert!(e.contains("invalid field 'for' in recording rule"), "{e}");
    assert!(
        e.contains("invalid field 'annotations' in recording rule"),
        "{e}"
    );
    let e = errors("groups:\n  - name: g\n    rules:\n      - alert: a\n        expr: up\n        labels:\n          'bad-label': x\n");
    assert!(e.contains("invalid label name: bad-label"), "{e}");
    let e = errors("groups:\n  - name: g\n    rules: []\n  - name: g\n    rules: []\n");
    assert!(
        e.contains("groupname: \"g\" is repeated in the same file"),
        "{e}"
    );
    let e = errors("groups:\n  - name: ''\n    rules: []\n");
    assert!(e.contains("Groupname must not be empty"), "{e}");
    let e = errors("groups:\n  - name: g\n    bogus: 1\n    rules: []\n");
    assert!(e.contains("bogus"), "{e}");
    let e = errors("groups:\n  - name: g\n    interval: 5x\n    rules: []\n");
    assert!(e.contains("not a valid duration string"), "{e}");
    let e = errors("groups:\n  - name: g\n    rules:\n      - alert: a\n        expr: up\n        annotations:\n          s: '{{ range .x }}'\n");
    assert!(e.contains("annotation \"s\""), "{e}");
}

#[test]
fn templates_expand_labels_value_and_humanize() {
    let labels: BTreeMap<&str, &str> = [("instance", "h:9"), ("job", "node")].into();
    let ext: BTreeMap<&str, &str> = [("dc", "eu")].into();
    let d = TemplateData {
        labels,
        external_labels: ext,
        value: 1234567.0,
        ..Default::default()
    };
    let x = |t: &str| template::expand(t, &d).unwrap();
    assert_eq!(
        x("{{ $labels.instance }} in {{$externalLabels.dc}}"),
        "h:9 in eu"
    );
    assert_eq!(
        x("{{ .Labels.job }}/{{ index $labels \"job\" }}"),
        "node/node"
    );
    assert_eq!(x("v={{ $value }}"), "v=1.234567e+06");
    assert_eq!(x("{{ $value | humanize }}"), "1.235M");
    assert_eq!(x("{{ humanize 0.00123 }}"), "1.23m");
    assert_eq!(x("{{ 0.1234 | humanizePercentage }}"), "12.34%");
    assert_eq!(x("{{ 90061 | humanizeDuration }}"), "1d 1h 1m 1s");
    assert_eq!(x("{{ $labels.missing }}|"), "|");
    assert_eq!(x("a  {{- $labels.job -}}  b"), "anodeb");
    assert_eq!(x("{{ \"x\" | toUpper }}"), "X");
    assert_eq!(crate::gofloat::g(123456.0), "123456");
    assert_eq!(crate::gofloat::g(0.5), "0.5");
    assert!(template::Template::parse("{{ if $value }}x{{ end }}").is_ok());
    assert!(template::Template::parse("{{ if $value }}x").is_err());
    assert!(template::Template::parse("{{ $labels.x").is_err());
}

fn append(s: &MemStorage, pairs: &[(&str, &str)], t: i64, v: f64) {
    let mut a = s.appender();
    a.append(0, &Labels::from_pairs(pairs), t, v).unwrap();
    a.commit().unwrap();
}

fn group(text: &str) -> Group {
    let rgs = RuleGroups::parse(text, "t.yml").unwrap();
    let ext = BTreeMap::from([("dc".to_string(), "eu".to_string())]);
    Group::new(&rgs.groups[0], "t.yml", 60_000, &ext).unwrap()
}

/// Samples of series with metric name `name` as (labels, [(t, v)]).
fn read(s: &MemStorage, name: &str) -> Vec<(String, Vec<(i64, f64)>)> {
    let q = s.querier(i64::MIN, i64::MAX).unwrap();
    let m = Matcher::equal("__name__", name);
    let set = q.select(&SelectHints::default(), &[m]).unwrap();
    set.into_iter()
        .map(|series| {
            let series = series.unwrap();
            (
                series.labels.to_string(),
                series.samples.iter().map(|x| (x.t, x.v)).collect(),
            )
        })
        .collect()
}

#[test]
fn recording_rule_appends_and_marks_vanished_series_stale() {
    let s = MemStorage::new();
    let g = group("groups:\n  - name: g\n    rules:\n      - record: job:x:sum\n        expr: sum by (job) (x)\n        labels:\n          src: rule\n");
    let e = Engine::default();
    append(&s, &[("__name__", "x"), ("job", "a")], 0, 1.0);
    append(&s, &[("__name__", "x"), ("job", "b")], 0, 2.0);
    g.eval(&e, &s, &s, 10_000);
    let got = read(&s, "job:x:sum");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        got[0].0,
        "{__name__=\"job:x:sum\", job=\"a\", src=\"rule\"}"
    );
    assert_eq!(got[0].1, vec![(10_000, 1.0)]);
    assert_eq!(g.rules[0].health().0, "ok");
    // Past the lookback window both inputs are gone: the outputs get stale markers.
    g.eval(&e, &s, &s, 10_000 + 6 * 60_000);
    let got = read(&s, "job:x:sum");
    for (_, samples) in &got {
        assert_eq!(samples.len(), 2);
        assert!(crate::storage::is_stale_nan(samples[1].1));
    }
}

#[test]
fn recording_rule_limit_is_an_error_in_health() {
    let s = MemStorage::new();
    let g = group(
        "groups:\n  - name: g\n    limit: 1\n    rules:\n      - record: y\n        expr: x\n",
    );
    append(&s, &[("__name__", "x"), ("job", "a")], 0, 1.0);
    append(&s, &[("__name__", "x"), ("job", "b")], 0, 2.0);
    g.eval(&Engine::default(), &s, &s, 1000);
    let (h, err, _, _) = g.rules[0].health();
    assert_eq!(h, "err");
    assert_eq!(err.as_deref(), Some("exceeded limit of 1 with 2 series"));
    assert!(read(&s, "y").is_empty());
}

const ALERT: &str = "groups:\n  - name: g\n    rules:\n      - alert: High\n        expr: x > 5\n        for: 2m\n        keep_firing_for: 1m\n        labels:\n          severity: '{{ $labels.job }}-page'\n        annotations:\n          summary: 'value {{ $value }} in {{ $externalLabels.dc }}'\n";

#[test]
fn alert_goes_pending_firing_kept_firing_then_inactive() {
    let s = MemStorage::new();
    let g = group(ALERT);
    let e = Engine::default();
    let minute = 60_000;
    // x is 10 from t=0 to t=4m, then absent (its last sample ages out after 5m
    // lookback, so write a low value instead to end the condition at 5m).
    for i in 0..=4 {
        append(&s, &[("__name__", "x"), ("job", "a")], i * minute, 10.0);
    }
    append(&s, &[("__name__", "x"), ("job", "a")], 5 * minute, 1.0);
    let rule = &g.rules[0];

    g.eval(&e, &s, &s, 0);
    assert_eq!(rule.state(), AlertState::Pending);
    let a = &rule.active_alerts()[0];
    assert_eq!(
        a.labels.to_string(),
        "{alertname=\"High\", job=\"a\", severity=\"a-page\"}"
    );
    assert_eq!(a.annotations["summary"], "value 10 in eu");
    assert_eq!(a.active_at_ms, 0);

    g.eval(&e, &s, &s, minute);
    assert_eq!(rule.state(), AlertState::Pending);
    g.eval(&e, &s, &s, 2 * minute);
    assert_eq!(rule.state(), AlertState::Firing);
    g.eval(&e, &s, &s, 4 * minute);
    assert_eq!(rule.state(), AlertState::Firing);
    // The condition ends at 5m; keep_firing_for 1m keeps it firing until 6m.
    g.eval(&e, &s, &s, 5 * minute);
    assert_eq!(rule.state(), AlertState::Firing);
    assert_eq!(rule.active_alerts()[0].keep_firing_since_ms, 5 * minute);
    g.eval(&e, &s, &s, 5 * minute + 30_000);
    assert_eq!(rule.state(), AlertState::Firing);
    g.eval(&e, &s, &s, 6 * minute);
    assert_eq!(rule.state(), AlertState::Inactive);
    assert!(rule.active_alerts().is_empty());
    assert_eq!(rule.all_alerts()[0].resolved_at_ms, 6 * minute);

    // ALERTS: pending at 0 and 1m, firing from 2m to 5m30s, then stale at 6m.
    let alerts = read(&s, "ALERTS");
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let firing = alerts.iter().find(|(l, _)| l.contains("firing")).unwrap();
    let ts: Vec<i64> = firing.1.iter().map(|p| p.0).collect();
    assert_eq!(
        ts,
        vec![
            2 * minute,
            4 * minute,
            5 * minute,
            5 * minute + 30_000,
            6 * minute
        ]
    );
    assert!(crate::storage::is_stale_nan(firing.1[4].1));
    let pending = alerts.iter().find(|(l, _)| l.contains("pending")).unwrap();
    assert_eq!(pending.1.len(), 3, "pending twice, then stale: {pending:?}");
    let for_state = read(&s, "ALERTS_FOR_STATE");
    assert_eq!(for_state.len(), 1);
    assert_eq!(for_state[0].1[0], (0, 0.0));
}

#[test]
fn pending_alert_that_clears_is_dropped_and_restarts_its_for() {
    let s = MemStorage::new();
    let g = group("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 5\n        for: 5m\n");
    let e = Engine::default();
    append(&s, &[("__name__", "x")], 0, 10.0);
    append(&s, &[("__name__", "x")], 60_000, 1.0);
    append(&s, &[("__name__", "x")], 120_000, 10.0);
    g.eval(&e, &s, &s, 0);
    assert_eq!(g.rules[0].state(), AlertState::Pending);
    g.eval(&e, &s, &s, 60_000);
    assert_eq!(g.rules[0].state(), AlertState::Inactive);
    assert!(g.rules[0].all_alerts().is_empty());
    g.eval(&e, &s, &s, 120_000);
    assert_eq!(g.rules[0].active_alerts()[0].active_at_ms, 120_000);
}

#[test]
fn zero_for_fires_at_once_and_later_rules_see_earlier_results() {
    let s = MemStorage::new();
    let g = group("groups:\n  - name: g\n    rules:\n      - record: y\n        expr: x * 2\n      - alert: Y\n        expr: y > 5\n");
    append(&s, &[("__name__", "x")], 0, 3.0);
    g.eval(&Engine::default(), &s, &s, 1000);
    assert_eq!(g.rules[1].state(), AlertState::Firing);
    assert_eq!(g.rules[1].active_alerts()[0].value, 6.0);
}

#[test]
fn group_offset_is_stable_and_within_interval() {
    let g = group("groups:\n  - name: g\n    interval: 10s\n    rules: []\n");
    let off = g.offset_ms();
    assert!((0..10_000).contains(&off));
    assert_eq!(
        off,
        group("groups:\n  - name: g\n    interval: 10s\n    rules: []\n").offset_ms()
    );
    let t = g.eval_timestamp(1_000_000_123);
    assert!(t <= 1_000_000_123 && 1_000_000_123 - t < 10_000);
    assert_eq!((t - off).rem_euclid(10_000), 0);
}

#[test]
fn alertmanager_sets_from_config() {
    let cfg = crate::config::Config::parse(
        "alerting:\n  alertmanagers:\n    - path_prefix: /am/\n      timeout: 3s\n      static_configs:\n        - targets: ['a:9093', 'b:9093']\n          labels: {dc: eu}\n      relabel_configs:\n        - source_labels: [dc, __address__]\n          regex: 'eu;b:.*'\n          action: drop\n        - source_labels: [__address__]\n          regex: '(.*):9093'\n          target_label: __address__\n          replacement: '${1}:19093'\n    - scheme: https\n      static_configs:\n        - targets: ['c:443']\n",
        "t.yml",
    )
    .unwrap();
    let sets = super::notifier::alertmanager_sets(&cfg.alerting).unwrap();
    assert_eq!(sets.len(), 2);
    assert_eq!(sets[0].urls, ["http://a:19093/am/api/v2/alerts"]);
    assert_eq!(sets[0].cfg.timeout_ms(), 3000);
    assert_eq!(sets[0].dropped.len(), 1);
    assert_eq!(sets[0].dropped[0].get("__address__"), "b:9093");
    assert_eq!(
        sets[0].dropped[0].get("__alerts_path__"),
        "/am/api/v2/alerts"
    );
    assert_eq!(sets[1].urls, ["https://c:443/api/v2/alerts"]);
    let bad = crate::config::Config::parse(
        "alerting:\n  alertmanagers:\n    - api_version: v1\n",
        "t.yml",
    );
    assert!(bad.is_err());
    let none = crate::config::Config::parse("", "t.yml").unwrap();
    assert!(super::notifier::alertmanager_sets(&none.alerting)
        .unwrap()
        .is_empty());
}

#[test]
fn alerts_are_sent_when_firing_resent_after_delay_and_resolved_at_once() {
    let s = MemStorage::new();
    let g = group("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 5\n        for: 1m\n");
    let e = Engine::default();
    append(&s, &[("__name__", "x")], 0, 10.0);
    append(&s, &[("__name__", "x")], 240_000, 1.0);
    g.eval(&e, &s, &s, 0);
    assert!(
        g.alerts_to_send(0, 60_000).is_empty(),
        "pending alerts are not sent"
    );
    g.eval(&e, &s, &s, 60_000);
    let sent = g.alerts_to_send(60_000, 60_000);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["labels"]["dc"], "eu");
    assert_eq!(sent[0]["startsAt"], "1970-01-01T00:01:00Z");
    // endsAt while firing: 4 × max(interval 1m, resend delay 1m) ahead.
    assert_eq!(sent[0]["endsAt"], "1970-01-01T00:05:00Z");
    g.eval(&e, &s, &s, 120_000);
    assert!(
        g.alerts_to_send(120_000, 60_000).is_empty(),
        "within the resend delay"
    );
    g.eval(&e, &s, &s, 180_000);
    assert_eq!(g.alerts_to_send(180_000, 60_000).len(), 1);
    g.eval(&e, &s, &s, 240_000);
    let sent = g.alerts_to_send(240_000, 60_000);
    assert_eq!(sent.len(), 1, "resolved is sent at once");
    assert_eq!(sent[0]["endsAt"], "1970-01-01T00:04:00Z");
}

#[test]
fn rule_file_patterns_glob_and_skip_missing_literals() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yml"), "groups: []\n").unwrap();
    std::fs::write(dir.path().join("b.yaml"), "groups: []\n").unwrap();
    let d = dir.path().display().to_string();
    let files = super::rule_files(&[format!("{d}/*.yml"), format!("{d}/missing.yml")]).unwrap();
    assert_eq!(files, vec![dir.path().join("a.yml")]);
}

#[tokio::test]
async fn reload_keeps_unchanged_groups_and_replaces_changed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("r.yml");
    let two = "groups:\n  - name: a\n    rules:\n      - record: x2\n        expr: x * 2\n  - name: b\n    rules:\n      - record: x3\n        expr: x * 3\n";
    std::fs::write(&rules, two).unwrap();
    let cfg_path = dir.path().join("prometheus.yml");
    std::fs::write(&cfg_path, "rule_files: ['r.yml']\n").unwrap();
    let cfg = crate::config::Config::load_file(&cfg_path).unwrap();
    let s = MemStorage::new();
    let m = super::RuleManager::new(
        std::sync::Arc::new(s.clone()),
        std::sync::Arc::new(s.clone()),
        Engine::default(),
    );
    m.apply_config(&cfg).unwrap();
    let before = m.groups();
    assert_eq!(before.len(), 2);
    std::fs::write(&rules, two.replace("x * 3", "x * 4")).unwrap();
    m.apply_config(&cfg).unwrap();
    let after = m.groups();
    assert!(
        std::sync::Arc::ptr_eq(&before[0], &after[0]),
        "group a unchanged"
    );
    assert!(
        !std::sync::Arc::ptr_eq(&before[1], &after[1]),
        "group b changed"
    );
    // A broken file is refused and the running groups stay.
    std::fs::write(
        &rules,
        "groups:\n  - name: a\n    rules:\n      - record: 'bad name'\n        expr: x\n",
    )
    .unwrap();
    let err = m.apply_config(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("invalid recording rule name: bad name"),
        "{err}"
    );
    assert_eq!(m.groups().len(), 2);
    let rules_json = m.rules_json(&Default::default());
    assert_eq!(rules_json["groups"][1]["rules"][0]["query"], "x * 4");
    m.stop();
}

#[test]
fn restored_active_time_follows_prometheus_cases() {
    use super::group::restored_active_at_ms;
    let (min, grace) = (60_000, 10 * 60_000);
    let hold = 30 * min;
    // Active at t=100s, down at 20m (last sample 20m+400ms), restarted at 25m.
    let ts = 25 * min;
    // 20m − 100s pending: 11m40s remained, more than the grace period, so the active
    // time moves forward by the 5m the process was down.
    assert_eq!(
        restored_active_at_ms(hold, grace, ts, 20 * min + 400, 100.0),
        100_000 + 5 * min
    );
    // Active at 15m: 25m remained → shifted by the 5m down.
    assert_eq!(
        restored_active_at_ms(hold, grace, ts, 20 * min, 900.0),
        20 * min
    );
    // Active at 0: 10m remained — not less than the grace period, shifted.
    assert_eq!(
        restored_active_at_ms(hold, grace, ts, 20 * min, 0.0),
        5 * min
    );
    // Active at -1m: 9m remained, less than the grace period: it fires a grace
    // period after the restore.
    let a = restored_active_at_ms(hold, grace, ts, 20 * min, -60.0);
    assert_eq!(a, ts + grace - hold);
    assert_eq!(a + hold - ts, grace);
    // Pending for more than `for` already: it had fired; the old time stays.
    assert_eq!(
        restored_active_at_ms(hold, grace, ts, 20 * min, -1200.0),
        -1_200_000
    );
    // The sample's time counts in whole seconds, as in Prometheus.
    assert_eq!(
        restored_active_at_ms(hold, grace, ts + 7, 20 * min + 999, 900.0),
        20 * min + 7
    );
}

const RESTORE: &str = "groups:\n  - name: g\n    interval: 1m\n    rules:\n      - alert: Long\n        expr: x > 0\n        for: 30m\n      - alert: Short\n        expr: x > 0\n        for: 5m\n";

/// Evaluates a freshly loaded (restarted) group twice from `start`, then restores.
fn restart(s: &MemStorage, start: i64, opts: &super::group::RestoreOptions) -> Group {
    let g = group(RESTORE);
    g.mark_for_restore();
    assert!(g.should_restore());
    let e = Engine::default();
    g.eval(&e, s, s, start);
    g.eval(&e, s, s, start + 60_000);
    g.restore_for_state(s, start + 60_000, opts);
    assert!(!g.should_restore());
    g
}

#[test]
fn for_state_is_restored_after_a_restart() {
    let min = 60_000;
    let s = MemStorage::new();
    for t in 0..=60 {
        append(&s, &[("__name__", "x"), ("job", "a")], t * min, 1.0);
    }
    let e = Engine::default();
    // Before the restart: pending from t=0 to t=20m.
    let g = group(RESTORE);
    for t in 0..=20 {
        g.eval(&e, &s, &s, t * min);
    }
    assert_eq!(g.rules[0].active_alerts()[0].state, AlertState::Pending);
    assert_eq!(g.rules[1].active_alerts()[0].state, AlertState::Firing);
    let forstate = read(&s, "ALERTS_FOR_STATE");
    assert_eq!(forstate[0].1.last(), Some(&(20 * min, 0.0)));

    // Down from 20m to 25m; the restarted group evaluates at 25m and 26m.
    let opts = super::group::RestoreOptions::default();
    let g = restart(&s, 25 * min, &opts);
    // Nothing was written before the restore, so the restore read the old sample.
    let forstate = read(&s, "ALERTS_FOR_STATE");
    assert_eq!(forstate[0].1.last(), Some(&(20 * min, 0.0)));
    // 10m remained of Long's 30m: it is active since 0 + 6m down (25m→26m restore).
    let long = &g.rules[0].active_alerts()[0];
    assert_eq!(long.active_at_ms, 6 * min);
    assert_eq!(long.state, AlertState::Pending);
    // Short's `for` is under the grace period: not restored, a fresh `for` runs.
    assert_eq!(g.rules[1].active_alerts()[0].active_at_ms, 25 * min);
    // It fires 30m after its restored active time, not 30m after the restart.
    for t in 27..36 {
        g.eval(&e, &s, &s, t * min);
        assert_eq!(g.rules[0].state(), AlertState::Pending, "t={t}m");
    }
    g.eval(&e, &s, &s, 36 * min);
    assert_eq!(g.rules[0].state(), AlertState::Firing);
    // ALERTS_FOR_STATE carries the restored active time from the first evaluation
    // after the restore on.
    let forstate = read(&s, "ALERTS_FOR_STATE");
    assert_eq!(forstate[0].1[21], (27 * min, 360.0));
}

#[test]
fn for_state_is_not_restored_past_the_outage_tolerance_or_after_resolving() {
    let min = 60_000;
    let s = MemStorage::new();
    for t in 0..=120 {
        append(&s, &[("__name__", "x"), ("job", "a")], t * min, 1.0);
    }
    let e = Engine::default();
    let g = group(RESTORE);
    for t in 0..=20 {
        g.eval(&e, &s, &s, t * min);
    }
    // Down for 80m, longer than the 1h tolerance: a fresh `for`.
    let opts = super::group::RestoreOptions::default();
    let g = restart(&s, 100 * min, &opts);
    assert_eq!(g.rules[0].active_alerts()[0].active_at_ms, 100 * min);

    // A stale marker as the last sample means the alert had resolved.
    let s = MemStorage::new();
    for t in 0..=40 {
        append(&s, &[("__name__", "x"), ("job", "a")], t * min, 1.0);
    }
    append(
        &s,
        &[
            ("__name__", "ALERTS_FOR_STATE"),
            ("alertname", "Long"),
            ("job", "a"),
        ],
        0,
        0.0,
    );
    append(
        &s,
        &[
            ("__name__", "ALERTS_FOR_STATE"),
            ("alertname", "Long"),
            ("job", "a"),
        ],
        60_000,
        crate::storage::stale_nan(),
    );
    let g = restart(&s, 10 * min, &opts);
    assert_eq!(g.rules[0].active_alerts()[0].active_at_ms, 10 * min);
    // With a tolerance of 8m the 9m-old sample is not read either.
    let s = MemStorage::new();
    for t in 0..=40 {
        append(&s, &[("__name__", "x"), ("job", "a")], t * min, 1.0);
    }
    append(
        &s,
        &[
            ("__name__", "ALERTS_FOR_STATE"),
            ("alertname", "Long"),
            ("job", "a"),
        ],
        2 * min,
        60.0,
    );
    let short = super::group::RestoreOptions {
        outage_tolerance_ms: 8 * min,
        ..opts
    };
    let g = restart(&s, 10 * min, &short);
    assert_eq!(g.rules[0].active_alerts()[0].active_at_ms, 10 * min);
    let g = restart(&s, 10 * min, &opts);
    // 29m of 30m remained after 1m pending: shifted by the 9m down (2m→11m).
    assert_eq!(g.rules[0].active_alerts()[0].active_at_ms, 60_000 + 9 * min);
}
