//! A `hearth` cluster node run as a real process on loopback, for the cluster tests:
//! start with cluster flags, SIGKILL or SIGTERM, read `/api/v1/status/cluster`, and
//! wait until the nodes agree.

use super::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for any one wait: generous, since the test machine may be loaded.
pub const WAIT: Duration = Duration::from_secs(60);

pub struct Node {
    pub id: u64,
    pub data: PathBuf,
    pub web: String,
    pub grpc: String,
    pub log: PathBuf,
    pub child: Option<Child>,
    /// The network namespace the process runs in (`ip netns exec`), if any.
    pub netns: Option<String>,
}

impl Node {
    pub fn new(dir: &Path, id: u64) -> Node {
        Node {
            id,
            data: dir.join(format!("node{id}")),
            web: format!("127.0.0.1:{}", free_port()),
            grpc: format!("127.0.0.1:{}", free_port()),
            log: dir.join(format!("node{id}.log")),
            child: None,
            netns: None,
        }
    }

    /// A node on `ip` (HTTP on :9090, gRPC on :9190) inside network namespace `netns`.
    pub fn in_netns(dir: &Path, id: u64, netns: &str, ip: &str) -> Node {
        let mut n = Node::new(dir, id);
        n.web = format!("{ip}:9090");
        n.grpc = format!("{ip}:9190");
        n.netns = Some(netns.to_string());
        n
    }

    pub fn start(&mut self, extra: &[String]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = match &self.netns {
            Some(ns) => {
                // `ip netns exec` execs hearth in place: the child's pid is hearth's.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, hearth_bin()]);
                c
            }
            None => Command::new(hearth_bin()),
        };
        let child = cmd
            .arg(format!("--storage.tsdb.path={}", self.data.display()))
            .arg(format!("--web.listen-address={}", self.web))
            .arg(format!("--cluster.node-id={}", self.id))
            .arg(format!("--cluster.listen-address={}", self.grpc))
            .args(extra)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start hearth");
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the process (SIGSTOP): it holds its sockets but answers nothing.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!(
                "node {} did not stop on SIGTERM; log:\n{}",
                self.id,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    /// Waits for the process to exit by itself; returns its success and log.
    pub fn wait_exit(&mut self) -> (bool, String) {
        let mut c = self.child.take().expect("running");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return (
                    st.success(),
                    std::fs::read_to_string(&self.log).unwrap_or_default(),
                );
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "node {} did not exit; log:\n{}",
                    self.id,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn status(&self) -> Option<Value> {
        let (code, body) = http("GET", &self.web, "/api/v1/status/cluster", &[], b"").ok()?;
        if code != 200 {
            return None;
        }
        let v: Value = serde_json::from_slice(&body).ok()?;
        Some(v["data"].clone())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls until `f` returns Some, or panics with the nodes' logs after `WAIT`.
pub fn wait_for<T>(what: &str, nodes: &[&Node], mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut logs = String::new();
    for n in nodes {
        logs.push_str(&format!(
            "---- node {} status {:?}\n{}\n",
            n.id,
            n.status(),
            std::fs::read_to_string(&n.log).unwrap_or_default()
        ));
    }
    panic!("timed out waiting for {what}\n{logs}");
}

/// The leader all `nodes` agree on, with `voters` voters and a cluster id.
pub fn agreed_leader(nodes: &[&Node], voters: usize) -> Option<(u64, String)> {
    let mut seen = None;
    for n in nodes {
        let s = n.status()?;
        let leader = s["leaderId"].as_u64()?;
        let cluster_id = s["clusterId"].as_str()?.to_string();
        let members = s["members"].as_array()?;
        let v = members.iter().filter(|m| m["role"] == "voter").count();
        if v != voters {
            return None;
        }
        match &seen {
            None => seen = Some((leader, cluster_id)),
            Some(p) if *p == (leader, cluster_id.clone()) => {}
            Some(_) => return None,
        }
    }
    seen
}

pub fn member_ids(s: &Value) -> Vec<u64> {
    let mut ids: Vec<u64> = s["members"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["nodeId"].as_u64()).collect())
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

/// `--cluster.initial-peers=` with the gRPC addresses of `nodes`.
pub fn initial_peers_flag(nodes: &[Node]) -> String {
    let addrs: Vec<&str> = nodes.iter().map(|n| n.grpc.as_str()).collect();
    format!("--cluster.initial-peers={}", addrs.join(","))
}

/// Waits until a remote write of `probe{node="<id>"}` at `t_ms` to each node is
/// acknowledged: every node's WAL group is formed and commits.
pub fn wait_groups_formed(nodes: &[&Node], probe: &str, t_ms: i64) {
    for n in nodes {
        wait_for(&format!("node {}'s WAL group", n.id), nodes, || {
            let ts = vec![series(
                probe,
                &[("node", &n.id.to_string())],
                &[(t_ms, 1.0)],
            )];
            matches!(try_remote_write(&n.web, ts), Ok((204, _))).then_some(())
        });
    }
}

/// The value of `name{group="<group>"}` on a node's `/metrics`.
pub fn group_metric(addr: &str, name: &str, group: u64) -> Option<f64> {
    let (code, body) = http("GET", addr, "/metrics", &[], b"").ok()?;
    if code != 200 {
        return None;
    }
    let text = String::from_utf8(body).ok()?;
    let prefix = format!("{name}{{group=\"{group}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}
