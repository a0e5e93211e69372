//! The email and Slack receivers against real servers on loopback: an SMTP sink
//! the test runs itself and a Slack-compatible webhook sink. Also the retry
//! stage (server errors retried with backoff, client errors not) and the
//! per-integration metrics Alertmanager exports.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use hearth::alertmanager::types::{zero_time, Alert, Clock};
use hearth::alertmanager::{config, Alertmanager, Options};
use hearth::labels::Labels;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the SMTP sink saw in one session.
#[derive(Debug, Default)]
struct Mail {
    ehlo: String,
    auth: Vec<String>,
    from: String,
    rcpt: Vec<String>,
    data: String,
}

/// An SMTP server on loopback that accepts every message (after `AUTH PLAIN`
/// or `AUTH LOGIN` when it advertises them) and forwards each session.
async fn smtp_sink(advertise_auth: bool) -> (String, mpsc::Receiver<Mail>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = l.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                let mut mail = Mail::default();
                w.write_all(b"220 sink.test ESMTP\r\n").await.unwrap();
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let cmd = line.trim_end().to_string();
                    let upper = cmd.to_ascii_uppercase();
                    let reply: &[u8] = if let Some(name) = upper.strip_prefix("EHLO ") {
                        mail.ehlo = name.to_lowercase();
                        if advertise_auth {
                            b"250-sink.test\r\n250-8BITMIME\r\n250 AUTH PLAIN LOGIN\r\n"
                        } else {
                            b"250-sink.test\r\n250 8BITMIME\r\n"
                        }
                    } else if upper.starts_with("AUTH ") {
                        mail.auth.push(cmd.clone());
                        b"235 2.7.0 ok\r\n"
                    } else if upper.starts_with("MAIL FROM:") {
                        mail.from = cmd[10..].to_string();
                        b"250 ok\r\n"
                    } else if upper.starts_with("RCPT TO:") {
                        mail.rcpt.push(cmd[8..].to_string());
                        b"250 ok\r\n"
                    } else if upper == "DATA" {
                        w.write_all(b"354 go on\r\n").await.unwrap();
                        let mut data = String::new();
                        loop {
                            let mut l = String::new();
                            if r.read_line(&mut l).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if l == ".\r\n" {
                                break;
                            }
                            data.push_str(l.strip_prefix('.').unwrap_or(&l));
                        }
                        mail.data = data;
                        b"250 queued\r\n"
                    } else if upper == "QUIT" {
                        w.write_all(b"221 bye\r\n").await.unwrap();
                        let _ = tx.send(std::mem::take(&mut mail)).await;
                        return;
                    } else {
                        b"502 unknown\r\n"
                    };
                    w.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (addr, rx)
}

/// A JSON webhook sink on loopback; it answers 500 to the first `fail_first`
/// requests (or `status` to every request when set) and forwards each body.
async fn http_sink(
    fail_first: usize,
    status: Option<u16>,
) -> (String, mpsc::Receiver<Value>, Arc<AtomicUsize>) {
    let (tx, rx) = mpsc::channel(64);
    let hits = Arc::new(AtomicUsize::new(0));
    let state = (tx, hits.clone());
    let app = Router::new()
        .route(
            "/hook",
            post(
                move |State((tx, hits)): State<(mpsc::Sender<Value>, Arc<AtomicUsize>)>,
                      body: Bytes| async move {
                    let n = hits.fetch_add(1, Ordering::SeqCst);
                    if let Some(s) = status {
                        return (StatusCode::from_u16(s).unwrap(), "no");
                    }
                    if n < fail_first {
                        return (StatusCode::INTERNAL_SERVER_ERROR, "try later");
                    }
                    let v: Value = serde_json::from_slice(&body).expect("JSON body");
                    let _ = tx.send(v).await;
                    (StatusCode::OK, "ok")
                },
            ),
        )
        .with_state(state);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (format!("http://{addr}/hook"), rx, hits)
}

fn start(cfg: &str) -> (Arc<Alertmanager>, CancellationToken) {
    let cfg = config::parse(cfg).unwrap();
    let opts = Options {
        external_url: "http://am.example:9093".into(),
        ..Options::default()
    };
    let am = Alertmanager::start(cfg, opts, Clock::system()).unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(am.clone().run(cancel.clone()));
    (am, cancel)
}

fn alert(am: &Alertmanager, pairs: &[(&str, &str)], resolved: bool) -> Alert {
    let now = am.clock.now();
    Alert {
        labels: Labels::from_pairs(pairs),
        annotations: BTreeMap::from([("summary".to_string(), "disk full".to_string())]).into(),
        starts_at: now - jiff::SignedDuration::from_secs(60),
        ends_at: if resolved { now } else { zero_time() },
        generator_url: "http://prom/graph".into(),
        updated_at: now,
        timeout: false,
    }
}

async fn recv<T>(rx: &mut mpsc::Receiver<T>, what: &str) -> T {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} within 30s"))
        .unwrap_or_else(|| panic!("{what} sink closed"))
}

/// Waits until `integration` has counted `want` (notifications, failed); the
/// sink sees a message just before the sender counts it.
async fn wait_counts(am: &Alertmanager, integration: &str, want: (u64, u64)) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while am.metrics.counts(integration) != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{integration}: counts {:?}, want {want:?}",
            am.metrics.counts(integration)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of header `name` in a message's header block.
fn header(data: &str, name: &str) -> Option<String> {
    let head = data.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n")
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::to_string)
}

const EMAIL: &str = r#"
global:
  smtp_smarthost: SMARTHOST
  smtp_from: 'Alertmanager <am@example.org>'
  smtp_hello: hearth.test
  smtp_auth_username: user
  smtp_auth_password: secret
  smtp_require_tls: false
route:
  receiver: mail
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 1s
receivers:
  - name: mail
    email_configs:
      - to: 'ops@example.org, Dev Team <dev@example.org>'
        send_resolved: true
        headers:
          x-alert-status: '{{ .Status }}'
        text: 'status {{ .Status }} of {{ .CommonLabels.alertname }} = x'
"#;

#[tokio::test]
async fn email_goes_over_smtp_with_global_defaults_auth_and_both_parts() {
    let (addr, mut rx) = smtp_sink(true).await;
    let (am, cancel) = start(&EMAIL.replace("SMARTHOST", &addr));
    let firing = alert(&am, &[("alertname", "DiskFull"), ("instance", "a")], false);
    assert_eq!(am.put_alerts(vec![firing]).accepted, 1);
    let mail = recv(&mut rx, "firing email").await;
    assert_eq!(mail.ehlo, "hearth.test");
    // AUTH PLAIN of "\0user\0secret": loopback may receive it without TLS.
    assert_eq!(mail.auth, vec!["AUTH PLAIN AHVzZXIAc2VjcmV0"]);
    assert_eq!(mail.from, "<am@example.org>");
    assert_eq!(mail.rcpt, vec!["<ops@example.org>", "<dev@example.org>"]);
    let d = &mail.data;
    assert!(!header(d, "Subject").unwrap_or_default().is_empty(), "{d}");
    assert_eq!(
        header(d, "To").as_deref(),
        Some("ops@example.org, Dev Team <dev@example.org>")
    );
    assert_eq!(
        header(d, "From").as_deref(),
        Some("Alertmanager <am@example.org>")
    );
    assert_eq!(header(d, "X-Alert-Status").as_deref(), Some("firing"));
    assert_eq!(header(d, "MIME-Version").as_deref(), Some("1.0"));
    assert!(header(d, "Date").is_some(), "{d}");
    let ct = header(d, "Content-Type").expect("content type");
    let boundary = ct
        .strip_prefix("multipart/alternative;  boundary=")
        .unwrap_or_else(|| panic!("multipart: {ct}"));
    let parts: Vec<&str> = d.split(&format!("--{boundary}")).collect();
    // Preamble, text part, HTML part, closing "--".
    assert_eq!(parts.len(), 4, "{d}");
    assert!(parts[1].contains("Content-Type: text/plain; charset=UTF-8"));
    assert!(parts[1].contains("Content-Transfer-Encoding: quoted-printable"));
    // "=" is quoted-printable-encoded.
    assert!(
        parts[1].contains("status firing of DiskFull =3D x"),
        "{}",
        parts[1]
    );
    assert!(parts[2].contains("Content-Type: text/html; charset=UTF-8"));
    assert!(parts[3].starts_with("--"));

    // Resolved: sent because send_resolved is set.
    let resolved = alert(&am, &[("alertname", "DiskFull"), ("instance", "a")], true);
    am.put_alerts(vec![resolved]);
    let mail = recv(&mut rx, "resolved email").await;
    assert_eq!(
        header(&mail.data, "X-Alert-Status").as_deref(),
        Some("resolved")
    );
    wait_counts(&am, "email", (2, 0)).await;
    cancel.cancel();
}

#[tokio::test]
async fn email_requires_starttls_by_default() {
    let (addr, _rx) = smtp_sink(false).await;
    let cfg = EMAIL
        .replace("SMARTHOST", &addr)
        .replace("  smtp_require_tls: false\n", "")
        .replace("group_interval: 1s", "group_interval: 1h");
    let (am, cancel) = start(&cfg);
    am.put_alerts(vec![alert(&am, &[("alertname", "X")], false)]);
    // The sink offers no STARTTLS: every attempt fails, and is retried.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while am.metrics.request_counts("email").1 < 2 {
        assert!(tokio::time::Instant::now() < deadline, "attempts retried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(am.metrics.counts("email"), (0, 0), "still retrying");
    cancel.cancel();
}

const SLACK: &str = r#"
route:
  receiver: chat
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 1s
receivers:
  - name: chat
    slack_configs:
      - api_url: URL
        channel: '#ops'
        username: hearth
        send_resolved: true
        title: 'literal title'
        text: 'severity {{ .CommonLabels.severity }}'
        fields:
          - title: severity
            value: '{{ .CommonLabels.severity }}'
        actions:
          - type: button
            text: Runbook
            url: http://runbook.example/disk
"#;

#[tokio::test]
async fn slack_message_shape_and_colour_by_status() {
    let (url, mut rx, _) = http_sink(0, None).await;
    let (am, cancel) = start(&SLACK.replace("URL", &url));
    let labels = [("alertname", "DiskFull"), ("severity", "page")];
    am.put_alerts(vec![alert(&am, &labels, false)]);
    let m = recv(&mut rx, "firing Slack message").await;
    assert_eq!(m["channel"], "#ops");
    assert_eq!(m["username"], "hearth");
    let att = &m["attachments"][0];
    assert_eq!(m["attachments"].as_array().unwrap().len(), 1);
    assert_eq!(att["color"], "danger");
    assert_eq!(att["title"], "literal title");
    assert_eq!(att["text"], "severity page");
    assert!(att["title_link"]
        .as_str()
        .unwrap()
        .starts_with("http://am.example:9093/"));
    assert_eq!(
        att["fields"],
        serde_json::json!([{"title": "severity", "value": "page", "short": false}])
    );
    assert_eq!(
        att["actions"],
        serde_json::json!([{"type": "button", "text": "Runbook", "url": "http://runbook.example/disk"}])
    );
    assert_eq!(
        att["mrkdwn_in"],
        serde_json::json!(["fallback", "pretext", "text"])
    );
    assert!(att.get("fallback").is_some() && att.get("footer").is_some());

    am.put_alerts(vec![alert(&am, &labels, true)]);
    let m = recv(&mut rx, "resolved Slack message").await;
    assert_eq!(m["attachments"][0]["color"], "good");
    wait_counts(&am, "slack", (2, 0)).await;
    cancel.cancel();
}

#[tokio::test]
async fn server_errors_are_retried_and_counted() {
    let (url, mut rx, hits) = http_sink(2, None).await;
    let (am, cancel) = start(&SLACK.replace("URL", &url));
    am.put_alerts(vec![alert(
        &am,
        &[("alertname", "A"), ("severity", "x")],
        false,
    )]);
    let m = recv(&mut rx, "Slack message after retries").await;
    assert_eq!(m["channel"], "#ops");
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    wait_counts(&am, "slack", (1, 0)).await;
    assert_eq!(am.metrics.request_counts("slack"), (3, 2));
    let text = am.render_metrics();
    for line in [
        "alertmanager_notifications_total{integration=\"slack\"} 1",
        "alertmanager_notifications_failed_total{integration=\"slack\"} 0",
        "alertmanager_notification_requests_total{integration=\"slack\"} 3",
        "alertmanager_notification_requests_failed_total{integration=\"slack\"} 2",
        "alertmanager_notification_latency_seconds_count{integration=\"slack\"} 3",
        "alertmanager_notification_latency_seconds_bucket{integration=\"slack\",le=\"+Inf\"} 3",
        "alertmanager_notifications_total{integration=\"email\"} 0",
        "# TYPE alertmanager_notification_latency_seconds histogram",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from\n{text}"
        );
    }
    cancel.cancel();
}

#[tokio::test]
async fn client_errors_fail_at_once_and_server_errors_until_the_deadline() {
    let (url, _rx, hits) = http_sink(0, Some(400)).await;
    let cfg = SLACK.replace("URL", &url);
    let (am, cancel) = start(&cfg);
    am.put_alerts(vec![alert(&am, &[("alertname", "A")], false)]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while am.metrics.counts("slack").1 < 1 {
        assert!(tokio::time::Instant::now() < deadline, "failure recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1, "a 400 is not retried");
    assert_eq!(am.metrics.request_counts("slack"), (1, 1));
    cancel.cancel();

    // A 503 is retried until the flush's deadline: group_interval (1s) raised
    // to Alertmanager's 10s minimum.
    let (url, _rx, hits) = http_sink(0, Some(503)).await;
    let (am, cancel) = start(&SLACK.replace("URL", &url));
    let started = tokio::time::Instant::now();
    am.put_alerts(vec![alert(&am, &[("alertname", "A")], false)]);
    while am.metrics.counts("slack").1 < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "gave up at the deadline"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "retried for 10s"
    );
    let (requests, failed) = am.metrics.request_counts("slack");
    assert!(requests >= 4 && requests == failed, "{requests} attempts");
    assert_eq!(hits.load(Ordering::SeqCst) as u64, requests);
    cancel.cancel();
}

/// A sink that forwards the `Authorization` header of each POST to `/hook`.
async fn auth_sink() -> (String, mpsc::Receiver<Option<String>>) {
    let (tx, rx) = mpsc::channel(16);
    let app = Router::new()
        .route(
            "/hook",
            post(
                move |State(tx): State<mpsc::Sender<Option<String>>>,
                      headers: axum::http::HeaderMap| async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let _ = tx.send(auth).await;
                    (StatusCode::OK, "ok")
                },
            ),
        )
        .with_state(tx);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (format!("http://{addr}/hook"), rx)
}

#[tokio::test]
async fn http_config_credentials_are_sent_by_slack_and_webhooks() {
    let (slack_url, mut slack_rx) = auth_sink().await;
    let (hook_url, mut hook_rx) = auth_sink().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "file-token\n").unwrap();
    let cfg = format!(
        r#"
global:
  http_config:
    basic_auth: {{username: global, password: pw}}
route:
  receiver: both
  group_by: [alertname]
  group_wait: 50ms
  group_interval: 1h
receivers:
  - name: both
    slack_configs:
      - api_url: '{slack_url}'
        http_config:
          authorization: {{credentials_file: '{}'}}
    webhook_configs:
      - url: '{hook_url}'
"#,
        token_file.display()
    );
    let (am, cancel) = start(&cfg);
    am.put_alerts(vec![alert(&am, &[("alertname", "A")], false)]);
    // Slack: its own http_config, the credentials read from the file.
    assert_eq!(
        recv(&mut slack_rx, "Slack request").await.as_deref(),
        Some("Bearer file-token")
    );
    // The webhook has none of its own: the global one ("global:pw").
    assert_eq!(
        recv(&mut hook_rx, "webhook request").await.as_deref(),
        Some("Basic Z2xvYmFsOnB3")
    );
    cancel.cancel();
}

#[tokio::test]
async fn http_config_with_two_kinds_of_credentials_is_refused() {
    let cfg = config::parse(
        r#"
route: {receiver: r}
receivers:
  - name: r
    webhook_configs:
      - url: http://127.0.0.1:1/
        http_config:
          basic_auth: {username: u, password: p}
          bearer_token: t
"#,
    );
    let err = match cfg {
        Err(e) => e.to_string(),
        Ok(c) => match Alertmanager::start(c, Options::default(), Clock::system()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("two kinds of credentials accepted"),
        },
    };
    assert!(err.contains("at most one of basic_auth"), "{err}");
    assert!(err.contains("webhook_configs[0]"), "{err}");
}
