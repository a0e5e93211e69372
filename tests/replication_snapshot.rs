//! WAL group snapshots and log purge with real `hearth` processes on loopback:
//! three nodes with RF=3, small `--cluster.wal-group.snapshot-entries` and
//! `--cluster.wal-group.segment-size`. With one node stopped, many writes make the
//! others snapshot and purge their logs (the segment count stays bounded); the
//! stopped node, restarted, is behind the purged log and catches up by snapshot,
//! then log, and returns every acknowledged sample on its own. A restarted node
//! resumes from its newest snapshot and re-applies only the log after it. Prints
//! catch-up time, snapshot size and segments purged as `FIGURE` lines.

mod common;

use common::node::*;
use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Series each request writes one sample to.
const SERIES: usize = 8;
/// Requests written while one node is down (each is one log entry of the group of
/// the node it is sent to).
const REQUESTS: i64 = 1600;
/// Milliseconds between the timestamps of consecutive requests. The samples stay
/// close to now: each node also scrapes itself into its group, and a head refuses
/// samples more than an hour older than its newest (on every replica alike).
const STEP_MS: i64 = 100;
/// `--cluster.wal-group.snapshot-entries` of the test.
const SNAPSHOT_ENTRIES: u64 = 200;
/// `--cluster.wal-group.segment-size` of the test.
const SEGMENT_BYTES: u64 = 16 << 10;

fn value(i: i64, s: usize) -> f64 {
    (i * 1000 + s as i64) as f64 + 0.5
}

fn node_args(nodes: &[Node]) -> Vec<String> {
    vec![
        initial_peers_flag(nodes),
        "--web.enable-remote-write-receiver".into(),
        "--cluster.replication-factor=3".into(),
        format!("--cluster.wal-group.snapshot-entries={SNAPSHOT_ENTRIES}"),
        format!("--cluster.wal-group.segment-size={SEGMENT_BYTES}"),
    ]
}

/// Every sample of `snap_test` a node returns: series index -> timestamp -> value.
fn read_all(addr: &str, at_s: i64) -> Option<BTreeMap<usize, BTreeMap<i64, f64>>> {
    samples_by_series(addr, "snap_test", at_s)
}

/// Whether `got` holds exactly the samples of requests `0..n`.
fn complete(got: &BTreeMap<usize, BTreeMap<i64, f64>>, base_ms: i64, n: i64) -> Result<(), String> {
    for s in 0..SERIES {
        let have = got.get(&s).cloned().unwrap_or_default();
        for i in 0..n {
            let t = base_ms + i * STEP_MS;
            match have.get(&t) {
                Some(v) if *v == value(i, s) => {}
                other => return Err(format!("series {s} request {i}: {other:?}")),
            }
        }
        if have.len() as i64 != n {
            return Err(format!("series {s}: {} samples, want {n}", have.len()));
        }
    }
    Ok(())
}

/// Segment files of a group's log on a node.
fn log_segments(data: &Path, group: u64) -> usize {
    let dir = data.join(format!("cluster/groups/{group}/raft/log"));
    std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().to_string();
                    n.len() == 8 && n.bytes().all(|b| b.is_ascii_digit())
                })
                .count()
        })
        .unwrap_or(0)
}

/// Sends request `i` to `addr` until it is acknowledged.
fn write_acked(addr: &str, nodes: &[&Node], base_ms: i64, i: i64) {
    let t = base_ms + i * STEP_MS;
    wait_for(
        &format!("request {i} acknowledged by {addr}"),
        nodes,
        || {
            let ts: Vec<_> = (0..SERIES)
                .map(|s| series("snap_test", &[("s", &s.to_string())], &[(t, value(i, s))]))
                .collect();
            match try_remote_write(addr, ts) {
                Ok((204, _)) => Some(()),
                _ => None,
            }
        },
    );
}

#[test]
fn a_replica_behind_the_purged_log_catches_up_by_snapshot_and_restarts_resume_from_one() {
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
        // Every node's WAL group formed, with all three replicas.
        wait_groups_formed(&refs, "snap_probe", base_ms - 1000);
        // A few writes everybody has.
        for i in 0..10 {
            write_acked(&nodes[(i % 2) as usize].web, &refs, base_ms, i);
        }
    }

    // Node 3 goes away; the others take many writes.
    nodes[2].stop();
    let started = Instant::now();
    {
        let refs: Vec<&Node> = nodes[..2].iter().collect();
        for i in 10..REQUESTS {
            write_acked(&nodes[(i % 2) as usize].web, &refs, base_ms, i);
        }
    }
    let write_s = started.elapsed().as_secs_f64();
    println!("{} requests written in {write_s:.1}s", REQUESTS - 10);

    // Nodes 1 and 2 snapshotted and purged the logs of groups 1 and 2.
    let mut purged_total = 0.0;
    for n in &nodes[..2] {
        for g in [1u64, 2] {
            let built =
                group_metric(&n.web, "hearth_wal_group_snapshots_built_total", g).unwrap_or(0.0);
            let purged =
                group_metric(&n.web, "hearth_wal_group_segments_purged_total", g).unwrap_or(0.0);
            let segs = log_segments(&n.data, g);
            println!(
                "node {} group {g}: {built} snapshots, {purged} segments purged, {segs} left",
                n.id
            );
            assert!(built >= 1.0, "node {} group {g} took no snapshot", n.id);
            assert!(purged >= 1.0, "node {} group {g} purged no segment", n.id);
            // At most a snapshot interval plus the tail, in segments of at least
            // a few dozen entries, plus the active one.
            assert!(segs <= 12, "node {} group {g}: {segs} segments left", n.id);
            purged_total += purged;
        }
    }

    // Node 3 comes back: groups 1 and 2 purged what it lacks, so it gets snapshots.
    nodes[2].start(&args);
    let at_s = (base_ms + REQUESTS * STEP_MS) / 1000 + 60;
    let started = Instant::now();
    {
        let refs: Vec<&Node> = nodes.iter().collect();
        let mut last = String::new();
        wait_for("node 3 to return every acknowledged sample", &refs, || {
            // Node 3 answers complete data as soon as it is up (groups it has not
            // caught up yet are read from a peer), so wait for its own replicas.
            for g in [1u64, 2] {
                let installed = group_metric(
                    &nodes[2].web,
                    "hearth_wal_group_snapshots_installed_total",
                    g,
                )?;
                if installed < 1.0 {
                    return None;
                }
            }
            let got = read_all(&nodes[2].web, at_s)?;
            match complete(&got, base_ms, REQUESTS) {
                Ok(()) => Some(()),
                Err(p) => {
                    if p != last {
                        let state: Vec<String> = [1u64, 2, 3]
                            .iter()
                            .map(|&g| {
                                format!(
                                    "group {g}: applied {:?} snapshot {:?}",
                                    group_metric(
                                        &nodes[2].web,
                                        "hearth_wal_group_entries_applied_total",
                                        g
                                    ),
                                    group_metric(
                                        &nodes[2].web,
                                        "hearth_wal_group_snapshot_index",
                                        g
                                    )
                                )
                            })
                            .collect();
                        eprintln!("waiting: node 3: {p}; {state:?}");
                        last = p;
                    }
                    None
                }
            }
        });
    }
    let catch_up = started.elapsed();
    let mut snapshot_bytes = 0.0;
    for g in [1u64, 2] {
        let installed = group_metric(
            &nodes[2].web,
            "hearth_wal_group_snapshots_installed_total",
            g,
        )
        .unwrap_or(0.0);
        assert!(
            installed >= 1.0,
            "node 3 caught up group {g} without a snapshot"
        );
        snapshot_bytes +=
            group_metric(&nodes[2].web, "hearth_wal_group_snapshot_bytes", g).unwrap_or(0.0);
    }

    // Node 1 restarts: it opens its groups from their newest snapshots and applies
    // only the log after them.
    let snap_index =
        group_metric(&nodes[0].web, "hearth_wal_group_snapshot_index", 1).expect("snapshot index");
    assert!(snap_index > 0.0);
    nodes[0].stop();
    nodes[0].start(&args);
    {
        let refs: Vec<&Node> = nodes.iter().collect();
        wait_for("node 1 to return every acknowledged sample", &refs, || {
            let got = read_all(&nodes[0].web, at_s)?;
            complete(&got, base_ms, REQUESTS).ok()
        });
    }
    let reapplied = group_metric(&nodes[0].web, "hearth_wal_group_entries_applied_total", 1)
        .expect("entries applied");
    let resumed_at =
        group_metric(&nodes[0].web, "hearth_wal_group_snapshot_index", 1).expect("snapshot index");
    println!(
        "node 1 group 1: resumed from snapshot at {resumed_at}, re-applied {reapplied} entries"
    );
    assert!(
        resumed_at >= snap_index,
        "node 1 did not resume from its snapshot"
    );
    assert!(
        reapplied <= (SNAPSHOT_ENTRIES + 20) as f64,
        "node 1 re-applied {reapplied} entries of group 1 (about {} in all)",
        REQUESTS / 2
    );

    // Node 3 alone: the others gone, it still returns everything.
    nodes[0].kill();
    nodes[1].kill();
    let got = read_all(&nodes[2].web, at_s).expect("node 3 answers alone");
    complete(&got, base_ms, REQUESTS).expect("node 3 alone holds every acknowledged sample");

    println!("FIGURE snapshot_catch_up_s={:.2}", catch_up.as_secs_f64());
    println!("FIGURE snapshot_bytes_groups_1_2={snapshot_bytes}");
    println!("FIGURE segments_purged_nodes_1_2={purged_total}");
    println!("FIGURE reapplied_entries_after_restart={reapplied}");
}
