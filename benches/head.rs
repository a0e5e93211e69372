//! Head append throughput: samples appended to existing series per second on one
//! core, the way a scrape loop appends (cached series refs, one commit per batch).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hearth::labels::Labels;
use hearth::storage::Appendable;
use hearth::tsdb::db::{Db, DbOptions};
use hearth::wal::{FsyncPolicy, LogOptions};

const SERIES: usize = 10_000;

fn series_labels(i: usize) -> Labels {
    Labels::from_pairs(&[
        ("__name__", "node_network_receive_bytes_total"),
        ("device", &format!("eth{}", i % 8)),
        (
            "instance",
            &format!("host-{}.example.org:9100", i / 8 % 1000),
        ),
        ("job", "node"),
        ("series", &i.to_string()),
    ])
}

fn bench_append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = DbOptions {
        wal: LogOptions {
            fsync: FsyncPolicy::Never,
            ..Default::default()
        },
        ..Default::default()
    };
    let db = Db::open(dir.path(), opts).expect("open db");
    let labels: Vec<Labels> = (0..SERIES).map(series_labels).collect();
    let mut refs = vec![0u64; SERIES];
    let mut t: i64 = 1_700_000_000_000;
    let mut app = db.appender();
    for (i, l) in labels.iter().enumerate() {
        refs[i] = app.append(0, l, t, i as f64).expect("append");
    }
    app.commit().expect("commit");

    let mut group = c.benchmark_group("head");
    group.throughput(Throughput::Elements(SERIES as u64));
    group.bench_function("append_existing_series_10k_batch", |b| {
        b.iter(|| {
            t += 15_000;
            let mut app = db.appender();
            for (i, l) in labels.iter().enumerate() {
                refs[i] = app
                    .append(refs[i], l, t, (t / 1000 + i as i64) as f64)
                    .expect("append");
            }
            app.commit().expect("commit");
        })
    });
    group.finish();
}

criterion_group!(benches, bench_append);
criterion_main!(benches);
