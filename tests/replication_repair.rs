//! Replica-set repair of WAL groups with real `hearth` processes on loopback.
//!
//! Four nodes with RF=2: samples written through remote write stay readable from
//! the survivors when one node is SIGKILLed, those it acknowledged in the moment
//! before the kill included; after `hearth cluster remove` every
//! group's voters (as its leader reports them in `hearth_wal_group_voter`) and
//! holders become the set the ring gives over the remaining members, the removed
//! replicas are gone, and every acknowledged sample survives the SIGKILL of a
//! second node. Three nodes with RF=2 and a fourth joining: the new node gets the
//! replicas the ring gives it, and the data stays complete on every node. Three
//! nodes with RF=2, one SIGKILLed and not yet marked down: the others answer
//! with every sample and no warning, reading its groups from their other replicas.

mod common;

use common::node::*;
use common::*;
use hearth::cluster::repair::desired_voters;
use hearth::cluster::Ring;
use std::collections::{BTreeMap, BTreeSet};

/// Series each request writes one sample to.
const SERIES: usize = 4;
/// Milliseconds between the timestamps of consecutive requests.
const STEP_MS: i64 = 1000;
const RF: usize = 2;

fn value(i: i64, s: usize) -> f64 {
    (i * 1000 + s as i64) as f64 + 0.5
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn args(extra: &[String]) -> Vec<String> {
    let mut a = vec![
        "--web.enable-remote-write-receiver".to_string(),
        format!("--cluster.replication-factor={RF}"),
        "--cluster.failure-timeout=3s".to_string(),
    ];
    a.extend_from_slice(extra);
    a
}

/// The writes of one test: request index -> node it went to, all acknowledged.
struct Writes {
    base_ms: i64,
    acked: BTreeSet<i64>,
}

impl Writes {
    fn new() -> Writes {
        Writes {
            base_ms: now_ms() - 600_000,
            acked: BTreeSet::new(),
        }
    }

    fn t(&self, i: i64) -> i64 {
        self.base_ms + i * STEP_MS
    }

    /// Writes `n` more requests round-robin to `nodes`; each must be acknowledged
    /// (every group written to has its quorum).
    fn write(&mut self, nodes: &[&Node], n: i64) {
        let first = self.acked.last().map_or(0, |l| l + 1);
        for i in first..first + n {
            let node = nodes[i as usize % nodes.len()];
            let ts: Vec<_> = (0..SERIES)
                .map(|s| {
                    series(
                        "repair_test",
                        &[("s", &s.to_string())],
                        &[(self.t(i), value(i, s))],
                    )
                })
                .collect();
            let (code, body) = try_remote_write(&node.web, ts).expect("remote write");
            assert_eq!(
                code,
                204,
                "request {i} to node {}: {}",
                node.id,
                String::from_utf8_lossy(&body)
            );
            self.acked.insert(i);
        }
    }

    /// Waits until `node` returns exactly the acknowledged samples: each one with
    /// its value, and nothing else.
    fn check_complete(&self, node: &Node, all: &[&Node]) {
        let at_s = (self.t(self.acked.len() as i64) + 60_000) / 1000;
        let mut last = String::new();
        wait_for(
            &format!("node {} to return every acknowledged sample", node.id),
            all,
            || {
                let got = samples_by_series(&node.web, "repair_test", at_s)?;
                for s in 0..SERIES {
                    let have = got.get(&s).cloned().unwrap_or_default();
                    let want: BTreeMap<i64, f64> = self
                        .acked
                        .iter()
                        .map(|i| (self.t(*i), value(*i, s)))
                        .collect();
                    if have != want {
                        let p = format!(
                            "node {}: series {s}: {} of {} samples, first difference {:?}",
                            node.id,
                            have.len(),
                            want.len(),
                            want.iter().find(|(t, v)| have.get(t) != Some(v))
                        );
                        if p != last {
                            eprintln!("waiting: {p}");
                            last = p;
                        }
                        return None;
                    }
                }
                Some(())
            },
        );
    }
}

/// Writers sending remote writes to one node at once, each to its own series
/// (`s` = writer), until that node is killed: what each had acknowledged, and
/// the one request it had in flight when it stopped (may or may not be stored).
struct Burst {
    base_ms: i64,
    acked: Vec<BTreeSet<i64>>,
    in_flight: Vec<Option<i64>>,
}

/// Milliseconds between a burst writer's consecutive requests.
const BURST_STEP_MS: i64 = 10;
const BURST_WRITERS: usize = 4;

impl Burst {
    fn value(t: i64, s: usize) -> f64 {
        (t % 1_000_000) as f64 + s as f64 / 10.0
    }

    /// Writes to `node` from `BURST_WRITERS` threads, kills `node` after
    /// `kill_after` while they still write, and returns what they saw.
    fn until_killed(node: &mut Node, base_ms: i64, kill_after: std::time::Duration) -> Burst {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..BURST_WRITERS)
            .map(|s| {
                let (web, stop) = (node.web.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut acked = BTreeSet::new();
                    for i in 0.. {
                        let t = base_ms + i * BURST_STEP_MS;
                        if stop.load(Ordering::Relaxed) {
                            return (acked, None);
                        }
                        let ts = vec![series(
                            "repair_burst",
                            &[("s", &s.to_string())],
                            &[(t, Burst::value(t, s))],
                        )];
                        match try_remote_write(&web, ts) {
                            Ok((204, _)) => {
                                acked.insert(t);
                            }
                            _ => return (acked, Some(t)),
                        }
                    }
                    unreachable!()
                })
            })
            .collect();
        std::thread::sleep(kill_after);
        node.kill();
        stop.store(true, Ordering::Relaxed);
        let mut burst = Burst {
            base_ms,
            acked: Vec::new(),
            in_flight: Vec::new(),
        };
        for w in writers {
            let (acked, in_flight) = w.join().expect("burst writer");
            burst.acked.push(acked);
            burst.in_flight.push(in_flight);
        }
        burst
    }

    /// Waits until `node` returns every acknowledged sample of the burst, and
    /// nothing that was not sent.
    fn check_complete(&self, node: &Node, all: &[&Node]) {
        let last = self.acked.iter().filter_map(|a| a.last()).max();
        let at_s = (last.copied().unwrap_or(self.base_ms) + 60_000) / 1000;
        let mut said = String::new();
        wait_for(
            &format!("node {} to return every acknowledged burst sample", node.id),
            all,
            || {
                let got = samples_by_series(&node.web, "repair_burst", at_s)?;
                for (s, acked) in self.acked.iter().enumerate() {
                    let have = got.get(&s).cloned().unwrap_or_default();
                    let missing = acked
                        .iter()
                        .find(|t| have.get(t) != Some(&Burst::value(**t, s)));
                    let unsent = have.iter().find(|(t, v)| {
                        !(acked.contains(t) || self.in_flight[s] == Some(**t))
                            || **v != Burst::value(**t, s)
                    });
                    assert!(
                        unsent.is_none(),
                        "node {}: burst series {s} holds a sample never sent: {unsent:?}",
                        node.id
                    );
                    if let Some(t) = missing {
                        let p = format!(
                            "node {}: burst series {s}: {} of {} acknowledged samples, \
                             missing t={t}",
                            node.id,
                            have.len(),
                            acked.len()
                        );
                        if p != said {
                            eprintln!("waiting: {p}");
                            said = p;
                        }
                        return None;
                    }
                }
                Some(())
            },
        );
    }
}

/// One node's view of the WAL groups it holds, from its `/metrics`: group ->
/// (whether it leads it, the voters it knows).
fn group_views(node: &Node) -> Option<BTreeMap<u64, (bool, BTreeSet<u64>)>> {
    let (code, body) = http("GET", &node.web, "/metrics", &[], b"").ok()?;
    if code != 200 {
        return None;
    }
    let text = String::from_utf8_lossy(&body);
    let mut out: BTreeMap<u64, (bool, BTreeSet<u64>)> = BTreeMap::new();
    let label = |line: &str, name: &str| -> Option<u64> {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        line[start..].split('"').next()?.parse().ok()
    };
    for line in text.lines() {
        if line.starts_with("hearth_wal_group_leader{") {
            let g = label(line, "group")?;
            out.entry(g).or_default().0 = line.ends_with(" 1");
        } else if line.starts_with("hearth_wal_group_voter{") {
            let (g, n) = (label(line, "group")?, label(line, "node")?);
            out.entry(g).or_default().1.insert(n);
        }
    }
    Some(out)
}

/// Waits until, for every group in `groups`, the nodes holding it are exactly
/// `desired` and its leader reports exactly those voters.
fn wait_for_replica_sets(nodes: &[&Node], groups: &BTreeMap<u64, BTreeSet<u64>>) {
    let mut last = String::new();
    wait_for("replica sets as the ring gives them", nodes, || {
        let views: BTreeMap<u64, BTreeMap<u64, (bool, BTreeSet<u64>)>> = nodes
            .iter()
            .map(|n| Some((n.id, group_views(n)?)))
            .collect::<Option<_>>()?;
        for (g, desired) in groups {
            let holders: BTreeSet<u64> = views
                .iter()
                .filter(|(_, v)| v.contains_key(g))
                .map(|(id, _)| *id)
                .collect();
            let leader_voters: Vec<&BTreeSet<u64>> = views
                .values()
                .filter_map(|v| v.get(g).filter(|(leads, _)| *leads).map(|(_, vs)| vs))
                .collect();
            if holders != *desired || leader_voters != vec![desired] {
                let p = format!(
                    "group {g}: holders {holders:?}, leader's voters {leader_voters:?}, want {desired:?}"
                );
                if p != last {
                    eprintln!("waiting: {p}");
                    last = p;
                }
                return None;
            }
        }
        Some(())
    });
}

/// What the ring over `members` gives each of `groups`.
fn expected_sets(members: &[u64], groups: &[u64]) -> BTreeMap<u64, BTreeSet<u64>> {
    let ring = Ring::new(members.iter().copied(), 1).unwrap();
    groups
        .iter()
        .map(|g| (*g, desired_voters(&ring, *g, RF)))
        .collect()
}

fn cluster_tool(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(hearth_bin())
        .arg("cluster")
        .args(args)
        .output()
        .expect("run hearth cluster");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn removed_node_replicas_are_repaired_and_survive_another_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (1..=4).map(|i| Node::new(tmp.path(), i)).collect();
    let a = args(&[initial_peers_flag(&nodes)]);
    for n in nodes.iter_mut() {
        n.start(&a);
    }
    let mut writes = Writes::new();
    {
        let all: Vec<&Node> = nodes.iter().collect();
        wait_for("a leader with four voters", &all, || agreed_leader(&all, 4));
        wait_groups_formed(&all, "repair_probe", writes.base_ms);
        wait_for_replica_sets(&all, &expected_sets(&[1, 2, 3, 4], &[1, 2, 3, 4]));
        writes.write(&all, 40);
        for n in &all {
            writes.check_complete(n, &all);
        }
    }

    // One node dies while writers send to it: everything acknowledged stays
    // readable from the others, including the samples its own group holds and
    // those acknowledged just before the kill (the other voter of its group
    // must know they are committed, as it cannot elect itself alone).
    let burst = Burst::until_killed(
        &mut nodes[0],
        writes.t(writes.acked.len() as i64 + 100),
        std::time::Duration::from_millis(700),
    );
    let burst_acked: usize = burst.acked.iter().map(|a| a.len()).sum();
    println!("killed node 1 during a burst: {burst_acked} burst writes acknowledged");
    assert!(burst_acked > 0, "the burst wrote nothing before the kill");
    let rest: Vec<&Node> = nodes[1..].iter().collect();
    for n in &rest {
        writes.check_complete(n, &rest);
        burst.check_complete(n, &rest);
    }

    // It is removed for good: its group and every group it was a replica of get
    // the replicas the ring over the remaining members gives them.
    // The meta group may first have to elect a leader in node 1's place.
    wait_for("node 1 removed", &rest, || {
        let (ok, out) = cluster_tool(&["remove", "--server", &nodes[1].grpc, "1"]);
        if !ok {
            eprintln!("waiting: remove: {}", out.trim());
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        ok.then_some(())
    });
    wait_for("three voters after remove", &rest, || {
        agreed_leader(&rest, 3)
    });
    wait_for_replica_sets(&rest, &expected_sets(&[2, 3, 4], &[1, 2, 3, 4]));
    for n in &rest {
        writes.check_complete(n, &rest);
        burst.check_complete(n, &rest);
    }
    // The repaired groups take writes again.
    writes.write(&rest, 12);

    // Another node dies: with RF=2 every group still has a replica.
    nodes[1].kill();
    println!("killed node 2");
    let last: Vec<&Node> = nodes[2..].iter().collect();
    for n in &last {
        writes.check_complete(n, &last);
        burst.check_complete(n, &last);
    }
    println!(
        "FIGURE repair_acked_samples={}",
        writes.acked.len() * SERIES + burst_acked
    );
}

/// The answer of `query` at `at_s` on `node`: each series' `s` label with its
/// value, and the warnings.
fn query_by_s(
    node: &Node,
    query: &str,
    at_s: i64,
) -> Option<(BTreeMap<String, String>, Vec<String>)> {
    let (code, v) = get_json(
        &node.web,
        &format!("/api/v1/query?query={}&time={at_s}", url_encode(query)),
    );
    if code != 200 {
        return None;
    }
    let mut out = BTreeMap::new();
    for r in v["data"]["result"].as_array()? {
        let s = r["metric"]["s"].as_str()?.to_string();
        out.insert(s, r["value"][1].as_str()?.to_string());
    }
    let warnings = v["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Some((out, warnings))
}

#[test]
fn a_killed_replica_is_read_around_before_it_is_marked_down() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (1..=3).map(|i| Node::new(tmp.path(), i)).collect();
    // A failure timeout far longer than the test: node 3 stays a live member
    // throughout, so its groups are read around it, not planned around it.
    let a = vec![
        "--web.enable-remote-write-receiver".to_string(),
        format!("--cluster.replication-factor={RF}"),
        "--cluster.failure-timeout=10m".to_string(),
        initial_peers_flag(&nodes),
    ];
    for n in nodes.iter_mut() {
        n.start(&a);
    }
    let mut writes = Writes::new();
    {
        let all: Vec<&Node> = nodes.iter().collect();
        wait_for("a leader with three voters", &all, || {
            agreed_leader(&all, 3)
        });
        wait_groups_formed(&all, "read_around_probe", writes.base_ms);
        wait_for_replica_sets(&all, &expected_sets(&[1, 2, 3], &[1, 2, 3]));
        writes.write(&all, 20);
        for n in &all {
            writes.check_complete(n, &all);
        }
    }
    // Each node's directory of who holds which group (asked once a second) has
    // caught up with the replica sets above.
    std::thread::sleep(3 * hearth::cluster::repair::RECONCILE_INTERVAL);

    // With RF=2 each node lacks one group and reads it from a peer, some of them
    // from node 3. Once node 3 is gone, each survivor answers with every sample
    // and no warning (node 3 had no data outside its groups), by asking the other
    // replica of what node 3 was to give.
    nodes[2].kill();
    let want: BTreeMap<String, String> = (0..SERIES)
        .map(|s| (s.to_string(), writes.acked.len().to_string()))
        .collect();
    let at_s = (writes.t(writes.acked.len() as i64) + 60_000) / 1000;
    let rest: Vec<&Node> = nodes[..2].iter().collect();
    for n in &rest {
        for round in 0..20 {
            let (got, w) = wait_for(&format!("node {} to answer", n.id), &rest, || {
                query_by_s(n, "count_over_time(repair_test[15m])", at_s)
            });
            assert_eq!(got, want, "node {} round {round}", n.id);
            assert!(w.is_empty(), "node {} round {round}: {w:?}", n.id);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // Node 3 was never marked down: the answers did not come from the plan
        // leaving it out.
        let status = n.status().expect("status");
        let members = status["members"].as_array().expect("members");
        let three = members.iter().find(|m| m["nodeId"] == 3).expect("node 3");
        assert_ne!(three["state"], "down", "{status}");
    }
}

#[test]
fn joining_node_receives_the_replicas_the_ring_gives_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (1..=4).map(|i| Node::new(tmp.path(), i)).collect();
    let a = args(&[initial_peers_flag(&nodes[..3])]);
    for n in nodes[..3].iter_mut() {
        n.start(&a);
    }
    let mut writes = Writes::new();
    {
        let three: Vec<&Node> = nodes[..3].iter().collect();
        wait_for("a leader with three voters", &three, || {
            agreed_leader(&three, 3)
        });
        wait_groups_formed(&three, "repair_probe", writes.base_ms);
        wait_for_replica_sets(&three, &expected_sets(&[1, 2, 3], &[1, 2, 3]));
        writes.write(&three, 30);
    }

    let join = format!("--cluster.join={}", nodes[0].grpc);
    nodes[3].start(&args(&[join]));
    let all: Vec<&Node> = nodes.iter().collect();
    wait_for("a leader with four voters", &all, || agreed_leader(&all, 4));
    let want = expected_sets(&[1, 2, 3, 4], &[1, 2, 3, 4]);
    let given: Vec<u64> = want
        .iter()
        .filter(|(g, d)| **g != 4 && d.contains(&4))
        .map(|(g, _)| *g)
        .collect();
    println!("the ring gives node 4 replicas of groups {given:?}");
    wait_for_replica_sets(&all, &want);
    writes.write(&all, 12);
    for n in &all {
        writes.check_complete(n, &all);
    }
    // The replicas node 4 received hold the old data: with the other replica of
    // such a group killed, every node (node 4 included) still returns every
    // acknowledged sample.
    let g = *given
        .first()
        .expect("the ring gives the joining node a replica of an old group");
    let other = *want[&g].iter().find(|id| **id != 4).expect("RF=2");
    nodes[other as usize - 1].kill();
    println!("killed node {other}, group {g}'s other replica");
    let live: Vec<&Node> = nodes.iter().filter(|n| n.id != other).collect();
    for n in &live {
        writes.check_complete(n, &live);
    }
}
