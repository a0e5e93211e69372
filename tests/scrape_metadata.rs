//! `/api/v1/targets/metadata` and `/api/v1/metadata` from scraped `# HELP`,
//! `# TYPE` and `# UNIT` lines, answered by the real `hearth` binary and by
//! Prometheus 2.42 scraping the same loopback exporter with the same config: the
//! answers must be the same (up to order, which Prometheus leaves to Go's maps).

mod common;

use common::process::{FixedExporter, Server};
use serde_json::Value;
use std::time::{Duration, Instant};

const TEXT_BODY: &str = "\
# HELP http_requests_total Requests served,\\nby code \\\\ and path.
# TYPE http_requests_total counter
http_requests_total{code=\"200\"} 10
http_requests_total{code=\"500\"} 1
# TYPE temp gauge
# HELP temp Temperature seen by the text job.
temp 3
# HELP only_help Has help, no type.
only_help 1
# TYPE no_help untyped
no_help 2
plain 1
# TYPE lat summary
lat{quantile=\"0.5\"} 1
lat_sum 2
lat_count 3
# A comment that is not metadata.
";

const OM_BODY: &str = "\
# TYPE temp gauge
# HELP temp Temperature seen by the OpenMetrics job.
temp 20
# TYPE build info
# HELP build Build information.
build_info{version=\"1.0\"} 1
# TYPE jobs counter
# HELP jobs Jobs done.
jobs_total 4
# TYPE disk_bytes gauge
# UNIT disk_bytes bytes
disk_bytes 10
# EOF
";

/// Sorts every array (by its elements' JSON text), so answers compare without
/// Go's map order.
fn normalise(v: &Value) -> Value {
    match v {
        Value::Array(a) => {
            let mut items: Vec<Value> = a.iter().map(normalise).collect();
            items.sort_by_key(|x| x.to_string());
            Value::Array(items)
        }
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, x)| (k.clone(), normalise(x))).collect())
        }
        x => x.clone(),
    }
}

fn answers(h: &Server, p: &Server, path: &str) -> ((u16, Value), (u16, Value)) {
    let (hc, hv) = h.get_json(path);
    let (pc, pv) = p.get_json(path);
    ((hc, normalise(&hv)), (pc, normalise(&pv)))
}

/// Waits until hearth's and Prometheus's answers to `path` are equal and
/// non-empty; fails with both answers otherwise.
fn eventually_same(h: &Server, p: &Server, path: &str, wait: Duration) -> Value {
    let deadline = Instant::now() + wait;
    loop {
        let (hv, pv) = answers(h, p, path);
        let nonempty = match &pv.1["data"] {
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            _ => false,
        };
        if hv == pv && nonempty {
            return hv.1;
        }
        if Instant::now() > deadline {
            panic!(
                "{path}: hearth and Prometheus differ\nhearth:     {} {}\nprometheus: {} {}",
                hv.0, hv.1, pv.0, pv.1
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn metadata_apis_answer_like_prometheus() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exporter = FixedExporter::start(&[
        ("/text", "text/plain; version=0.0.4", TEXT_BODY),
        (
            "/om",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            OM_BODY,
        ),
    ]);
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n\
         \x20 - job_name: text\n    metrics_path: /text\n    static_configs:\n      - targets: ['{a}']\n\
         \x20 - job_name: om\n    metrics_path: /om\n    static_configs:\n      - targets: ['{a}']\n",
        a = exporter.addr
    );
    let hearth = Server::hearth(dir.path(), "hearth", &config, &[]);
    let prom = Server::prometheus(dir.path(), "prometheus", &config, &[]);
    let wait = Duration::from_secs(60);

    // Every target's list, and the per-family union.
    let all = eventually_same(&hearth, &prom, "/api/v1/targets/metadata", wait);
    let entries = all["data"].as_array().expect("a list");
    // 5 families with metadata in the text body (`plain` has none), 4 in the
    // OpenMetrics one.
    assert_eq!(entries.len(), 9, "{all}");
    let help = entries
        .iter()
        .find(|e| e["metric"] == "http_requests_total")
        .expect("http_requests_total listed");
    assert_eq!(help["help"], "Requests served,\nby code \\ and path.");
    assert_eq!(help["type"], "counter");
    let only_help = entries
        .iter()
        .find(|e| e["metric"] == "only_help")
        .expect("only_help listed");
    assert_eq!(only_help["type"], "unknown");
    let unit = entries
        .iter()
        .find(|e| e["metric"] == "disk_bytes")
        .expect("disk_bytes listed");
    assert_eq!(unit["unit"], "bytes");
    assert_eq!(unit["target"]["job"], "om");
    let metadata = eventually_same(&hearth, &prom, "/api/v1/metadata", wait);
    assert_eq!(
        metadata["data"]["temp"].as_array().map(Vec::len),
        Some(2),
        "two targets say different things about temp: {metadata}"
    );
    for path in [
        format!(
            "/api/v1/targets/metadata?match_target={}",
            common::url_encode("{job=\"om\"}")
        ),
        "/api/v1/targets/metadata?metric=temp".to_string(),
        format!(
            "/api/v1/targets/metadata?metric=http_requests_total&match_target={}",
            common::url_encode("{job=~\"te.t\"}")
        ),
        "/api/v1/metadata?metric=temp".to_string(),
        "/api/v1/metadata?metric=jobs".to_string(),
    ] {
        eventually_same(&hearth, &prom, &path, wait);
    }
    // Nothing matches: both empty.
    for path in [
        "/api/v1/targets/metadata?metric=nope",
        "/api/v1/metadata?metric=nope",
    ] {
        let (h, p) = answers(&hearth, &prom, path);
        assert_eq!(h, p, "{path}");
    }
    // Limits pick which families or targets Prometheus lists in its map order,
    // so only the sizes are compared.
    let (h, p) = answers(&hearth, &prom, "/api/v1/metadata?limit=2");
    assert_eq!(h.1["data"].as_object().map(|o| o.len()), Some(2), "{h:?}");
    assert_eq!(p.1["data"].as_object().map(|o| o.len()), Some(2), "{p:?}");
    let (h, _) = answers(&hearth, &prom, "/api/v1/metadata?limit_per_metric=1");
    let data = h.1["data"].as_object().expect("an object");
    // 8 families: `temp` is in both bodies.
    assert_eq!(data.len(), 8, "{data:?}");
    assert!(data.values().all(|v| v.as_array().map(Vec::len) == Some(1)));
    // One target's whole list: `limit` is checked between targets.
    let (h, p) = answers(&hearth, &prom, "/api/v1/targets/metadata?limit=1");
    for (who, v) in [("hearth", &h.1), ("prometheus", &p.1)] {
        let list = v["data"].as_array().expect("a list");
        let jobs: std::collections::BTreeSet<String> = list
            .iter()
            .map(|e| e["target"]["job"].to_string())
            .collect();
        assert_eq!(jobs.len(), 1, "{who}: {v}");
        assert!(list.len() == 4 || list.len() == 5, "{who}: {v}");
    }
    // Bad parameters: the same status and error type.
    for path in [
        "/api/v1/metadata?limit=many",
        "/api/v1/targets/metadata?limit=1.5",
        "/api/v1/targets/metadata?match_target=%7Bjob%3D",
    ] {
        let (h, p) = answers(&hearth, &prom, path);
        assert_eq!(h.0, 400, "{path}: {h:?}");
        assert_eq!(h.0, p.0, "{path}: {h:?} {p:?}");
        assert_eq!(h.1["errorType"], p.1["errorType"], "{path}: {h:?} {p:?}");
        if !path.contains("match_target") {
            assert_eq!(h.1["error"], p.1["error"], "{path}");
        }
    }

    // Changed help text reaches both APIs.
    exporter.set_body(
        "/text",
        &TEXT_BODY.replace("seen by the text job", "now seen differently"),
    );
    let deadline = Instant::now() + wait;
    loop {
        let (_, v) = hearth.get_json("/api/v1/targets/metadata?metric=temp");
        if v.to_string().contains("now seen differently") {
            break;
        }
        assert!(Instant::now() < deadline, "new help not shown: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = eventually_same(&hearth, &prom, "/api/v1/metadata?metric=temp", wait);
    assert!(
        after.to_string().contains("now seen differently"),
        "{after}"
    );
    assert!(
        !after.to_string().contains("seen by the text job"),
        "{after}"
    );
}
