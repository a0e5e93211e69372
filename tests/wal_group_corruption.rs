//! A damaged WAL group log on one replica, with real `hearth` processes on
//! loopback: three nodes with RF=3 and small log segments. Node 3 is stopped, a
//! byte in the middle of a segment of its copy of group 1's log is flipped, and
//! writes go on. Restarted, node 3 detects the damage (frame CRC), drops its copy
//! of group 1 (log, TSDB, snapshots), says so in its log and in
//! `hearth_wal_group_replicas_dropped_total`, receives the group again from its
//! peers, and then returns every acknowledged sample on its own. Meanwhile it
//! never returns a sample that was not written.

mod common;

use common::node::*;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Series each request writes one sample to.
const SERIES: usize = 4;
/// Requests written before node 3 stops, and again while it is down.
const REQUESTS: i64 = 300;
const STEP_MS: i64 = 100;
/// `--cluster.wal-group.segment-size` of the test: many segments per log (an
/// entry of this test is about 100 bytes once its series have ids).
const SEGMENT_BYTES: u64 = 4 << 10;

fn value(i: i64, s: usize) -> f64 {
    (i * 1000 + s as i64) as f64 + 0.75
}

fn node_args(nodes: &[Node]) -> Vec<String> {
    vec![
        initial_peers_flag(nodes),
        "--web.enable-remote-write-receiver".into(),
        "--cluster.replication-factor=3".into(),
        "--cluster.wal-group.snapshot-entries=250".into(),
        format!("--cluster.wal-group.segment-size={SEGMENT_BYTES}"),
    ]
}

/// Checks what a node returns against requests `0..n`: `Err` names a sample that
/// was never written (always a failure); `Ok(false)` means some are missing yet.
fn check(got: &BTreeMap<usize, BTreeMap<i64, f64>>, base_ms: i64, n: i64) -> Result<bool, String> {
    let mut complete = true;
    for s in 0..SERIES {
        let have = got.get(&s).cloned().unwrap_or_default();
        for (t, v) in &have {
            let i = (t - base_ms) / STEP_MS;
            if (t - base_ms) % STEP_MS != 0 || !(0..n).contains(&i) || *v != value(i, s) {
                return Err(format!("series {s}: sample ({t}, {v}) was never written"));
            }
        }
        complete &= have.len() as i64 == n;
    }
    Ok(complete)
}

/// Segment files of a group's log on a node, oldest first.
fn log_segments(data: &Path, group: u64) -> Vec<PathBuf> {
    let dir = data.join(format!("cluster/groups/{group}/raft/log"));
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.len() == 8 && n.bytes().all(|b| b.is_ascii_digit())
        })
        .collect();
    v.sort();
    v
}

/// Sends request `i` to `addr` until it is acknowledged.
fn write_acked(addr: &str, nodes: &[&Node], base_ms: i64, i: i64) {
    let t = base_ms + i * STEP_MS;
    wait_for(
        &format!("request {i} acknowledged by {addr}"),
        nodes,
        || {
            let ts: Vec<_> = (0..SERIES)
                .map(|s| {
                    series(
                        "corrupt_test",
                        &[("s", &s.to_string())],
                        &[(t, value(i, s))],
                    )
                })
                .collect();
            matches!(try_remote_write(addr, ts), Ok((204, _))).then_some(())
        },
    );
}

#[test]
fn a_replica_with_a_damaged_log_drops_its_copy_and_resyncs_from_its_peers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (1..=3).map(|i| Node::new(tmp.path(), i)).collect();
    let args = node_args(&nodes);
    for n in nodes.iter_mut() {
        n.start(&args);
    }
    let base_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 120_000;
    {
        let refs: Vec<&Node> = nodes.iter().collect();
        wait_for("a leader with three voters", &refs, || {
            agreed_leader(&refs, 3)
        });
        wait_groups_formed(&refs, "corrupt_probe", base_ms - 1000);
        for i in 0..REQUESTS {
            write_acked(&nodes[(i % 2) as usize].web, &refs, base_ms, i);
        }
        // Node 3 has group 1's log up to here before it stops.
        let at_s = (base_ms + REQUESTS * STEP_MS) / 1000 + 60;
        wait_for("node 3 to hold the first requests", &refs, || {
            let got = samples_by_series(&nodes[2].web, "corrupt_test", at_s)?;
            check(&got, base_ms, REQUESTS).unwrap().then_some(())
        });
    }

    // Node 3 stops; a byte in the middle of an older segment of its group 1 log
    // is flipped.
    nodes[2].stop();
    let segments = log_segments(&nodes[2].data, 1);
    assert!(
        segments.len() >= 2,
        "group 1's log on node 3 has {} segments",
        segments.len()
    );
    let victim = &segments[segments.len() - 2];
    let mut bytes = std::fs::read(victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(victim, &bytes).unwrap();
    println!("flipped byte {at} of {}", victim.display());

    // Writes go on without node 3.
    {
        let refs: Vec<&Node> = nodes[..2].iter().collect();
        for i in REQUESTS..2 * REQUESTS {
            write_acked(&nodes[(i % 2) as usize].web, &refs, base_ms, i);
        }
    }

    nodes[2].start(&args);
    let at_s = (base_ms + 2 * REQUESTS * STEP_MS) / 1000 + 60;
    let started = Instant::now();
    {
        let refs: Vec<&Node> = nodes.iter().collect();
        wait_for("node 3 to return every acknowledged sample", &refs, || {
            let got = samples_by_series(&nodes[2].web, "corrupt_test", at_s)?;
            check(&got, base_ms, 2 * REQUESTS)
                .unwrap_or_else(|e| panic!("node 3 served bad data: {e}"))
                .then_some(())
        });
    }
    let resync = started.elapsed();
    assert_eq!(
        group_metric(&nodes[2].web, "hearth_wal_group_replicas_dropped_total", 1),
        Some(1.0),
        "node 3 does not report dropping its copy of group 1"
    );
    for g in [2u64, 3] {
        assert_eq!(
            group_metric(&nodes[2].web, "hearth_wal_group_replicas_dropped_total", g),
            Some(0.0),
            "node 3 dropped its intact copy of group {g}"
        );
    }
    let log = std::fs::read_to_string(&nodes[2].log).unwrap();
    assert!(
        log.contains("WAL group log is damaged"),
        "node 3's log does not say what happened:\n{log}"
    );
    let installed = group_metric(
        &nodes[2].web,
        "hearth_wal_group_snapshots_installed_total",
        1,
    )
    .unwrap_or(0.0);

    // Node 3 answered through its peers while its own copies caught up; before it
    // is left alone, its replicas must have applied what the others did: group 1
    // (dropped and sent again) and group 2 (behind since node 3 was down), and
    // group 3 for good measure.
    {
        let refs: Vec<&Node> = nodes.iter().collect();
        for g in 1..=3u64 {
            wait_for(
                &format!("node 3's copy of group {g} to catch up"),
                &refs,
                || {
                    let applied =
                        |n: &Node| group_metric(&n.web, "hearth_wal_group_applied_index", g);
                    let others = applied(&nodes[0])?.max(applied(&nodes[1])?);
                    (applied(&nodes[2])? >= others).then_some(())
                },
            );
        }
    }
    // Node 3 alone still returns everything.
    nodes[0].kill();
    nodes[1].kill();
    let got = samples_by_series(&nodes[2].web, "corrupt_test", at_s).expect("node 3 answers");
    assert_eq!(check(&got, base_ms, 2 * REQUESTS), Ok(true));

    println!(
        "FIGURE corrupt_replica_resync_s={:.2}",
        resync.as_secs_f64()
    );
    println!("FIGURE corrupt_replica_snapshots_installed={installed}");
}
