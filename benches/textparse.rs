//! Benchmarks for the exposition parsers, in MB/s and in samples/s, on:
//!
//! * the body of a real `prometheus-node-exporter` (the Debian package), started on
//!   a free local port and scraped once when the bench starts;
//! * bodies of the peers harness's `synth_exporter.py` (`--print`), read from
//!   `../shared/tools/peers/` (or `$SYNTH_EXPORTER`) when the bench starts: the
//!   default target of the side-by-side load (2000 series, 3 labels) and a wider
//!   one (10000 series, 6 labels);
//! * a generated node_exporter-like OpenMetrics body of 10k series (the only
//!   OpenMetrics body).
//!
//! Each body is parsed two ways: `full`, with every sample's label set built (the
//! `Iterator`: what a sample of a series the scrape loop has not seen costs), and
//! `raw`, with `next_raw` alone (what a sample of a known series costs the scrape
//! loop). Each is measured twice, once with the throughput in bytes and once in
//! samples, since criterion reports one unit per measurement. A body whose source
//! is missing is skipped with a message.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use hearth::textparse::{Entry, OpenMetricsParser, RawEntry, TextFormat, TextParser};

const SERIES: usize = 10_000;

/// Builds an exposition of at least `SERIES` samples in families shaped like node_exporter's:
/// counters and gauges with 3–5 labels, and a histogram whose buckets carry 6.
fn exposition(openmetrics: bool) -> String {
    let mut out = String::new();
    let mut n = 0usize;
    let common = r#"instance="node-07.example.org:9100",job="node""#;
    let modes = [
        "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
    ];
    let devices = [
        "eth0",
        "eth1",
        "lo",
        "nvme0n1",
        "sda",
        "sdb",
        "veth3f2a1c",
        "docker0",
    ];
    let les = [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
    ];
    let mut family = 0usize;
    while n < SERIES {
        // Later rounds repeat the families with new label values, so that no series
        // appears twice.
        let round = family / 4;
        match family % 4 {
            0 => {
                out += "# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.\n";
                out += "# TYPE node_cpu_seconds_total counter\n";
                for cpu in round * 64..(round + 1) * 64 {
                    for mode in modes {
                        out += &format!(
                            "node_cpu_seconds_total{{cpu=\"{cpu}\",mode=\"{mode}\",{common}}} {}.{}\n",
                            1_234_567 + n * 7,
                            n % 100
                        );
                        n += 1;
                    }
                }
            }
            1 => {
                out += "# HELP node_filesystem_avail_bytes Filesystem space available to non-root users in bytes.\n";
                out += "# TYPE node_filesystem_avail_bytes gauge\n";
                for i in round * 400..(round + 1) * 400 {
                    let dev = devices[i % devices.len()];
                    out += &format!(
                        "node_filesystem_avail_bytes{{device=\"/dev/{dev}\",fstype=\"ext4\",mountpoint=\"/var/lib/m{i}\",{common}}} {}e+09\n",
                        (i as f64) * 1.375 + 0.5
                    );
                    n += 1;
                }
            }
            2 => {
                out += "# HELP node_network_receive_bytes_total Network device statistic receive_bytes.\n";
                out += "# TYPE node_network_receive_bytes_total counter\n";
                for i in round * 400..(round + 1) * 400 {
                    let dev = devices[i % devices.len()];
                    out += &format!(
                        "node_network_receive_bytes_total{{device=\"{dev}{i}\",{common}}} {}\n",
                        98_765_432_101u64 + i as u64 * 31
                    );
                    n += 1;
                }
            }
            _ => {
                out += "# HELP http_request_duration_seconds Latency of HTTP requests.\n";
                out += "# TYPE http_request_duration_seconds histogram\n";
                for h in round * 40..(round + 1) * 40 {
                    for code in ["200", "404", "500"] {
                        let labels = format!(
                            "handler=\"/api/v1/h{h}\",method=\"GET\",code=\"{code}\",{common}"
                        );
                        for (j, le) in les.iter().enumerate() {
                            out += &format!(
                                "http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}\n",
                                j * 17 + h
                            );
                        }
                        out += &format!(
                            "http_request_duration_seconds_sum{{{labels}}} 0.{h}{code}53\n"
                        );
                        out += &format!(
                            "http_request_duration_seconds_count{{{labels}}} {}\n",
                            11 * 17 + h
                        );
                        n += les.len() + 2;
                    }
                }
            }
        }
        family += 1;
    }
    if openmetrics {
        out += "# EOF\n";
    }
    out
}

/// Samples in `body` read with `next_raw`, without building label sets.
fn count_raw_samples(format: TextFormat, body: &[u8]) -> usize {
    let mut p = TextParser::new(format, body);
    let mut samples = 0;
    while let Some(e) = p.next_raw() {
        match e {
            Ok(RawEntry::Sample(s)) => {
                black_box((s.series, s.value));
                samples += 1;
            }
            Ok(_) => {}
            Err(e) => panic!("benchmark exposition does not parse: {e}"),
        }
    }
    samples
}

fn count_samples<'a>(
    p: impl Iterator<Item = Result<Entry<'a>, hearth::textparse::ParseError>>,
) -> usize {
    let mut samples = 0;
    for e in p {
        match e {
            Ok(Entry::Sample { labels, value, .. }) => {
                black_box((&labels, value));
                samples += 1;
            }
            Ok(_) => {}
            Err(e) => panic!("benchmark exposition does not parse: {e}"),
        }
    }
    samples
}

/// The body of a real node_exporter, or why there is none.
fn node_exporter_body() -> Result<Vec<u8>, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new("prometheus-node-exporter")
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("prometheus-node-exporter did not start: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        match http_get(&addr, "/metrics") {
            Ok(b) => break Ok(b),
            Err(e) if Instant::now() > deadline => break Err(format!("scraping it: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    body
}

/// The body of a plain HTTP/1.0 GET (no gzip asked for).
fn http_get(addr: &str, path: &str) -> std::io::Result<Vec<u8>> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    if !resp.starts_with(b"HTTP/1.1 200") && !resp.starts_with(b"HTTP/1.0 200") {
        return Err(std::io::Error::other("status is not 200"));
    }
    Ok(resp.split_off(split + 4))
}

/// A body `synth_exporter.py --print` renders with `args`, or why there is none.
fn synth_body(args: &[&str]) -> Result<Vec<u8>, String> {
    let script = std::env::var_os("SYNTH_EXPORTER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/tools/peers/synth_exporter.py")
        });
    let out = Command::new("python3")
        .arg(&script)
        .arg("--print")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(format!(
            "{} {args:?} failed: {}",
            script.display(),
            out.status
        ));
    }
    Ok(out.stdout)
}

fn bench(c: &mut Criterion) {
    let mut bodies: Vec<(&str, TextFormat, Vec<u8>)> = Vec::new();
    match node_exporter_body() {
        Ok(b) => bodies.push(("node_exporter", TextFormat::Prometheus, b)),
        Err(e) => eprintln!("skipping the node_exporter body: {e}"),
    }
    for (name, args) in [
        ("synth_2k_series", &[][..]),
        (
            "synth_10k_series_6_labels",
            &["--series", "10000", "--labels-per-series", "6"][..],
        ),
    ] {
        match synth_body(args) {
            Ok(b) => bodies.push((name, TextFormat::Prometheus, b)),
            Err(e) => eprintln!("skipping the {name} body: {e}"),
        }
    }
    bodies.push((
        "openmetrics_generated_10k_series",
        TextFormat::OpenMetrics,
        exposition(true).into_bytes(),
    ));
    assert_eq!(
        count_samples(OpenMetricsParser::new(&bodies.last().expect("pushed").2)),
        count_raw_samples(TextFormat::OpenMetrics, &bodies.last().expect("pushed").2),
    );

    let mut g = c.benchmark_group("textparse");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    for (name, format, body) in &bodies {
        let samples = count_raw_samples(*format, body);
        assert_eq!(samples, count_samples(TextParser::new(*format, body)));
        eprintln!("{name}: {} bytes, {samples} samples", body.len());
        for (unit, throughput) in [
            ("bytes", Throughput::Bytes(body.len() as u64)),
            ("samples", Throughput::Elements(samples as u64)),
        ] {
            g.throughput(throughput);
            g.bench_function(format!("{name}/full/{unit}"), |b| {
                b.iter(|| count_samples(TextParser::new(*format, black_box(body))))
            });
            g.bench_function(format!("{name}/raw/{unit}"), |b| {
                b.iter(|| count_raw_samples(*format, black_box(body)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
