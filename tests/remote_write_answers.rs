//! How the remote-write receiver answers refused samples, with real processes on
//! loopback: the same requests go to a real Prometheus 2.42
//! (`--web.enable-remote-write-receiver`), a single hearth node and node 1 of a
//! three-node hearth cluster (RF=3). An out-of-order sample, a duplicate with
//! another value and an out-of-bounds sample answer 400 with Prometheus's text and
//! roll the whole request back; an identical duplicate is accepted; afterwards all
//! three return the same samples. In the cluster, two writers racing on one series
//! get every acknowledged sample stored and every refused one absent: nothing is
//! acknowledged and then dropped when the committed entry is applied. A real
//! Prometheus 2.42 whose `remote_write` points at node 2 of a cluster delivers
//! every sample it scraped, readable from every node; a remote-write 2.0 request
//! answers 415 (the sender then falls back to 1.0), as Prometheus's receiver does.

mod common;

use common::node::*;
use common::process::{FixedExporter, Server};
use common::*;
use hearth::remote::prompb::TimeSeries;
use std::collections::BTreeMap;
use std::time::Duration;

const CONFIG: &str = "global:\n  scrape_interval: 15s\nscrape_configs: []\n";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `rw_answers{s="<s>"}` with `samples`.
fn ts(s: usize, samples: &[(i64, f64)]) -> TimeSeries {
    series("rw_answers", &[("s", &s.to_string())], samples)
}

/// The requests of the scenario, in order, each with the status hearth must give.
fn scenario(t0: i64) -> Vec<(&'static str, Vec<TimeSeries>, u16)> {
    vec![
        (
            "two new samples",
            vec![ts(0, &[(t0, 1.0), (t0 + 1000, 2.0)])],
            204,
        ),
        ("identical duplicate", vec![ts(0, &[(t0 + 1000, 2.0)])], 204),
        (
            "duplicate with another value",
            vec![ts(0, &[(t0 + 1000, 3.0)])],
            400,
        ),
        (
            "older than the newest",
            vec![ts(0, &[(t0 + 500, 5.0)])],
            400,
        ),
        (
            "a good series and an out-of-order one: all rolled back",
            vec![ts(1, &[(t0 + 5000, 7.0)]), ts(0, &[(t0 + 200, 8.0)])],
            400,
        ),
        ("a newer sample", vec![ts(0, &[(t0 + 2000, 4.0)])], 204),
        (
            "three hours older than the head",
            vec![ts(2, &[(t0 - 3 * 3_600_000, 9.0)])],
            400,
        ),
        (
            "a duplicate and a newer one in one request",
            vec![ts(0, &[(t0 + 2000, 4.0), (t0 + 3000, 6.0)])],
            204,
        ),
    ]
}

/// Runs the scenario against `addr`: each request's status and body.
fn run(addr: &str, t0: i64) -> Vec<(u16, String)> {
    scenario(t0)
        .into_iter()
        .map(|(what, req, _)| {
            let (code, body) =
                try_remote_write(addr, req).unwrap_or_else(|e| panic!("{addr} {what}: {e}"));
            (code, String::from_utf8_lossy(&body).to_string())
        })
        .collect()
}

/// The value of the unlabelled or `group="<group>"` metric `name` on `/metrics`.
fn metric(addr: &str, name: &str, group: Option<u64>) -> Option<f64> {
    let (code, body) = http("GET", addr, "/metrics", &[], b"").ok()?;
    if code != 200 {
        return None;
    }
    let text = String::from_utf8(body).ok()?;
    let prefix = match group {
        Some(g) => format!("{name}{{group=\"{g}\"}} "),
        None => format!("{name} "),
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

fn start_cluster(dir: &std::path::Path) -> Vec<Node> {
    let mut nodes: Vec<Node> = (1..=3).map(|i| Node::new(dir, i)).collect();
    let args = vec![
        initial_peers_flag(&nodes),
        "--web.enable-remote-write-receiver".into(),
        "--cluster.replication-factor=3".into(),
    ];
    for n in nodes.iter_mut() {
        n.start(&args);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_for("a leader with three voters", &refs, || {
        agreed_leader(&refs, 3)
    });
    // Node 1's WAL group takes writes.
    wait_for("node 1's WAL group", &refs, || {
        let probe = vec![series("rw_probe", &[], &[(now_ms(), 1.0)])];
        matches!(try_remote_write(&nodes[0].web, probe), Ok((204, _))).then_some(())
    });
    nodes
}

#[test]
fn refused_samples_answer_400_like_prometheus_in_single_node_and_cluster_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let prom = Server::prometheus(
        tmp.path(),
        "prometheus",
        CONFIG,
        &["--web.enable-remote-write-receiver"],
    );
    let single = Server::hearth(
        tmp.path(),
        "hearth",
        CONFIG,
        &["--web.enable-remote-write-receiver"],
    );
    let nodes = start_cluster(tmp.path());
    // Within the last hour, so every store takes the first samples: cluster nodes
    // scrape themselves into their groups, which moves their heads to now.
    let t0 = now_ms() - 600_000;

    let want = run(&prom.addr, t0);
    let expected: Vec<u16> = scenario(t0).iter().map(|s| s.2).collect();
    for (name, addr) in [
        ("single hearth", &single.addr),
        ("cluster node 1", &nodes[0].web),
    ] {
        let got = run(addr, t0);
        for (i, (what, _, code)) in scenario(t0).into_iter().enumerate() {
            println!("{name}: {what}: {:?} (prometheus {:?})", got[i], want[i]);
            assert_eq!(got[i].0, code, "{name}: {what}: {}", got[i].1);
            assert_eq!(
                got[i], want[i],
                "{name}: {what}: answer differs from Prometheus's"
            );
        }
    }
    assert_eq!(
        want.iter().map(|w| w.0).collect::<Vec<_>>(),
        expected,
        "Prometheus 2.42 answered otherwise than this test expects"
    );

    // Every store holds the same samples: the refused requests left nothing.
    let at_s = (t0 + 10_000) / 1000;
    let read = |addr: &str| {
        samples_by_series(addr, "rw_answers", at_s).unwrap_or_else(|| panic!("{addr}: no answer"))
    };
    let from_prom = read(&prom.addr);
    let expect: BTreeMap<usize, BTreeMap<i64, f64>> = BTreeMap::from([(
        0,
        BTreeMap::from([
            (t0, 1.0),
            (t0 + 1000, 2.0),
            (t0 + 2000, 4.0),
            (t0 + 3000, 6.0),
        ]),
    )]);
    assert_eq!(from_prom, expect, "Prometheus's samples");
    assert_eq!(read(&single.addr), expect, "single hearth's samples");
    for n in &nodes {
        let refs: Vec<&Node> = nodes.iter().collect();
        wait_for(&format!("node {} to hold the samples", n.id), &refs, || {
            (samples_by_series(&n.web, "rw_answers", at_s)? == expect).then_some(())
        });
    }
    assert_eq!(
        metric(
            &nodes[0].web,
            "hearth_wal_group_samples_refused_total",
            Some(1)
        ),
        Some(0.0),
        "a committed sample was dropped when applied"
    );
}

/// Two writers send interleaved timestamps of one series to node 1 at once.
#[test]
fn racing_writers_in_a_cluster_get_no_acknowledged_sample_dropped() {
    const PER_WRITER: i64 = 150;
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start_cluster(tmp.path());
    let t0 = now_ms() - 600_000;
    let addr = nodes[0].web.clone();
    let writers: Vec<_> = (0..2i64)
        .map(|k| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                for i in 0..PER_WRITER {
                    let t = t0 + (2 * i + k) * 10;
                    let v = (t - t0) as f64 + 0.5;
                    let req = vec![series("rw_race", &[("s", "0")], &[(t, v)])];
                    let code = match try_remote_write(&addr, req) {
                        Ok((c, _)) => c,
                        Err(_) => 0,
                    };
                    outcomes.push((t, v, code));
                }
                outcomes
            })
        })
        .collect();
    let outcomes: Vec<(i64, f64, u16)> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let acked: BTreeMap<i64, f64> = outcomes
        .iter()
        .filter(|o| o.2 == 204)
        .map(|o| (o.0, o.1))
        .collect();
    let refused = outcomes.iter().filter(|o| o.2 == 400).count();
    let other: Vec<_> = outcomes
        .iter()
        .filter(|o| o.2 != 204 && o.2 != 400)
        .collect();
    println!(
        "{} acknowledged, {refused} refused with 400, {} other",
        acked.len(),
        other.len()
    );
    assert!(other.is_empty(), "answers other than 204/400: {other:?}");
    assert!(!acked.is_empty());

    let at_s = (t0 + 2 * PER_WRITER * 10) / 1000 + 60;
    std::thread::sleep(Duration::from_millis(200));
    let got = samples_by_series(&addr, "rw_race", at_s)
        .expect("node 1 answers")
        .remove(&0)
        .unwrap_or_default();
    assert_eq!(
        got, acked,
        "node 1 must hold exactly the acknowledged samples"
    );
    assert_eq!(
        metric(&addr, "hearth_wal_group_samples_refused_total", Some(1)),
        Some(0.0),
        "a committed sample was dropped when applied"
    );
}

/// Every sample of `{job="exporter"}` in the hour up to `at_ms` on `addr`: series
/// (their labels as JSON) to `[time, value]` pairs as the API renders them.
fn exporter_samples(addr: &str, at_ms: i64) -> Option<BTreeMap<String, Vec<(f64, String)>>> {
    let path = format!(
        "/api/v1/query?query={}&time={}.{:03}",
        url_encode("{job=\"exporter\"}[1h]"),
        at_ms / 1000,
        at_ms % 1000
    );
    let mut out = BTreeMap::new();
    for r in &query_result(addr, &path)? {
        let samples = r["values"]
            .as_array()?
            .iter()
            .map(|p| Some((p[0].as_f64()?, p[1].as_str()?.to_string())))
            .collect::<Option<Vec<_>>>()?;
        out.insert(r["metric"].to_string(), samples);
    }
    Some(out)
}

#[test]
fn a_real_prometheus_remote_writes_everything_it_scrapes_into_any_cluster_node() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start_cluster(tmp.path());
    let refs: Vec<&Node> = nodes.iter().collect();

    // Remote write 2.0 is not accepted: 415, so a 2.0 sender retries with 1.0.
    let (code, body) = http(
        "POST",
        &nodes[1].web,
        "/api/v1/write",
        &[
            ("Content-Encoding", "snappy"),
            (
                "Content-Type",
                "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            ),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(
        (code, String::from_utf8_lossy(&body).trim()),
        (
            415,
            "io.prometheus.write.v2.Request protobuf message is not accepted by this server; accepted [prometheus.WriteRequest]"
        )
    );

    let body: String = (0..20)
        .map(|i| format!("rwp_value{{s=\"{i}\"}} {}\n", i * 10))
        .collect();
    let exporter = FixedExporter::start(&[("/metrics", "text/plain; version=0.0.4", &body)]);
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: exporter\n    static_configs:\n      - targets: ['{}']\nremote_write:\n  - url: http://{}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n",
        exporter.addr, nodes[1].web
    );
    let prom = Server::prometheus(tmp.path(), "prometheus", &config, &[]);

    // Let Prometheus scrape a few times (it applies new targets at most every 5
    // s, so the first scrape comes late), then change a value: the new one must
    // arrive too.
    let scraped = |value: &str| {
        let s = exporter_samples(&prom.addr, now_ms()).unwrap_or_default();
        s.values().flatten().filter(|(_, v)| v == value).count()
    };
    wait_for("Prometheus to scrape four times", &refs, || {
        (scraped("30") >= 4).then_some(())
    });
    exporter.set_body(
        "/metrics",
        &body.replace("rwp_value{s=\"3\"} 30", "rwp_value{s=\"3\"} 31"),
    );
    wait_for(
        "Prometheus to scrape the changed value twice",
        &refs,
        || (scraped("31") >= 2).then_some(()),
    );
    // Everything Prometheus stored up to a moment ago: a scrape still running
    // then (its samples carry its start time) has been appended since.
    let at_ms = now_ms() - 1_500;
    let want = exporter_samples(&prom.addr, at_ms).expect("Prometheus answers");
    assert!(
        want.len() >= 20 + 5,
        "Prometheus has {} series of the exporter's job, expected 25",
        want.len()
    );
    for n in &nodes {
        wait_for(
            &format!("node {} to hold every sample Prometheus scraped", n.id),
            &refs,
            || (exporter_samples(&n.web, at_ms)? == want).then_some(()),
        );
    }
    // Prometheus's own count of samples it gave up on (it does not scrape itself
    // here, so read its /metrics).
    let (_, own) = http("GET", &prom.addr, "/metrics", &[], b"").unwrap();
    let own = String::from_utf8_lossy(&own).to_string();
    let failed: Vec<&str> = own
        .lines()
        .filter(|l| l.starts_with("prometheus_remote_storage_samples_failed_total"))
        .collect();
    assert!(
        !failed.is_empty(),
        "no remote-write metrics on Prometheus's /metrics"
    );
    for l in failed {
        assert!(l.ends_with(" 0"), "Prometheus gave up on samples: {l}");
    }
}
