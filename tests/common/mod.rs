//! Helpers shared by the integration tests: running the real `hearth` and
//! `promtool` binaries, generating OpenMetrics input, and a tiny HTTP client.

#![allow(dead_code)]

pub mod node;
pub mod process;
pub mod scrape_log;
pub mod tls;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The `hearth` binary built for this test run.
pub fn hearth_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hearth")
}

/// Runs a command, panicking with its output if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (is it installed? .ci/install-deps installs promtool)")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `promtool` from the Debian package `prometheus`.
pub fn promtool() -> Command {
    Command::new("promtool")
}

/// One generated series: its OpenMetrics label text, the labels as pairs, and samples.
pub struct GenSeries {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub samples: Vec<(i64, f64)>,
}

/// A deterministic pseudo-random generator (xorshift), so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Series covering `hours` hours at a 15 s interval from `start_ms`, with counters,
/// gauges, odd label values (quotes, backslashes, newlines, UTF-8) and the special
/// values NaN, +Inf and -Inf.
pub fn generate_series(seed: u64, n_series: usize, start_ms: i64, hours: i64) -> Vec<GenSeries> {
    let mut rng = Rng(seed | 1);
    let step_ms = 15_000;
    let n = (hours * 3_600_000 / step_ms) as usize;
    let mut out = Vec::new();
    for i in 0..n_series {
        let kind = i % 5;
        let name = match kind {
            0 => "http_requests_total",
            1 => "node_cpu_seconds_total",
            2 => "temperature_celsius",
            3 => "queue_depth",
            _ => "odd_values",
        }
        .to_string();
        let mut labels = vec![
            ("instance".to_string(), format!("host-{}:9100", i % 7)),
            ("job".to_string(), "node".to_string()),
            ("series".to_string(), i.to_string()),
        ];
        if i % 3 == 0 {
            labels.push((
                "path".to_string(),
                "/a \"quoted\" \\ path\nnext ünï".to_string(),
            ));
        }
        let mut samples = Vec::with_capacity(n);
        let mut counter = rng.below(1000) as f64;
        for k in 0..n {
            let t = start_ms + k as i64 * step_ms + if k % 11 == 0 { 500 } else { 0 };
            let v = match kind {
                0 | 1 => {
                    counter += rng.below(100) as f64;
                    counter
                }
                2 => 20.0 + (rng.below(1000) as f64) / 37.0,
                3 => rng.below(5) as f64,
                _ => match k % 6 {
                    0 => f64::NAN,
                    1 => f64::INFINITY,
                    2 => f64::NEG_INFINITY,
                    3 => 1e-300 * (k as f64),
                    4 => -123456789.125,
                    _ => 1.5e300,
                },
            };
            samples.push((t, v));
        }
        out.push(GenSeries {
            name,
            labels,
            samples,
        });
    }
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn om_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v:e}")
    }
}

/// Writes the series as OpenMetrics text with timestamps (in seconds), grouped by
/// metric family, ending in `# EOF`.
pub fn write_openmetrics(series: &[GenSeries], path: &Path) {
    let mut by_name: std::collections::BTreeMap<&str, Vec<&GenSeries>> = Default::default();
    for s in series {
        by_name.entry(&s.name).or_default().push(s);
    }
    let mut text = String::new();
    for (name, list) in by_name {
        text.push_str(&format!("# TYPE {name} unknown\n"));
        for s in list {
            let lbls: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            for &(t, v) in &s.samples {
                text.push_str(&format!(
                    "{name}{{{}}} {} {}.{:03}\n",
                    lbls.join(","),
                    om_value(v),
                    t.div_euclid(1000),
                    t.rem_euclid(1000)
                ));
            }
        }
    }
    text.push_str("# EOF\n");
    std::fs::write(path, text).expect("write OpenMetrics file");
}

/// The dump lines promtool prints for these series, in its order (labels sorted).
pub fn expected_dump(series: &[GenSeries]) -> String {
    let mut rows: Vec<(hearth::labels::Labels, &GenSeries)> = series
        .iter()
        .map(|s| {
            let mut pairs: Vec<(&str, &str)> = vec![("__name__", s.name.as_str())];
            pairs.extend(s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            (hearth::labels::Labels::from_pairs(&pairs), s)
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::new();
    for (l, s) in rows {
        for &(t, v) in &s.samples {
            out.push_str(&format!("{l} {} {t}\n", hearth::gofloat::g(v)));
        }
    }
    out
}

/// A free loopback port: bound and released, and never handed out twice by this
/// test process (the kernel may give a just-released port again, and two
/// servers of one test must not be told the same port).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A minimal HTTP/1.1 request; returns the status code and body.
pub fn http(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    http_timeout(method, addr, path, headers, body, Duration::from_secs(30))
}

/// `http` that gives up connecting, sending or reading after `timeout` each.
pub fn http_timeout(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, Vec<u8>)> {
    let sock: std::net::SocketAddr = addr.parse().or_else(|_| {
        use std::net::ToSocketAddrs;
        addr.to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{addr}: no address")))
    })?;
    let mut s = TcpStream::connect_timeout(&sock, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header end"))?;
    let head = String::from_utf8_lossy(&resp[..text_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    let body = &resp[text_end + 4..];
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

/// Decodes an HTTP/1.1 chunked body (large answers from Prometheus come so).
fn dechunk(mut b: &[u8]) -> std::io::Result<Vec<u8>> {
    let bad = || std::io::Error::other("bad chunked body");
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad())?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err(bad());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// Waits until `GET /-/ready` answers 200.
pub fn wait_ready(addr: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok((200, _)) = http("GET", addr, "/-/ready", &[], b"") {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("hearth at {addr} did not become ready within {timeout:?}");
}

/// A remote-write series named `name` with `labels` and `(timestamp ms, value)` samples.
pub fn series(
    name: &str,
    labels: &[(&str, &str)],
    samples: &[(i64, f64)],
) -> hearth::remote::prompb::TimeSeries {
    let mut l = vec![hearth::remote::prompb::Label {
        name: "__name__".into(),
        value: name.into(),
    }];
    for (k, v) in labels {
        l.push(hearth::remote::prompb::Label {
            name: (*k).into(),
            value: (*v).into(),
        });
    }
    hearth::remote::prompb::TimeSeries {
        labels: l,
        samples: samples
            .iter()
            .map(|&(timestamp, value)| hearth::remote::prompb::Sample { value, timestamp })
            .collect(),
    }
}

/// Sends one remote-write request; the status code and body, or the transport error.
pub fn try_remote_write(
    addr: &str,
    ts: Vec<hearth::remote::prompb::TimeSeries>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let req = hearth::remote::prompb::WriteRequest {
        timeseries: ts,
        metadata: vec![],
    };
    http(
        "POST",
        addr,
        "/api/v1/write",
        &[
            ("Content-Encoding", "snappy"),
            ("Content-Type", "application/x-protobuf"),
        ],
        &hearth::remote::encode_write_request(&req),
    )
}

pub fn remote_write(addr: &str, ts: Vec<hearth::remote::prompb::TimeSeries>) {
    let (code, body) = try_remote_write(addr, ts).expect("remote write");
    assert_eq!(code, 204, "{}", String::from_utf8_lossy(&body));
}

/// GETs `path` and parses the JSON answer, with its status code.
pub fn get_json(addr: &str, path: &str) -> (u16, serde_json::Value) {
    let (code, body) = http("GET", addr, path, &[], b"").expect("http");
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (code, v)
}

/// Percent-encodes `s` for a URL query value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `data.result` array of a query API answer to `GET path`; None while the
/// node cannot answer (no connection, a status other than 200, not JSON).
pub fn query_result(addr: &str, path: &str) -> Option<Vec<serde_json::Value>> {
    let (code, body) = http("GET", addr, path, &[], b"").ok()?;
    if code != 200 {
        return None;
    }
    let mut v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    match v["data"]["result"].take() {
        serde_json::Value::Array(a) => Some(a),
        _ => None,
    }
}

/// Every sample a node returns for `metric[3h]` at `at_s`, keyed by the series'
/// `s` label (a number) and then by timestamp; None while the node cannot answer.
pub fn samples_by_series(
    addr: &str,
    metric: &str,
    at_s: i64,
) -> Option<std::collections::BTreeMap<usize, std::collections::BTreeMap<i64, f64>>> {
    let result = query_result(
        addr,
        &format!("/api/v1/query?query={metric}%5B3h%5D&time={at_s}"),
    )?;
    let mut out = std::collections::BTreeMap::new();
    for r in &result {
        let s: usize = r["metric"]["s"].as_str()?.parse().ok()?;
        let mut samples = std::collections::BTreeMap::new();
        for p in r["values"].as_array()? {
            let t = (p[0].as_f64()? * 1000.0).round() as i64;
            let val: f64 = p[1].as_str()?.parse().ok()?;
            samples.insert(t, val);
        }
        out.insert(s, samples);
    }
    Some(out)
}

/// Reads one HTTP/1.1 request from a test server's connection: its path and its
/// body (by `Content-Length`). None when the connection ends early.
pub fn read_request(r: &mut impl std::io::BufRead) -> Option<(String, Vec<u8>)> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((path, body))
}
