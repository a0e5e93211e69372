//! Round-trip, layout and corruption tests for the block index.

use super::*;
use crate::labels::{Labels, MatchType, Matcher};
use crate::tsdb::postings::tests::{brute_force, label_sets, matchers};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Writes `series` (sorted here) with their chunks and returns them in ID order.
fn write_index(
    path: &Path,
    mut series: Vec<(Labels, Vec<ChunkMeta>)>,
) -> Vec<(u64, Labels, Vec<ChunkMeta>)> {
    series.sort_by(|a, b| a.0.cmp(&b.0));
    series.dedup_by(|a, b| a.0 == b.0);
    let mut symbols = BTreeSet::new();
    for (l, _) in &series {
        for l in l.iter() {
            symbols.insert(l.name.to_string());
            symbols.insert(l.value.to_string());
        }
    }
    let mut w = IndexWriter::create(path).unwrap();
    w.add_symbols(symbols.iter().map(String::as_str)).unwrap();
    let mut out = Vec::new();
    for (l, c) in series {
        let id = w.add_series(&l, &c).unwrap();
        out.push((id, l, c));
    }
    w.finish().unwrap();
    out
}

/// Chunk metas for series number `i`: increasing refs across series, as a block writer produces.
fn chunks_for(i: usize, n: usize, base_t: i64) -> Vec<ChunkMeta> {
    (0..n)
        .map(|k| ChunkMeta {
            mint: base_t + k as i64 * 1000,
            maxt: base_t + k as i64 * 1000 + 999,
            chunk_ref: ((i * 10 + k) as u64) * 37,
        })
        .collect()
}

fn check_everything(r: &IndexReader, written: &[(u64, Labels, Vec<ChunkMeta>)]) {
    let mut pairs: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    let mut symbols = BTreeSet::new();
    for (id, l, c) in written {
        let (got_l, got_c) = r.series(*id).unwrap();
        assert_eq!(&got_l, l);
        assert_eq!(&got_c, c);
        for l in l.iter() {
            pairs
                .entry((l.name.into(), l.value.into()))
                .or_default()
                .push(*id);
            symbols.insert(l.name.to_string());
            symbols.insert(l.value.to_string());
        }
    }
    assert_eq!(
        r.symbols().unwrap(),
        symbols.into_iter().collect::<Vec<_>>()
    );
    let all: Vec<u64> = written.iter().map(|w| w.0).collect();
    assert_eq!(r.all_postings().unwrap(), all);
    let names: BTreeSet<String> = pairs.keys().map(|k| k.0.clone()).collect();
    assert_eq!(
        r.label_names().unwrap(),
        names.iter().cloned().collect::<Vec<_>>()
    );
    for n in &names {
        let vals: Vec<String> = pairs
            .keys()
            .filter(|k| &k.0 == n)
            .map(|k| k.1.clone())
            .collect();
        assert_eq!(&r.label_values(n).unwrap(), &vals);
    }
    for ((n, v), ids) in &pairs {
        assert_eq!(&r.postings(n, v).unwrap(), ids, "postings {n}={v}");
    }
    assert!(r.postings("nope", "x").unwrap().is_empty());
    assert!(r.label_values("nope").unwrap().is_empty());
    assert!(r.label_values("").unwrap().is_empty());
}

fn arb_series() -> impl Strategy<Value = Vec<(Labels, Vec<ChunkMeta>)>> {
    let name = prop_oneof![Just("__name__".to_string()), "[a-c]{1,3}", "[a-z_]{1,12}"];
    let value = prop_oneof!["[a-z0-9]{1,6}", "\\PC{1,20}", Just("x".repeat(300))];
    let labels =
        proptest::collection::vec((name, value), 1..5).prop_map(|pairs| Labels::from_pairs(&pairs));
    let chunk = (any::<i32>(), 0u32..100_000, 0u8..4);
    proptest::collection::vec((labels, proptest::collection::vec(chunk, 0..5)), 0..40).prop_map(
        |rows| {
            let mut next_ref = 0u64;
            let mut out = Vec::new();
            for (l, cs) in rows {
                let mut t = cs.first().map(|c| c.0 as i64 * 1000).unwrap_or(0);
                let mut metas = Vec::new();
                for (_, len, gap) in cs {
                    let mint = t;
                    let maxt = mint + len as i64;
                    next_ref += gap as u64 * 1_000_000_007;
                    metas.push(ChunkMeta {
                        mint,
                        maxt,
                        chunk_ref: next_ref,
                    });
                    t = maxt + 1 + gap as i64;
                }
                out.push((l, metas));
            }
            out
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn round_trip(series in arb_series()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        // Chunk refs must increase in label order, so reassign them after sorting.
        let mut series = series;
        series.sort_by(|a, b| a.0.cmp(&b.0));
        series.dedup_by(|a, b| a.0 == b.0);
        let mut r = 0u64;
        for (_, cs) in series.iter_mut() {
            for c in cs.iter_mut() {
                r += 1 + (c.chunk_ref % 1000);
                c.chunk_ref = r << 3;
            }
        }
        let written = write_index(&path, series);
        let reader = IndexReader::open(&path).unwrap();
        check_everything(&reader, &written);
    }

    #[test]
    fn postings_for_matchers_agrees_with_brute_force(series in label_sets(), ms in matchers()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let series: Vec<Labels> = series.into_iter().filter(|l| !l.is_empty()).collect();
        let written = write_index(&path, series.iter().map(|l| (l.clone(), vec![])).collect());
        let r = IndexReader::open(&path).unwrap();
        let in_order: Vec<Labels> = written.iter().map(|w| w.1.clone()).collect();
        let ids: Vec<u64> = written.iter().map(|w| w.0).collect();
        let want: Vec<u64> = brute_force(&in_order, &ms).into_iter().map(|i| ids[i as usize]).collect();
        prop_assert_eq!(r.postings_for_matchers(&ms).unwrap(), want, "matchers {:?}", ms);
    }
}

/// The exact bytes of a one-series index, worked out by hand from the Go writer.
#[test]
fn byte_layout_matches_go_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    let l = Labels::from_pairs(&[("a", "1")]);
    let chunks = [
        ChunkMeta {
            mint: 0,
            maxt: 9,
            chunk_ref: 8,
        },
        ChunkMeta {
            mint: 10,
            maxt: 20,
            chunk_ref: 30,
        },
    ];
    write_index(&path, vec![(l, chunks.to_vec())]);
    let got = std::fs::read(&path).unwrap();

    let crc = |b: &[u8]| crc32c::crc32c(b).to_be_bytes();
    let mut want = vec![0xBA, 0xAA, 0xD7, 0x00, 2];
    // Symbols at 5: len 8, count 2, "1", "a".
    let sym_body = [0, 0, 0, 2, 1, b'1', 1, b'a'];
    want.extend_from_slice(&[0, 0, 0, 8]);
    want.extend_from_slice(&sym_body);
    want.extend_from_slice(&crc(&sym_body));
    assert_eq!(want.len(), 21);
    // Series section starts at 21 (TOC), first series padded to 32 → ID 2.
    want.resize(32, 0);
    let series_body = [
        1, 1, 0, // one label: name ref 1 ("a"), value ref 0 ("1")
        2, // two chunks
        0, 9, 8, // mint varint 0, maxt-mint 9, ref 8
        1, 10, 44, // mint-prev maxt 1, maxt-mint 10, ref delta +22 as zig-zag varint
    ];
    want.push(series_body.len() as u8);
    want.extend_from_slice(&series_body);
    want.extend_from_slice(&crc(&series_body));
    let series_end = want.len() as u64; // 47: label indices and postings TOC entries
                                        // Postings padded to 48: all postings [2], then a=1 [2].
    want.resize(48, 0);
    let post_body = [0, 0, 0, 1, 0, 0, 0, 2];
    for _ in 0..2 {
        want.extend_from_slice(&[0, 0, 0, 8]);
        want.extend_from_slice(&post_body);
        want.extend_from_slice(&crc(&post_body));
    }
    let table_at = want.len() as u64; // 80
    let mut table = vec![0, 0, 0, 2];
    table.extend_from_slice(&[2, 0, 0, 48]);
    table.extend_from_slice(&[2, 1, b'a', 1, b'1', 64]);
    want.extend_from_slice(&(table.len() as u32).to_be_bytes());
    want.extend_from_slice(&table);
    want.extend_from_slice(&crc(&table));
    let mut toc = Vec::new();
    for off in [5, 21, series_end, table_at, series_end, table_at] {
        toc.extend_from_slice(&u64::to_be_bytes(off));
    }
    want.extend_from_slice(&toc);
    want.extend_from_slice(&crc(&toc));
    assert_eq!(got, want);

    let r = IndexReader::open(&path).unwrap();
    assert_eq!(r.series(2).unwrap().1, chunks);
}

#[test]
fn empty_index_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    IndexWriter::create(&path).unwrap().finish().unwrap();
    let r = IndexReader::open(&path).unwrap();
    assert!(r.symbols().unwrap().is_empty());
    assert!(r.all_postings().unwrap().is_empty());
    assert!(r.label_names().unwrap().is_empty());
    let m = Matcher::new(MatchType::NotEqual, "a", "b").unwrap();
    assert!(r.postings_for_matchers(&[m]).unwrap().is_empty());
    assert!(matches!(
        r.series(0),
        Err(IndexError::SeriesNotFound { .. })
    ));
}

#[test]
fn writer_rejects_misuse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    let mut w = IndexWriter::create(&path).unwrap();
    assert!(w.add_symbols(["b", "a"]).is_err());
    let mut w = IndexWriter::create(&path).unwrap();
    w.add_symbols(["1", "2", "a"]).unwrap();
    assert!(w.add_series(&Labels::empty(), &[]).is_err());
    assert!(
        w.add_series(&Labels::from_pairs(&[("a", "3")]), &[])
            .is_err(),
        "unknown symbol"
    );
    w.add_series(&Labels::from_pairs(&[("a", "2")]), &[])
        .unwrap();
    assert!(
        w.add_series(&Labels::from_pairs(&[("a", "1")]), &[])
            .is_err(),
        "out of order"
    );
    assert!(w.add_symbols(["b"]).is_err(), "symbols after series");

    let mut w = IndexWriter::create(&path).unwrap();
    w.add_symbols(["1", "2", "a"]).unwrap();
    let overlap = [
        ChunkMeta {
            mint: 0,
            maxt: 10,
            chunk_ref: 1,
        },
        ChunkMeta {
            mint: 10,
            maxt: 20,
            chunk_ref: 2,
        },
    ];
    assert!(w
        .add_series(&Labels::from_pairs(&[("a", "1")]), &overlap)
        .is_err());
    let backwards = [ChunkMeta {
        mint: 5,
        maxt: 4,
        chunk_ref: 1,
    }];
    assert!(w
        .add_series(&Labels::from_pairs(&[("a", "1")]), &backwards)
        .is_err());
    w.add_series(
        &Labels::from_pairs(&[("a", "1")]),
        &[ChunkMeta {
            mint: 0,
            maxt: 1,
            chunk_ref: 100,
        }],
    )
    .unwrap();
    let lower_ref = [ChunkMeta {
        mint: 0,
        maxt: 1,
        chunk_ref: 99,
    }];
    assert!(w
        .add_series(&Labels::from_pairs(&[("a", "2")]), &lower_ref)
        .is_err());
}

fn sample_index(dir: &Path) -> (std::path::PathBuf, Vec<(u64, Labels, Vec<ChunkMeta>)>) {
    let path = dir.join("index");
    let series = (0..12)
        .map(|i| {
            let l = Labels::from_pairs(&[
                ("__name__", if i % 3 == 0 { "up" } else { "down" }),
                ("instance", &format!("host-{i}")),
                ("job", if i % 2 == 0 { "a" } else { "b" }),
            ]);
            (l, vec![])
        })
        .collect::<Vec<(Labels, Vec<ChunkMeta>)>>();
    let mut series = series;
    series.sort_by(|a, b| a.0.cmp(&b.0));
    let series = series
        .into_iter()
        .enumerate()
        .map(|(i, (l, _))| (l, chunks_for(i, 1 + i % 3, -5_000 + i as i64)))
        .collect();
    let written = write_index(&path, series);
    (path, written)
}

/// Reads everything an index holds, discarding the results; for damage tests.
fn read_all(path: &Path) -> Result<(), IndexError> {
    let r = IndexReader::open(path)?;
    r.symbols()?;
    for id in r.all_postings()? {
        r.series(id)?;
    }
    for n in r.label_names()? {
        for v in r.label_values(&n)? {
            r.postings(&n, &v)?;
        }
    }
    let m = Matcher::new(MatchType::Regexp, "instance", "host-1.*").unwrap();
    r.postings_for_matchers(&[m])?;
    Ok(())
}

#[test]
fn damaged_bytes_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let (path, written) = sample_index(dir.path());
    check_everything(&IndexReader::open(&path).unwrap(), &written);
    let good = std::fs::read(&path).unwrap();
    let bad = dir.path().join("bad");
    let mut detected = 0;
    for i in 0..good.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = good.clone();
            b[i] ^= flip;
            std::fs::write(&bad, &b).unwrap();
            if let Err(e) = read_all(&bad) {
                detected += 1;
                let msg = e.to_string();
                assert!(msg.contains("bad"), "error names the file: {msg}");
            }
        }
    }
    // Padding bytes are not covered by any checksum; everything else is.
    assert!(
        detected > good.len() * 3 * 3 / 4,
        "only {detected} damaged copies detected"
    );
    for len in 0..good.len() {
        std::fs::write(&bad, &good[..len]).unwrap();
        assert!(read_all(&bad).is_err(), "truncated to {len} bytes");
    }
}

#[test]
fn errors_name_path_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sample_index(dir.path());
    let mut b = std::fs::read(&path).unwrap();
    // Damage the first series' body (it starts 16-byte aligned after the symbols).
    let toc_at = b.len() - TOC_LEN_BYTES;
    let series_at = u64::from_be_bytes(b[toc_at + 8..toc_at + 16].try_into().unwrap());
    let first = series_at.div_ceil(16) * 16;
    b[first as usize + 2] ^= 0xff;
    std::fs::write(&path, &b).unwrap();
    let r = IndexReader::open(&path).unwrap();
    let err = r.series(first / 16).unwrap_err().to_string();
    assert!(
        err.contains("index") && err.contains(&format!("byte {first}")),
        "{err}"
    );

    b[4] = 1;
    std::fs::write(&path, &b).unwrap();
    let err = IndexReader::open(&path).unwrap_err();
    assert!(
        matches!(err, IndexError::UnsupportedVersion { version: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("version 1"));
}

/// An index written by Prometheus 2.42 (`promtool tsdb create-blocks-from openmetrics`
/// on `testdata/prometheus-2.42-block/source.om`); it still has the legacy label
/// index sections, which we skip.
#[test]
fn reads_index_written_by_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    std::fs::write(
        &path,
        include_bytes!("../testdata/prometheus-2.42-block/index"),
    )
    .unwrap();
    let r = IndexReader::open(&path).unwrap();
    assert_eq!(r.version(), 2);
    assert_eq!(
        r.label_names().unwrap(),
        ["__name__", "code", "instance", "path", "room"]
    );
    assert_eq!(
        r.label_values("__name__").unwrap(),
        ["http_requests_total", "temp"]
    );
    assert_eq!(r.label_values("path").unwrap(), ["/a\\b\"c"]);
    let all = r.all_postings().unwrap();
    assert_eq!(all.len(), 11);
    let mut last_ref = None;
    let mut seen = Vec::new();
    for &id in &all {
        let (l, chunks) = r.series(id).unwrap();
        assert_eq!(chunks.len(), 1, "{l}");
        let c = chunks[0];
        assert_eq!(c.mint, 1_700_000_000_000);
        let want_maxt = if l.metric_name() == "temp" {
            1_700_006_360_000
        } else {
            1_700_000_120_000
        };
        assert_eq!(c.maxt, want_maxt, "{l}");
        assert!(last_ref.is_none_or(|p| p < c.chunk_ref));
        last_ref = Some(c.chunk_ref);
        seen.push(l);
    }
    assert_eq!(
        r.series(all[0]).unwrap().1[0].chunk_ref,
        8,
        "first chunk follows the segment header"
    );
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "series IDs follow label order"
    );
    assert_eq!(
        seen[0].to_string(),
        r#"{__name__="http_requests_total", code="200", instance="host-0", path="/a\\b\"c"}"#
    );
    assert_eq!(r.postings("code", "500").unwrap().len(), 5);
    let ms = [
        Matcher::new(MatchType::Regexp, "instance", "host-[0-2]").unwrap(),
        Matcher::new(MatchType::NotEqual, "code", "200").unwrap(),
    ];
    assert_eq!(r.postings_for_matchers(&ms).unwrap().len(), 3);
    let ms = [Matcher::equal("code", "")];
    assert_eq!(
        r.postings_for_matchers(&ms).unwrap().len(),
        1,
        "only temp lacks code"
    );
}
