//! Remote-write receiver cost per request on one core: a realistic request (2000
//! samples over 2000 series of 10 labels, as `remote_write_load.py` sends with
//! more labels) decoded and appended to a TSDB head whose series exist, the way
//! a steady remote-write stream arrives. Also the decode alone (zero-copy vs
//! prost) and, for comparison, the receiver's previous algorithm (prost's owned
//! strings, a `LabelsBuilder` per series, a map of every series per request).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use hearth::labels::{Labels, LabelsBuilder};
use hearth::remote::{self, decode, prompb, Receiver};
use hearth::storage::{check_order, Appendable};
use hearth::tsdb::db::{Db, DbOptions};
use hearth::wal::{FsyncPolicy, LogOptions};
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;

const SERIES: usize = 2000;

fn series_labels(i: usize) -> Vec<prompb::Label> {
    let l = |name: &str, value: String| prompb::Label {
        name: name.to_string(),
        value,
    };
    vec![
        l("__name__", format!("synth_events_{:03}_total", i % 20)),
        l("instance", format!("rw{}", i / 200)),
        l("job", "rw".to_string()),
        l("lbl3", format!("v{}", i % 3)),
        l("lbl4", format!("v{}", i % 4)),
        l("lbl5", format!("v{}", i % 5)),
        l("lbl6", format!("v{}", i % 6)),
        l("pod", format!("pod-{}", i % 10)),
        l("svc", format!("svc-{}", i % 7)),
        l("zone", format!("zone-{}", i % 3)),
    ]
}

/// A snappy-compressed request with one sample at `t` for every series.
fn request(labels: &[Vec<prompb::Label>], t: i64) -> Vec<u8> {
    remote::encode_write_request(&prompb::WriteRequest {
        timeseries: labels
            .iter()
            .enumerate()
            .map(|(i, l)| prompb::TimeSeries {
                labels: l.clone(),
                samples: vec![prompb::Sample {
                    value: (t / 1000 + i as i64) as f64,
                    timestamp: t,
                }],
            })
            .collect(),
        metadata: vec![],
    })
}

fn open_db(dir: &std::path::Path) -> Arc<Db> {
    let opts = DbOptions {
        wal: LogOptions {
            fsync: FsyncPolicy::Never,
            ..Default::default()
        },
        ..Default::default()
    };
    Arc::new(Db::open(dir, opts).expect("open db"))
}

/// The receiver before the zero-copy decoder and series cache, kept here to
/// measure against.
fn previous_algorithm(store: &dyn Appendable, body: &[u8]) {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .expect("snappy");
    let req = prompb::WriteRequest::decode(raw.as_slice()).expect("protobuf");
    let mut app = store.appender();
    let mut newest: HashMap<Labels, (i64, u64)> = HashMap::new();
    for ts in &req.timeseries {
        let mut b = LabelsBuilder::new();
        for l in &ts.labels {
            b.set(&l.name, &l.value);
        }
        let labels = b.build();
        let mut last = newest.get(&labels).copied();
        let mut series_ref = 0;
        for s in &ts.samples {
            if last.is_some() && !check_order(last, s.timestamp, s.value).expect("order") {
                continue;
            }
            series_ref = app
                .append(series_ref, &labels, s.timestamp, s.value)
                .expect("append");
            last = Some((s.timestamp, s.value.to_bits()));
        }
        if let Some(l) = last {
            newest.insert(labels, l);
        }
    }
    app.commit().expect("commit");
}

fn bench_receiver(c: &mut Criterion) {
    let labels: Vec<Vec<prompb::Label>> = (0..SERIES).map(series_labels).collect();
    let mut t: i64 = 1_700_000_000_000;
    let body = request(&labels, t);

    let mut group = c.benchmark_group("remote_write");
    group.throughput(Throughput::Elements(SERIES as u64));
    group.bench_function("decode_2000_series_prost", |b| {
        b.iter(|| {
            let raw = snap::raw::Decoder::new()
                .decompress_vec(&body)
                .expect("snappy");
            prompb::WriteRequest::decode(raw.as_slice()).expect("protobuf")
        })
    });
    group.bench_function("decode_2000_series_zero_copy", |b| {
        b.iter(|| {
            let raw = snap::raw::Decoder::new()
                .decompress_vec(&body)
                .expect("snappy");
            let view = decode::decode(&raw).expect("protobuf");
            view.series.len()
        })
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_db(dir.path());
    let receiver = Receiver::new(db.clone());
    receiver.write_body(&body).expect("first write");
    group.bench_function("write_2000_known_series", |b| {
        b.iter_batched(
            || {
                t += 15_000;
                request(&labels, t)
            },
            |body| receiver.write_body(&body).expect("write"),
            BatchSize::SmallInput,
        )
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_db(dir.path());
    previous_algorithm(db.as_ref(), &body);
    group.bench_function("write_2000_known_series_previous_algorithm", |b| {
        b.iter_batched(
            || {
                t += 15_000;
                request(&labels, t)
            },
            |body| previous_algorithm(db.as_ref(), &body),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_receiver);
criterion_main!(benches);
