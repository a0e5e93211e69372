//! Head memory per active series: creates N series of 10 labels each (1 M by
//! default, `HEAD_MEMORY_SERIES` to change), appends samples to every series, and
//! prints the process's resident memory (VmRSS from /proc/self/status) per series.
//!
//! Run: `cargo bench --bench head_memory`. Not a criterion bench: it measures
//! memory, not time.

use hearth::labels::Labels;
use hearth::storage::Appendable;
use hearth::tsdb::db::{Db, DbOptions};
use hearth::wal::{FsyncPolicy, LogOptions};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Ten labels; the series is unique through the mix of metric name, instance and cpu,
/// as real series are, not through one unique label.
fn series_labels(i: usize) -> Labels {
    let name = i % 100;
    let instance = (i / 100) % 1000;
    let cpu = i / 100_000;
    Labels::from_pairs(&[
        ("__name__", format!("node_metric_{name}_total").as_str()),
        (
            "instance",
            &format!("10.1.{}.{}:9100", instance / 256, instance % 256),
        ),
        ("job", &format!("node-{}", instance % 10)),
        ("cpu", &cpu.to_string()),
        ("mode", ["user", "system", "idle", "iowait"][name % 4]),
        (
            "region",
            ["eu-west-1", "us-east-1", "ap-south-1"][instance % 3],
        ),
        ("env", ["prod", "staging"][instance % 2]),
        ("team", &format!("team-{}", name % 7)),
        ("rack", &format!("rack-{}", instance % 40)),
        ("datacenter", &format!("dc-{}", instance % 4)),
    ])
}

fn main() {
    let n: usize = std::env::var("HEAD_MEMORY_SERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let samples_per_series: i64 = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = DbOptions {
        wal: LogOptions {
            fsync: FsyncPolicy::Never,
            ..Default::default()
        },
        ..Default::default()
    };
    let db = Db::open(dir.path(), opts).expect("open db");
    let before = rss_bytes();
    let mut refs = vec![0u64; n];
    let t0: i64 = 1_700_000_000_000;
    for k in 0..samples_per_series {
        let t = t0 + k * 15_000;
        for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
            let mut app = db.appender();
            for &i in chunk {
                let v = (i as i64 + k) as f64;
                refs[i] = app
                    .append(refs[i], &series_labels(i), t, v)
                    .expect("append");
            }
            app.commit().expect("commit");
        }
    }
    let after = rss_bytes();
    let series = db.head().num_series();
    println!("series in head:            {series}");
    println!("samples per series:        {samples_per_series}");
    println!(
        "RSS before:                {:.1} MiB",
        before as f64 / (1 << 20) as f64
    );
    println!(
        "RSS after:                 {:.1} MiB",
        after as f64 / (1 << 20) as f64
    );
    println!(
        "RSS per series (total):    {:.0} bytes",
        after as f64 / series as f64
    );
    println!(
        "RSS per series (head):     {:.0} bytes",
        (after - before) as f64 / series as f64
    );
}
