//! hearth's backfilled blocks are no larger than promtool's for the same samples:
//! chunks are cut where Prometheus's head cuts them, so a block holds as many chunks
//! as Prometheus's, and the index is no larger. `benches/block_size.sh` measures the
//! same on exporter data; this pins it on generated data.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// 2023-11-14T22:13:20Z: 13 min 20 s into a two-hour range, so the first block is
/// partial. A partial range is where cutting every 120 samples costs an extra chunk
/// per series (427 samples: 120+120+120+67 instead of Prometheus's 143+142+142).
const START_MS: i64 = 1_700_000_000_000;

/// Sizes of one block directory.
#[derive(Debug)]
struct BlockSize {
    min_time: i64,
    samples: u64,
    chunks: u64,
    chunk_bytes: u64,
    index_bytes: u64,
}

fn block_sizes(dir: &Path) -> Vec<BlockSize> {
    let mut out: Vec<BlockSize> = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let block: PathBuf = entry.unwrap().path();
        let Ok(meta) = std::fs::read_to_string(block.join("meta.json")) else {
            continue;
        };
        let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
        let chunk_bytes = std::fs::read_dir(block.join("chunks"))
            .unwrap()
            .map(|f| f.unwrap().metadata().unwrap().len())
            .sum();
        out.push(BlockSize {
            min_time: meta["minTime"].as_i64().unwrap(),
            samples: meta["stats"]["numSamples"].as_u64().unwrap(),
            chunks: meta["stats"]["numChunks"].as_u64().unwrap(),
            chunk_bytes,
            index_bytes: std::fs::metadata(block.join("index")).unwrap().len(),
        });
    }
    out.sort_by_key(|b| b.min_time);
    out
}

/// Scrape-like series every 15 s for five hours: counters with small increments and
/// gauges with few distinct values, whose chunks stay far below the 1 KiB chunk limit
/// that promtool 2.42 does not have, so both tools cut at the same samples.
fn scrape_like_series() -> Vec<GenSeries> {
    let mut rng = Rng(7);
    let n = 5 * 3600 / 15;
    (0..40)
        .map(|i| {
            let mut v = rng.below(1000) as f64;
            let samples = (0..n)
                .map(|k| {
                    if i % 2 == 0 {
                        v += rng.below(20) as f64;
                    } else {
                        v = rng.below(4) as f64;
                    }
                    (START_MS + k * 15_000, v)
                })
                .collect();
            GenSeries {
                name: if i % 2 == 0 {
                    "requests_total"
                } else {
                    "queue_depth"
                }
                .to_string(),
                labels: vec![
                    ("instance".to_string(), format!("host-{i}:9100")),
                    ("job".to_string(), "node".to_string()),
                ],
                samples,
            }
        })
        .collect()
}

#[test]
fn backfilled_blocks_are_no_larger_than_promtools() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input.om");
    write_openmetrics(&scrape_like_series(), &input);
    let prom_dir = tmp.path().join("prometheus");
    let hearth_dir = tmp.path().join("hearth");
    run_ok(
        promtool()
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(&prom_dir),
    );
    run_ok(
        std::process::Command::new(hearth_bin())
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(&hearth_dir),
    );
    let prom = block_sizes(&prom_dir);
    let hearth = block_sizes(&hearth_dir);
    assert_eq!(prom.len(), 3, "{prom:?}");
    assert_eq!(hearth.len(), prom.len(), "{hearth:?}");
    for (h, p) in hearth.iter().zip(&prom) {
        assert_eq!(h.samples, p.samples, "block at {}", p.min_time);
        assert_eq!(h.chunks, p.chunks, "chunks in the block at {}", p.min_time);
        // Equal chunks, except that promtool 2.42 sometimes pads a chunk with a
        // needless byte (fixed in Prometheus by prometheus/prometheus#14854).
        assert!(
            h.chunk_bytes <= p.chunk_bytes,
            "chunk bytes in the block at {}: hearth {h:?}, promtool {p:?}",
            p.min_time
        );
        assert!(
            h.index_bytes <= p.index_bytes,
            "index bytes in the block at {}: hearth {h:?}, promtool {p:?}",
            p.min_time
        );
    }
    // The partial first block holds 3 chunks per series, as Prometheus's does.
    assert_eq!(prom[0].chunks, 3 * 40);
}
