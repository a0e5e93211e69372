//! The rule manager's notifier against hearth's own Alertmanager on loopback: a
//! firing alert arrives through `POST /api/v2/alerts` with external labels and
//! annotations, and its resolution follows when the condition ends. Then against
//! recording sinks: https with a client certificate (made by `openssl`) and basic
//! auth, bearer credentials, `relabel_configs` on `__address__`, global and
//! per-set `alert_relabel_configs`, and the `prometheus_notifications_*` metrics.

mod common;

use hearth::alertmanager::{api, config, types::Clock, Alertmanager, Options};
use hearth::labels::Labels;
use hearth::promql::Engine;
use hearth::rules::RuleManager;
use hearth::storage::memory::MemStorage;
use hearth::storage::{Appendable, Queryable};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

const AM_CONFIG: &str = "route:\n  receiver: none\nreceivers:\n  - name: none\n";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_alertmanager_and_resolve() {
    let am = Alertmanager::start(
        config::parse(AM_CONFIG).expect("am config"),
        Options::default(),
        Clock::system(),
    )
    .expect("start am");
    let cancel = CancellationToken::new();
    tokio::spawn(am.clone().run(cancel.clone()));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let am_addr = l.local_addr().expect("addr");
    let app = api::router(am.clone());
    tokio::spawn(async move { axum::serve(l, app).await });

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("r.yml"),
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: Hot\n        expr: temp > 50\n        annotations:\n          summary: 'temp is {{ $value }}'\n",
    )
    .expect("write rules");
    let cfg_path = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg_path,
        format!("global:\n  external_labels:\n    dc: eu\nrule_files: ['r.yml']\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am_addr}']\n"),
    )
    .expect("write config");
    let cfg = hearth::config::Config::load_file(&cfg_path).expect("config");

    let store = MemStorage::new();
    let write = |v: f64| {
        let mut a = store.appender();
        a.append(
            0,
            &Labels::from_pairs(&[("__name__", "temp"), ("room", "r1")]),
            now_ms(),
            v,
        )
        .expect("append");
        a.commit().expect("commit");
    };
    write(70.0);
    let mgr = RuleManager::new(
        Arc::new(store.clone()) as Arc<dyn Queryable>,
        Arc::new(store.clone()) as Arc<dyn Appendable>,
        Engine::default(),
    );
    mgr.apply_config(&cfg).expect("apply");

    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        if let Some(a) = am.alerts.list().into_iter().next() {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no alert reached the Alertmanager"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(got.labels.get("alertname"), "Hot");
    assert_eq!(got.labels.get("dc"), "eu");
    assert_eq!(got.labels.get("room"), "r1");
    assert_eq!(got.annotations["summary"], "temp is 70");
    assert!(
        got.generator_url.contains("g0.expr=temp%20%3E%2050"),
        "{}",
        got.generator_url
    );

    // The condition ends: the resolved alert is sent at once, with endsAt in the past.
    write(10.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = am.alerts.list().into_iter().next().expect("alert kept");
        if a.ends_at.as_millisecond() <= now_ms() && a.ends_at.as_millisecond() > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "resolution did not reach the Alertmanager: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    mgr.stop();
    cancel.cancel();
}

/// One request a sink received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    authorization: String,
    alerts: serde_json::Value,
}

/// An Alertmanager stand-in on loopback: records every request and answers with
/// `status`; over TLS when given a server config.
async fn sink(
    tls: Option<rustls::ServerConfig>,
    status: u16,
) -> (std::net::SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind sink");
    let addr = listener.local_addr().expect("sink addr");
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let seen = got.clone();
    let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => {
                        // A client without the right certificate fails here.
                        if let Ok(s) = a.accept(tcp).await {
                            serve_one(s, status, seen).await;
                        }
                    }
                    None => serve_one(tcp, status, seen).await,
                }
            });
        }
    });
    (addr, got)
}

async fn serve_one<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    status: u16,
    seen: Arc<Mutex<Vec<Received>>>,
) {
    let mut req = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&req[..head_end]).to_string();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let len: usize = header("content-length").parse().unwrap_or(0);
    while req.len() < head_end + 4 + len {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let body = &req[head_end + 4..head_end + 4 + len];
    seen.lock().expect("sink lock").push(Received {
        path: head.split_whitespace().nth(1).unwrap_or("").to_string(),
        authorization: header("authorization"),
        alerts: serde_json::from_slice(body).unwrap_or(serde_json::Value::Null),
    });
    let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_over_https_with_auth_relabeling_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    common::tls::make_ca(d, "ca");
    common::tls::make_leaf(
        d,
        "ca",
        "server",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    );
    common::tls::make_leaf(
        d,
        "ca",
        "client",
        "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
    );
    let tls = common::tls::server_config(d, Some("ca.pem"), &[&rustls::version::TLS13]);
    let (tls_addr, tls_got) = sink(Some(tls), 200).await;
    let (failing_addr, failing_got) = sink(None, 500).await;

    std::fs::write(
        d.join("r.yml"),
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: Hot\n        expr: temp > 50\n        labels:\n          severity: page\n      - alert: Chatty\n        expr: temp > 0\n        labels:\n          severity: debug\n",
    )
    .expect("write rules");
    // The https set's target names a wrong port that `relabel_configs` fixes
    // through `__address__`.
    let cfg_text = format!(
        "global:\n  external_labels:\n    dc: eu\nrule_files: ['r.yml']\n\
         alerting:\n  alert_relabel_configs:\n    - source_labels: [severity]\n      regex: debug\n      action: drop\n    - target_label: relabeled\n      replacement: 'yes'\n\
         \x20 alertmanagers:\n\
         \x20   - scheme: https\n      path_prefix: /prefix/\n      tls_config:\n        ca_file: ca.pem\n        cert_file: client.pem\n        key_file: client.key\n      basic_auth:\n        username: u\n        password: p\n\
         \x20     static_configs:\n        - targets: ['127.0.0.1:1']\n      relabel_configs:\n        - source_labels: [__address__]\n          regex: '127\\.0\\.0\\.1:1'\n          target_label: __address__\n          replacement: '{tls_addr}'\n\
         \x20     alert_relabel_configs:\n        - target_label: am_set\n          replacement: tls\n\
         \x20   - timeout: 2s\n      authorization:\n        credentials: secret\n      static_configs:\n        - targets: ['{failing_addr}']\n"
    );
    let cfg_path = d.join("prometheus.yml");
    std::fs::write(&cfg_path, cfg_text).expect("write config");
    let cfg = hearth::config::Config::load_file(&cfg_path).expect("config");

    let store = MemStorage::new();
    let mut a = store.appender();
    a.append(
        0,
        &Labels::from_pairs(&[("__name__", "temp")]),
        now_ms(),
        70.0,
    )
    .expect("append");
    a.commit().expect("commit");
    let mgr = RuleManager::new(
        Arc::new(store.clone()) as Arc<dyn Queryable>,
        Arc::new(store.clone()) as Arc<dyn Appendable>,
        Engine::default(),
    );
    mgr.apply_config(&cfg).expect("apply");

    let deadline = Instant::now() + Duration::from_secs(30);
    while tls_got.lock().expect("lock").is_empty() || failing_got.lock().expect("lock").is_empty() {
        assert!(
            Instant::now() < deadline,
            "alerts did not reach both sinks; metrics:\n{}",
            mgr.render_metrics()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = tls_got.lock().expect("lock")[0].clone();
    assert_eq!(r.path, "/prefix/api/v2/alerts");
    assert_eq!(r.authorization, "Basic dTpw");
    let alerts = r.alerts.as_array().expect("a list of alerts");
    assert_eq!(alerts.len(), 1, "the debug alert is dropped: {alerts:?}");
    let labels = &alerts[0]["labels"];
    assert_eq!(labels["alertname"], "Hot");
    assert_eq!(labels["dc"], "eu");
    assert_eq!(labels["relabeled"], "yes");
    assert_eq!(labels["am_set"], "tls");
    let r = failing_got.lock().expect("lock")[0].clone();
    assert_eq!(r.path, "/api/v2/alerts");
    assert_eq!(r.authorization, "Bearer secret");
    let labels = &r.alerts[0]["labels"];
    assert_eq!(labels["relabeled"], "yes");
    assert!(labels.get("am_set").is_none(), "{labels}");

    let m = mgr.render_metrics();
    let tls_url = format!("https://{tls_addr}/prefix/api/v2/alerts");
    let failing_url = format!("http://{failing_addr}/api/v2/alerts");
    let by_am = |name: &str, url: &str| metric(&m, &format!("{name}{{alertmanager=\"{url}\"}}"));
    assert_eq!(
        metric(&m, "prometheus_notifications_alertmanagers_discovered"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "prometheus_notifications_queue_capacity"),
        Some(10000.0),
        "{m}"
    );
    assert!(
        metric(&m, "prometheus_notifications_queue_length").is_some(),
        "{m}"
    );
    assert_eq!(
        by_am("prometheus_notifications_errors_total", &tls_url),
        Some(0.0),
        "{m}"
    );
    assert!(
        by_am("prometheus_notifications_errors_total", &failing_url) >= Some(1.0),
        "{m}"
    );
    assert!(
        by_am("prometheus_notifications_sent_total", &tls_url) >= Some(1.0),
        "{m}"
    );
    assert!(
        by_am("prometheus_notifications_sent_total", &failing_url) >= Some(1.0),
        "{m}"
    );
    // One Alertmanager took every batch, so none was dropped.
    assert_eq!(
        metric(&m, "prometheus_notifications_dropped_total"),
        Some(0.0),
        "{m}"
    );
    mgr.stop();
}
