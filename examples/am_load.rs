//! Load generator for `benches/alertmanager.sh`: posts N firing alerts spread
//! over G groups to an Alertmanager's `POST /api/v2/alerts` (hearth's or the
//! real one), runs the webhook receiver the Alertmanager notifies, and prints
//! one line of figures: alerts/s ingested and notification latency.
//!
//! Usage: `am_load URL SINK_ADDR [alerts] [groups] [batch] [concurrency] [group_wait_ms]`
//! where the Alertmanager's config groups by `group` and sends every group to
//! `http://SINK_ADDR/hook`. The latency of a group is the time from the moment
//! the first batch holding one of its alerts was acknowledged until its first
//! notification arrived, minus group_wait; the run stops when every group was
//! notified, or after 120 s.

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest the run waits for notifications.
const WAIT_MAX: Duration = Duration::from_secs(120);

type Seen = Arc<Mutex<HashMap<String, Instant>>>;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!(
            "usage: am_load URL SINK_ADDR [alerts] [groups] [batch] [concurrency] [group_wait_ms]"
        );
        std::process::exit(2);
    }
    let url = format!("{}/api/v2/alerts", args[1].trim_end_matches('/'));
    let sink_addr = args[2].clone();
    let alerts: usize = arg(&args, 3, 10_000);
    let groups: usize = arg(&args, 4, 1_000);
    let batch: usize = arg(&args, 5, 100);
    let concurrency: usize = arg(&args, 6, 4);
    let group_wait = Duration::from_millis(arg(&args, 7, 1000));

    // The webhook receiver: the first notification of each group counts.
    let seen: Seen = Arc::new(Mutex::new(HashMap::new()));
    let app = Router::new()
        .route(
            "/hook",
            post(|State(seen): State<Seen>, body: Bytes| async move {
                let now = Instant::now();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                    if let Some(g) = v["groupLabels"]["group"].as_str() {
                        seen.lock().unwrap().entry(g.to_string()).or_insert(now);
                    }
                }
                "ok"
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind(&sink_addr).await?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let starts = jiff::Timestamp::now().to_string();
    let ends = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600)).to_string();
    let bodies: Vec<(Vec<String>, Bytes)> = (0..alerts)
        .collect::<Vec<_>>()
        .chunks(batch)
        .map(|chunk| {
            let names = chunk.iter().map(|i| format!("g{}", i % groups)).collect();
            let v: Vec<serde_json::Value> = chunk
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "labels": {"alertname": "LoadTest", "group": format!("g{}", i % groups),
                                   "instance": format!("host-{i}"), "severity": "warning"},
                        "annotations": {"summary": format!("load test alert {i}")},
                        "startsAt": starts, "endsAt": ends,
                        "generatorURL": "http://prometheus.example/graph"
                    })
                })
                .collect();
            (
                names,
                Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
            )
        })
        .collect();
    let bodies = Arc::new(Mutex::new(bodies.into_iter().rev().collect::<Vec<_>>()));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let first_ack: Seen = Arc::new(Mutex::new(HashMap::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let bodies = bodies.clone();
        let first_ack = first_ack.clone();
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Some((names, body)) = bodies.lock().unwrap().pop() else {
                    return Ok::<(), String>(());
                };
                let req = hyper::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(Full::new(body))
                    .map_err(|e| e.to_string())?;
                let resp = client.request(req).await.map_err(|e| e.to_string())?;
                let status = resp.status();
                let _ = resp.into_body().collect().await;
                if !status.is_success() {
                    return Err(format!("POST {url}: {status}"));
                }
                let now = Instant::now();
                let mut fa = first_ack.lock().unwrap();
                for n in names {
                    fa.entry(n).or_insert(now);
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let ingest = started.elapsed();
    let acked = Instant::now();
    while seen.lock().unwrap().len() < groups && acked.elapsed() < WAIT_MAX {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fa = first_ack.lock().unwrap();
    let mut lat: Vec<f64> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(g, t)| {
            let first = fa.get(g)?;
            Some(
                t.saturating_duration_since(*first)
                    .saturating_sub(group_wait)
                    .as_secs_f64(),
            )
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1]
    };
    println!(
        "alerts={alerts} groups={groups} ingest_s={:.3} alerts_per_s={:.0} notified_groups={} latency_p50_s={:.3} latency_p99_s={:.3} latency_max_s={:.3}",
        ingest.as_secs_f64(),
        alerts as f64 / ingest.as_secs_f64(),
        lat.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}
