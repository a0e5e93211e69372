//! Side by side with the real Alertmanager 0.25 (Debian `prometheus-alertmanager`):
//! both get the same `alertmanager.yml` and the same timed sequence of alerts,
//! silences and resolutions over API v2, and must send the same webhook
//! notifications — the same groups, the same alerts with the same status in
//! each, in the same order, each within one group_interval of the other's —
//! and every webhook body byte for byte the same as the real one's (Go's JSON
//! escaping of `<`, `>`, `&`, the receiver name regex-quoted, `max_alerts`
//! truncation, firing alerts' zero `endsAt`, the trailing newline).
//!
//! The sequence covers grouping, `group_by: ['...']`, `continue`, inhibition
//! (and its end), a silence expired mid-sequence, a silence added
//! mid-sequence, repeat_interval, resolution, and routes muted or made active
//! by time intervals. Events happen half-way between
//! flush ticks (group_wait 1s, group_interval 2s), so millisecond differences
//! between the two processes cannot change the outcome.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
route:
  receiver: default
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 5s
  routes:
    - matchers: ['team="db"']
      receiver: db
      group_by: ['...']
      continue: true
    - matchers: ['team="db"']
      receiver: db.team
      group_by: [team]
    - matchers: ['alertname="Muted"']
      receiver: default
      mute_time_intervals: [always]
    - matchers: ['alertname=~"Active|Inactive"']
      receiver: default
      routes:
        - matchers: ['alertname="Active"']
          active_time_intervals: [always]
        - matchers: ['alertname="Inactive"']
          active_time_intervals: [long-ago]
time_intervals:
  - name: always
    time_intervals:
      - times: [{start_time: '00:00', end_time: '24:00'}]
  - name: long-ago
    time_intervals:
      - years: ['1999']
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [cluster]
receivers:
  - name: default
    webhook_configs: [{url: 'SINK/default', send_resolved: true}]
  - name: db
    webhook_configs: [{url: 'SINK/db', send_resolved: true}]
  - name: db.team
    webhook_configs: [{url: 'SINK/db-team', send_resolved: true, max_alerts: 1}]
"#;

/// One webhook message as received.
#[derive(Debug, Clone)]
struct Received {
    /// Since the sequence started.
    at: Duration,
    /// `real` or `hearth`.
    who: String,
    receiver_path: String,
    body: Value,
    /// The body exactly as sent.
    raw: Vec<u8>,
}

/// A webhook sink on loopback (plain std threads): `POST /<who>/<receiver>`.
fn start_sink(t0: Arc<Mutex<Option<Instant>>>) -> (String, Arc<Mutex<Vec<Received>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let got = Arc::new(Mutex::new(Vec::new()));
    let got2 = got.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let got = got2.clone();
            let t0 = t0.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let Some((path, body)) = read_request(&mut r) else {
                    return;
                };
                let at = t0.lock().unwrap().map(|t| t.elapsed()).unwrap_or_default();
                let mut parts = path.trim_start_matches('/').splitn(2, '/');
                let who = parts.next().unwrap_or("").to_string();
                let receiver_path = parts.next().unwrap_or("").to_string();
                if let Ok(parsed) = serde_json::from_slice(&body) {
                    got.lock().unwrap().push(Received {
                        at,
                        who,
                        receiver_path,
                        body: parsed,
                        raw: body,
                    });
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            });
        }
    });
    (format!("http://{addr}"), got)
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_real(dir: &std::path::Path, addr: &str) -> Proc {
    Proc(
        Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", dir.join("real.yml").display()))
            .arg(format!(
                "--storage.path={}",
                dir.join("real-data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .arg("--web.external-url=http://am.example")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus-alertmanager (Debian package prometheus-alertmanager)"),
    )
}

fn start_hearth(dir: &std::path::Path, addr: &str) -> Proc {
    Proc(
        Command::new(hearth_bin())
            .arg("alertmanager")
            .arg(format!(
                "--config.file={}",
                dir.join("hearth.yml").display()
            ))
            .arg(format!(
                "--storage.path={}",
                dir.join("hearth-data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--web.external-url=http://am.example")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hearth alertmanager"),
    )
}

fn now_plus(secs: i64) -> String {
    (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(secs)).to_string()
}

fn alert(labels: Value, ends_in_secs: i64) -> Value {
    // Characters Go's JSON encoder escapes, and a non-ASCII one it does not.
    json!({"labels": labels, "annotations": {"summary": "side <by> & side", "note": "é\t\"q\""},
           "startsAt": now_plus(0), "endsAt": now_plus(ends_in_secs),
           "generatorURL": "http://prom.example/graph?g0.expr=up&g0.tab=1"})
}

fn post(addrs: &[String], path: &str, body: &Value) -> Vec<Value> {
    addrs
        .iter()
        .map(|a| {
            let (code, resp) = http(
                "POST",
                a,
                path,
                &[("Content-Type", "application/json")],
                body.to_string().as_bytes(),
            )
            .expect("post");
            assert_eq!(code, 200, "{a}{path}: {}", String::from_utf8_lossy(&resp));
            serde_json::from_slice(&resp).unwrap_or(Value::Null)
        })
        .collect()
}

fn silence(addrs: &[String], name: &str, value: &str) -> Vec<String> {
    let s = json!({"matchers": [{"name": name, "value": value, "isRegex": false, "isEqual": true}],
                   "startsAt": now_plus(0), "endsAt": now_plus(3600),
                   "createdBy": "test", "comment": "side by side"});
    post(addrs, "/api/v2/silences", &s)
        .into_iter()
        .map(|v| v["silenceID"].as_str().expect("silenceID").to_string())
        .collect()
}

/// Sleeps until `secs` after `t0`.
fn at(t0: Instant, secs: f64) {
    let target = t0 + Duration::from_secs_f64(secs);
    if let Some(d) = target.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

/// Receiver path, group key, overall status, and (labels, status) per alert.
type Summary = (
    String,
    String,
    String,
    Vec<(BTreeMap<String, String>, String)>,
);

/// A notification reduced to what must match: receiver, group key, overall
/// status, and each alert's labels with its status, in order.
fn summary(m: &Received) -> Summary {
    let alerts = m.body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let labels = a["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            (labels, a["status"].as_str().unwrap_or("").to_string())
        })
        .collect();
    (
        m.receiver_path.clone(),
        m.body["groupKey"].as_str().unwrap_or("").to_string(),
        m.body["status"].as_str().unwrap_or("").to_string(),
        alerts,
    )
}

#[test]
fn same_notifications_as_alertmanager_0_25() {
    let tmp = tempfile::tempdir().unwrap();
    let t0_cell = Arc::new(Mutex::new(None));
    let (sink, got) = start_sink(t0_cell.clone());
    std::fs::write(
        tmp.path().join("real.yml"),
        CONFIG.replace("SINK", &format!("{sink}/real")),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("hearth.yml"),
        CONFIG.replace("SINK", &format!("{sink}/hearth")),
    )
    .unwrap();
    let real_addr = format!("127.0.0.1:{}", free_port());
    let hearth_addr = format!("127.0.0.1:{}", free_port());
    let _real = start_real(tmp.path(), &real_addr);
    let _hearth = start_hearth(tmp.path(), &hearth_addr);
    wait_ready(&real_addr, Duration::from_secs(30));
    wait_ready(&hearth_addr, Duration::from_secs(30));
    let both = [real_addr.clone(), hearth_addr.clone()];

    // Before the first alert: a silence that is expired at 4s.
    let early = silence(&both, "alertname", "Silenced");
    let t0 = Instant::now();
    *t0_cell.lock().unwrap() = Some(t0);
    let load = |inst: &str| json!({"alertname": "HighLoad", "instance": inst});
    let db = |name: &str, inst: &str| json!({"alertname": name, "team": "db", "instance": inst});
    let critical = json!({"alertname": "NodeDown", "severity": "critical", "cluster": "c1"});
    let warning = json!({"alertname": "Latency", "severity": "warning", "cluster": "c1"});
    let silenced = json!({"alertname": "Silenced", "instance": "s"});

    // t=0: two alerts of one group, a db alert (two routes via continue), an
    // inhibiting critical alert and its warning target, a silenced alert.
    post(
        &both,
        "/api/v2/alerts",
        &json!([
            alert(load("a"), 3600),
            alert(load("b"), 3600),
            alert(db("DbDown", "x"), 3600),
            alert(critical.clone(), 3600),
            alert(warning, 3600),
            alert(silenced, 3600),
            alert(json!({"alertname": "Muted"}), 3600),
            alert(json!({"alertname": "Active"}), 3600),
            alert(json!({"alertname": "Inactive"}), 3600)
        ]),
    );
    // t=2: a second db alert (a new '...' group, and a change in the team
    // group); a silence on instance b, which then drops out of later messages.
    at(t0, 2.0);
    post(
        &both,
        "/api/v2/alerts",
        &json!([alert(db("DbSlow", "y"), 3600)]),
    );
    silence(&both, "instance", "b");
    // t=4: the early silence is expired, and the critical alert resolves, which
    // ends the inhibition of the warning.
    at(t0, 4.0);
    for (addr, id) in both.iter().zip(&early) {
        let (code, body) = http("DELETE", addr, &format!("/api/v2/silence/{id}"), &[], b"")
            .expect("expire silence");
        assert_eq!(code, 200, "{addr}: {}", String::from_utf8_lossy(&body));
    }
    post(&both, "/api/v2/alerts", &json!([alert(critical, 0)]));
    // t=8: instance a resolves (after its repeat at 7s).
    at(t0, 8.0);
    post(&both, "/api/v2/alerts", &json!([alert(load("a"), 0)]));
    at(t0, 12.5);

    let got = got.lock().unwrap().clone();
    let by = |who: &str| -> BTreeMap<(String, String), Vec<Received>> {
        let mut m: BTreeMap<(String, String), Vec<Received>> = BTreeMap::new();
        for r in got.iter().filter(|r| r.who == who) {
            let key = (
                r.receiver_path.clone(),
                r.body["groupKey"].as_str().unwrap_or("").to_string(),
            );
            m.entry(key).or_default().push(r.clone());
        }
        m
    };
    let (real, ours) = (by("real"), by("hearth"));
    let show = |m: &BTreeMap<(String, String), Vec<Received>>| {
        m.iter()
            .map(|(k, v)| {
                format!(
                    "{k:?}: {:?}",
                    v.iter().map(|r| (r.at, summary(r).3)).collect::<Vec<_>>()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    eprintln!(
        "real Alertmanager:\n{}\nhearth:\n{}",
        show(&real),
        show(&ours)
    );
    assert!(
        real.len() >= 6,
        "the real Alertmanager notified the groups:\n{}",
        show(&real)
    );
    assert_eq!(
        real.keys().collect::<Vec<_>>(),
        ours.keys().collect::<Vec<_>>(),
        "same groups\nreal:\n{}\nhearth:\n{}",
        show(&real),
        show(&ours)
    );
    for (key, theirs) in &real {
        let mine = &ours[key];
        let a: Vec<_> = theirs.iter().map(summary).collect();
        let b: Vec<_> = mine.iter().map(summary).collect();
        assert_eq!(
            a,
            b,
            "group {key:?}\nreal:\n{}\nhearth:\n{}",
            show(&real),
            show(&ours)
        );
        for (x, y) in theirs.iter().zip(mine) {
            // Both get the same alerts (with the same timestamps) and the same
            // --web.external-url, so nothing needs normalising.
            assert_eq!(
                String::from_utf8_lossy(&x.raw),
                String::from_utf8_lossy(&y.raw),
                "group {key:?}: the webhook bodies differ (real first)"
            );
            let diff = x.at.abs_diff(y.at);
            assert!(
                diff <= Duration::from_secs(2),
                "group {key:?}: real at {:?}, hearth at {:?}",
                x.at,
                y.at
            );
        }
    }
    // The sequence exercised what it claims to.
    let all: Vec<_> = real.values().flatten().map(summary).collect();
    let has = |name: &str, status: &str| {
        all.iter().any(|s| {
            s.3.iter()
                .any(|(l, st)| l.get("alertname").map(String::as_str) == Some(name) && st == status)
        })
    };
    assert!(has("Latency", "firing"), "inhibition ended");
    assert!(has("Silenced", "firing"), "silence expired");
    assert!(has("NodeDown", "resolved") && has("HighLoad", "resolved"));
    assert!(has("Active", "firing"), "active time interval");
    assert!(!has("Muted", "firing"), "mute time interval");
    assert!(!has("Inactive", "firing"), "inactive time interval");
    let highload = &real[&(
        "default".to_string(),
        "{}:{alertname=\"HighLoad\"}".to_string(),
    )];
    assert!(highload.len() >= 3, "first, repeat and resolved messages");
    let team = real
        .iter()
        .find(|(k, _)| k.0 == "db-team")
        .map(|(_, v)| v)
        .expect("the db team group notified");
    assert!(
        team.iter().any(|m| m.body["truncatedAlerts"] == 1),
        "max_alerts truncated a message"
    );
    assert_eq!(
        team[0].body["receiver"], "db\\.team",
        "receiver regex-quoted"
    );
    assert!(team[0].raw.ends_with(b"}\n"));
    assert_eq!(summary(&highload[1]).3.len(), 1, "instance b silenced");
}
