//! Target assignment by the ring with real `hearth` processes on loopback: three
//! nodes split N synthetic targets (served by an HTTP server in the test) into
//! disjoint subsets covering all of them; a fourth node joins and targets move
//! without a gap or a double scrape; a SIGKILLed node's targets move to the
//! survivors within the failure timeout and one interval.
//!
//! Two records are checked: the synthetic server's log of every scrape request it
//! answered (the ground truth of who scraped when, whatever the storage says), and
//! the `up` samples in the nodes' local data, unioned over the nodes.

mod common;

use common::node::*;
use common::scrape_log::*;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Number of synthetic targets.
const TARGETS: usize = 30;
const INTERVAL_MS: i64 = 1000;
const FAILURE_TIMEOUT_S: i64 = 3;
/// Number of rule groups, assigned by the same ring.
const GROUPS: usize = 12;

fn write_config(dir: &std::path::Path, target: &str) -> std::path::PathBuf {
    let mut rules = String::from("groups:\n");
    for g in 0..GROUPS {
        rules.push_str(&format!(
            "  - name: g{g}\n    interval: 1s\n    rules:\n      - record: synthetic:g{g}\n        expr: vector(1)\n"
        ));
    }
    std::fs::write(dir.join("rules.yml"), rules).unwrap();
    let yml = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nrule_files: [rules.yml]\n{}",
        synthetic_scrape_configs(target, TARGETS)
    );
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, yml).unwrap();
    path
}

/// Asks a node for its own view only (the API answers cluster-wide otherwise).
const LOCAL: &[(&str, &str)] = &[("X-Hearth-Scope", "local")];

/// The synthetic targets a node scrapes now, by its own `/api/v1/targets`.
fn local_targets(n: &Node) -> Option<BTreeSet<usize>> {
    let (code, body) = http("GET", &n.web, "/api/v1/targets", LOCAL, b"").ok()?;
    if code != 200 {
        return None;
    }
    let v: Value = serde_json::from_slice(&body).ok()?;
    let mut out = BTreeSet::new();
    for t in v["data"]["activeTargets"].as_array()? {
        if t["scrapePool"] == "synthetic" {
            out.insert(t["labels"]["tid"].as_str()?.parse().ok()?);
        }
    }
    Some(out)
}

/// When every node in `nodes` scrapes a non-empty subset, the subsets are
/// disjoint and together all targets: the subsets.
fn disjoint_cover(nodes: &[&Node]) -> Option<Vec<BTreeSet<usize>>> {
    let sets: Vec<BTreeSet<usize>> = nodes
        .iter()
        .map(|n| local_targets(n))
        .collect::<Option<_>>()?;
    let total: usize = sets.iter().map(|s| s.len()).sum();
    let union: BTreeSet<usize> = sets.iter().flatten().copied().collect();
    (sets.iter().all(|s| !s.is_empty()) && total == TARGETS && union.len() == TARGETS)
        .then_some(sets)
}

/// The rule groups a node evaluates now (its own `/api/v1/rules`), with whether
/// each has been evaluated.
fn local_groups(n: &Node) -> Option<BTreeMap<String, bool>> {
    let (code, body) = http("GET", &n.web, "/api/v1/rules", LOCAL, b"").ok()?;
    if code != 200 {
        return None;
    }
    let v: Value = serde_json::from_slice(&body).ok()?;
    v["data"]["groups"]
        .as_array()?
        .iter()
        .map(|g| {
            Some((
                g["name"].as_str()?.to_string(),
                !g["lastEvaluation"].as_str()?.starts_with("0001-"),
            ))
        })
        .collect()
}

/// `ownedTargets` per node id from a node's `/api/v1/status/cluster`.
fn owned_counts(n: &Node) -> Option<BTreeMap<u64, u64>> {
    let s = n.status()?;
    s["members"]
        .as_array()?
        .iter()
        .map(|m| Some((m["nodeId"].as_u64()?, m["ownedTargets"].as_u64()?)))
        .collect()
}

/// Timestamps (ms) of the `up` samples of each synthetic target in a node's data
/// over the last `window_s` seconds.
fn up_samples(n: &Node, window_s: u64) -> BTreeMap<usize, BTreeSet<i64>> {
    let q = format!("/api/v1/query?query=up%7Bjob%3D%22synthetic%22%7D%5B{window_s}s%5D");
    let (code, body) = http("GET", &n.web, &q, &[], b"").unwrap();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    let mut out: BTreeMap<usize, BTreeSet<i64>> = BTreeMap::new();
    for s in v["data"]["result"].as_array().unwrap() {
        let tid: usize = s["metric"]["tid"].as_str().unwrap().parse().unwrap();
        for p in s["values"].as_array().unwrap() {
            assert_eq!(p[1], "1", "target {tid} was up");
            let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
            out.entry(tid).or_default().insert(t);
        }
    }
    out
}

/// Asserts `one_per_slot` for every target within `[from, to)`; returns the largest
/// gap and the smallest spacing seen.
fn assert_no_gap_or_double(
    what: &str,
    times: &BTreeMap<usize, Vec<i64>>,
    from: i64,
    to: i64,
) -> (i64, i64) {
    let (mut max_gap, mut min_spacing) = (0, i64::MAX);
    for tid in 0..TARGETS {
        let ts = times.get(&tid).map(Vec::as_slice).unwrap_or(&[]);
        match one_per_slot(ts, from, to, INTERVAL_MS) {
            Ok((max, min)) => {
                max_gap = max_gap.max(max);
                min_spacing = min_spacing.min(min);
            }
            Err(e) => panic!("{what}: target {tid}: {e}"),
        }
    }
    (max_gap, min_spacing)
}

#[test]
fn targets_split_over_the_ring_move_on_join_without_gaps_and_fail_over_on_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let (synthetic, log) = start_synthetic_server("127.0.0.1");
    let config = write_config(tmp.path(), &synthetic);
    let mut nodes: Vec<Node> = (1..=4).map(|i| Node::new(tmp.path(), i)).collect();
    let common_flags = vec![
        format!("--config.file={}", config.display()),
        format!("--cluster.failure-timeout={FAILURE_TIMEOUT_S}s"),
    ];
    let peers = initial_peers_flag(&nodes[..3]);
    for n in nodes[..3].iter_mut() {
        let mut flags = common_flags.clone();
        flags.push(peers.clone());
        n.start(&flags);
    }
    let three: Vec<&Node> = nodes[..3].iter().collect();
    wait_for("three nodes to elect a leader", &three, || {
        agreed_leader(&three, 3)
    });

    // Three nodes: disjoint subsets whose union is every target, and the status
    // page counts the same.
    let sets = wait_for("three nodes to split the targets", &three, || {
        disjoint_cover(&three)
    });
    println!(
        "three nodes own {:?}",
        sets.iter().map(|s| s.len()).collect::<Vec<_>>()
    );
    let counts = wait_for("owned target counts", &three, || {
        let c = owned_counts(&nodes[0])?;
        let sets = disjoint_cover(&three)?;
        (0..3)
            .all(|i| c.get(&(i as u64 + 1)) == Some(&(sets[i].len() as u64)))
            .then_some(c)
    });
    assert_eq!(counts.values().sum::<u64>(), TARGETS as u64);
    // Rule groups: each node evaluates a disjoint subset, together all of them.
    let groups = wait_for(
        "three nodes to split and evaluate the rule groups",
        &three,
        || {
            let per: Vec<BTreeMap<String, bool>> = three
                .iter()
                .map(|n| local_groups(n))
                .collect::<Option<_>>()?;
            let total: usize = per.iter().map(|g| g.len()).sum();
            let union: BTreeSet<&String> = per.iter().flat_map(|g| g.keys()).collect();
            let evaluated = per.iter().all(|g| g.values().all(|e| *e));
            (total == GROUPS && union.len() == GROUPS && evaluated).then_some(per)
        },
    );
    println!(
        "three nodes evaluate {:?} rule groups",
        groups.iter().map(|g| g.len()).collect::<Vec<_>>()
    );
    let settled_at = now_ms();
    std::thread::sleep(Duration::from_secs(3));

    // A fourth node joins while scraping runs: targets rebalance.
    let join = format!("--cluster.join={}", nodes[0].grpc);
    nodes[3].start(&[common_flags[0].clone(), common_flags[1].clone(), join]);
    let all: Vec<&Node> = nodes.iter().collect();
    wait_for("the fourth node to become a voter", &all, || {
        agreed_leader(&all, 4)
    });
    let sets4 = wait_for("four nodes to split the targets", &all, || {
        disjoint_cover(&all)
    });
    println!(
        "four nodes own {:?}",
        sets4.iter().map(|s| s.len()).collect::<Vec<_>>()
    );
    let moved = sets4[3].len();
    for i in 0..3 {
        assert!(
            sets4[i].is_subset(&sets[i]),
            "only targets moving to the new node move: node {} had {:?}, has {:?}",
            i + 1,
            sets[i],
            sets4[i]
        );
    }
    println!("FIGURE join_moved_targets={moved}");
    std::thread::sleep(Duration::from_secs(4));
    let before_kill = now_ms();

    // No gap or double scrape through the join: in the synthetic server's log ...
    let requests = request_times(&log);
    let (max_gap, min_spacing) = assert_no_gap_or_double(
        "scrape requests through the join",
        &requests,
        settled_at,
        before_kill,
    );
    println!("FIGURE join_request_max_gap_ms={max_gap}");
    println!("FIGURE join_request_min_spacing_ms={min_spacing}");
    // ... and in the data, the `up` samples of all nodes together.
    let window_s = ((before_kill - settled_at) / 1000 + 5) as u64;
    let mut samples: BTreeMap<usize, BTreeSet<i64>> = BTreeMap::new();
    let mut per_node_series = Vec::new();
    // Queries answer for the whole cluster: every node, the new one too, gives the
    // same samples for the settled window.
    let mut views = Vec::new();
    for n in &nodes {
        let s = up_samples(n, window_s);
        per_node_series.push(s.len());
        let settled: BTreeMap<usize, BTreeSet<i64>> = s
            .iter()
            .map(|(tid, ts)| {
                let inside = ts.range(settled_at..before_kill - 1500).copied().collect();
                (*tid, inside)
            })
            .collect();
        views.push(settled);
        for (tid, ts) in s {
            samples.entry(tid).or_default().extend(ts);
        }
    }
    println!("up series in each node's answer: {per_node_series:?}");
    for (i, v) in views.iter().enumerate().skip(1) {
        assert!(
            *v == views[0],
            "node {} answers differently from node 1 for the settled window",
            i + 1
        );
    }
    let samples: BTreeMap<usize, Vec<i64>> = samples
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().collect()))
        .collect();
    let (max_gap, min_spacing) = assert_no_gap_or_double(
        "up samples through the join",
        &samples,
        settled_at,
        before_kill - 1500,
    );
    println!("FIGURE join_data_max_gap_ms={max_gap}");
    println!("FIGURE join_data_min_spacing_ms={min_spacing}");

    // SIGKILL a node that is not the leader; its targets move to the survivors.
    let (leader, _) = agreed_leader(&all, 4).expect("a leader");
    let victim = (0..4)
        .filter(|i| nodes[*i].id != leader)
        .max_by_key(|i| sets4[*i].len())
        .unwrap();
    let orphans = local_targets(&nodes[victim]).expect("the victim's targets");
    assert!(!orphans.is_empty());
    let killed_at = now_ms();
    nodes[victim].kill();
    let survivors: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, n)| n)
        .collect();
    wait_for("the survivors to cover every target", &survivors, || {
        disjoint_cover(&survivors)
    });
    let down = wait_for("the victim to be marked down", &survivors, || {
        let s = survivors[0].status()?;
        let m = s["members"]
            .as_array()?
            .iter()
            .find(|m| m["nodeId"] == nodes[victim].id)?
            .clone();
        (m["state"] == "down" && m["ownedTargets"] == 0).then_some(m)
    });
    println!("victim node {} after the kill: {down}", nodes[victim].id);
    std::thread::sleep(Duration::from_secs(3));
    let requests = request_times(&log);
    let (mut worst_gap, mut worst_after_kill) = (0, 0);
    for tid in &orphans {
        let ts = &requests[tid];
        let last_before = ts
            .iter()
            .copied()
            .filter(|t| *t <= killed_at)
            .max()
            .unwrap();
        let first_after = ts
            .iter()
            .copied()
            .find(|t| *t > killed_at)
            .unwrap_or_else(|| panic!("target {tid} was not scraped after the kill: {ts:?}"));
        worst_gap = worst_gap.max(first_after - last_before);
        worst_after_kill = worst_after_kill.max(first_after - killed_at);
    }
    println!("FIGURE failover_orphans={}", orphans.len());
    println!("FIGURE failover_first_scrape_after_kill_ms_max={worst_after_kill}");
    println!("FIGURE failover_gap_ms_max={worst_gap}");
    // The leader notices within the failure timeout plus one probe interval (1 s);
    // then the next slot is at most one scrape interval away.
    let bound = FAILURE_TIMEOUT_S * 1000 + INTERVAL_MS + 1000;
    assert!(
        worst_after_kill <= bound,
        "orphaned targets were first scraped {worst_after_kill} ms after the kill (bound {bound} ms)"
    );
    // Targets that did not move kept their rhythm through the failure.
    let end = now_ms();
    let steady: BTreeMap<usize, Vec<i64>> = requests
        .into_iter()
        .filter(|(tid, _)| !orphans.contains(tid))
        .collect();
    for (tid, ts) in &steady {
        if let Err(e) = one_per_slot(ts, killed_at - 2000, end, INTERVAL_MS) {
            panic!("target {tid} through the failure: {e}");
        }
    }
    // After the failover every orphan is scraped once per interval again.
    let after: BTreeMap<usize, Vec<i64>> = request_times(&log)
        .into_iter()
        .filter(|(tid, _)| orphans.contains(tid))
        .collect();
    for (tid, ts) in &after {
        let first_after = ts.iter().copied().find(|t| *t > killed_at).unwrap();
        if let Err(e) = one_per_slot(ts, first_after, end, INTERVAL_MS) {
            panic!("orphan {tid} after the failover: {e}");
        }
    }
}
