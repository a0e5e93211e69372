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
    let q = get_json(&addr, "/api/v1/query?query=ALERTS");
    assert_eq!(
        q["data"]["result"][0]["metric"]["alertstate"], "firing",
        "{q}"
    );

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert!(status.success(), "hearth exited with {status}");
}
