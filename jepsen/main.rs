//! The fault-injection harness (`cargo test --test jepsen`): three `hearth` nodes,
//! each in its own network namespace (`net`), replicating every node's WAL group to
//! all three (RF=3). Writers send remote-write requests to random nodes while the
//! nemesis (`nemesis`) kills, pauses and partitions nodes, one fault at a time.
//! After the faults are healed the checker (`checker`) reads every node and fails
//! the test if an acknowledged sample is missing or changed, if any node returns a
//! sample no request wrote (or one from a refused request), or if the nodes
//! disagree. Needs root (network namespaces), `ip` (iproute2) and `nft` (nftables);
//! `.ci/install-deps` installs them.
//!
//! `HEARTH_JEPSEN_SECONDS` sets how long faults are injected (default 45) and
//! `HEARTH_JEPSEN_SEED` replays a run's random choices (printed at the start).

#[path = "../tests/common/mod.rs"]
mod common;

mod checker;
mod lease;
mod nemesis;
mod net;

use checker::{Op, Outcome, Read, SERIES_PER_WRITER};
use common::node::{agreed_leader, initial_peers_flag, wait_for, Node};
use common::{http_timeout, query_result, series, Rng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NODES: usize = 3;
/// Concurrent writers, each with its own series.
const WRITERS: usize = 3;
/// How long a writer waits for an answer before calling the request indeterminate.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(12);
const METRIC: &str = "jepsen_write";

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Sends writer `w`'s request `k` to `addr` and classifies the answer.
fn write(addr: &str, base_ms: i64, w: usize, k: u64) -> Outcome {
    let t = checker::timestamp(base_ms, k);
    let timeseries = (0..SERIES_PER_WRITER)
        .map(|s| {
            series(
                METRIC,
                &[("w", &w.to_string()), ("s", &s.to_string())],
                &[(t, checker::value(w, k, s))],
            )
        })
        .collect();
    let body = hearth::remote::encode_write_request(&hearth::remote::prompb::WriteRequest {
        timeseries,
        metadata: vec![],
    });
    let headers = [
        ("Content-Encoding", "snappy"),
        ("Content-Type", "application/x-protobuf"),
    ];
    match http_timeout(
        "POST",
        addr,
        "/api/v1/write",
        &headers,
        &body,
        REQUEST_TIMEOUT,
    ) {
        Ok((c, _)) if (200..300).contains(&c) => Outcome::Acked,
        Ok((c, _)) if (400..500).contains(&c) => Outcome::Refused(c),
        Ok((c, b)) => Outcome::Indeterminate(format!("{c} {}", String::from_utf8_lossy(&b))),
        Err(e) => Outcome::Indeterminate(format!("{:?}", e.kind())),
    }
}

/// Everything a node returns for the harness's metric; None while it cannot answer.
fn read(addr: &str, at_s: i64) -> Option<Read> {
    let path = format!("/api/v1/query?query={METRIC}%5B3h%5D&time={at_s}");
    let mut out = Read::new();
    for r in &query_result(addr, &path)? {
        let w: usize = r["metric"]["w"].as_str()?.parse().ok()?;
        let s: usize = r["metric"]["s"].as_str()?.parse().ok()?;
        let samples = out.entry((w, s)).or_default();
        for p in r["values"].as_array()? {
            let t = (p[0].as_f64()? * 1000.0).round() as i64;
            samples.insert(t, p[1].as_str()?.parse().ok()?);
        }
    }
    Some(out)
}

/// The meta leader's id when every running node agrees on one.
fn leader(nodes: &[Node]) -> Option<usize> {
    let refs: Vec<&Node> = nodes.iter().collect();
    agreed_leader(&refs, NODES).map(|(id, _)| id as usize)
}

#[test]
fn no_acknowledged_sample_is_lost_under_kills_pauses_and_partitions() {
    let seed = env_u64("HEARTH_JEPSEN_SEED").unwrap_or(now_ms() as u64 | 1);
    let chaos = Duration::from_secs(env_u64("HEARTH_JEPSEN_SECONDS").unwrap_or(45));
    println!("seed {seed} (HEARTH_JEPSEN_SEED={seed} replays the choices), faults for {chaos:?}");
    let mut net = net::Net::new(NODES).unwrap_or_else(|e| {
        panic!("the harness needs network namespaces (root, iproute2, nftables): {e}")
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (1..=NODES)
        .map(|i| Node::in_netns(tmp.path(), i as u64, &net.namespace(i), &net.ip(i)))
        .collect();
    let args = vec![
        initial_peers_flag(&nodes),
        "--web.enable-remote-write-receiver".to_string(),
        format!("--cluster.replication-factor={NODES}"),
    ];
    for n in nodes.iter_mut() {
        n.start(&args);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_for("a leader with three voters", &refs, || leader(&nodes));
    // Five minutes back: inside the head's appendable window (samples older than an
    // hour before the head's newest, e.g. the nodes' own scrapes, are out of bounds)
    // for the whole run.
    let base_ms = now_ms() - 300_000;
    let webs: Vec<(u64, String)> = nodes.iter().map(|n| (n.id, n.web.clone())).collect();
    let probe = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Writer 0 is the probe: it writes only to confirm a node's group commits.
    let probe_write = |addr: &str| {
        let k = probe.fetch_add(1, Ordering::Relaxed);
        let outcome = write(addr, base_ms, 0, k);
        (k, outcome)
    };
    let history: Arc<Mutex<Vec<Op>>> = Arc::new(Mutex::new(Vec::new()));
    let record_probe = |node: u64, (k, outcome): (u64, Outcome)| {
        let acked = outcome == Outcome::Acked;
        history.lock().unwrap().push(Op {
            writer: 0,
            k,
            node,
            outcome,
        });
        acked.then_some(())
    };
    for (id, web) in &webs {
        wait_for(&format!("node {id}'s WAL group"), &refs, || {
            record_probe(*id, probe_write(web))
        });
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (1..=WRITERS)
        .map(|w| {
            let (stop, history, webs) = (stop.clone(), history.clone(), webs.clone());
            let mut rng = Rng(seed ^ (w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            std::thread::spawn(move || {
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (node, addr) = &webs[rng.below(webs.len() as u64) as usize];
                    let outcome = write(addr, base_ms, w, k);
                    let acked = outcome == Outcome::Acked;
                    history.lock().unwrap().push(Op {
                        writer: w,
                        k,
                        node: *node,
                        outcome,
                    });
                    k += 1;
                    if !acked {
                        // A down node refuses at once: don't spin on it.
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })
        })
        .collect();

    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut faults = Vec::new();
    {
        let mut nemesis = nemesis::Nemesis {
            nodes: &mut nodes,
            net: &mut net,
            args: args.clone(),
        };
        while started.elapsed() < chaos {
            std::thread::sleep(Duration::from_millis(1000 + rng.below(2000)));
            let fault = nemesis.pick(&mut rng, leader(nemesis.nodes));
            let hold = Duration::from_millis(2000 + rng.below(6000));
            println!(
                "{:6.1}s {fault} for {hold:?}",
                started.elapsed().as_secs_f64()
            );
            nemesis.inject(fault).expect("inject a fault");
            std::thread::sleep(hold);
            nemesis.heal(fault).expect("heal a fault");
            faults.push(fault);
        }
    }
    println!(
        "{:6.1}s healed; writing on",
        started.elapsed().as_secs_f64()
    );
    // Writes go on for a while with everything healed, then stop.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }

    // Recovery: one leader, and every node's group commits again.
    let healed = Instant::now();
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_for("a leader after healing", &refs, || leader(&nodes));
    for (id, web) in &webs {
        wait_for(
            &format!("node {id}'s WAL group after healing"),
            &refs,
            || record_probe(*id, probe_write(web)),
        );
    }
    let recovery = healed.elapsed();

    // Every node, once caught up, holds every acknowledged sample and all agree;
    // the check then runs on the last reads (and reports what never converged).
    let ops = history.lock().unwrap().clone();
    let at_s = (base_ms + 3_600_000) / 1000;
    let converge_by = Instant::now() + common::node::WAIT;
    let reads = loop {
        let reads: Vec<(u64, Read)> = nodes
            .iter()
            .map(|n| (n.id, read(&n.web, at_s).unwrap_or_default()))
            .collect();
        let complete = reads
            .iter()
            .all(|(_, r)| checker::problems(&ops, base_ms, r).0.is_empty());
        let agree = reads.windows(2).all(|p| p[0].1 == p[1].1);
        if (complete && agree) || Instant::now() > converge_by {
            break reads;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let report = checker::check(&ops, base_ms, &reads);
    println!(
        "faults {}: {}",
        faults.len(),
        faults
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("FIGURE jepsen_writes_acked {}", report.acked);
    println!("FIGURE jepsen_writes_refused {}", report.refused);
    println!(
        "FIGURE jepsen_writes_indeterminate {} ({} of them present after all)",
        report.indeterminate, report.indeterminate_present
    );
    println!(
        "FIGURE jepsen_recovery_after_heal_s {:.2}",
        recovery.as_secs_f64()
    );
    assert!(
        report.acked > 50,
        "too few acknowledged writes to show anything: {report:?}"
    );
    if !report.ok() {
        // Keep the nodes' data and logs for a look.
        println!("data and logs kept in {}", tmp.keep().display());
    }
    assert!(
        report.ok(),
        "lost {} (by node {:?}): {:?}\nphantom {:?}\ndivergent {:?}",
        report.lost.len(),
        report.lost_by_node(),
        &report.lost[..report.lost.len().min(20)],
        &report.phantom[..report.phantom.len().min(20)],
        report.divergent
    );
}
