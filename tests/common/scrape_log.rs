//! A synthetic scrape target that records who scraped it when: the ground truth
//! of gap and double-scrape checks, whatever the storage says. Targets are told
//! apart by a `tid` query parameter (`__param_tid` by relabeling).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A `scrape_configs` section (YAML, at the top level) with one job, `synthetic`,
/// of `targets` targets at `address`, told apart by their `tid` label, which
/// relabeling passes as the `tid` query parameter.
pub fn synthetic_scrape_configs(address: &str, targets: usize) -> String {
    let mut yml = String::from(
        "scrape_configs:\n  - job_name: synthetic\n    relabel_configs:\n      - source_labels: [tid]\n        target_label: __param_tid\n    static_configs:\n",
    );
    for i in 0..targets {
        yml.push_str(&format!(
            "      - targets: ['{address}']\n        labels: {{tid: '{i}'}}\n"
        ));
    }
    yml
}

/// One scrape request answered.
#[derive(Debug, Clone)]
pub struct Request {
    /// The target's `tid`.
    pub tid: usize,
    /// When it arrived (wall clock).
    pub at_ms: i64,
    /// Who sent it.
    pub from: std::net::IpAddr,
}

/// Scrape requests answered, in arrival order.
pub type RequestLog = Arc<Mutex<Vec<Request>>>;

/// Serves `synthetic_value 1` on any path on `ip` (a free port) and logs the
/// `tid` query parameter of each request. Returns the address and the log.
pub fn start_synthetic_server(ip: &str) -> (String, RequestLog) {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let log: RequestLog = Arc::default();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let Ok(from) = conn.peer_addr().map(|a| a.ip()) else {
                continue;
            };
            let log = log2.clone();
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut req = Vec::new();
                let mut buf = [0u8; 2048];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let at = now_ms();
                let line = String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let tid = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.split_once("tid="))
                    .and_then(|(_, t)| t.split('&').next())
                    .and_then(|t| t.parse::<usize>().ok());
                if let Some(tid) = tid {
                    log.lock().unwrap().push(Request {
                        tid,
                        at_ms: at,
                        from,
                    });
                }
                let body = "# TYPE synthetic_value gauge\nsynthetic_value 1\n";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes());
            });
        }
    });
    (addr, log)
}

/// The log's request times by target, each sorted.
pub fn request_times(log: &RequestLog) -> BTreeMap<usize, Vec<i64>> {
    let mut out: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    for r in log.lock().unwrap().iter() {
        out.entry(r.tid).or_default().push(r.at_ms);
    }
    for v in out.values_mut() {
        v.sort_unstable();
    }
    out
}

/// The scrape slot of each time within `[from, to)`: slots are `interval_ms`
/// apart at the target's phase (the median phase of the times), and a time
/// belongs to the slot it follows by up to 90% of an interval (a late request on
/// a loaded machine) or precedes by up to 10%. Fails with fewer than two times.
fn slots(times: &[i64], from: i64, to: i64, interval_ms: i64) -> Result<Vec<(i64, i64)>, String> {
    let ts: Vec<i64> = times
        .iter()
        .copied()
        .filter(|t| (from..to).contains(t))
        .collect();
    if ts.len() < 2 {
        return Err(format!(
            "fewer than two scrapes in [{from}, {to}): {times:?}"
        ));
    }
    let t0 = ts[0];
    let mut phases: Vec<i64> = ts
        .iter()
        .map(|t| {
            let m = (t - t0).rem_euclid(interval_ms);
            if m > interval_ms / 2 {
                m - interval_ms
            } else {
                m
            }
        })
        .collect();
    phases.sort_unstable();
    let phase = t0 + phases[phases.len() / 2] - interval_ms / 10;
    Ok(ts
        .iter()
        .map(|t| ((t - phase).div_euclid(interval_ms), *t))
        .collect())
}

/// Checks that the times within `[from, to)` fall one into each of consecutive
/// scrape slots (see `slots`). Returns the largest and smallest spacing of
/// consecutive times.
pub fn one_per_slot(
    times: &[i64],
    from: i64,
    to: i64,
    interval_ms: i64,
) -> Result<(i64, i64), String> {
    let s = slots(times, from, to, interval_ms)?;
    for w in s.windows(2) {
        if w[1].0 > w[0].0 + 1 {
            return Err(format!(
                "{} slot(s) missed between {} and {}: {times:?}",
                w[1].0 - w[0].0 - 1,
                w[0].1,
                w[1].1
            ));
        }
    }
    no_double(times, from, to, interval_ms)
}

/// Checks that no scrape slot within `[from, to)` has two times (slots may be
/// missed). Returns the largest and smallest spacing of consecutive times.
pub fn no_double(
    times: &[i64],
    from: i64,
    to: i64,
    interval_ms: i64,
) -> Result<(i64, i64), String> {
    let s = slots(times, from, to, interval_ms)?;
    for w in s.windows(2) {
        if w[1].0 == w[0].0 {
            return Err(format!(
                "scraped twice in one slot, at {} and {}: {times:?}",
                w[0].1, w[1].1
            ));
        }
    }
    let gaps: Vec<i64> = s.windows(2).map(|w| w[1].1 - w[0].1).collect();
    Ok((
        gaps.iter().copied().max().unwrap_or(0),
        gaps.iter().copied().min().unwrap_or(0),
    ))
}
