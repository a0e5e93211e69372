//! WAL replication with real `hearth` processes on loopback: three nodes with
//! RF=3; a writer sends remote-write requests to random nodes while the test
//! SIGKILLs one node at a time at random moments and restarts it. Afterwards every
//! node returns every acknowledged sample with its exact value; samples of
//! unacknowledged requests may be missing, but nothing returned is anything other
//! than what was written. Every request also writes a series no request wrote
//! before, so WAL groups define series ids (docs/format/wal-group-entry.md) while
//! their leaders change: a replica that resolved an id to another series would
//! return a sample under the wrong series. With two of three nodes down, a write is refused with
//! 503 in bounded time. Prints the acknowledged sample count and the
//! append-to-commit latency (remote-write request latency of acknowledged
//! requests) as `FIGURE` lines.

mod common;

use common::node::*;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Series each request writes one sample to.
const SERIES: usize = 8;
/// How long the writer writes while nodes are killed and restarted.
const CHAOS: Duration = Duration::from_secs(25);
/// Milliseconds between the timestamps of consecutive requests.
const STEP_MS: i64 = 100;

/// The value request `i` writes to series `s`: unique, so a sample from another
/// request or series is recognised as corruption.
fn value(i: i64, s: usize) -> f64 {
    (i * 1000 + s as i64) as f64 + 0.25
}

fn node_args(nodes: &[Node]) -> Vec<String> {
    vec![
        initial_peers_flag(nodes),
        "--web.enable-remote-write-receiver".into(),
        "--cluster.replication-factor=3".into(),
    ]
}

/// Every sample of `rep_test` a node returns: series index -> timestamp -> value.
fn read_all(addr: &str, at_s: i64) -> Option<BTreeMap<usize, BTreeMap<i64, f64>>> {
    samples_by_series(addr, "rep_test", at_s)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[test]
fn acknowledged_samples_survive_sigkill_of_any_node() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (1..=3).map(|i| Node::new(tmp.path(), i)).collect();
    let args = node_args(&nodes);
    for n in nodes.iter_mut() {
        n.start(&args);
    }
    {
        let refs: Vec<&Node> = nodes.iter().collect();
        wait_for("a leader with three voters", &refs, || {
            agreed_leader(&refs, 3)
        });
    }
    let base_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 600_000;
    // Every node's group must be formed before its writes can be acknowledged.
    {
        let refs: Vec<&Node> = nodes.iter().collect();
        wait_groups_formed(&refs, "rep_probe", base_ms);
    }

    let webs: Vec<String> = nodes.iter().map(|n| n.web.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    // Request index -> acknowledged?
    let outcomes: Arc<Mutex<BTreeMap<i64, bool>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (stop, outcomes, latencies) = (stop.clone(), outcomes.clone(), latencies.clone());
        let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
        std::thread::spawn(move || {
            let mut i: i64 = 0;
            let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                let addr = &webs[rng.below(webs.len() as u64) as usize];
                let t = base_ms + 1000 + i * STEP_MS;
                // The fixed series, and series `SERIES + i`, new in this request.
                let fresh = SERIES + i as usize;
                let ts: Vec<_> = (0..SERIES)
                    .chain([fresh])
                    .map(|s| series("rep_test", &[("s", &s.to_string())], &[(t, value(i, s))]))
                    .collect();
                let started = Instant::now();
                let r = try_remote_write(addr, ts);
                let took = started.elapsed();
                let acked = matches!(r, Ok((204, _)));
                let key = match &r {
                    Ok((c, _)) => c.to_string(),
                    Err(e) => format!("{:?}", e.kind()),
                };
                *statuses.entry(key).or_default() += 1;
                if acked {
                    latencies.lock().unwrap().push(took);
                } else if !matches!(r, Ok((503, _)) | Ok((500, _)) | Err(_)) {
                    panic!("request {i} to {addr}: unexpected answer {r:?}");
                }
                outcomes.lock().unwrap().insert(i, acked);
                i += 1;
            }
            statuses
        })
    };

    // Chaos: kill one node at a time at random moments, restart it after a while.
    let mut rng = Rng(seed);
    let chaos_end = Instant::now() + CHAOS;
    let mut kills = 0;
    while Instant::now() < chaos_end {
        std::thread::sleep(Duration::from_millis(500 + rng.below(2500)));
        let victim = rng.below(3) as usize;
        nodes[victim].kill();
        kills += 1;
        println!("killed node {}", nodes[victim].id);
        std::thread::sleep(Duration::from_millis(500 + rng.below(2500)));
        nodes[victim].start(&args);
        println!("restarted node {}", nodes[victim].id);
    }
    // A last stretch of writes with every node up.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let statuses = writer.join().expect("writer");
    println!("kills {kills}, answers by status: {statuses:?}");

    let outcomes = outcomes.lock().unwrap().clone();
    let acked: BTreeSet<i64> = outcomes
        .iter()
        .filter(|(_, a)| **a)
        .map(|(i, _)| *i)
        .collect();
    assert!(
        acked.len() > 20,
        "too few acknowledged writes to show anything: {statuses:?}"
    );

    // Every node, once caught up, returns every acknowledged sample exactly, and
    // nothing that was not written.
    let at_s = (base_ms + 1000 + outcomes.len() as i64 * STEP_MS) / 1000 + 60;
    let refs: Vec<&Node> = nodes.iter().collect();
    for n in &nodes {
        let mut last_problem = String::new();
        let got = wait_for(
            &format!("node {} to return every acked sample", n.id),
            &refs,
            || {
                let got = read_all(&n.web, at_s)?;
                // Every acked request's sample of each fixed series and of its
                // own new series.
                let wanted = acked.iter().flat_map(|&i| {
                    (0..SERIES)
                        .chain([SERIES + i as usize])
                        .map(move |s| (s, i))
                });
                for (s, i) in wanted {
                    let t = base_ms + 1000 + i * STEP_MS;
                    match got.get(&s).and_then(|have| have.get(&t)) {
                        Some(v) if *v == value(i, s) => {}
                        other => {
                            // Shown once per change, to tell a slow catch-up
                            // from a lost sample when the wait times out.
                            let p = format!("node {}: series {s} request {i}: {other:?}", n.id);
                            if p != last_problem {
                                eprintln!("waiting: {p}");
                                last_problem = p;
                            }
                            return None;
                        }
                    }
                }
                Some(got)
            },
        );
        // Nothing returned is other than what was written.
        let mut returned = 0usize;
        for (s, samples) in &got {
            for (t, v) in samples {
                let i = (t - base_ms - 1000) / STEP_MS;
                assert_eq!(
                    (t - base_ms - 1000) % STEP_MS,
                    0,
                    "node {}: series {s}: sample at unexpected time {t}",
                    n.id
                );
                assert!(
                    outcomes.contains_key(&i),
                    "node {}: series {s}: sample of request {i} that was never sent",
                    n.id
                );
                assert_eq!(*v, value(i, *s), "node {}: series {s} request {i}", n.id);
                returned += 1;
            }
        }
        println!(
            "node {}: {returned} samples returned, {} acknowledged",
            n.id,
            acked.len() * (SERIES + 1)
        );
    }

    // Without a quorum a write is refused with 503 (clients retry) in bounded
    // time, not acknowledged and not left hanging.
    nodes[1].kill();
    nodes[2].kill();
    let started = Instant::now();
    let t = base_ms + 1000 + (outcomes.len() as i64 + 10) * STEP_MS;
    let (code, body) = try_remote_write(
        &nodes[0].web,
        vec![series("rep_test", &[("s", "0")], &[(t, 1.0)])],
    )
    .expect("the surviving node answers");
    let took = started.elapsed();
    assert_eq!(code, 503, "{}", String::from_utf8_lossy(&body));
    assert!(took < Duration::from_secs(20), "503 took {took:?}");
    println!(
        "no quorum: 503 after {took:?}: {}",
        String::from_utf8_lossy(&body).trim()
    );

    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    println!(
        "FIGURE replication_acked_samples={}",
        acked.len() * (SERIES + 1)
    );
    println!(
        "FIGURE replication_unacked_requests={}",
        outcomes.len() - acked.len()
    );
    println!(
        "FIGURE replication_commit_latency_p50_ms={:.2}",
        percentile(&lat, 0.5).as_secs_f64() * 1000.0
    );
    println!(
        "FIGURE replication_commit_latency_p99_ms={:.2}",
        percentile(&lat, 0.99).as_secs_f64() * 1000.0
    );
}
