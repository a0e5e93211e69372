//! hearth's alerts delivered to a real Alertmanager 0.25 (Debian
//! `prometheus-alertmanager`), which groups them and sends them to a webhook sink on
//! loopback as it would alerts from Prometheus: labels with the external labels
//! attached, annotations expanded with `$externalURL`, and a `generatorURL` under
//! `--web.external-url`.

mod common;

use common::process::Server;
use serde_json::Value;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A webhook sink: every JSON body POSTed to it, in arrival order.
fn webhook_sink() -> (String, Arc<Mutex<Vec<Value>>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let addr = l.local_addr().expect("sink address").to_string();
    let got = Arc::new(Mutex::new(Vec::new()));
    let got2 = got.clone();
    std::thread::spawn(move || {
        for mut conn in l.incoming().flatten() {
            let mut r = BufReader::new(conn.try_clone().expect("clone connection"));
            if let Some((_, body)) = common::read_request(&mut r) {
                if let Ok(v) = serde_json::from_slice(&body) {
                    got2.lock().expect("sink lock").push(v);
                }
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (format!("http://{addr}/hook"), got)
}

const RULES: &str = r#"groups:
  - name: always
    interval: 1s
    rules:
      - alert: AlwaysFiring
        expr: vector(3) > 1
        labels:
          severity: page
        annotations:
          summary: 'value {{ $value }}'
          link: '{{ $externalURL }}/alerts'
"#;

#[test]
fn alerts_reach_a_real_alertmanager_and_its_webhook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sink_url, got) = webhook_sink();
    let am = Server::alertmanager(
        dir.path(),
        "am",
        &format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs: [{{url: '{sink_url}'}}]\n"
        ),
    );
    std::fs::write(dir.path().join("rules.yml"), RULES).expect("write rules");
    let config = format!(
        "global:\n  evaluation_interval: 1s\n  external_labels:\n    dc: eu\nrule_files: ['{}']\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{}']\n",
        dir.path().join("rules.yml").display(),
        am.addr
    );
    let _hearth = Server::hearth(
        dir.path(),
        "hearth",
        &config,
        &["--web.external-url=http://hearth.example:9090/prefix/"],
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let msg = loop {
        if let Some(m) = got.lock().expect("sink lock").first().cloned() {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "the Alertmanager sent nothing within 60 s; its log:\n{}",
            am.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(msg["status"], "firing", "{msg}");
    assert_eq!(msg["receiver"], "hook");
    assert_eq!(msg["groupLabels"]["alertname"], "AlwaysFiring", "{msg}");
    let alerts = msg["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1, "{msg}");
    let a = &alerts[0];
    assert_eq!(a["status"], "firing");
    assert_eq!(a["labels"]["alertname"], "AlwaysFiring");
    assert_eq!(a["labels"]["severity"], "page");
    assert_eq!(a["labels"]["dc"], "eu", "external labels are attached: {a}");
    assert_eq!(a["annotations"]["summary"], "value 3");
    assert_eq!(
        a["annotations"]["link"],
        "http://hearth.example:9090/prefix/alerts"
    );
    let generator = a["generatorURL"].as_str().unwrap_or("");
    assert!(
        generator.starts_with("http://hearth.example:9090/prefix/graph?g0.expr=vector%283%29"),
        "generatorURL {generator}"
    );
    assert_eq!(
        a["endsAt"], "0001-01-01T00:00:00Z",
        "a firing alert has no end: {a}"
    );
}

/// With the built-in Alertmanager (`--alertmanager.config.file`) and no
/// `alerting` section, a node's alerts go to its own Alertmanager.
#[test]
fn alerts_reach_the_built_in_alertmanager() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sink_url, got) = webhook_sink();
    let am_config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n  - name: hook\n    webhook_configs: [{{url: '{sink_url}'}}]\n"
        ),
    )
    .expect("write alertmanager.yml");
    std::fs::write(dir.path().join("rules.yml"), RULES).expect("write rules");
    let config = format!(
        "global:\n  evaluation_interval: 1s\nrule_files: ['{}']\n",
        dir.path().join("rules.yml").display()
    );
    let am_flag = format!("--alertmanager.config.file={}", am_config.display());
    let hearth = Server::hearth(dir.path(), "hearth", &config, &[am_flag.as_str()]);

    let deadline = Instant::now() + Duration::from_secs(60);
    let msg = loop {
        if let Some(m) = got.lock().expect("sink lock").first().cloned() {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "the built-in Alertmanager sent nothing within 60 s; hearth's log:\n{}",
            hearth.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(msg["status"], "firing", "{msg}");
    assert_eq!(
        msg["alerts"][0]["labels"]["alertname"], "AlwaysFiring",
        "{msg}"
    );
    assert_eq!(msg["alerts"][0]["labels"]["severity"], "page", "{msg}");
}

/// The sorted URLs of `GET /api/v1/alertmanagers`' active and dropped lists.
fn alertmanager_urls(server: &Server) -> (Vec<String>, Vec<String>) {
    let (code, v) = server.get_json("/api/v1/alertmanagers");
    assert_eq!(code, 200, "{v}");
    let urls = |key: &str| {
        let mut u: Vec<String> = v["data"][key]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x["url"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        u.sort();
        u
    };
    (urls("activeAlertmanagers"), urls("droppedAlertmanagers"))
}

/// Waits until both servers list exactly `active` and `dropped`.
fn wait_both(servers: &[&Server], active: &[&str], dropped: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: Vec<_> = servers.iter().map(|s| alertmanager_urls(s)).collect();
        if got.iter().all(|(a, d)| a == active && d == dropped) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus, hearth: {got:#?}; want active {active:?}, dropped {dropped:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `alerting.alertmanagers` with static targets, `file_sd_configs` (JSON and
/// YAML, a glob) and `relabel_configs`: hearth's `GET /api/v1/alertmanagers`
/// lists the same active and dropped URLs as a real Prometheus 2.42 on the same
/// config, and both follow a change of a discovery file.
#[test]
fn alertmanagers_api_matches_prometheus_with_file_sd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ams = dir.path().join("ams.json");
    let more = dir.path().join("more");
    std::fs::create_dir(&more).expect("mkdir");
    std::fs::write(
        &ams,
        r#"[{"targets": ["127.0.0.1:29093", "127.0.0.1:39093"], "labels": {"env": "prod"}},
           {"targets": ["127.0.0.1:49093"], "labels": {"env": "test"}}]"#,
    )
    .expect("write ams.json");
    std::fs::write(more.join("a.yml"), "- targets: ['localhost:9443']\n").expect("write a.yml");
    let config = format!(
        "alerting:\n  alertmanagers:\n    - path_prefix: /am/\n      static_configs:\n        - targets: ['127.0.0.1:19093']\n      file_sd_configs:\n        - files: ['{}']\n      relabel_configs:\n        - source_labels: [env]\n          regex: test\n          action: drop\n    - scheme: https\n      file_sd_configs:\n        - files: ['{}']\n",
        ams.display(),
        more.join("*.yml").display()
    );
    let prom = Server::prometheus(dir.path(), "prom", &config, &[]);
    let hearth = Server::hearth(dir.path(), "hearth", &config, &[]);
    wait_both(
        &[&prom, &hearth],
        &[
            "http://127.0.0.1:19093/am/api/v2/alerts",
            "http://127.0.0.1:29093/am/api/v2/alerts",
            "http://127.0.0.1:39093/am/api/v2/alerts",
            "https://localhost:9443/api/v2/alerts",
        ],
        &["http://127.0.0.1:49093/am/api/v2/alerts"],
    );
    // A target leaves the file and another is no longer dropped.
    std::fs::write(
        &ams,
        r#"[{"targets": ["127.0.0.1:29093"], "labels": {"env": "prod"}},
           {"targets": ["127.0.0.1:49093"], "labels": {"env": "staging"}}]"#,
    )
    .expect("rewrite ams.json");
    wait_both(
        &[&prom, &hearth],
        &[
            "http://127.0.0.1:19093/am/api/v2/alerts",
            "http://127.0.0.1:29093/am/api/v2/alerts",
            "http://127.0.0.1:49093/am/api/v2/alerts",
            "https://localhost:9443/api/v2/alerts",
        ],
        &[],
    );
}
