//! `hearth alertmanager` as a real process with Alertmanager's flags: amtool adds a
//! silence, the silence survives a restart, and `hearth check alertmanager-config`
//! accepts good files and names the problem in bad ones.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CONFIG: &str = r#"
route:
  receiver: default
  group_by: [alertname]
receivers:
  - name: default
"#;

fn start(dir: &std::path::Path, addr: &str) -> Child {
    Command::new(hearth_bin())
        .arg("alertmanager")
        .arg(format!("--config.file={}", dir.join("am.yml").display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hearth alertmanager")
}

fn stop(mut child: Child) {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
}

fn amtool(addr: &str, args: &[&str]) -> String {
    let out = run_ok(
        Command::new("amtool")
            .arg(format!("--alertmanager.url=http://{addr}"))
            .args(args),
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn silences_survive_a_restart_of_the_standalone_alertmanager() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("am.yml"), CONFIG).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let child = start(tmp.path(), &addr);
    wait_ready(&addr, Duration::from_secs(30));
    let id = amtool(
        &addr,
        &[
            "silence",
            "add",
            "alertname=Disk",
            "--comment=maintenance",
            "--author=ops",
        ],
    );
    let id = id.trim().to_string();
    assert!(!id.is_empty(), "amtool printed the new silence's id");
    stop(child);

    let child = start(tmp.path(), &addr);
    wait_ready(&addr, Duration::from_secs(30));
    let listed = amtool(&addr, &["silence", "query", "-q"]);
    assert!(listed.contains(&id), "silence {id} kept: {listed:?}");
    stop(child);
}

#[test]
fn check_alertmanager_config_names_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.yml");
    std::fs::write(&good, CONFIG).unwrap();
    let out = run_ok(
        Command::new(hearth_bin())
            .args(["check", "alertmanager-config"])
            .arg(&good),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));

    let bad = tmp.path().join("bad.yml");
    std::fs::write(
        &bad,
        "route:\n  receiver: nowhere\nreceivers:\n  - name: default\n",
    )
    .unwrap();
    let out = Command::new(hearth_bin())
        .args(["check", "alertmanager-config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yml") && err.contains("nowhere"), "{err}");
}

#[test]
fn a_hearth_node_serves_the_builtin_alertmanager() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("am.yml"), CONFIG).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(hearth_bin())
        .arg(format!(
            "--storage.tsdb.path={}",
            tmp.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg(format!(
            "--alertmanager.config.file={}",
            tmp.path().join("am.yml").display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hearth");
    wait_ready(&addr, Duration::from_secs(30));
    amtool(&addr, &["alert", "add", "alertname=Up", "severity=page"]);
    let alerts = amtool(&addr, &["alert", "query", "-o", "json"]);
    assert!(alerts.contains("\"alertname\":\"Up\""), "{alerts}");
    // The Prometheus API is served on the same listener.
    let (code, _) = http("GET", &addr, "/api/v1/labels", &[], b"").unwrap();
    assert_eq!(code, 200);
    // Its notification metrics are on the node's /metrics.
    let (code, body) = http("GET", &addr, "/metrics", &[], b"").unwrap();
    assert_eq!(code, 200);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("alertmanager_notifications_total{integration=\"webhook\"} 0"),
        "{text}"
    );
    stop(child);
    assert!(
        tmp.path().join("data/alertmanager").is_dir(),
        "state lives under the TSDB path"
    );
}

/// This machine's host name (what Alertmanager's default external URL uses).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(rc, 0, "gethostname");
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[test]
fn notifications_carry_alertmanagers_default_external_url() {
    use std::io::{BufReader, Write};
    let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in sink.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            if let Some((_, body)) = read_request(&mut r) {
                let _ = tx.send(body);
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("am.yml"),
        format!(
            "route: {{receiver: hook, group_wait: 100ms}}\nreceivers:\n  - name: hook\n    webhook_configs: [{{url: 'http://{sink_addr}/'}}]\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // No --web.external-url: Alertmanager's default, http://<hostname>:<port>.
    let child = start(tmp.path(), &addr);
    wait_ready(&addr, Duration::from_secs(30));
    let (code, resp) = http(
        "POST",
        &addr,
        "/api/v2/alerts",
        &[("Content-Type", "application/json")],
        br#"[{"labels": {"alertname": "A"}}]"#,
    )
    .expect("post alert");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&resp));
    let body = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a webhook notification");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["externalURL"],
        format!("http://{}:{port}", hostname()),
        "{v}"
    );
    stop(child);
}
