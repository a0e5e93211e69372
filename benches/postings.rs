//! Benchmarks of postings list operations: intersections of long lists with
//! different densities, and unions of many lists.

use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput,
};
use hearth::tsdb::postings::{intersect, remove_listed, union_many};

/// `n` sorted references spaced by `step`, starting at `offset`.
fn list(n: u64, step: u64, offset: u64) -> Vec<u64> {
    (0..n).map(|i| offset + i * step).collect()
}

fn bench_intersect(c: &mut Criterion) {
    let mut g = c.benchmark_group("intersect");
    let a = list(1_000_000, 2, 0);
    // Equal lengths and interleaved (merge path), then sparse against dense
    // (galloping path).
    let cases = [
        ("1M_x_1M_half_overlap", list(1_000_000, 3, 0)),
        ("1M_x_10k", list(10_000, 200, 0)),
        ("1M_x_100", list(100, 20_000, 0)),
    ];
    for (name, b) in &cases {
        g.throughput(Throughput::Elements((a.len() + b.len()) as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), b, |bench, b| {
            bench.iter(|| intersect(black_box(&a), black_box(b)))
        });
    }
    g.finish();
}

fn bench_union(c: &mut Criterion) {
    let mut g = c.benchmark_group("union_many");
    // Ten lists of 100k references each, interleaved so every merge does real work.
    let lists: Vec<Vec<u64>> = (0..10).map(|i| list(100_000, 10, i)).collect();
    g.throughput(Throughput::Elements(1_000_000));
    g.bench_function("10_x_100k_interleaved", |bench| {
        // The input is consumed, so each run gets a fresh copy made outside the timing.
        bench.iter_batched(|| lists.clone(), union_many, BatchSize::LargeInput)
    });
    g.finish();
}

fn bench_remove(c: &mut Criterion) {
    let mut g = c.benchmark_group("remove_listed");
    let a = list(1_000_000, 1, 0);
    let b = list(1_000, 1_000, 0);
    g.throughput(Throughput::Elements(1_000_000));
    g.bench_function("1M_minus_1k", |bench| {
        bench.iter_batched(
            || a.clone(),
            |mut refs| remove_listed(&mut refs, b.len(), |i| b[i]),
            BatchSize::LargeInput,
        )
    });
    // A small positive result against a list that is a third of the index (a
    // negative matcher such as `zone!~"z[0-2]"`).
    let few = list(100, 3_000, 1);
    let third = list(333_333, 3, 0);
    g.throughput(Throughput::Elements(100));
    g.bench_function("100_minus_333k", |bench| {
        bench.iter_batched(
            || few.clone(),
            |mut refs| remove_listed(&mut refs, third.len(), |i| third[i]),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_intersect, bench_union, bench_remove);
criterion_main!(benches);
