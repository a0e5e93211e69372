//! Servers run as real child processes for side-by-side tests: hearth, Prometheus
//! 2.42, Alertmanager 0.25 and node_exporter (from their Debian packages, which
//! `.ci/install-deps` installs), each on a free loopback port, and a tiny exporter
//! serving fixed bodies. A `Server` is SIGKILLed when dropped, so a failing test
//! leaves no process behind.

use super::*;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bound for a server to start.
const START_WAIT: Duration = Duration::from_secs(60);

/// A server process and where it listens.
pub struct Server {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// stdout and stderr of the process.
    pub log: PathBuf,
    child: Child,
}

impl Server {
    fn spawn(cmd: &mut Command, addr: String, log: PathBuf) -> Server {
        let out = std::fs::File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let child = cmd
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e} (.ci/install-deps installs it)"));
        Server { addr, log, child }
    }

    /// hearth with `config` as its `--config.file`, data and log under `dir/name`.
    pub fn hearth(dir: &Path, name: &str, config: &str, extra: &[&str]) -> Server {
        let (cfg, data, log, addr) = layout(dir, name, config);
        let s = Server::spawn(
            Command::new(hearth_bin())
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address={addr}"))
                .args(extra),
            addr,
            log,
        );
        s.wait_for_path("/-/ready");
        s
    }

    /// Prometheus 2.42 with `config` as its `--config.file`, data and log under
    /// `dir/name`.
    pub fn prometheus(dir: &Path, name: &str, config: &str, extra: &[&str]) -> Server {
        let (cfg, data, log, addr) = layout(dir, name, config);
        let s = Server::spawn(
            Command::new("prometheus")
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address={addr}"))
                .args(extra),
            addr,
            log,
        );
        s.wait_for_path("/-/ready");
        s
    }

    /// The real Alertmanager 0.25 (Debian `prometheus-alertmanager`) with `config`
    /// as its `--config.file`, state and log under `dir/name`, gossip turned off.
    pub fn alertmanager(dir: &Path, name: &str, config: &str) -> Server {
        let (cfg, data, log, addr) = layout(dir, name, config);
        let s = Server::spawn(
            Command::new("prometheus-alertmanager")
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!("--storage.path={}", data.display()))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--cluster.listen-address="),
            addr,
            log,
        );
        s.wait_for_path("/-/ready");
        s
    }

    /// `prometheus-node-exporter` with `args`, its log in `dir/node_exporter.log`.
    pub fn node_exporter(dir: &Path, args: &[&str]) -> Server {
        let addr = format!("127.0.0.1:{}", free_port());
        let s = Server::spawn(
            Command::new("prometheus-node-exporter")
                .arg(format!("--web.listen-address={addr}"))
                .args(args),
            addr,
            dir.join("node_exporter.log"),
        );
        s.wait_for_path("/metrics");
        s
    }

    /// Waits until `GET path` answers 200, failing with the log if the process
    /// exits or the wait is over.
    pub fn wait_for_path(&self, path: &str) {
        let deadline = Instant::now() + START_WAIT;
        while Instant::now() < deadline {
            if let Ok((200, _)) = http("GET", &self.addr, path, &[], b"") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} gave no 200 for {path} within {START_WAIT:?}; log:\n{}",
            self.addr,
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` as JSON, with the status code.
    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        get_json(&self.addr, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn layout(dir: &Path, name: &str, config: &str) -> (PathBuf, PathBuf, PathBuf, String) {
    let cfg = dir.join(format!("{name}.yml"));
    std::fs::write(&cfg, config).expect("write config");
    let addr = format!("127.0.0.1:{}", free_port());
    (
        cfg,
        dir.join(format!("{name}-data")),
        dir.join(format!("{name}.log")),
        addr,
    )
}

/// An exporter on loopback serving a body per path, with its content type; the
/// test may change the bodies at any time. It answers with `Connection: close`.
pub struct FixedExporter {
    pub addr: String,
    /// path → (content type, body).
    pub bodies: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl FixedExporter {
    /// Serves `(path, content type, body)` triples on a thread until the process
    /// ends.
    pub fn start(bodies: &[(&str, &str, &str)]) -> FixedExporter {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind exporter");
        let addr = listener.local_addr().expect("exporter address").to_string();
        let bodies = Arc::new(Mutex::new(
            bodies
                .iter()
                .map(|(p, c, b)| (p.to_string(), c.to_string(), b.to_string()))
                .collect::<Vec<_>>(),
        ));
        let served = bodies.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let served = served.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(match conn.try_clone() {
                        Ok(c) => c,
                        Err(_) => return,
                    });
                    let mut first = String::new();
                    if reader.read_line(&mut first).is_err() {
                        return;
                    }
                    loop {
                        let mut line = String::new();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => break,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
                    let found = served
                        .lock()
                        .map(|b| b.iter().find(|(p, _, _)| *p == path).cloned())
                        .unwrap_or(None);
                    let resp = match found {
                        Some((_, ct, body)) => format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        ),
                        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                    };
                    let _ = conn.write_all(resp.as_bytes());
                });
            }
        });
        FixedExporter { addr, bodies }
    }

    /// Replaces the body served at `path`.
    pub fn set_body(&self, path: &str, body: &str) {
        let mut b = self.bodies.lock().expect("exporter bodies");
        for entry in b.iter_mut() {
            if entry.0 == path {
                entry.2 = body.to_string();
            }
        }
    }
}
