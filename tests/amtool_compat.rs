//! The real `amtool` (Debian package `prometheus-alertmanager`) against hearth's
//! Alertmanager API v2 on loopback: alerts added and queried, silences added,
//! queried and expired, routes tested against the served config, cluster status.
//! amtool must be installed (`.ci/install-deps`); a missing amtool fails.

use hearth::alertmanager::types::Clock;
use hearth::alertmanager::{api, config, Alertmanager, Options};
use serde_json::Value;
use std::process::Command;
use tokio::net::TcpListener;

const CONFIG: &str = r#"
route:
  receiver: default
  group_by: [alertname]
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
receivers:
  - name: default
  - name: pager
"#;

/// Runs amtool against `url` and returns stdout; a failure shows stderr.
async fn amtool(url: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("amtool");
    cmd.arg(format!("--alertmanager.url={url}")).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("running amtool (install prometheus-alertmanager): {e}"));
    assert!(
        out.status.success(),
        "amtool {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn amtool_json(url: &str, args: &[&str]) -> Value {
    let mut a = vec!["-o", "json"];
    a.extend_from_slice(args);
    let out = amtool(url, &a).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("amtool {args:?} output {out:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amtool_alerts_silences_routes_and_status() {
    let am = Alertmanager::start(
        config::parse(CONFIG).unwrap(),
        Options::default(),
        Clock::system(),
    )
    .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let app = api::router(am.clone());
    tokio::spawn(async move { axum::serve(l, app).await });

    amtool(
        &url,
        &[
            "alert",
            "add",
            "alertname=Disk",
            "severity=critical",
            "instance=a",
            "--annotation=summary=full",
        ],
    )
    .await;
    amtool(&url, &["alert", "add", "alertname=Cpu", "severity=warning"]).await;
    let alerts = amtool_json(&url, &["alert", "query"]).await;
    let alerts = alerts.as_array().unwrap();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let disk = alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == "Disk")
        .unwrap();
    assert_eq!(disk["annotations"]["summary"], "full");
    assert_eq!(disk["receivers"][0]["name"], "pager");
    assert_eq!(disk["status"]["state"], "active");

    // A silence through amtool mutes the alert; the default query hides it.
    let id = amtool(
        &url,
        &[
            "silence",
            "add",
            "alertname=Disk",
            "--comment=disk work",
            "--author=ops",
            "--duration=1h",
        ],
    )
    .await
    .trim()
    .to_string();
    assert_eq!(id.len(), 36, "silence ID {id:?}");
    let sils = amtool_json(&url, &["silence", "query"]).await;
    assert_eq!(sils[0]["id"], id.as_str());
    assert_eq!(sils[0]["status"]["state"], "active");
    assert_eq!(sils[0]["createdBy"], "ops");
    assert_eq!(sils[0]["matchers"][0]["name"], "alertname");
    let quiet = amtool(&url, &["silence", "query", "-q", "alertname=Disk"]).await;
    assert_eq!(quiet.trim(), id);
    let shown = amtool_json(&url, &["alert", "query"]).await;
    assert_eq!(shown.as_array().unwrap().len(), 1, "{shown}");
    let all = amtool_json(&url, &["alert", "query", "--silenced"]).await;
    let disk = all
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == "Disk")
        .unwrap()
        .clone();
    assert_eq!(disk["status"]["silencedBy"][0], id.as_str());

    // Expiring it through amtool.
    amtool(&url, &["silence", "expire", &id]).await;
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    let expired = amtool_json(&url, &["silence", "query", "--expired"]).await;
    assert_eq!(expired[0]["status"]["state"], "expired");
    assert!(amtool_json(&url, &["silence", "query"])
        .await
        .as_array()
        .unwrap()
        .is_empty());

    // amtool reads the served config and routes a label set through it.
    let routed = amtool(&url, &["config", "routes", "test", "severity=critical"]).await;
    assert_eq!(routed.trim(), "pager");
    let status = amtool(&url, &["cluster", "show"]).await;
    assert!(status.contains("disabled"), "{status}");
}

/// `amtool check-config` and hearth's check agree on which files are valid.
#[test]
fn check_config_agrees_with_amtool() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (CONFIG, true),
        ("route: {receiver: a, group_by: ['...']}\nreceivers: [{name: a}]\n", true),
        (
            "route: {receiver: a}\nreceivers: [{name: a}]\ntime_intervals: [{name: w, time_intervals: [{weekdays: ['monday:friday'], times: [{start_time: '09:00', end_time: '17:00'}]}]}]\n",
            true,
        ),
        ("route: {receiver: b}\nreceivers: [{name: a}]\n", false),
        ("route: {receiver: a, matchers: [x=y]}\nreceivers: [{name: a}]\n", false),
        ("route: {receiver: a, routes: [{matchers: ['a=\"b']}]}\nreceivers: [{name: a}]\n", false),
        ("route: {receiver: a, group_interval: 0s}\nreceivers: [{name: a}]\n", false),
        ("route: {receiver: a}\nreceivers: [{name: a, webhook_configs: [{}]}]\n", false),
        ("route: {receiver: a}\nreceivers: [{name: a}, {name: a}]\n", false),
        ("route: {receiver: a, bogus: 1}\nreceivers: [{name: a}]\n", false),
        ("receivers: [{name: a}]\n", false),
    ];
    for (i, (text, valid)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("am{i}.yml"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new("amtool")
            .arg("check-config")
            .arg(&path)
            .output()
            .expect("running amtool (install prometheus-alertmanager)");
        assert_eq!(out.status.success(), *valid, "amtool on case {i}: {text}");
        let ours = hearth::alertmanager::check_config_file(&path);
        assert_eq!(ours.is_ok(), *valid, "hearth on case {i}: {text}: {ours:?}");
        if let Err(e) = ours {
            assert!(e.to_string().contains(&format!("am{i}.yml")), "{e}");
        }
    }
}
