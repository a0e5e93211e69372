//! Benchmarks of the XOR chunk hot paths: appending full 120-sample chunks and
//! decoding them, reported in samples per second.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use hearth::tsdb::chunkenc::{XorChunk, XorIterator, SAMPLES_PER_CHUNK};

/// Chunks per benchmark iteration, so per-iteration overhead is negligible.
const CHUNKS: usize = 1000;

/// Scrape-like series: a 15 s interval with a little jitter, and values of a
/// few kinds (a counter, a gauge of floats, a constant), one kind per chunk.
fn series(chunk: usize) -> Vec<(i64, f64)> {
    let mut t = 1_700_000_000_000i64 + chunk as i64 * 1_800_000;
    let mut out = Vec::with_capacity(SAMPLES_PER_CHUNK);
    let mut counter = 1000.0;
    for i in 0..SAMPLES_PER_CHUNK {
        let jitter = ((i * 7919 + chunk * 31) % 5) as i64 - 2;
        t += 15_000 + jitter;
        let v = match chunk % 3 {
            0 => {
                counter += ((i * 13) % 17) as f64;
                counter
            }
            1 => ((i + chunk) as f64 * 0.37).sin() * 100.0,
            _ => 42.0,
        };
        out.push((t, v));
    }
    out
}

fn bench_xor(c: &mut Criterion) {
    let inputs: Vec<Vec<(i64, f64)>> = (0..CHUNKS).map(series).collect();
    let encoded: Vec<Vec<u8>> = inputs
        .iter()
        .map(|s| {
            let mut ch = XorChunk::new();
            for &(t, v) in s {
                ch.append(t, v);
            }
            ch.bytes().to_vec()
        })
        .collect();
    let total = (CHUNKS * SAMPLES_PER_CHUNK) as u64;

    let mut g = c.benchmark_group("xor");
    g.throughput(Throughput::Elements(total));
    g.bench_function("append_120_sample_chunks", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for s in &inputs {
                let mut ch = XorChunk::new();
                for &(t, v) in s {
                    ch.append(t, v);
                }
                bytes += black_box(ch.bytes()).len();
            }
            bytes
        })
    });
    g.bench_function("decode_120_sample_chunks", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            for data in &encoded {
                for s in XorIterator::new(black_box(data)) {
                    sum = sum.wrapping_add(s.t) ^ s.v.to_bits() as i64;
                }
            }
            sum
        })
    });
    g.finish();
}

criterion_group!(benches, bench_xor);
criterion_main!(benches);
