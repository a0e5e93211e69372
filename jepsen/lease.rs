//! Work leases under a partition: a node cut off from the rest of a three-node
//! cluster stops scraping before the others take its targets over, so no target
//! is scraped twice while the partition lasts, and it takes targets back after
//! the partition heals without a double either. The synthetic target records
//! every request with the address of the node that sent it (the ground truth,
//! whatever reached storage).

use crate::common::node::{agreed_leader, initial_peers_flag, wait_for, Node};
use crate::common::scrape_log::{
    no_double, now_ms, start_synthetic_server, synthetic_scrape_configs, RequestLog,
};
use crate::net::Net;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const NODES: usize = 3;
const TARGETS: usize = 24;
const INTERVAL_MS: i64 = 1000;
const FAILURE_TIMEOUT_S: i64 = 4;

fn write_config(dir: &std::path::Path, target: &str) -> std::path::PathBuf {
    let yml = format!(
        "global:\n  scrape_interval: {INTERVAL_MS}ms\n  scrape_timeout: {INTERVAL_MS}ms\n{}",
        synthetic_scrape_configs(target, TARGETS)
    );
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, yml).unwrap();
    path
}

/// The targets each address scraped within `[from, to)`.
fn scraped_by(log: &RequestLog, from: i64, to: i64) -> BTreeMap<String, BTreeSet<usize>> {
    let mut out: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for r in log.lock().unwrap().iter() {
        if (from..to).contains(&r.at_ms) {
            out.entry(r.from.to_string()).or_default().insert(r.tid);
        }
    }
    out
}

/// Request times per target within `[from, to)`, and who sent each.
fn times(log: &RequestLog) -> BTreeMap<usize, Vec<(i64, String)>> {
    let mut out: BTreeMap<usize, Vec<(i64, String)>> = BTreeMap::new();
    for r in log.lock().unwrap().iter() {
        out.entry(r.tid)
            .or_default()
            .push((r.at_ms, r.from.to_string()));
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

#[test]
fn an_isolated_node_stops_scraping_before_its_targets_move() {
    let mut net = Net::new(NODES).unwrap_or_else(|e| {
        panic!("the test needs network namespaces (root, iproute2, nftables): {e}")
    });
    let tmp = tempfile::tempdir().unwrap();
    let (target, log) = start_synthetic_server(&net.host_ip());
    let config = write_config(tmp.path(), &target);
    let mut nodes: Vec<Node> = (1..=NODES)
        .map(|i| Node::in_netns(tmp.path(), i as u64, &net.namespace(i), &net.ip(i)))
        .collect();
    let args = vec![
        initial_peers_flag(&nodes),
        format!("--config.file={}", config.display()),
        format!("--cluster.failure-timeout={FAILURE_TIMEOUT_S}s"),
    ];
    for n in nodes.iter_mut() {
        n.start(&args);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    let (leader, _) = wait_for("a leader with three voters", &refs, || {
        agreed_leader(&refs, NODES)
    });
    // Cut off a node that is not the meta leader and scrapes some targets.
    let settled = wait_for("every target scraped, each by one node", &refs, || {
        std::thread::sleep(Duration::from_millis(500));
        let now = now_ms();
        let by = scraped_by(&log, now - 3 * INTERVAL_MS, now);
        let all: BTreeSet<usize> = by.values().flatten().copied().collect();
        let total: usize = by.values().map(BTreeSet::len).sum();
        (all.len() == TARGETS && total == TARGETS).then_some(by)
    });
    let isolated = (1..=NODES)
        .find(|i| *i as u64 != leader && settled.contains_key(&net.ip(*i)))
        .unwrap_or_else(|| panic!("no node but the leader scrapes anything: {settled:?}"));
    let isolated_ip = net.ip(isolated);
    let its_targets = settled[&isolated_ip].clone();
    println!("isolating node {isolated} ({isolated_ip}), which scrapes {its_targets:?}");

    std::thread::sleep(Duration::from_secs(2));
    let cut_at = now_ms();
    net.partition(&[isolated]).expect("partition");
    // Long enough for the lease to lapse, the node to be marked down and its
    // targets to be scraped by the others for a while.
    std::thread::sleep(Duration::from_secs(FAILURE_TIMEOUT_S as u64 + 6));
    let heal_at = now_ms();
    net.heal().expect("heal");
    // The node comes back, is marked active and takes its targets back.
    wait_for("the isolated node to scrape again", &refs, || {
        std::thread::sleep(Duration::from_millis(500));
        let now = now_ms();
        scraped_by(&log, now - 2 * INTERVAL_MS, now)
            .get(&isolated_ip)
            .is_some_and(|t| !t.is_empty())
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let end = now_ms();

    // During the partition the isolated node's targets moved to the others.
    let during = scraped_by(&log, heal_at - 3 * INTERVAL_MS, heal_at);
    let moved: BTreeSet<usize> = during
        .iter()
        .filter(|(ip, _)| **ip != isolated_ip)
        .flat_map(|(_, t)| t.iter().copied())
        .collect();
    assert!(
        its_targets.is_subset(&moved),
        "the others took over {its_targets:?} during the partition: {during:?}"
    );
    assert!(
        during.get(&isolated_ip).is_none_or(BTreeSet::is_empty),
        "the isolated node still scraped at the end of the partition: {during:?}"
    );

    // No target was scraped twice in one slot, from before the cut to the end;
    // the isolated node's targets had one gap no longer than the failure timeout
    // and an interval (plus slack for a loaded machine). Gaps count whole slots:
    // scrape times sit a millisecond or two off their slots, so a gap of six
    // slots measures 5999 to 6001 ms; half an interval on top lets the bound
    // mean "six slots" rather than "six slots, if the jitter falls right".
    let all = times(&log);
    let bound = FAILURE_TIMEOUT_S * 1000 + INTERVAL_MS + 1000 + INTERVAL_MS / 2;
    let mut worst_gap = 0;
    for tid in 0..TARGETS {
        let entries = all.get(&tid).map(Vec::as_slice).unwrap_or(&[]);
        let ts: Vec<i64> = entries.iter().map(|(t, _)| *t).collect();
        let (max_gap, _) = no_double(&ts, cut_at - 2000, end, INTERVAL_MS).unwrap_or_else(|e| {
            panic!(
                "target {tid}: {e}; scrapers: {:?}",
                entries
                    .iter()
                    .filter(|(t, _)| *t >= cut_at - 2000)
                    .collect::<Vec<_>>()
            )
        });
        worst_gap = worst_gap.max(max_gap);
        assert!(
            max_gap <= bound,
            "target {tid}: a gap of {max_gap} ms (bound {bound} ms): {entries:?}"
        );
    }
    println!("FIGURE partition_max_gap_ms={worst_gap} (failure timeout {FAILURE_TIMEOUT_S} s, interval {INTERVAL_MS} ms)");
    for n in nodes.iter_mut() {
        n.kill();
    }
}
