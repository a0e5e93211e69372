//! The notifier's queue against a capturing Alertmanager stand-in on loopback:
//! when the queue is over capacity the oldest alerts are dropped and counted in
//! `prometheus_notifications_dropped_total`, and alerts go out in requests of at
//! most 64 (Prometheus's `maxBatchSize`).

use super::notifier::{AlertmanagerSet, Notifier};
use parking_lot::Mutex;
use serde_json::{json, Value as Json};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A loopback HTTP server answering 200 to every request and keeping each
/// request body (parsed as JSON) in arrival order.
fn capture_server() -> (String, Arc<Mutex<Vec<Json>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let got: Arc<Mutex<Vec<Json>>> = Arc::default();
    let g = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let g = g.clone();
            std::thread::spawn(move || {
                let mut out = match conn.try_clone() {
                    Ok(c) => c,
                    Err(_) => return,
                };
                let mut r = BufReader::new(conn);
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    let mut first = true;
                    loop {
                        line.clear();
                        match r.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if line == "\r\n" && !first {
                            break;
                        }
                        first = false;
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    g.lock()
                        .push(serde_json::from_slice(&body).unwrap_or(Json::Null));
                    if out
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}/api/v2/alerts"), got)
}

fn alert(i: usize) -> Json {
    json!({"labels": {"alertname": "A", "i": i.to_string()}, "annotations": {}})
}

fn metric(n: &Notifier, name: &str) -> Option<f64> {
    n.render_metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
}

/// Waits (real time, bounded) until `got` holds alerts `want` in all.
async fn wait_alerts(got: &Arc<Mutex<Vec<Json>>>, want: usize) -> Vec<Json> {
    for _ in 0..500 {
        let bodies = got.lock().clone();
        let n: usize = bodies
            .iter()
            .map(|b| b.as_array().map_or(0, Vec::len))
            .sum();
        if n >= want {
            return bodies;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    got.lock().clone()
}

fn set(url: &str) -> AlertmanagerSet {
    AlertmanagerSet {
        cfg: Default::default(),
        urls: vec![url.to_string()],
        dropped: Vec::new(),
    }
}

#[tokio::test]
async fn a_full_queue_drops_its_oldest_alerts_and_counts_them() {
    let (url, got) = capture_server();
    let stop = CancellationToken::new();
    let n = Notifier::start(5, stop.clone());
    n.apply(vec![set(&url)], Vec::new());
    // Queued without yielding: the sender task has not run yet.
    n.send((0..3).map(alert).collect());
    n.send((3..7).map(alert).collect());
    assert_eq!(
        metric(&n, "prometheus_notifications_dropped_total"),
        Some(2.0)
    );
    assert_eq!(
        metric(&n, "prometheus_notifications_queue_length"),
        Some(5.0)
    );
    assert_eq!(
        metric(&n, "prometheus_notifications_queue_capacity"),
        Some(5.0)
    );
    // One call with more than the capacity keeps only its newest alerts.
    n.send((7..15).map(alert).collect());
    assert_eq!(
        metric(&n, "prometheus_notifications_dropped_total"),
        Some(10.0)
    );
    let bodies = wait_alerts(&got, 5).await;
    let sent: Vec<String> = bodies
        .iter()
        .flat_map(|b| b.as_array().cloned().unwrap_or_default())
        .map(|a| a["labels"]["i"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(sent, ["10", "11", "12", "13", "14"], "the newest five");
    assert_eq!(
        metric(&n, "prometheus_notifications_dropped_total"),
        Some(10.0)
    );
    stop.cancel();
}

#[tokio::test]
async fn alerts_go_out_in_batches_of_at_most_64() {
    let (url, got) = capture_server();
    let stop = CancellationToken::new();
    let n = Notifier::start(1000, stop.clone());
    n.apply(vec![set(&url)], Vec::new());
    n.send((0..150).map(alert).collect());
    let bodies = wait_alerts(&got, 150).await;
    let sizes: Vec<usize> = bodies
        .iter()
        .map(|b| b.as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [64, 64, 22]);
    let order: Vec<String> = bodies
        .iter()
        .flat_map(|b| b.as_array().cloned().unwrap_or_default())
        .map(|a| a["labels"]["i"].as_str().unwrap_or("").to_string())
        .collect();
    let want: Vec<String> = (0..150).map(|i| i.to_string()).collect();
    assert_eq!(order, want, "in queue order");
    assert_eq!(
        metric(&n, "prometheus_notifications_dropped_total"),
        Some(0.0)
    );
    assert!(
        n.render_metrics().contains(&format!(
            "prometheus_notifications_sent_total{{alertmanager=\"{url}\"}} 150"
        )),
        "{}",
        n.render_metrics()
    );
    stop.cancel();
}
