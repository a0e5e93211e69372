//! The Alertmanager pipeline end to end on tokio's paused clock: alerts posted to
//! the real API v2 over loopback, grouped, inhibited, silenced and deduplicated,
//! and delivered to a real webhook receiver on loopback. Times are virtual, so
//! the group_wait / group_interval / repeat_interval schedule is checked exactly.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use hearth::alertmanager::types::{add, format_rfc3339_nano, Clock};
use hearth::alertmanager::{api, config, Alertmanager, Options};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One webhook message as received: when (virtual time since the start), the
/// path it was posted to, and the JSON body.
#[derive(Debug)]
struct Received {
    at: Duration,
    path: String,
    body: Value,
}

/// A webhook receiver on loopback that forwards what it gets into a channel.
async fn webhook_receiver(t0: Instant) -> (String, mpsc::Receiver<Received>) {
    let (tx, rx) = mpsc::channel(64);
    let app = Router::new()
        .route(
            "/{path}",
            post(
                |State((tx, t0)): State<(mpsc::Sender<Received>, Instant)>,
                 Path(path): Path<String>,
                 body: Bytes| async move {
                    let body: Value = serde_json::from_slice(&body).expect("webhook body is JSON");
                    let _ = tx
                        .send(Received {
                            at: t0.elapsed(),
                            path,
                            body,
                        })
                        .await;
                    "ok"
                },
            ),
        )
        .with_state((tx, t0));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (format!("http://{addr}"), rx)
}

/// Starts an Alertmanager with `cfg` and serves its API on loopback.
async fn start_am(
    cfg: &str,
    storage: Option<std::path::PathBuf>,
) -> (Arc<Alertmanager>, String, CancellationToken) {
    let cfg = config::parse(cfg).unwrap();
    let clock = Clock::starting_at("2024-03-04T10:00:00Z".parse().unwrap());
    let opts = Options {
        storage_path: storage,
        external_url: "http://am.example".into(),
        ..Options::default()
    };
    let am = Alertmanager::start(cfg, opts, clock).unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(am.clone().run(cancel.clone()));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = api::router(am.clone());
    tokio::spawn(async move { axum::serve(l, app).await });
    (am, format!("http://{addr}"), cancel)
}

/// A small HTTP/1.1 client for JSON requests (hyper, loopback only).
async fn request(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    use http_body_util::{BodyExt, Full};
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let data = body
        .map(|b| serde_json::to_vec(&b).unwrap())
        .unwrap_or_default();
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(data)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, v)
}

async fn post_alerts(api: &str, alerts: Value) {
    let (status, body) = request("POST", &format!("{api}/api/v2/alerts"), Some(alerts)).await;
    assert_eq!(status, 200, "{body}");
}

/// Waits for the next webhook message, at most `within` of virtual time.
async fn next(rx: &mut mpsc::Receiver<Received>, within: Duration) -> Option<Received> {
    tokio::time::timeout(within, rx.recv()).await.ok().flatten()
}

fn statuses(msg: &Value) -> Vec<(String, String)> {
    msg["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["labels"]["instance"].as_str().unwrap_or("").to_string(),
                a["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const GROUPING: &str = r#"
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: URL/hook
"#;

#[tokio::test(start_paused = true)]
async fn group_wait_interval_repeat_and_resolve() {
    let t0 = Instant::now();
    let (url, mut rx) = webhook_receiver(t0).await;
    let (am, api, _cancel) = start_am(&GROUPING.replace("URL", &url), None).await;
    let now = am.clock.now();
    let far = format_rfc3339_nano(add(now, Duration::from_secs(24 * 3600)));
    let start = format_rfc3339_nano(now);
    let alert = |inst: &str, ends: &str| {
        json!({"labels": {"alertname": "A", "instance": inst}, "annotations": {"summary": "s"},
               "startsAt": start, "endsAt": ends, "generatorURL": "http://prom/graph"})
    };
    post_alerts(&api, json!([alert("1", &far)])).await;
    tokio::time::sleep_until(t0 + Duration::from_secs(10)).await;
    post_alerts(&api, json!([alert("2", &far)])).await;

    // First notification after group_wait, with both alerts.
    let m = next(&mut rx, Duration::from_secs(3600))
        .await
        .expect("first notification");
    assert_eq!(m.at, Duration::from_secs(30));
    assert_eq!(m.path, "hook");
    assert_eq!(m.body["version"], "4");
    assert_eq!(m.body["status"], "firing");
    assert_eq!(m.body["receiver"], "hook");
    assert_eq!(m.body["groupKey"], "{}:{alertname=\"A\"}");
    assert_eq!(m.body["groupLabels"], json!({"alertname": "A"}));
    assert_eq!(m.body["commonLabels"], json!({"alertname": "A"}));
    assert_eq!(m.body["commonAnnotations"], json!({"summary": "s"}));
    assert_eq!(m.body["externalURL"], "http://am.example");
    assert_eq!(m.body["truncatedAlerts"], 0);
    assert_eq!(
        statuses(&m.body),
        vec![("1".into(), "firing".into()), ("2".into(), "firing".into())]
    );
    assert_eq!(m.body["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(m.body["alerts"][0]["startsAt"], "2024-03-04T10:00:00Z");

    // Resolve instance 1 at 60s: sent at the next group_interval tick.
    tokio::time::sleep_until(t0 + Duration::from_secs(60)).await;
    let resolved_at = format_rfc3339_nano(am.clock.now());
    post_alerts(&api, json!([alert("1", &resolved_at)])).await;
    let m = next(&mut rx, Duration::from_secs(3600))
        .await
        .expect("resolved notification");
    assert_eq!(m.at, Duration::from_secs(330));
    assert_eq!(m.body["status"], "firing");
    assert_eq!(
        statuses(&m.body),
        vec![
            ("1".into(), "resolved".into()),
            ("2".into(), "firing".into())
        ]
    );
    assert_eq!(m.body["alerts"][0]["endsAt"], resolved_at.as_str());

    // Nothing changes: the next message is the repeat, at the first flush more
    // than repeat_interval after the last notification (330s + 1h = 3930s is a
    // flush tick but not strictly later, so 4230s).
    let m = next(&mut rx, Duration::from_secs(3 * 3600))
        .await
        .expect("repeat");
    assert_eq!(m.at, Duration::from_secs(4230));
    assert_eq!(statuses(&m.body), vec![("2".into(), "firing".into())]);

    // Resolving the last alert sends a resolved notification, then silence.
    let resolved_at = format_rfc3339_nano(am.clock.now());
    post_alerts(&api, json!([alert("2", &resolved_at)])).await;
    let m = next(&mut rx, Duration::from_secs(3600))
        .await
        .expect("all resolved");
    assert_eq!(m.at, Duration::from_secs(4530));
    assert_eq!(m.body["status"], "resolved");
    assert_eq!(statuses(&m.body), vec![("2".into(), "resolved".into())]);
    assert!(next(&mut rx, Duration::from_secs(5 * 3600)).await.is_none());
    let (total, failed) = am.metrics.counts("webhook");
    assert_eq!((total, failed), (4, 0));
}

const MUTING: &str = r#"
route:
  receiver: all
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - matchers: ['severity="critical"']
      receiver: crit
      group_by: ['...']
      continue: true
inhibit_rules:
  - source_matchers: [severity=critical]
    target_matchers: [severity=warning]
    equal: [cluster]
receivers:
  - name: all
    webhook_configs:
      - url: URL/all
        max_alerts: 1
        send_resolved: false
  - name: crit
    webhook_configs:
      - url: URL/crit
"#;

#[tokio::test(start_paused = true)]
async fn inhibition_silences_continue_and_max_alerts() {
    let t0 = Instant::now();
    let (url, mut rx) = webhook_receiver(t0).await;
    let (am, api, _cancel) = start_am(&MUTING.replace("URL", &url), None).await;
    let now = am.clock.now();
    let far = format_rfc3339_nano(add(now, Duration::from_secs(24 * 3600)));
    let a = |sev: &str, cluster: &str| {
        json!({"labels": {"alertname": "X", "severity": sev, "cluster": cluster},
               "startsAt": format_rfc3339_nano(now), "endsAt": far})
    };
    // A silence for cluster b, made through the API.
    let (status, body) = request(
        "POST",
        &format!("{api}/api/v2/silences"),
        Some(json!({
            "matchers": [{"name": "cluster", "value": "b", "isRegex": false, "isEqual": true}],
            "startsAt": format_rfc3339_nano(now),
            "endsAt": format_rfc3339_nano(add(now, Duration::from_secs(3600))),
            "createdBy": "test", "comment": "maintenance"
        })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let silence_id = body["silenceID"].as_str().unwrap().to_string();
    post_alerts(
        &api,
        json!([
            a("critical", "a"),
            a("warning", "a"),
            a("warning", "b"),
            a("warning", "c")
        ]),
    )
    .await;

    // At group_wait both groups flush. The critical alert takes only the "crit"
    // route (`continue` lets its siblings match too, but then the parent is not
    // a match of its own), grouped by all its labels. "all" gets the warning in
    // cluster c only: cluster a's is inhibited by the critical alert, cluster b's
    // silenced.
    let mut got = [
        next(&mut rx, Duration::from_secs(60)).await.unwrap(),
        next(&mut rx, Duration::from_secs(60)).await.unwrap(),
    ];
    got.sort_by(|x, y| x.path.cmp(&y.path));
    assert_eq!(
        (got[0].path.as_str(), got[0].at),
        ("all", Duration::from_secs(30))
    );
    assert_eq!(got[0].body["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(got[0].body["alerts"][0]["labels"]["cluster"], "c");
    assert_eq!(got[0].body["truncatedAlerts"], 0);
    assert_eq!(
        (got[1].path.as_str(), got[1].at),
        ("crit", Duration::from_secs(30))
    );
    assert_eq!(
        got[1].body["groupKey"],
        "{}/{severity=\"critical\"}:{alertname=\"X\", cluster=\"a\", severity=\"critical\"}"
    );

    // The API reports who is muted by what.
    let (_, alerts) = request("GET", &format!("{api}/api/v2/alerts"), None).await;
    let find = |cluster: &str, sev: &str| {
        alerts
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["labels"]["cluster"] == cluster && x["labels"]["severity"] == sev)
            .unwrap()
            .clone()
    };
    assert_eq!(find("a", "critical")["status"]["state"], "active");
    assert_eq!(
        find("a", "critical")["receivers"],
        json!([{"name": "crit"}])
    );
    assert_eq!(find("a", "warning")["status"]["state"], "suppressed");
    assert_eq!(
        find("a", "warning")["status"]["inhibitedBy"],
        json!([find("a", "critical")["fingerprint"]])
    );
    assert_eq!(
        find("b", "warning")["status"]["silencedBy"],
        json!([silence_id])
    );
    let (_, unmuted) = request(
        "GET",
        &format!(
            "{api}/api/v2/alerts?silenced=false&inhibited=false&filter=severity%3D%22warning%22"
        ),
        None,
    )
    .await;
    assert_eq!(unmuted.as_array().unwrap().len(), 1);
    let (_, groups) = request(
        "GET",
        &format!("{api}/api/v2/alerts/groups?receiver=all"),
        None,
    )
    .await;
    assert_eq!(groups.as_array().unwrap().len(), 1);
    assert_eq!(groups[0]["labels"], json!({"alertname": "X"}));
    assert_eq!(groups[0]["alerts"].as_array().unwrap().len(), 3);

    // Expiring the silence at 100s un-mutes cluster b: the "all" group's firing
    // set grows, so it notifies at the next tick, truncated to max_alerts.
    tokio::time::sleep_until(t0 + Duration::from_secs(100)).await;
    let (status, _) = request(
        "DELETE",
        &format!("{api}/api/v2/silence/{silence_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let m = next(&mut rx, Duration::from_secs(3600)).await.unwrap();
    assert_eq!((m.path.as_str(), m.at), ("all", Duration::from_secs(330)));
    assert_eq!(m.body["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(m.body["truncatedAlerts"], 1);
    // As in Alertmanager, the alerts are truncated first: the common labels are
    // those of the one alert sent.
    assert_eq!(
        m.body["commonLabels"],
        json!({"alertname": "X", "cluster": "b", "severity": "warning"})
    );

    // The critical source resolves: cluster a's warning is no longer inhibited
    // and "all" is told (three firing, two truncated); "crit" gets the resolved
    // alert (webhooks send resolved alerts by default).
    let resolved = format_rfc3339_nano(am.clock.now());
    post_alerts(
        &api,
        json!([{"labels": {"alertname": "X", "severity": "critical", "cluster": "a"}, "endsAt": resolved}]),
    )
    .await;
    let mut got = [
        next(&mut rx, Duration::from_secs(3600)).await.unwrap(),
        next(&mut rx, Duration::from_secs(3600)).await.unwrap(),
    ];
    got.sort_by(|x, y| x.path.cmp(&y.path));
    assert_eq!(
        (got[0].path.as_str(), got[0].at),
        ("all", Duration::from_secs(630))
    );
    assert_eq!(got[0].body["truncatedAlerts"], 2);
    assert_eq!(
        (got[1].path.as_str(), got[1].at),
        ("crit", Duration::from_secs(630))
    );
    assert_eq!(got[1].body["status"], "resolved");
    assert_eq!(got[1].body["alerts"][0]["status"], "resolved");
}

#[tokio::test(start_paused = true)]
async fn api_rejects_bad_input_and_stores_nothing() {
    let t0 = Instant::now();
    let (url, _rx) = webhook_receiver(t0).await;
    let (am, api, _cancel) = start_am(&GROUPING.replace("URL", &url), None).await;
    let alerts_url = format!("{api}/api/v2/alerts");
    let (s, body) = request("POST", &alerts_url, Some(json!({"labels": 1}))).await;
    assert_eq!(s, 400, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("parsing alerts body"));
    let (s, body) = request("POST", &alerts_url, Some(json!([{"annotations": {}}]))).await;
    assert_eq!(s, 422, "{body}");
    assert_eq!(body["message"], "0.labels in body is required");
    let (s, body) = request(
        "POST",
        &alerts_url,
        Some(json!([{"labels": {"a": "b"}, "startsAt": "yesterday"}])),
    )
    .await;
    assert_eq!(s, 422, "{body}");
    let (s, body) = request("POST", &alerts_url, Some(json!([{"labels": {}}]))).await;
    assert_eq!(s, 400);
    assert_eq!(body, "at least one label pair required");
    assert!(am.alerts.is_empty());
    let (s, body) = request("GET", &format!("{alerts_url}?filter=a%3D%22b"), None).await;
    assert_eq!(s, 400, "{body}");

    let sil_url = format!("{api}/api/v2/silences");
    let now = am.clock.now();
    let t = |secs: u64| format_rfc3339_nano(add(now, Duration::from_secs(secs)));
    let sil = |matchers: Value, start: String, end: String| json!({"matchers": matchers, "startsAt": start, "endsAt": end, "createdBy": "x", "comment": "y"});
    let (s, _) = request("POST", &sil_url, Some(sil(json!([]), t(0), t(60)))).await;
    assert_eq!(s, 422);
    let m = json!([{"name": "a", "value": "b", "isRegex": false}]);
    let (s, body) = request("POST", &sil_url, Some(sil(m.clone(), t(60), t(0)))).await;
    assert_eq!(s, 400);
    assert_eq!(
        body,
        "Failed to create silence: start time must be before end time"
    );
    let empty = json!([{"name": "a", "value": "", "isRegex": false}]);
    let (s, body) = request("POST", &sil_url, Some(sil(empty, t(0), t(60)))).await;
    assert_eq!(s, 400);
    assert!(
        body.as_str()
            .unwrap()
            .contains("must not match the empty string"),
        "{body}"
    );
    let bad_re = json!([{"name": "a", "value": "(", "isRegex": true}]);
    let (s, _) = request("POST", &sil_url, Some(sil(bad_re, t(0), t(60)))).await;
    assert_eq!(s, 400);
    assert!(am.silences.list().is_empty());
    let (s, _) = request("GET", &format!("{api}/api/v2/silence/nope"), None).await;
    assert_eq!(s, 404);
    let (s, _) = request("DELETE", &format!("{api}/api/v2/silence/nope"), None).await;
    assert_eq!(s, 404);

    let (s, body) = request("GET", &format!("{api}/api/v2/receivers"), None).await;
    assert_eq!((s, body), (200, json!([{"name": "hook"}])));
    let (s, body) = request("GET", &format!("{api}/api/v2/status"), None).await;
    assert_eq!(s, 200);
    assert_eq!(body["cluster"]["status"], "disabled");
    assert!(body["config"]["original"]
        .as_str()
        .unwrap()
        .contains("group_wait: 30s"));
}

#[tokio::test(start_paused = true)]
async fn silences_and_nflog_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let (url, mut rx) = webhook_receiver(t0).await;
    let cfg = GROUPING.replace("URL", &url);
    let (am, api, cancel) = start_am(&cfg, Some(dir.path().to_path_buf())).await;
    let now = am.clock.now();
    let far = format_rfc3339_nano(add(now, Duration::from_secs(24 * 3600)));
    let (s, body) = request(
        "POST",
        &format!("{api}/api/v2/silences"),
        Some(json!({"matchers": [{"name": "alertname", "value": "S", "isRegex": false}],
                    "startsAt": format_rfc3339_nano(now), "endsAt": far, "createdBy": "x", "comment": "y"})),
    )
    .await;
    assert_eq!(s, 200);
    let id = body["silenceID"].as_str().unwrap().to_string();
    let alert = json!([{"labels": {"alertname": "A"}, "endsAt": far}]);
    post_alerts(&api, alert.clone()).await;
    let m = next(&mut rx, Duration::from_secs(60)).await.unwrap();
    assert_eq!(m.at, Duration::from_secs(30));
    // The log entry is written once the receiver has answered.
    while am.nflog.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    // Let the final snapshot happen.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(dir.path().join("silences").exists());
    assert!(dir.path().join("nflog").exists());

    // A new Alertmanager on the same storage knows the silence, and the same
    // alert is not notified again before repeat_interval.
    let (am2, api2, _c2) = start_am(&cfg, Some(dir.path().to_path_buf())).await;
    assert_eq!(am2.silences.get(&id).unwrap().comment, "y");
    assert_eq!(am2.nflog.len(), 1);
    post_alerts(&api2, alert).await;
    assert!(next(&mut rx, Duration::from_secs(50 * 60)).await.is_none());
}
