//! Benchmarks for the exposition parsers on a node_exporter-like scrape of 10k series
//! and on a body shaped like `synth_exporter.py`'s (the peers harness's load).
//!
//! Each body is parsed two ways: with every sample's label set built (`Iterator`),
//! and with `next_raw` alone, as the scrape loop does for series it already knows.
//! Throughput is reported in bytes; each body's size and sample count are printed
//! once so samples per second can be derived from the same run.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use hearth::textparse::{Entry, OpenMetricsParser, PromParser, RawEntry, TextFormat, TextParser};

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

/// A body like `synth_exporter.py --series 2000` serves: counters, gauges and
/// classic histograms with three short labels each.
fn synth_exposition() -> String {
    let mut out = String::new();
    let les = [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
    ];
    let mut n = 0usize;
    let mut m = 0usize;
    while n < 2000 {
        let labels = |i: usize| {
            format!(
                "zone=\"z{}\",svc=\"s{}\",pod=\"p{}\"",
                i % 5,
                i / 5 % 5,
                i / 25
            )
        };
        match m % 3 {
            0 => {
                out += &format!("# HELP synth_events_{m:03}_total Synthetic counter {m}.\n# TYPE synth_events_{m:03}_total counter\n");
                for i in 0..50 {
                    out += &format!(
                        "synth_events_{m:03}_total{{{}}} {}\n",
                        labels(i),
                        1000 + i * 37 + m
                    );
                    n += 1;
                }
            }
            1 => {
                out += &format!("# HELP synth_level_{m:03} Synthetic gauge {m}.\n# TYPE synth_level_{m:03} gauge\n");
                for i in 0..50 {
                    out += &format!(
                        "synth_level_{m:03}{{{}}} {}.{}\n",
                        labels(i),
                        i * 3 + m,
                        i % 10
                    );
                    n += 1;
                }
            }
            _ => {
                out += &format!("# HELP synth_latency_{m:03}_seconds Synthetic histogram {m}.\n# TYPE synth_latency_{m:03}_seconds histogram\n");
                for i in 0..5 {
                    for (j, le) in les.iter().enumerate() {
                        out += &format!(
                            "synth_latency_{m:03}_seconds_bucket{{{},le=\"{le}\"}} {}\n",
                            labels(i),
                            j * 11 + i
                        );
                    }
                    out += &format!(
                        "synth_latency_{m:03}_seconds_sum{{{}}} {}.25\n",
                        labels(i),
                        40 + i
                    );
                    out += &format!(
                        "synth_latency_{m:03}_seconds_count{{{}}} {}\n",
                        labels(i),
                        11 * 11 + i
                    );
                    n += les.len() + 2;
                }
            }
        }
        m += 1;
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
    g.throughput(Throughput::Bytes(prom.len() as u64));
    g.bench_function("prometheus_10k_series_raw", |b| {
        b.iter(|| count_raw_samples(TextFormat::Prometheus, black_box(prom.as_bytes())))
    });
    g.throughput(Throughput::Bytes(om.len() as u64));
    g.bench_function("openmetrics_10k_series_raw", |b| {
        b.iter(|| count_raw_samples(TextFormat::OpenMetrics, black_box(om.as_bytes())))
    });
    let synth = synth_exposition();
    let synth_samples = count_samples(PromParser::new(synth.as_bytes()));
    eprintln!(
        "synth exposition: {} bytes, {synth_samples} samples",
        synth.len()
    );
    g.throughput(Throughput::Bytes(synth.len() as u64));
    g.bench_function("prometheus_synth_2k_series", |b| {
        b.iter(|| count_samples(PromParser::new(black_box(synth.as_bytes()))))
    });
    g.bench_function("prometheus_synth_2k_series_raw", |b| {
        b.iter(|| count_raw_samples(TextFormat::Prometheus, black_box(synth.as_bytes())))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
