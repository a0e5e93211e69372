//! The Prometheus query API over real HTTP: an in-process axum server on loopback
//! over an in-memory store (exact JSON shapes and error types), and a real `hearth`
//! process loaded through remote write (the wiring in `server.rs`).

mod common;

use common::*;
use hearth::labels::Labels;
use hearth::promql::{Engine, EngineOptions};
use hearth::remote::{encode_write_request, prompb};
use hearth::storage::memory::MemStorage;
use hearth::storage::{stale_nan, Appendable};
use hearth::web::api::QueryApi;
use hearth::web::{router, WebState};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Starts the router on a loopback port in a background runtime; returns its address.
fn serve(store: MemStorage, opts: EngineOptions) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    listener.set_nonblocking(true).expect("nonblocking");
    let store = Arc::new(store);
    let state = WebState {
        metrics: Arc::new(String::new),
        remote_receiver: Arc::new(hearth::remote::Receiver::new(store.clone())),
        remote_write_enabled: false,
        delete_series: None,
        quit: None,
        reload: None,
        cluster_status: None,
        query_api: Arc::new(QueryApi {
            queryable: store,
            engine: Engine::new(opts),
        }),
    };
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            axum::serve(listener, router(state)).await.expect("serve");
        });
    });
    addr
}

fn store() -> MemStorage {
    let s = MemStorage::new();
    let mut app = s.appender();
    for i in 0..=10i64 {
        let t = i * 15_000;
        for (job, mult) in [("api", 1.0), ("db", 2.0)] {
            let l = Labels::from_pairs(&[("__name__", "http_requests_total"), ("job", job)]);
            app.append(0, &l, t, i as f64 * 15.0 * mult)
                .expect("append");
        }
    }
    let g = Labels::from_pairs(&[("__name__", "gone")]);
    app.append(0, &g, 0, 1.0).expect("append");
    app.append(0, &g, 15_000, stale_nan()).expect("append");
    app.commit().expect("commit");
    s
}

fn get(addr: &str, path: &str) -> (u16, serde_json::Value) {
    let (code, body) = http("GET", addr, path, &[], b"").expect("http");
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (code, v)
}

fn post_form(addr: &str, path: &str, form: &str) -> (u16, serde_json::Value) {
    let (code, body) = http(
        "POST",
        addr,
        path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .expect("http");
    (code, serde_json::from_slice(&body).expect("JSON"))
}

#[test]
fn instant_query_returns_prometheus_vector_json() {
    let addr = serve(store(), EngineOptions::default());
    let (code, v) = get(
        &addr,
        "/api/v1/query?query=sum%20by%20(job)%20(http_requests_total)%20%2F%20150&time=150",
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["resultType"], "vector");
    let mut result = v["data"]["result"].as_array().expect("array").clone();
    result.sort_by_key(|r| r["metric"]["job"].as_str().unwrap_or("").to_string());
    assert_eq!(
        serde_json::Value::Array(result),
        serde_json::json!([
            {"metric": {"job": "api"}, "value": [150, "1"]},
            {"metric": {"job": "db"}, "value": [150, "2"]},
        ])
    );
}

#[test]
fn scalar_string_and_rfc3339_time() {
    let addr = serve(store(), EngineOptions::default());
    let (_, v) = get(
        &addr,
        "/api/v1/query?query=1%2B1&time=1970-01-01T00:00:01.5Z",
    );
    assert_eq!(
        v["data"],
        serde_json::json!({"resultType": "scalar", "result": [1.5, "2"]})
    );
    let (_, v) = get(&addr, "/api/v1/query?query=%22hi%22&time=2");
    assert_eq!(
        v["data"],
        serde_json::json!({"resultType": "string", "result": [2, "hi"]})
    );
    let (_, v) = get(&addr, "/api/v1/query?query=1%2F0&time=2");
    assert_eq!(v["data"]["result"][1], "+Inf");
    assert!(
        v.get("warnings").is_none(),
        "no warnings field without warnings: {v}"
    );
    let (_, v) = get(
        &addr,
        "/api/v1/query?query=quantile(1.5%2C%20http_requests_total)&time=150",
    );
    assert_eq!(
        v["warnings"],
        // With the position of the parameter, as Prometheus writes it.
        serde_json::json!([
            "PromQL warning: quantile value should be between 0 and 1, got 1.5 (1:10)"
        ])
    );
}

#[test]
fn range_query_via_post_form_returns_matrix() {
    let addr = serve(store(), EngineOptions::default());
    let (code, v) = post_form(
        &addr,
        "/api/v1/query_range",
        "query=http_requests_total%7Bjob%3D%22db%22%7D&start=0&end=60&step=30s",
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["data"],
        serde_json::json!({"resultType": "matrix", "result": [
            {"metric": {"__name__": "http_requests_total", "job": "db"},
             "values": [[0, "0"], [30, "60"], [60, "120"]]}
        ]})
    );
    // A stale marker ends the series within the lookback window.
    let (_, v) = get(
        &addr,
        "/api/v1/query_range?query=gone&start=0&end=30&step=15",
    );
    assert_eq!(
        v["data"]["result"],
        serde_json::json!([{"metric": {"__name__": "gone"}, "values": [[0, "1"]]}])
    );
}

#[test]
fn errors_have_prometheus_types_and_status_codes() {
    let addr = serve(
        store(),
        EngineOptions {
            max_samples: 5,
            ..EngineOptions::default()
        },
    );
    let (code, v) = get(&addr, "/api/v1/query?query=sum(");
    assert_eq!(code, 400);
    assert_eq!(v["status"], "error");
    assert_eq!(v["errorType"], "bad_data");
    let (code, v) = get(&addr, "/api/v1/query?query=up&time=yesterday");
    assert_eq!((code, v["errorType"].as_str()), (400, Some("bad_data")));
    let (code, v) = get(&addr, "/api/v1/query_range?query=up&start=10&end=0&step=1");
    assert_eq!((code, v["errorType"].as_str()), (400, Some("bad_data")));
    let (code, v) = get(&addr, "/api/v1/query_range?query=up&start=0&end=10&step=0");
    assert_eq!((code, v["errorType"].as_str()), (400, Some("bad_data")));
    let (code, v) = get(
        &addr,
        "/api/v1/query?query=http_requests_total%5B5m%5D&time=150",
    );
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["errorType"], "execution");
    assert_eq!(
        v["error"],
        "query processing would load too many samples into memory in query execution"
    );
    let (code, v) = get(&addr, "/api/v1/series");
    assert_eq!(
        (code, v["error"].as_str()),
        (400, Some("no match[] parameter provided"))
    );
}

#[test]
fn series_labels_and_label_values() {
    let addr = serve(store(), EngineOptions::default());
    let (code, v) = get(
        &addr,
        "/api/v1/series?match[]=http_requests_total%7Bjob%3D%22api%22%7D&match[]=gone",
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["data"],
        serde_json::json!([
            {"__name__": "gone"},
            {"__name__": "http_requests_total", "job": "api"},
        ])
    );
    let (_, v) = get(&addr, "/api/v1/labels");
    assert_eq!(v["data"], serde_json::json!(["__name__", "job"]));
    let (_, v) = get(&addr, "/api/v1/label/job/values");
    assert_eq!(v["data"], serde_json::json!(["api", "db"]));
    let (_, v) = get(
        &addr,
        "/api/v1/label/__name__/values?match[]=%7Bjob%3D%22db%22%7D",
    );
    assert_eq!(v["data"], serde_json::json!(["http_requests_total"]));
}

fn start_hearth(data: &std::path::Path, addr: &str) -> Child {
    Command::new(hearth_bin())
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--web.enable-remote-write-receiver")
        .arg("--query.lookback-delta=1m")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hearth")
}

#[test]
fn hearth_answers_queries_over_remote_written_data() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = start_hearth(&tmp.path().join("data"), &addr);
    wait_ready(&addr, Duration::from_secs(30));
    let t0 = 1_700_000_000_000i64;
    let req = prompb::WriteRequest {
        timeseries: vec![prompb::TimeSeries {
            labels: vec![
                prompb::Label {
                    name: "__name__".into(),
                    value: "rw_metric".into(),
                },
                prompb::Label {
                    name: "instance".into(),
                    value: "a".into(),
                },
            ],
            samples: (0..5)
                .map(|i| prompb::Sample {
                    value: i as f64 * 10.0,
                    timestamp: t0 + i * 10_000,
                })
                .collect(),
        }],
        metadata: vec![],
    };
    let (code, _) = http(
        "POST",
        &addr,
        "/api/v1/write",
        &[
            ("Content-Encoding", "snappy"),
            ("Content-Type", "application/x-protobuf"),
        ],
        &encode_write_request(&req),
    )
    .expect("remote write");
    assert_eq!(code, 204);
    let path = format!(
        "/api/v1/query?query=increase(rw_metric%5B40s%5D)&time={}",
        (t0 + 40_000) / 1000
    );
    let (code, v) = get(&addr, &path);
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["data"]["result"],
        serde_json::json!([{"metric": {"instance": "a"}, "value": [(t0 + 40_000) / 1000, "40"]}])
    );
    // --query.lookback-delta=1m: two minutes after the last sample there is nothing.
    let path = format!(
        "/api/v1/query?query=rw_metric&time={}",
        (t0 + 160_000) / 1000
    );
    let (_, v) = get(&addr, &path);
    assert_eq!(v["data"]["result"], serde_json::json!([]));
    let (_, v) = get(&addr, "/api/v1/label/instance/values");
    assert_eq!(v["data"], serde_json::json!(["a"]));
    let _ = child.kill();
    let _ = child.wait();
}

/// `--query.max-samples` bounds what a query reads, not only what it returns: a
/// selector over more raw samples than the limit fails with Prometheus's error
/// (and the server stays up), while a query over less data still answers.
#[test]
fn max_samples_bounds_raw_selectors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(hearth_bin())
        .arg(format!(
            "--storage.tsdb.path={}",
            tmp.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--web.enable-remote-write-receiver")
        .arg("--query.max-samples=2000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hearth");
    wait_ready(&addr, Duration::from_secs(30));
    // 20 series × 600 samples, 10s apart: 12000 samples over 100 minutes.
    let t0 = 1_700_000_000_000i64;
    let req = prompb::WriteRequest {
        timeseries: (0..20)
            .map(|s| prompb::TimeSeries {
                labels: vec![
                    prompb::Label {
                        name: "__name__".into(),
                        value: "big_metric".into(),
                    },
                    prompb::Label {
                        name: "series".into(),
                        value: format!("{s:02}"),
                    },
                ],
                samples: (0..600)
                    .map(|i| prompb::Sample {
                        value: i as f64,
                        timestamp: t0 + i * 10_000,
                    })
                    .collect(),
            })
            .collect(),
        metadata: vec![],
    };
    let (code, _) = http(
        "POST",
        &addr,
        "/api/v1/write",
        &[
            ("Content-Encoding", "snappy"),
            ("Content-Type", "application/x-protobuf"),
        ],
        &encode_write_request(&req),
    )
    .expect("remote write");
    assert_eq!(code, 204);
    let end = (t0 + 599 * 10_000) / 1000;
    // The whole range: 12000 raw samples, more than the limit, for a 1-sample result.
    let path = format!("/api/v1/query?query=count(count_over_time(big_metric%5B2h%5D))&time={end}");
    let (code, v) = get(&addr, &path);
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["errorType"], "execution");
    assert_eq!(
        v["error"],
        "query processing would load too many samples into memory in query execution"
    );
    // A range query over the same data is bounded the same way.
    let path = format!(
        "/api/v1/query_range?query=sum(big_metric)&start={}&end={end}&step=60",
        t0 / 1000
    );
    let (code, v) = get(&addr, &path);
    assert_eq!(
        (code, v["errorType"].as_str()),
        (422, Some("execution")),
        "{v}"
    );
    // The last 5 minutes: 20 × 30 = 600 raw samples, within the limit.
    let path = format!("/api/v1/query?query=sum(count_over_time(big_metric%5B5m%5D))&time={end}");
    let (code, v) = get(&addr, &path);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["result"][0]["value"][1], "600");
    let _ = child.kill();
    let _ = child.wait();
}
