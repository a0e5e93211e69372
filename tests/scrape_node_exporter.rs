//! A real `prometheus-node-exporter` (Debian package) scraped by the real `hearth`
//! binary and by Prometheus 2.42 with the same config, at the same time: both must
//! store the same series (metric names and label sets) for the job.
//!
//! node_exporter's exposition is not the same at every scrape: a few series come
//! and go (for example per-process or per-collector series whose source changes
//! between reads, or that a collector reports only when a read succeeds). Such a
//! series may be in one server's store and not the other's, since the two scrape
//! at different moments. The test therefore tells stable from varying series from
//! the stored samples themselves: a series is *stable* in a server when it has a
//! sample in every one of that server's scrapes of the last window (as many as
//! `up` has). Every stable series of one server must be stored by the other; a
//! series stored by only one must be varying there. The varying series are
//! printed, and must stay a small share, so the exclusion cannot hide a real
//! difference wholesale.
//!
//! One difference is deliberate: hearth spells `le` and `quantile` values as
//! Prometheus 3 does (`quantile="1"` is stored as `quantile="1.0"`), where
//! Prometheus 2.42 keeps the exporter's spelling. The test maps 2.42's label
//! sets to the Prometheus 3 spelling (`prometheus3_spelling`) before comparing.

mod common;

use common::process::Server;
use common::url_encode;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A label set as sorted `name=value` pairs, `__name__` included.
type Series = BTreeMap<String, String>;

fn series_of(v: &Value) -> Series {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Prometheus 3's spelling of `le` and `quantile` values: a whole number is
/// written with `.0` (`"1"` → `"1.0"`); others stay as they are.
fn prometheus3_spelling(mut s: Series) -> Series {
    for name in ["le", "quantile"] {
        if let Some(v) = s.get_mut(name) {
            let whole = v
                .parse::<f64>()
                .is_ok_and(|f| f.is_finite() && f.fract() == 0.0);
            if whole && v.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
                v.push_str(".0");
            }
        }
    }
    s
}

fn show(s: &Series) -> String {
    let name = s.get("__name__").cloned().unwrap_or_default();
    let rest: Vec<String> = s
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}

/// Every series of the job that the server stores (`/api/v1/series`).
fn stored(s: &Server) -> BTreeSet<Series> {
    let (code, v) = s.get_json(&format!(
        "/api/v1/series?match[]={}",
        url_encode("{job=\"node\"}")
    ));
    assert_eq!(code, 200, "{}: {v}", s.addr);
    v["data"]
        .as_array()
        .expect("series list")
        .iter()
        .map(series_of)
        .collect()
}

/// Samples per series of the job in the `window_s` seconds before `t`, read as a
/// range-vector instant query (which keeps the metric names).
fn samples_in_window(s: &Server, t: f64, window_s: u64) -> BTreeMap<Series, usize> {
    let q = url_encode(&format!("{{job=\"node\"}}[{window_s}s]"));
    let (code, v) = s.get_json(&format!("/api/v1/query?query={q}&time={t:.3}"));
    assert_eq!(code, 200, "{}: {v}", s.addr);
    v["data"]["result"]
        .as_array()
        .expect("matrix")
        .iter()
        .map(|r| {
            (
                series_of(&r["metric"]),
                r["values"].as_array().map_or(0, Vec::len),
            )
        })
        .collect()
}

/// Series with a sample at every scrape of the window.
fn stable(counts: &BTreeMap<Series, usize>) -> BTreeSet<Series> {
    let up = counts
        .iter()
        .find(|(s, _)| s.get("__name__").map(String::as_str) == Some("up"))
        .map(|(_, n)| *n)
        .unwrap_or(0);
    assert!(up >= 5, "too few scrapes in the window: {up}");
    counts
        .iter()
        .filter(|(_, n)| **n == up)
        .map(|(s, _)| s.clone())
        .collect()
}

fn scrapes_so_far(s: &Server) -> usize {
    let (_, v) = s.get_json(&format!(
        "/api/v1/query?query={}",
        url_encode("count_over_time(up{job=\"node\"}[1h])")
    ));
    v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|x| x.parse().ok())
        .unwrap_or(0)
}

#[test]
fn node_exporter_series_match_prometheus() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exporter = Server::node_exporter(dir.path(), &[]);
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['{}']\n",
        exporter.addr
    );
    let hearth = Server::hearth(dir.path(), "hearth", &config, &[]);
    let prom = Server::prometheus(dir.path(), "prometheus", &config, &[]);

    // Both scrape a good number of times.
    let window_s = 10;
    let deadline = Instant::now() + Duration::from_secs(90);
    while scrapes_so_far(&hearth) < window_s + 3 || scrapes_so_far(&prom) < window_s + 3 {
        assert!(
            Instant::now() < deadline,
            "not enough scrapes: hearth {}, prometheus {}\nhearth log:\n{}",
            scrapes_so_far(&hearth),
            scrapes_so_far(&prom),
            hearth.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // A moment before now, so that no scrape is still being appended.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
        - 2.0;
    let h_counts = samples_in_window(&hearth, t, window_s as u64);
    let p_counts: BTreeMap<Series, usize> = samples_in_window(&prom, t, window_s as u64)
        .into_iter()
        .map(|(s, n)| (prometheus3_spelling(s), n))
        .collect();
    let (h_stable, p_stable) = (stable(&h_counts), stable(&p_counts));
    let h_all = stored(&hearth);
    let p_all: BTreeSet<Series> = stored(&prom)
        .into_iter()
        .map(prometheus3_spelling)
        .collect();
    assert!(
        p_all.len() > 200,
        "node_exporter exposes hundreds of series; Prometheus stored {}",
        p_all.len()
    );

    let mut problems = Vec::new();
    for s in &p_stable {
        if !h_all.contains(s) {
            problems.push(format!(
                "stable in Prometheus, not stored by hearth: {}",
                show(s)
            ));
        }
    }
    for s in &h_stable {
        if !p_all.contains(s) {
            problems.push(format!(
                "stable in hearth, not stored by Prometheus: {}",
                show(s)
            ));
        }
    }
    let mut varying = BTreeSet::new();
    for s in h_all.symmetric_difference(&p_all) {
        if h_stable.contains(s) || p_stable.contains(s) {
            continue; // reported above
        }
        varying.insert(show(s));
    }
    // Series that were in every scrape of one server's window but not of the
    // other's are varying too (both stored them).
    for s in h_stable.symmetric_difference(&p_stable) {
        if h_all.contains(s) && p_all.contains(s) {
            varying.insert(show(s));
        }
    }
    eprintln!(
        "hearth stored {} series, Prometheus {}; stable in both windows: {}; varying (excluded): {}",
        h_all.len(),
        p_all.len(),
        h_stable.intersection(&p_stable).count(),
        varying.len()
    );
    for v in &varying {
        eprintln!("  varying: {v}");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        varying.len() * 10 < p_all.len(),
        "{} of {} series vary between scrapes: too many to call the rest a match",
        varying.len(),
        p_all.len()
    );
    // The series names alone must agree exactly: a family never comes and goes.
    let names = |all: &BTreeSet<Series>| -> BTreeSet<String> {
        all.iter()
            .filter_map(|s| s.get("__name__").cloned())
            .collect()
    };
    assert_eq!(names(&h_all), names(&p_all));
}
