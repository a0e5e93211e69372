//! The cluster with real `hearth` processes on loopback: three nodes form a cluster,
//! a fourth joins, the leader is SIGKILLed and another takes over, a full restart
//! keeps the membership; nodes that must not join are refused with a clear error.

mod common;

use common::node::*;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn three_nodes_form_a_cluster_a_fourth_joins_leader_fails_over_restart_keeps_members() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (1..=4).map(|i| Node::new(tmp.path(), i)).collect();
    let peers = initial_peers_flag(&nodes[..3]);
    for n in nodes[..3].iter_mut() {
        n.start(std::slice::from_ref(&peers));
    }
    let three: Vec<&Node> = nodes[..3].iter().collect();
    let (leader, cluster_id) = wait_for("three nodes to elect a leader", &three, || {
        agreed_leader(&three, 3)
    });
    assert!((1..=3).contains(&leader));
    assert!(!cluster_id.is_empty());
    for n in &three {
        let s = n.status().unwrap();
        assert_eq!(member_ids(&s), vec![1, 2, 3]);
        let states: Vec<String> = s["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["raftState"].as_str().unwrap_or("?").to_string())
            .collect();
        assert_eq!(
            states.iter().filter(|s| *s == "leader").count(),
            1,
            "{states:?}"
        );
        // Every member answered with its clock; on one machine they agree.
        for m in s["members"].as_array().unwrap() {
            let offset = m["clockOffsetSeconds"].as_f64();
            assert!(
                offset.is_some_and(|o| o.abs() < 1.0),
                "node {}: member {} has clock offset {offset:?}",
                n.id,
                m["nodeId"]
            );
        }
    }

    // A fourth node joins through a follower, which forwards to the leader.
    let follower = nodes[..3]
        .iter()
        .find(|n| n.id != leader)
        .unwrap()
        .grpc
        .clone();
    nodes[3].start(&[format!("--cluster.join={follower}")]);
    let all: Vec<&Node> = nodes.iter().collect();
    let (leader, id4) = wait_for("the fourth node to become a voter", &all, || {
        agreed_leader(&all, 4)
    });
    assert_eq!(id4, cluster_id, "the joiner reports the same cluster id");
    let s4 = nodes[3].status().unwrap();
    assert_eq!(member_ids(&s4), vec![1, 2, 3, 4]);
    assert!(s4["ringEpoch"].as_u64().unwrap() >= 2);
    // The joiner records the cluster id in its identity file once it has applied
    // the committed state, which may come a moment after its status shows it.
    let node_json = nodes[3].data.join("cluster/node.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    let identity = loop {
        let identity = std::fs::read_to_string(&node_json).unwrap_or_default();
        if identity.contains(&cluster_id) || Instant::now() > deadline {
            break identity;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(identity.contains(&cluster_id), "{identity}");

    // SIGKILL the leader; the others elect a new one.
    let li = nodes.iter().position(|n| n.id == leader).unwrap();
    let killed_at = Instant::now();
    nodes[li].kill();
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.id != leader).collect();
    let new_leader = wait_for("a new leader after SIGKILL", &survivors, || {
        let (l, _) = agreed_leader(&survivors, 4)?;
        (l != leader).then_some(l)
    });
    let failover = killed_at.elapsed();
    println!("leader {leader} killed; node {new_leader} leads after {failover:?}");
    eprintln!("FIGURE leader_failover_ms={}", failover.as_millis());

    // The killed node restarts with its data directory alone and rejoins.
    nodes[li].start(&[]);
    let all: Vec<&Node> = nodes.iter().collect();
    wait_for("the old leader to rejoin", &all, || agreed_leader(&all, 4));

    // Restart everything: membership and cluster id survive.
    for n in nodes.iter_mut() {
        n.stop();
    }
    for n in nodes.iter_mut() {
        n.start(&[]);
    }
    let all: Vec<&Node> = nodes.iter().collect();
    let (_, after) = wait_for("a leader after a full restart", &all, || {
        agreed_leader(&all, 4)
    });
    assert_eq!(after, cluster_id);
    for n in &all {
        assert_eq!(member_ids(&n.status().unwrap()), vec![1, 2, 3, 4]);
    }
}

/// A one-node cluster on the given node (listening for gRPC, no peers).
fn single(n: &mut Node) -> String {
    n.start(&[]);
    let me = [&*n];
    wait_for("a one-node cluster", &me, || agreed_leader(&me, 1)).1
}

#[test]
fn data_dir_of_another_cluster_refuses_to_join() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Node::new(tmp.path(), 1);
    let mut b = Node::new(tmp.path(), 2);
    let a_id = single(&mut a);
    let b_id = single(&mut b);
    assert_ne!(a_id, b_id);
    b.stop();
    b.start(&[format!("--cluster.join={}", a.grpc)]);
    let (ok, log) = b.wait_exit();
    assert!(!ok, "a node of another cluster must not start:\n{log}");
    assert!(
        log.contains(&format!(
            "belongs to cluster {b_id}, but {} is in cluster {a_id}",
            a.grpc
        )),
        "{log}"
    );
    // Nothing changed on the cluster it tried to join.
    assert_eq!(member_ids(&a.status().unwrap()), vec![1]);
}

#[test]
fn a_duplicate_node_id_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Node::new(tmp.path(), 1);
    single(&mut a);
    let mut dup = Node::new(tmp.path(), 1);
    dup.data = tmp.path().join("dup");
    dup.start(&[format!("--cluster.join={}", a.grpc)]);
    let (ok, log) = dup.wait_exit();
    assert!(!ok, "{log}");
    assert!(
        log.contains(&format!(
            "node id 1 is already used by the member at {}",
            a.grpc
        )),
        "{log}"
    );
    assert_eq!(member_ids(&a.status().unwrap()), vec![1]);
}

#[test]
fn initial_peers_that_disagree_are_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Node::new(tmp.path(), 1);
    let mut b = Node::new(tmp.path(), 2);
    let stranger = format!("127.0.0.1:{}", free_port());
    a.start(&[format!("--cluster.initial-peers={},{}", a.grpc, b.grpc)]);
    b.start(&[format!(
        "--cluster.initial-peers={},{},{stranger}",
        a.grpc, b.grpc
    )]);
    // Whichever node sees the other's list first stops with the error.
    let deadline = Instant::now() + WAIT;
    let log = loop {
        let mut exited = None;
        for n in [&mut a, &mut b] {
            if let Some(Ok(Some(st))) = n.child.as_mut().map(|c| c.try_wait()) {
                exited = Some((
                    st.success(),
                    std::fs::read_to_string(&n.log).unwrap_or_default(),
                ));
            }
        }
        if let Some((ok, log)) = exited {
            assert!(!ok, "{log}");
            break log;
        }
        assert!(Instant::now() < deadline, "neither node stopped");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(log.contains("--cluster.initial-peers disagree"), "{log}");
    // Neither node formed a cluster.
    assert!(!a.data.join("cluster/raft/log_state.json").exists());
}

#[test]
fn a_node_refuses_a_data_dir_of_another_node_id() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Node::new(tmp.path(), 1);
    single(&mut a);
    a.stop();
    a.id = 7;
    a.start(&[]);
    let (ok, log) = a.wait_exit();
    assert!(!ok, "{log}");
    assert!(log.contains("belongs to node 1, not node 7"), "{log}");
}

/// Runs `hearth cluster ARGS…`; returns success, stdout and stderr.
fn cluster_tool(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(hearth_bin())
        .arg("cluster")
        .args(args)
        .output()
        .expect("run hearth cluster");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cluster_tool_shows_status_removes_and_re_adds_members() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (1..=3).map(|i| Node::new(tmp.path(), i)).collect();
    let peers = initial_peers_flag(&nodes);
    for n in nodes.iter_mut() {
        n.start(std::slice::from_ref(&peers));
    }
    let all: Vec<&Node> = nodes.iter().collect();
    let (leader, cluster_id) = wait_for("three nodes to elect a leader", &all, || {
        agreed_leader(&all, 3)
    });

    let (ok, out, err) = cluster_tool(&["status", "--server", &nodes[0].grpc]);
    assert!(ok, "{err}");
    assert!(out.contains(&cluster_id), "{out}");
    assert!(out.contains(&format!("leader {leader}")), "{out}");
    let rows: Vec<&str> = out.lines().skip(2).collect();
    assert_eq!(rows.len(), 3, "{out}");
    for n in &nodes {
        let row = rows
            .iter()
            .find(|r| r.starts_with(&format!("{} ", n.id)))
            .unwrap_or_else(|| panic!("no row for node {}: {out}", n.id));
        assert!(
            row.contains("voter") && row.contains("active") && row.contains(&n.grpc),
            "{row}"
        );
    }
    assert_eq!(
        out.matches(" leader ").count(),
        2,
        "one member's Raft state is leader: {out}"
    );

    // Remove a follower through another follower (forwarded to the leader).
    let followers: Vec<u64> = nodes
        .iter()
        .map(|n| n.id)
        .filter(|&i| i != leader)
        .collect();
    let (gone, via) = (followers[0], followers[1]);
    let via_addr = nodes[via as usize - 1].grpc.clone();
    let (ok, out, err) = cluster_tool(&["remove", "--server", &via_addr, &gone.to_string()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("removed node {gone}")), "{out}");
    let rest: Vec<&Node> = nodes.iter().filter(|n| n.id != gone).collect();
    wait_for("two voters after remove", &rest, || agreed_leader(&rest, 2));
    for n in &rest {
        assert!(!member_ids(&n.status().unwrap()).contains(&gone));
    }

    // Removing an unknown member names it; a non-hearth address is named too.
    let (ok, _, err) = cluster_tool(&["remove", "--server", &via_addr, "42"]);
    assert!(!ok);
    assert!(err.contains("node 42 is not a member"), "{err}");
    let (ok, _, err) = cluster_tool(&["status", "--server", &nodes[0].web]);
    assert!(!ok);
    assert!(err.contains(&nodes[0].web), "{err}");

    // The removed node, still running, is added back from the outside.
    let gone_addr = nodes[gone as usize - 1].grpc.clone();
    let (ok, out, err) =
        cluster_tool(&["join", "--server", &via_addr, &gone.to_string(), &gone_addr]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!(
            "node {gone} joined cluster {cluster_id} as a voter"
        )),
        "{out}"
    );
    wait_for("three voters after join", &all, || agreed_leader(&all, 3));

    // A member leaves by itself; the others carry on.
    let (ok, out, err) = cluster_tool(&["leave", "--server", &gone_addr]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("node {gone} has left")), "{out}");
    wait_for("two voters after leave", &rest, || agreed_leader(&rest, 2));
}

#[test]
fn removing_the_last_voter_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut n = Node::new(tmp.path(), 1);
    single(&mut n);
    let (ok, _, err) = cluster_tool(&["remove", "--server", &n.grpc, "1"]);
    assert!(!ok);
    assert!(err.contains("last voter"), "{err}");
    assert_eq!(member_ids(&n.status().unwrap()), vec![1]);
}

/// Pauses (SIGSTOP) or resumes (SIGCONT) a node's process.
fn pause(n: &Node, stop: bool) {
    let pid = n.child.as_ref().expect("running").id() as i32;
    let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    unsafe { libc::kill(pid, sig) };
}

#[test]
fn a_minority_cannot_change_membership_and_the_majority_can() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (1..=3).map(|i| Node::new(tmp.path(), i)).collect();
    let peers = initial_peers_flag(&nodes);
    for n in nodes.iter_mut() {
        n.start(std::slice::from_ref(&peers));
    }
    let all: Vec<&Node> = nodes.iter().collect();
    let (leader, _) = wait_for("a leader", &all, || agreed_leader(&all, 3));

    // The leader and one follower pause: the remaining follower is a minority
    // of one and refuses to remove anybody.
    let lone = nodes.iter().position(|n| n.id != leader).unwrap();
    let paused: Vec<usize> = (0..3).filter(|&i| i != lone).collect();
    for &i in &paused {
        pause(&nodes[i], true);
    }
    let victim = nodes[paused[0]].id.to_string();
    let (ok, out, err) = cluster_tool(&["remove", "--server", &nodes[lone].grpc, &victim]);
    for &i in &paused {
        pause(&nodes[i], false);
    }
    assert!(!ok, "a minority removed a member: {out}");
    assert!(err.contains("unavailable"), "{err}");
    wait_for("three voters again", &all, || agreed_leader(&all, 3));
    for n in &all {
        assert_eq!(member_ids(&n.status().unwrap()), vec![1, 2, 3]);
    }

    // One node pauses: the two others are a majority and remove it.
    let (leader, _) = wait_for("a leader", &all, || agreed_leader(&all, 3));
    let gone = nodes.iter().position(|n| n.id != leader).unwrap();
    pause(&nodes[gone], true);
    let via = nodes.iter().position(|n| n.id == leader).unwrap();
    let (ok, out, err) = cluster_tool(&[
        "remove",
        "--server",
        &nodes[via].grpc,
        &nodes[gone].id.to_string(),
    ]);
    pause(&nodes[gone], false);
    assert!(
        ok,
        "the majority could not remove a paused node: {out}{err}"
    );
    let rest: Vec<&Node> = nodes.iter().filter(|n| n.id != nodes[gone].id).collect();
    wait_for("two voters after remove", &rest, || agreed_leader(&rest, 2));
}

#[test]
fn a_join_address_that_is_not_a_hearth_node_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Node::new(tmp.path(), 1);
    let mut b = Node::new(tmp.path(), 2);
    single(&mut a);
    // a's HTTP API answers, but it is not a cluster (gRPC) address.
    b.start(&[format!("--cluster.join={}", a.web)]);
    let (ok, log) = b.wait_exit();
    assert!(!ok, "{log}");
    let msg = format!("{} does not look like a hearth cluster address", a.web);
    let last = log.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: ") && last.contains(&msg), "{log}");
    assert_eq!(last.matches(&msg).count(), 1, "said once: {last}");
    assert_eq!(member_ids(&a.status().unwrap()), vec![1]);
}
