//! Recording and alerting rules through the real `hearth` binary: `hearth check
//! rules` next to `promtool check rules`, and a server evaluating rules from its
//! config's `rule_files`, serving `/api/v1/rules` and `/api/v1/alerts`.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GOOD_RULES: &str = "groups:\n  - name: self\n    interval: 1s\n    rules:\n      - record: job:up:sum\n        expr: sum by (job) (up)\n      - alert: SelfUp\n        expr: job:up:sum > 0\n        labels:\n          severity: 'info-{{ $labels.job }}'\n        annotations:\n          summary: '{{ $labels.job }} has {{ $value }} up in {{ $externalLabels.dc }}'\n";

#[test]
fn check_rules_agrees_with_promtool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.yml");
    std::fs::write(&good, GOOD_RULES).expect("write");
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "groups:\n  - name: g\n    rules:\n      - record: a\n        alert: b\n        expr: up\n      - record: 'bad name'\n        expr: up\n",
    )
    .expect("write");
    let re = regex::Regex::new(r"(\d+:\d+: )+").expect("regex");
    for (file, ok) in [(&good, true), (&bad, false)] {
        let ours = Command::new(hearth_bin())
            .args(["check", "rules"])
            .arg(file)
            .output()
            .expect("run hearth");
        let theirs = promtool()
            .args(["check", "rules"])
            .arg(file)
            .output()
            .expect("run promtool (installed by .ci/install-deps)");
        assert_eq!(ours.status.success(), ok, "{ours:?}");
        assert_eq!(ours.status.code(), theirs.status.code());
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout)
        );
        // promtool adds YAML positions ("4:17: "); hearth does not keep them yet,
        // so compare each error line with the positions taken out.
        let strip = |s: &str| -> Vec<String> {
            s.lines().map(|l| re.replace(l, "").into_owned()).collect()
        };
        assert_eq!(
            strip(&String::from_utf8_lossy(&ours.stderr)),
            strip(&String::from_utf8_lossy(&theirs.stderr))
        );
    }
}

fn get_json(addr: &str, path: &str) -> serde_json::Value {
    let (status, body) = http("GET", addr, path, &[], b"").expect("GET");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("JSON")
}

#[test]
fn server_evaluates_rules_and_serves_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    std::fs::create_dir(dir.path().join("rules")).expect("mkdir");
    std::fs::write(dir.path().join("rules/self.yml"), GOOD_RULES).expect("write rules");
    let cfg_path = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg_path,
        format!(
            "global:\n  evaluation_interval: 1s\n  external_labels:\n    dc: eu\nrule_files:\n  - 'rules/*.yml'\nscrape_configs:\n  - job_name: self\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .expect("write config");
    let mut child = Command::new(hearth_bin())
        .arg("--web.listen-address")
        .arg(&addr)
        .arg("--storage.tsdb.path")
        .arg(&data)
        .arg("--config.file")
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hearth");
    wait_ready(&addr, Duration::from_secs(30));

    let deadline = Instant::now() + Duration::from_secs(30);
    let alerts = loop {
        let v = get_json(&addr, "/api/v1/alerts");
        let alerts = v["data"]["alerts"].as_array().cloned().unwrap_or_default();
        if !alerts.is_empty() {
            break alerts;
        }
        assert!(Instant::now() < deadline, "no alert within 30s: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let a = &alerts[0];
    assert_eq!(a["state"], "firing");
    assert_eq!(a["labels"]["alertname"], "SelfUp");
    assert_eq!(a["labels"]["severity"], "info-self");
    assert_eq!(a["annotations"]["summary"], "self has 1 up in eu");
    assert_eq!(a["value"], "1e+00");

    let rules = get_json(&addr, "/api/v1/rules");
    assert_eq!(rules["status"], "success");
    let g = &rules["data"]["groups"][0];
    assert_eq!(g["name"], "self");
    assert_eq!(g["interval"], 1.0);
    assert!(
        g["file"].as_str().unwrap_or("").ends_with("self.yml"),
        "{g}"
    );
    assert_eq!(g["rules"][0]["type"], "recording");
    assert_eq!(g["rules"][0]["health"], "ok");
    assert_eq!(g["rules"][1]["type"], "alerting");
    assert_eq!(g["rules"][1]["state"], "firing");
    let only_alerts = get_json(&addr, "/api/v1/rules?type=alert");
    let rs = only_alerts["data"]["groups"][0]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(rs.len(), 1);

    // The recorded series and ALERTS are in storage, queryable like any other.
    let q = get_json(&addr, "/api/v1/query?query=job:up:sum");
    assert_eq!(q["data"]["result"][0]["value"][1], "1", "{q}");
    // ALERTS is written from the third evaluation on: as in Prometheus, a group
    // loaded at startup first restores its alerts' `for` state.
    let deadline = Instant::now() + Duration::from_secs(10);
    let q = loop {
        let q = get_json(&addr, "/api/v1/query?query=ALERTS");
        if q["data"]["result"][0].is_object() || Instant::now() > deadline {
            break q;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        q["data"]["result"][0]["metric"]["alertstate"], "firing",
        "{q}"
    );

    // The rule manager's own metrics, under Prometheus's names, one row per group.
    let (status, body) = http("GET", &addr, "/metrics", &[], b"").expect("GET /metrics");
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&body);
    let value = |name: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("self.yml;self\""))
            .unwrap_or_else(|| panic!("no {name} for group self in:\n{metrics}"));
        line.rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("value")
    };
    assert_eq!(value("prometheus_rule_group_rules{"), 2.0);
    assert_eq!(value("prometheus_rule_group_interval_seconds{"), 1.0);
    let iterations = value("prometheus_rule_group_iterations_total{");
    assert!(iterations >= 3.0, "iterations {iterations}");
    assert!(value("prometheus_rule_evaluations_total{") >= 2.0 * 3.0);
    assert_eq!(value("prometheus_rule_evaluation_failures_total{"), 0.0);
    assert!(value("prometheus_rule_group_last_evaluation_timestamp_seconds{") > 1.6e9);
    assert!(value("prometheus_rule_group_last_duration_seconds{") > 0.0);
    // One sample from the recording rule; ALERTS and ALERTS_FOR_STATE from the
    // firing alert (its `for` state was restored: ALERTS is in storage).
    assert_eq!(value("prometheus_rule_group_last_evaluation_samples{"), 3.0);

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert!(status.success(), "hearth exited with {status}");
}

const RESTORE_RULES: &str = "groups:\n  - name: restore\n    interval: 1s\n    rules:\n      - alert: Slow\n        expr: vector(1)\n        for: 20s\n";

/// Starts hearth over `data` with the rule file in `dir` and a 1s grace period, so
/// the 20s `for` is restored.
fn start_restoring(dir: &std::path::Path, addr: &str) -> std::process::Child {
    let child = Command::new(hearth_bin())
        .arg("--web.listen-address")
        .arg(addr)
        .arg("--storage.tsdb.path")
        .arg(dir.join("data"))
        .arg("--config.file")
        .arg(dir.join("prometheus.yml"))
        .arg("--rules.alert.for-grace-period=1s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hearth");
    wait_ready(addr, Duration::from_secs(30));
    child
}

/// The value of the one series `query` returns, if any.
fn query_one(addr: &str, query: &str) -> Option<f64> {
    let v = get_json(addr, &format!("/api/v1/query?query={query}"));
    v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
}

fn unix_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

#[test]
fn restart_in_the_middle_of_for_fires_on_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("rules.yml"), RESTORE_RULES).expect("write rules");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        "global:\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\n",
    )
    .expect("write config");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = start_restoring(dir.path(), &addr);

    // Pending for 12 of its 20s, then killed without warning.
    let deadline = Instant::now() + Duration::from_secs(30);
    let active_s = loop {
        if let Some(v) = query_one(&addr, "ALERTS_FOR_STATE") {
            break v;
        }
        assert!(Instant::now() < deadline, "no ALERTS_FOR_STATE within 30s");
        std::thread::sleep(Duration::from_millis(100));
    };
    while unix_s() < active_s + 12.0 {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        query_one(&addr, "ALERTS%7Balertstate%3D%22pending%22%7D"),
        Some(1.0)
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let killed_s = unix_s();

    let restarted_s = unix_s();
    let mut child = start_restoring(dir.path(), &addr);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if query_one(&addr, "ALERTS%7Balertstate%3D%22firing%22%7D").is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no firing alert within 40s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let fired_after_s = unix_s() - restarted_s;
    println!("FIGURE restart_to_firing_s={fired_after_s:.1}");
    let restored_s = query_one(&addr, "ALERTS_FOR_STATE").expect("ALERTS_FOR_STATE");
    // The 12s pending before the kill count: the active time moved forward only by
    // the time hearth was down, so it is before the restart, and the alert fired
    // sooner than a fresh 20s `for` could have.
    assert!(
        restored_s >= active_s && restored_s < restarted_s.floor(),
        "restored active time {restored_s}, first {active_s}, killed {killed_s}, restarted {restarted_s}"
    );
    assert!(
        fired_after_s < 20.0,
        "fired {fired_after_s:.1}s after the restart: a fresh `for`"
    );
    let alerts = get_json(&addr, "/api/v1/alerts");
    assert_eq!(alerts["data"]["alerts"][0]["state"], "firing", "{alerts}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert!(status.success(), "hearth exited with {status}");
}

/// Groups with these names and intervals (seconds), one recording rule each.
const PHASE_GROUPS: [(&str, i64); 4] = [
    ("phase-a", 1),
    ("phase-b", 2),
    ("phase-c", 3),
    ("a rather longer group name", 3),
];

/// The timestamps (ms) of the samples `metric` has within the last minute.
fn sample_times(addr: &str, metric: &str) -> Vec<i64> {
    let v = get_json(addr, &format!("/api/v1/query?query={metric}%5B1m%5D"));
    v["data"]["result"][0]["values"]
        .as_array()
        .map(|vals| {
            vals.iter()
                .filter_map(|p| p[0].as_f64())
                .map(|t| (t * 1000.0).round() as i64)
                .collect()
        })
        .unwrap_or_default()
}

/// Each group's phase (evaluation timestamp modulo interval, in ms) as a server
/// shows it in the timestamps of the samples its recording rules wrote, once
/// every group has written two.
fn phases(addr: &str) -> Vec<Vec<i64>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let times: Vec<Vec<i64>> = (0..PHASE_GROUPS.len())
            .map(|i| sample_times(addr, &format!("phase_{i}")))
            .collect();
        if times.iter().all(|t| t.len() >= 2) {
            return times
                .iter()
                .zip(PHASE_GROUPS)
                .map(|(ts, (_, iv))| ts.iter().map(|t| t.rem_euclid(iv * 1000)).collect())
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "no two evaluations per group within 30 s: {times:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The same rule file (same path, group names and intervals) evaluates at the
/// same phase in a real Prometheus 2.42 and in hearth, and that phase is
/// `Group::offset_ms` (XXH64 of the labels `{file, name}` modulo the interval).
#[test]
fn groups_evaluate_at_prometheus_s_phase() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = String::from("groups:\n");
    for (i, (name, iv)) in PHASE_GROUPS.iter().enumerate() {
        text.push_str(&format!(
            "  - name: '{name}'\n    interval: {iv}s\n    rules:\n      - record: phase_{i}\n        expr: vector({i})\n"
        ));
    }
    let rules = dir.path().join("phase.yml");
    std::fs::write(&rules, &text).expect("write rules");
    let config = format!("rule_files: ['{}']\n", rules.display());
    let prom = common::process::Server::prometheus(dir.path(), "prom", &config, &[]);
    let hearth = common::process::Server::hearth(dir.path(), "hearth", &config, &[]);

    let file = rules.display().to_string();
    let defs = hearth::rules::RuleGroups::parse(&text, "phase.yml").expect("parse");
    let want: Vec<i64> = defs
        .groups
        .iter()
        .map(|d| {
            hearth::rules::Group::new(d, &file, 60_000, &Default::default())
                .expect("group")
                .offset_ms()
        })
        .collect();
    let from_prom = phases(&prom.addr);
    let from_hearth = phases(&hearth.addr);
    for (i, (name, _)) in PHASE_GROUPS.iter().enumerate() {
        assert!(
            from_prom[i].iter().all(|&p| p == want[i]),
            "group {name:?}: Prometheus evaluated at phases {:?}, hearth computes {}",
            from_prom[i],
            want[i]
        );
        assert!(
            from_hearth[i].iter().all(|&p| p == want[i]),
            "group {name:?}: hearth evaluated at phases {:?}, not {}",
            from_hearth[i],
            want[i]
        );
    }
    // Distinct groups get distinct phases (a test that the hash is not constant).
    assert_ne!(want[2], want[3], "{want:?}");
}
