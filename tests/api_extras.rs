//! The rest of the Prometheus HTTP API against a real `hearth` process: `/federate`
//! (read back with hearth's own text parser and promtool), the status pages,
//! `targets`, `format_query`, the admin `clean_tombstones` call, and the requests
//! Grafana's Prometheus data source sends when it is added and Explore is opened.

mod common;

use common::*;
use hearth::textparse::{Entry, PromParser};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running hearth that is killed when dropped, so a failing test leaves no process.
struct Hearth {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Hearth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts hearth with a config file that has external labels, a job scraping
/// hearth itself, and a job whose only target relabeling drops.
fn start(extra: &[&str]) -> Hearth {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "global:\n  scrape_interval: 15s\n  external_labels:\n    region: eu\n    job: ext\n\
         scrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: [\"{addr}\"]\n\
         \x20 - job_name: dropme\n    static_configs:\n      - targets: [\"127.0.0.1:1\"]\n    \
         relabel_configs:\n      - action: drop\n        source_labels: [__address__]\n        \
         regex: \"127.0.0.1:1\"\n"
    );
    let config_path = dir.path().join("hearth.yml");
    std::fs::write(&config_path, &config).expect("write config");
    let child = Command::new(hearth_bin())
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg(format!("--config.file={}", config_path.display()))
        .arg("--web.enable-remote-write-receiver")
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hearth");
    let h = Hearth {
        child,
        addr,
        _dir: dir,
    };
    wait_ready(&h.addr, Duration::from_secs(30));
    h
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn get_ok(addr: &str, path: &str) -> serde_json::Value {
    let (code, v) = get_json(addr, path);
    assert_eq!(code, 200, "{path}: {v}");
    assert_eq!(v["status"], "success", "{path}: {v}");
    v["data"].clone()
}

#[test]
fn federate_serves_latest_samples_in_text_format() {
    let h = start(&[]);
    let now = now_ms();
    remote_write(
        &h.addr,
        vec![
            series(
                "fed_a",
                &[("job", "x")],
                &[(now - 20_000, 1.0), (now - 10_000, 2.5)],
            ),
            series(
                "fed_a",
                &[("instance", "i1"), ("job", "y")],
                &[(now - 10_000, 7.0)],
            ),
            series(
                "fed_gone",
                &[],
                &[
                    (now - 20_000, 1.0),
                    (now - 10_000, hearth::storage::stale_nan()),
                ],
            ),
            series("fed_old", &[], &[(now - 600_000, 1.0)]),
        ],
    );
    let (code, body) = http(
        "GET",
        &h.addr,
        "/federate?match[]=%7B__name__%3D~%22fed_.*%22%7D&match[]=fed_a",
        &[],
        b"",
    )
    .expect("federate");
    let text = String::from_utf8(body).expect("utf-8");
    assert_eq!(code, 200, "{text}");
    let expected = format!(
        "# TYPE fed_a untyped\n\
         fed_a{{instance=\"i1\",job=\"y\",region=\"eu\"}} 7 {t}\n\
         fed_a{{job=\"x\",instance=\"\",region=\"eu\"}} 2.5 {t}\n",
        t = now - 10_000
    );
    assert_eq!(text, expected);

    // hearth's own parser reads it back: two samples with their timestamps.
    let mut samples = Vec::new();
    for e in PromParser::new(text.as_bytes()) {
        if let Entry::Sample {
            labels,
            value,
            timestamp_ms,
            ..
        } = e.expect("federation output parses")
        {
            samples.push((labels.get("job").to_string(), value, timestamp_ms));
        }
    }
    assert_eq!(
        samples,
        vec![
            ("y".to_string(), 7.0, Some(now - 10_000)),
            ("x".to_string(), 2.5, Some(now - 10_000)),
        ]
    );

    // Without match[] there is nothing to federate; a bad selector is a 400.
    let (code, body) = http("GET", &h.addr, "/federate", &[], b"").expect("federate");
    assert_eq!((code, body.len()), (200, 0));
    let (code, _) = http("GET", &h.addr, "/federate?match[]=%7B", &[], b"").expect("federate");
    assert_eq!(code, 400);
}

#[test]
fn federate_output_passes_promtool_check_metrics() {
    let h = start(&[]);
    let now = now_ms();
    remote_write(
        &h.addr,
        vec![series(
            "promtool_fed",
            &[("job", "x")],
            &[(now - 5_000, 3.0)],
        )],
    );
    let (_, body) =
        http("GET", &h.addr, "/federate?match[]=promtool_fed", &[], b"").expect("federate");
    let mut child = promtool()
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (installed by .ci/install-deps)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&body).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // promtool exits 3 for lint findings (federated series have no HELP) and 1 for
    // input it cannot parse ("error while linting: text format parsing error").
    assert!(
        matches!(out.status.code(), Some(0 | 3)) && !stderr.contains("error while linting"),
        "promtool rejected {}: {stdout}{stderr}",
        String::from_utf8_lossy(&body)
    );
}

#[test]
fn status_pages_have_prometheus_shapes() {
    let h = start(&["--query.max-concurrency=3"]);
    let build = get_ok(&h.addr, "/api/v1/status/buildinfo");
    assert_eq!(build["version"], env!("CARGO_PKG_VERSION"));
    for key in ["revision", "branch", "buildUser", "buildDate", "goVersion"] {
        assert!(build[key].is_string(), "buildinfo.{key}: {build}");
    }
    let rt = get_ok(&h.addr, "/api/v1/status/runtimeinfo");
    assert_eq!(rt["reloadConfigSuccess"], true);
    assert_eq!(rt["storageRetention"], "15d");
    assert!(
        rt["startTime"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{rt}"
    );
    let flags = get_ok(&h.addr, "/api/v1/status/flags");
    assert_eq!(flags["query.max-concurrency"], "3");
    assert_eq!(flags["query.lookback-delta"], "5m");
    assert_eq!(flags["web.listen-address"], h.addr.as_str());
    let cfg = get_ok(&h.addr, "/api/v1/status/config");
    assert!(
        cfg["yaml"]
            .as_str()
            .is_some_and(|y| y.contains("region: eu")),
        "{cfg}"
    );
    assert_eq!(get_ok(&h.addr, "/api/v1/status/walreplay")["current"], 0);

    let now = now_ms();
    remote_write(
        &h.addr,
        vec![
            series("card_a", &[("job", "j1")], &[(now, 1.0)]),
            series("card_a", &[("job", "j2")], &[(now, 1.0)]),
            series("card_b", &[("job", "j1")], &[(now, 1.0)]),
        ],
    );
    let tsdb = get_ok(&h.addr, "/api/v1/status/tsdb?limit=100");
    let head = &tsdb["headStats"];
    assert!(head["numSeries"].as_u64().is_some_and(|n| n >= 3), "{tsdb}");
    assert!(head["minTime"].as_i64().is_some_and(|t| t <= now), "{tsdb}");
    let by_name = tsdb["seriesCountByMetricName"].as_array().expect("array");
    assert!(
        by_name.contains(&serde_json::json!({"name": "card_a", "value": 2})),
        "{tsdb}"
    );
    assert!(tsdb["seriesCountByLabelValuePair"]
        .as_array()
        .expect("array")
        .contains(&serde_json::json!({"name": "job=j2", "value": 1})));
    for key in ["labelValueCountByLabelName", "memoryInBytesByLabelName"] {
        assert!(tsdb[key].is_array(), "{key}: {tsdb}");
    }
    let (code, _) = get_json(&h.addr, "/api/v1/status/tsdb?limit=0");
    assert_eq!(code, 400);
}

#[test]
fn targets_format_query_and_admin() {
    let h = start(&[]);
    // Discovery is asynchronous: wait (bounded) until both pools have reported.
    let deadline = Instant::now() + Duration::from_secs(30);
    let data = loop {
        let d = get_ok(&h.addr, "/api/v1/targets");
        let ready = d["activeTargets"].as_array().is_some_and(|a| !a.is_empty())
            && d["droppedTargets"]
                .as_array()
                .is_some_and(|a| !a.is_empty());
        if ready || Instant::now() > deadline {
            break d;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let active = &data["activeTargets"][0];
    assert_eq!(active["scrapePool"], "self", "{data}");
    assert_eq!(active["scrapeUrl"], format!("http://{}/metrics", h.addr));
    assert_eq!(active["labels"]["job"], "self");
    assert_eq!(active["discoveredLabels"]["__address__"], h.addr.as_str());
    assert_eq!(active["scrapeInterval"], "15s");
    assert_eq!(active["scrapeTimeout"], "10s");
    assert!(active["health"].is_string() && active["lastScrape"].is_string());
    let dropped = &data["droppedTargets"][0];
    assert_eq!(dropped["scrapePool"], "dropme");
    assert_eq!(dropped["discoveredLabels"]["__address__"], "127.0.0.1:1");
    assert_eq!(data["droppedTargetCounts"]["dropme"], 1);
    let only_active = get_ok(&h.addr, "/api/v1/targets?state=active");
    assert_eq!(only_active["droppedTargets"], serde_json::json!([]));

    let f = get_ok(
        &h.addr,
        "/api/v1/format_query?query=sum(rate(x%5B5m%5D))by(job)",
    );
    assert_eq!(f, "sum by (job) (rate(x[5m]))");
    let (code, v) = get_json(&h.addr, "/api/v1/format_query?query=sum(");
    assert_eq!((code, v["errorType"].as_str()), (400, Some("bad_data")));
    let (code, v) = get_json(&h.addr, "/api/v1/parse_query?query=up");
    assert_eq!(code, 501, "{v}");
    assert!(v["error"]
        .as_str()
        .is_some_and(|e| e.contains("not supported")));
    assert_eq!(
        get_ok(&h.addr, "/api/v1/query_exemplars?query=up&start=0&end=1"),
        serde_json::json!([])
    );
    assert_eq!(
        get_ok(&h.addr, "/api/v1/targets/metadata"),
        serde_json::json!([])
    );

    // Without --web.enable-admin-api the admin call is refused.
    let (code, _) = http(
        "POST",
        &h.addr,
        "/api/v1/admin/tsdb/clean_tombstones",
        &[],
        b"",
    )
    .expect("clean_tombstones");
    assert_eq!(code, 503);
    let admin = start(&["--web.enable-admin-api"]);
    let (code, body) = http(
        "POST",
        &admin.addr,
        "/api/v1/admin/tsdb/clean_tombstones",
        &[],
        b"",
    )
    .expect("clean_tombstones");
    assert_eq!(code, 204, "{}", String::from_utf8_lossy(&body));
}

/// The requests Grafana's Prometheus data source sends on "Save & test" and when
/// Explore opens with a metric picked, with the parameters Grafana uses.
#[test]
fn grafana_data_source_requests_succeed() {
    let h = start(&[]);
    let now = now_ms();
    let samples: Vec<(i64, f64)> = (0..10)
        .map(|i| (now - 90_000 + i * 10_000, i as f64))
        .collect();
    remote_write(
        &h.addr,
        vec![
            series(
                "grafana_requests_total",
                &[("job", "web"), ("code", "200")],
                &samples,
            ),
            series(
                "grafana_requests_total",
                &[("job", "web"), ("code", "500")],
                &samples,
            ),
        ],
    );
    let (start_s, end_s) = (now / 1000 - 3600, now / 1000);

    // Save & test: buildinfo, then an instant query of `1+1`.
    let build = get_ok(&h.addr, "/api/v1/status/buildinfo");
    assert!(build["version"].is_string());
    let v = get_ok(&h.addr, &format!("/api/v1/query?query=1%2B1&time={end_s}"));
    assert_eq!(v["resultType"], "scalar");

    // Explore: label names and metric names over the time picker's range.
    let names = get_ok(
        &h.addr,
        &format!("/api/v1/labels?start={start_s}&end={end_s}"),
    );
    assert!(
        names.as_array().expect("array").contains(&"job".into()),
        "{names}"
    );
    let metrics = get_ok(
        &h.addr,
        &format!("/api/v1/label/__name__/values?start={start_s}&end={end_s}"),
    );
    assert!(metrics
        .as_array()
        .expect("array")
        .contains(&"grafana_requests_total".into()));
    // The metric browser: series of the picked metric, and a label's values.
    let s = get_ok(
        &h.addr,
        &format!("/api/v1/series?match%5B%5D=grafana_requests_total&start={start_s}&end={end_s}"),
    );
    assert_eq!(s.as_array().map(Vec::len), Some(2), "{s}");
    let codes = get_ok(
        &h.addr,
        &format!(
            "/api/v1/label/code/values?match%5B%5D=grafana_requests_total&start={start_s}&end={end_s}"
        ),
    );
    assert_eq!(codes, serde_json::json!(["200", "500"]));
    // Metric metadata for the query editor's hints.
    let md = get_ok(&h.addr, "/api/v1/metadata");
    assert!(md.is_object(), "{md}");

    // The query itself, as Grafana POSTs it: a range query with a step.
    let form = format!(
        "query=sum+by+(code)+(rate(grafana_requests_total%5B1m%5D))&start={}&end={}&step=15",
        now / 1000 - 300,
        now / 1000
    );
    let (code, body) = http(
        "POST",
        &h.addr,
        "/api/v1/query_range",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .expect("query_range");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["resultType"], "matrix");
    let result = v["data"]["result"].as_array().expect("array");
    assert_eq!(result.len(), 2, "{v}");
    for r in result {
        assert!(r["metric"]["code"].is_string());
        let values = r["values"].as_array().expect("values");
        assert!(!values.is_empty());
        assert!(values[0][0].is_number() && values[0][1].is_string(), "{r}");
    }
}

/// The `--query.max-concurrency` limiter in front of the real router: with its only
/// slot taken, a query waits while other endpoints answer, and runs once the slot
/// is free.
#[test]
fn query_waits_for_a_concurrency_slot() {
    use hearth::storage::memory::MemStorage;
    let store = Arc::new(MemStorage::new());
    let state = hearth::web::WebState {
        metrics: Arc::new(String::new),
        remote_receiver: Arc::new(hearth::remote::Receiver::new(store.clone())),
        remote_write_enabled: false,
        delete_series: None,
        quit: None,
        reload: None,
        cluster_status: None,
        query_api: Arc::new(hearth::web::api::QueryApi {
            queryable: store,
            engine: hearth::promql::Engine::new(Default::default()),
        }),
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(1));
    let app = hearth::web::router(state).layer(axum::middleware::from_fn_with_state(
        slots.clone(),
        hearth::web::extras::limit_query_concurrency,
    ));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            axum::serve(listener, app).await.expect("serve");
        });
    });
    let held = slots.clone().try_acquire_owned().expect("a free slot");
    let a = addr.clone();
    let query =
        std::thread::spawn(move || http("GET", &a, "/api/v1/query?query=1%2B1&time=1", &[], b""));
    let (code, _) = http("GET", &addr, "/api/v1/labels", &[], b"").expect("labels");
    assert_eq!(
        code, 200,
        "endpoints other than query and query_range are not limited"
    );
    // A query that ignored the limit would answer `1+1` within milliseconds; give
    // it a generous while. With the limit it cannot finish, so this cannot flake.
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline && !query.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!query.is_finished(), "the query ran without a slot");
    drop(held);
    let (code, body) = query.join().expect("query thread").expect("query");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
}
