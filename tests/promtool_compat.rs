//! hearth's blocks and Prometheus's blocks are interchangeable: promtool reads what
//! hearth writes (backfilled and cut from the head), and hearth reads what promtool
//! writes, sample for sample.

mod common;

use common::*;
use hearth::labels::{Labels, MatchType, Matcher};
use hearth::storage::conformance::select_all;
use hearth::storage::{stale_nan, Appendable, Sample};
use hearth::tsdb::block::Block;
use hearth::tsdb::db::{Db, DbOptions};
use std::process::Command;
use std::sync::Arc;

const START_MS: i64 = 1_700_000_000_000;

fn all_matcher() -> Matcher {
    Matcher::new(MatchType::Regexp, "__name__", ".+").unwrap()
}

/// `promtool tsdb dump` of the blocks in `dir`. promtool also replays a WAL in
/// Prometheus's format from `wal/` (and insists the directory exists), so it reads a
/// copy of the block directories next to an empty `wal/`.
fn promtool_dump(dir: &std::path::Path) -> String {
    let tmp = tempfile::tempdir().unwrap();
    for b in hearth::cmd::tsdb::block_dirs(dir).unwrap() {
        copy_dir(&b, &tmp.path().join(b.file_name().unwrap()));
    }
    std::fs::create_dir_all(tmp.path().join("wal")).unwrap();
    let out = run_ok(promtool().args(["tsdb", "dump"]).arg(tmp.path()));
    String::from_utf8(out.stdout).expect("promtool dump is UTF-8")
}

fn hearth_dump(dir: &std::path::Path) -> String {
    let out = run_ok(Command::new(hearth_bin()).args(["tsdb", "dump"]).arg(dir));
    String::from_utf8(out.stdout).expect("hearth dump is UTF-8")
}

/// Line-by-line comparison that names the first difference instead of printing
/// megabytes.
fn assert_same_lines(got: &str, want: &str, what: &str) {
    let g: Vec<&str> = got.lines().collect();
    let w: Vec<&str> = want.lines().collect();
    for (i, (a, b)) in g.iter().zip(w.iter()).enumerate() {
        assert_eq!(a, b, "{what}: first difference at line {}", i + 1);
    }
    assert_eq!(g.len(), w.len(), "{what}: line counts differ");
}

#[test]
fn promtool_reads_blocks_backfilled_by_hearth() {
    let tmp = tempfile::tempdir().unwrap();
    let series = generate_series(7, 60, START_MS, 5);
    let input = tmp.path().join("input.om");
    write_openmetrics(&series, &input);
    let out_dir = tmp.path().join("blocks");
    run_ok(
        Command::new(hearth_bin())
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(&out_dir),
    );
    let blocks = hearth::cmd::tsdb::block_dirs(&out_dir).unwrap();
    assert!(blocks.len() >= 3, "5 hours make at least 3 two-hour blocks");

    // promtool analyzes each block without complaint.
    for b in &blocks {
        let id = b.file_name().unwrap().to_str().unwrap();
        let out = run_ok(promtool().args(["tsdb", "analyze"]).arg(&out_dir).arg(id));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("Block ID: {id}")), "{text}");
    }
    // promtool's dump is exactly what was written, and equal to hearth's own dump.
    let want = expected_dump(&series);
    assert_same_lines(
        &promtool_dump(&out_dir),
        &want,
        "promtool dump of hearth blocks",
    );
    assert_same_lines(
        &hearth_dump(&out_dir),
        &want,
        "hearth dump of hearth blocks",
    );
}

#[test]
fn hearth_reads_blocks_written_by_promtool() {
    let tmp = tempfile::tempdir().unwrap();
    let series = generate_series(11, 40, START_MS, 5);
    let input = tmp.path().join("input.om");
    write_openmetrics(&series, &input);
    let out_dir = tmp.path().join("blocks");
    run_ok(
        promtool()
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(&out_dir),
    );
    // Through storage::Queryable: every series, every sample, bit for bit.
    let db = Db::open(&out_dir, DbOptions::default()).unwrap();
    let got = select_all(&db, &[all_matcher()]);
    assert_eq!(got.len(), series.len());
    for s in &series {
        let mut pairs: Vec<(&str, &str)> = vec![("__name__", s.name.as_str())];
        pairs.extend(s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let labels = Labels::from_pairs(&pairs);
        let found = got
            .iter()
            .find(|g| g.labels == labels)
            .unwrap_or_else(|| panic!("series {labels} missing"));
        let want: Vec<Sample> = s.samples.iter().map(|&(t, v)| Sample { t, v }).collect();
        assert_eq!(found.samples.len(), want.len(), "{labels}");
        for (a, b) in found.samples.iter().zip(&want) {
            assert_eq!(a.t, b.t, "{labels}");
            if b.v.is_nan() {
                assert!(a.v.is_nan(), "{labels} at {}", a.t);
            } else {
                assert_eq!(a.v.to_bits(), b.v.to_bits(), "{labels} at {}", a.t);
            }
        }
    }
    drop(db);
    // And hearth's dump of Prometheus's blocks equals promtool's.
    assert_same_lines(
        &hearth_dump(&out_dir),
        &promtool_dump(&out_dir),
        "dumps of promtool blocks",
    );
}

#[test]
fn promtool_reads_blocks_cut_from_the_head() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let db = Db::open(&dir, DbOptions::default()).unwrap();
    let series = generate_series(3, 30, START_MS, 5);
    let mut app = db.appender();
    let mut stale_at = Vec::new();
    for (i, s) in series.iter().enumerate() {
        let mut pairs: Vec<(&str, &str)> = vec![("__name__", s.name.as_str())];
        pairs.extend(s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let labels = Labels::from_pairs(&pairs);
        let mut r = 0;
        for (k, &(t, v)) in s.samples.iter().enumerate() {
            // Every seventh series gets stale markers now and then.
            let v = if i % 7 == 0 && k % 50 == 49 {
                stale_at.push((labels.clone(), t));
                stale_nan()
            } else {
                v
            };
            r = app.append(r, &labels, t, v).unwrap();
        }
    }
    app.commit().unwrap();
    db.compact().unwrap();
    let metas = db.blocks();
    assert!(
        !metas.is_empty(),
        "the head spanning 5h must have been cut into blocks"
    );
    let cut_until = metas.iter().map(|m| m.max_time).max().unwrap();

    for m in &metas {
        let out = run_ok(
            promtool()
                .args(["tsdb", "analyze"])
                .arg(&dir)
                .arg(m.ulid.to_string()),
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("Block ID"));
    }
    let in_blocks: Vec<GenSeries> = series
        .iter()
        .enumerate()
        .map(|(i, s)| GenSeries {
            name: s.name.clone(),
            labels: s.labels.clone(),
            samples: s
                .samples
                .iter()
                .enumerate()
                .filter(|(_, &(t, _))| t < cut_until)
                .map(|(k, &(t, v))| {
                    (
                        t,
                        if i % 7 == 0 && k % 50 == 49 {
                            f64::NAN
                        } else {
                            v
                        },
                    )
                })
                .collect(),
        })
        .collect();
    assert_same_lines(
        &promtool_dump(&dir),
        &expected_dump(&in_blocks),
        "promtool dump of head-cut blocks",
    );

    // Stale markers survive bit for bit, read back from the blocks.
    for m in &metas {
        let block = Arc::new(Block::open(&dir.join(m.ulid.to_string())).unwrap());
        let hints = hearth::storage::SelectHints {
            start_ms: i64::MIN,
            end_ms: i64::MAX,
            series_only: false,
            newest_only: false,
        };
        for s in block
            .select(i64::MIN, i64::MAX, &hints, &[all_matcher()])
            .unwrap()
        {
            let s = s.unwrap();
            for x in &s.samples {
                let should_be_stale = stale_at.iter().any(|(l, t)| *l == s.labels && *t == x.t);
                assert_eq!(
                    hearth::storage::is_stale_nan(x.v),
                    should_be_stale,
                    "{} at {}",
                    s.labels,
                    x.t
                );
            }
        }
    }
}

fn copy_dir(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

#[test]
fn backfill_reports_bad_input_with_line_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("no_eof.om", "up 1 1700000000\n", "EOF"),
        ("bad_name.om", "3up 1 1700000000\n# EOF\n", "line 1"),
        (
            "ooo.om",
            "up 1 1700000100\nup 1 1700000000\n# EOF\n",
            "line 2: out of order",
        ),
        ("no_ts.om", "# TYPE up gauge\nup 1\n# EOF\n", "line 2"),
    ];
    for (name, text, want) in cases {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        let out = Command::new(hearth_bin())
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&p)
            .arg(tmp.path().join("out"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want) && err.contains(name), "{name}: {err}");
    }
}
