//! Benchmarks for the exposition parsers on a node_exporter-like scrape of 10k series.
//!
//! Throughput is reported in bytes; the generated body's size and sample count are
//! printed once so samples per second can be derived from the same run.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use hearth::textparse::{Entry, OpenMetricsParser, PromParser};

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

fn bench(c: &mut Criterion) {
    let prom = exposition(false);
    let om = exposition(true);
    let samples = count_samples(PromParser::new(prom.as_bytes()));
    assert_eq!(
        samples,
        count_samples(OpenMetricsParser::new(om.as_bytes()))
    );
    eprintln!("exposition: {} bytes, {samples} samples", prom.len());

    let mut g = c.benchmark_group("textparse");
    g.throughput(Throughput::Bytes(prom.len() as u64));
    g.bench_function("prometheus_10k_series", |b| {
        b.iter(|| count_samples(PromParser::new(black_box(prom.as_bytes()))))
    });
    g.throughput(Throughput::Bytes(om.len() as u64));
    g.bench_function("openmetrics_10k_series", |b| {
        b.iter(|| count_samples(OpenMetricsParser::new(black_box(om.as_bytes()))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
