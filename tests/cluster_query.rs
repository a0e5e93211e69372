//! Queries from any node, with real `hearth` processes on loopback: three nodes each
//! hold their own data (remote-written to that node, plus each node's self-scrape),
//! and the same PromQL, series and label queries on every node give identical
//! answers holding all nodes' data; `/api/v1/targets` shows every node's targets
//! with the node that scrapes each. After one node is SIGKILLed, a query returns the
//! other nodes' data with a warning, and fails on a node started with
//! `--cluster.partial-response=false`.

mod common;

use common::node::*;
use common::*;
use serde_json::Value;

fn enc(q: &str) -> String {
    let mut out = String::new();
    for b in q.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `result` of an instant query at `t_s`, sorted by metric for comparison.
fn instant(addr: &str, q: &str, t_s: i64) -> (Value, Vec<String>) {
    let (code, v) = get_json(addr, &format!("/api/v1/query?query={}&time={t_s}", enc(q)));
    assert_eq!(code, 200, "{q} on {addr}: {v}");
    let warnings = warnings_of(&v);
    (v["data"].clone(), warnings)
}

fn warnings_of(v: &Value) -> Vec<String> {
    v["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn result_map(data: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = data["result"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|r| (r["metric"].to_string(), r["value"][1].to_string()))
        .collect();
    out.sort();
    out
}

/// (scrapeUrl, scrapeNode) of every active target a node reports, sorted.
fn target_owners(addr: &str) -> (Vec<(String, String)>, Vec<String>) {
    let (code, v) = get_json(addr, "/api/v1/targets");
    assert_eq!(code, 200, "{v}");
    let mut out: Vec<(String, String)> = v["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["scrapeUrl"].as_str().unwrap_or_default().to_string(),
                t["scrapeNode"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    (out, warnings_of(&v))
}

#[test]
fn every_node_answers_for_the_whole_cluster_and_a_dead_node_gives_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (1..=3).map(|i| Node::new(tmp.path(), i)).collect();
    let peers = initial_peers_flag(&nodes);
    for n in nodes.iter_mut() {
        let mut args = vec![
            peers.clone(),
            "--web.enable-remote-write-receiver".to_string(),
            "--cluster.query-timeout=5s".to_string(),
            // One replica per WAL group: each node holds only its own group, so
            // queries fan out and a dead node's data is missing (with a warning).
            "--cluster.replication-factor=1".to_string(),
        ];
        // Node 1 refuses partial answers; the others give them with a warning.
        if n.id == 1 {
            args.push("--cluster.partial-response=false".to_string());
        }
        n.start(&args);
    }
    let all: Vec<&Node> = nodes.iter().collect();
    wait_for("three nodes to elect a leader", &all, || {
        agreed_leader(&all, 3)
    });
    for n in &nodes {
        wait_ready(&n.web, std::time::Duration::from_secs(60));
    }

    // Distinct data on each node: a counter per node rising at node-specific rates,
    // and one series every node holds with overlapping timestamps (a target that
    // moved), which must come back once per timestamp.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t_end = now_ms / 1000 * 1000;
    let step = 15_000;
    let points = 21; // 5 minutes
    for n in &nodes {
        let node = n.id.to_string();
        let mut ts = Vec::new();
        for idx in 0..4 {
            let samples: Vec<(i64, f64)> = (0..points)
                .map(|i| {
                    let t = t_end - (points - 1 - i) * step;
                    (t, (i as f64) * n.id as f64 * 15.0)
                })
                .collect();
            ts.push(series(
                "fanout_test_total",
                &[("node", &node), ("idx", &idx.to_string())],
                &samples,
            ));
        }
        // Node i holds shared_metric from point 5(i-1) to 5(i-1)+10: overlaps.
        let first = 5 * (n.id as i64 - 1);
        let shared: Vec<(i64, f64)> = (first..first + 10)
            .map(|i| (t_end - (points - 1 - i) * step, i as f64))
            .collect();
        ts.push(series("shared_metric", &[("job", "moved")], &shared));
        remote_write(&n.web, ts);
    }
    let t_s = t_end / 1000;

    // Every node scrapes its own /metrics target; wait until all three `up` series
    // are visible cluster-wide, then query at a fixed time.
    wait_for("up from all three nodes", &all, || {
        let (d, _) = instant(&nodes[0].web, "count(up)", now_ms / 1000 + 60);
        (result_map(&d).first().map(|r| r.1.as_str()) == Some("\"3\"")).then_some(())
    });
    let later_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 1; // after every scrape seen so far, which may be in the current second

    let queries: Vec<(String, i64)> = vec![
        ("count by (job)(up)".into(), later_s),
        ("sum by (node)(rate(fanout_test_total[5m]))".into(), t_s),
        ("count(fanout_test_total)".into(), t_s),
        ("count_over_time(shared_metric[10m])".into(), t_s),
        ("sum(shared_metric)".into(), t_s),
    ];
    let mut first_answers = Vec::new();
    for (q, t) in &queries {
        let answers: Vec<(Value, Vec<String>)> =
            nodes.iter().map(|n| instant(&n.web, q, *t)).collect();
        for (i, (a, w)) in answers.iter().enumerate() {
            assert!(w.is_empty(), "{q} on node {}: warnings {w:?}", i + 1);
            assert_eq!(
                result_map(a),
                result_map(&answers[0].0),
                "{q}: node {} differs from node 1",
                i + 1
            );
        }
        println!("{q} -> {:?}", result_map(&answers[0].0));
        first_answers.push(result_map(&answers[0].0));
    }
    assert_eq!(
        first_answers[0],
        vec![(r#"{"job":"prometheus"}"#.to_string(), "\"3\"".to_string())]
    );
    let rates = &first_answers[1];
    assert_eq!(rates.len(), 3, "{rates:?}");
    for (i, (_, v)) in rates.iter().enumerate() {
        // Each of 4 series rises by 15*id per 15s: 4*id per second.
        let want = 4.0 * (i as f64 + 1.0);
        let got: f64 = v.trim_matches('"').parse().unwrap();
        assert!((got - want).abs() < 1e-6, "rate of node {}: {got}", i + 1);
    }
    assert_eq!(first_answers[2][0].1, "\"12\"");
    // shared_metric covers points 0..20 over the three nodes: 21 distinct stamps in
    // the last 10m window minus those older than 10m (none: it spans 5m).
    assert_eq!(first_answers[3][0].1, "\"20\"");
    assert_eq!(
        first_answers[4][0].1, "\"19\"",
        "the newest shared point is 19"
    );

    // A range query, series, labels and label values agree everywhere too.
    let range = format!(
        "/api/v1/query_range?query={}&start={}&end={t_s}&step=15",
        enc("sum by (node)(fanout_test_total)"),
        t_s - 300
    );
    let paths = [
        range,
        format!(
            "/api/v1/series?match[]=fanout_test_total&start={}&end={t_s}",
            t_s - 600
        ),
        format!("/api/v1/labels?start={}&end={t_s}", t_s - 600),
        format!("/api/v1/label/node/values?start={}&end={t_s}", t_s - 600),
    ];
    for p in &paths {
        let answers: Vec<Value> = nodes
            .iter()
            .map(|n| {
                let (code, v) = get_json(&n.web, p);
                assert_eq!(code, 200, "{p}: {v}");
                v
            })
            .collect();
        for (i, a) in answers.iter().enumerate() {
            assert_eq!(a, &answers[0], "{p}: node {} differs", i + 1);
        }
    }
    let (_, series) = get_json(
        &nodes[1].web,
        &format!(
            "/api/v1/series?match[]=fanout_test_total&start={}&end={t_s}",
            t_s - 600
        ),
    );
    assert_eq!(series["data"].as_array().unwrap().len(), 12);
    let (_, values) = get_json(
        &nodes[2].web,
        &format!("/api/v1/label/node/values?start={}&end={t_s}", t_s - 600),
    );
    assert_eq!(values["data"], serde_json::json!(["1", "2", "3"]));

    // Targets: every node shows all three, each with the node that scrapes it.
    let owners = target_owners(&nodes[0].web).0;
    assert_eq!(owners.len(), 3, "{owners:?}");
    assert!(owners.iter().all(|(_, n)| !n.is_empty()), "{owners:?}");
    for n in &nodes[1..] {
        assert_eq!(target_owners(&n.web).0, owners);
    }
    for path in ["/api/v1/rules", "/api/v1/alerts"] {
        for n in &nodes {
            let (code, v) = get_json(&n.web, path);
            assert_eq!(code, 200, "{path}: {v}");
            assert_eq!(v["status"], "success");
        }
    }

    // SIGKILL node 3: node 2 answers with nodes 1 and 2's data and a warning; node 1,
    // which refuses partial answers, fails.
    nodes[2].kill();
    let (d, w) = instant(&nodes[1].web, "count by (node)(fanout_test_total)", t_s);
    assert_eq!(
        result_map(&d),
        vec![
            (r#"{"node":"1"}"#.to_string(), "\"4\"".to_string()),
            (r#"{"node":"2"}"#.to_string(), "\"4\"".to_string()),
        ]
    );
    assert!(
        w.iter().any(|m| m.contains("node 3")),
        "a warning names the missing node: {w:?}"
    );
    println!("partial warnings: {w:?}");
    let (code, v) = get_json(
        &nodes[0].web,
        &format!(
            "/api/v1/query?query={}&time={t_s}",
            enc("count(fanout_test_total)")
        ),
    );
    assert_ne!(code, 200, "node 1 must refuse a partial answer: {v}");
    assert_eq!(v["status"], "error");
    assert!(
        v["error"].as_str().unwrap_or_default().contains("node 3"),
        "{v}"
    );
    let (_, values) = get_json(
        &nodes[1].web,
        &format!("/api/v1/label/node/values?start={}&end={t_s}", t_s - 600),
    );
    assert_eq!(values["data"], serde_json::json!(["1", "2"]));
    assert!(!warnings_of(&values).is_empty(), "{values}");
    let (owners, w) = target_owners(&nodes[1].web);
    assert_eq!(owners.len(), 2, "{owners:?}");
    assert!(w.iter().any(|m| m.contains("node 3")), "{w:?}");
    let (code, _) = get_json(&nodes[0].web, "/api/v1/targets");
    assert_eq!(code, 503);
}
