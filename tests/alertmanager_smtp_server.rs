//! Email against a real SMTP server, not a sink the test wrote: aiosmtpd (Debian
//! package `python3-aiosmtpd`, run by `tests/data/smtp/aiosmtpd_server.py`)
//! requiring STARTTLS (certificate made by `openssl`) and then AUTH, offering
//! CRAM-MD5, LOGIN and PLAIN. hearth must upgrade the connection, verify the
//! server against the configured CA, and authenticate with CRAM-MD5 when
//! `smtp_auth_secret` is set (the mechanism Alertmanager picks first), else with
//! the password over the first of LOGIN/PLAIN the server lists; wrong
//! credentials must fail the notification.

mod common;

use common::tls::{make_ca, make_leaf};
use hearth::alertmanager::types::{zero_time, Alert, Clock};
use hearth::alertmanager::{config, Alertmanager, Options};
use hearth::labels::Labels;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The Debian interpreter that has `python3-aiosmtpd`.
const PYTHON: &str = "/usr/bin/python3";

struct Server {
    child: Child,
    port: u16,
    lines: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(dir: &Path) -> Server {
    make_ca(dir, "ca");
    make_leaf(
        dir,
        "ca",
        "smtp",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    );
    let port = common::free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/smtp/aiosmtpd_server.py");
    let mut child = Command::new(PYTHON)
        .arg(&script)
        .arg(port.to_string())
        .arg(dir.join("smtp.pem"))
        .arg(dir.join("smtp.key"))
        .args(["user", "secret"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start aiosmtpd (apt-get install python3-aiosmtpd)");
    let stdout: ChildStdout = child.stdout.take().expect("server stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("aiosmtpd did not start (is python3-aiosmtpd installed?)");
    assert_eq!(first, "ready");
    Server { child, port, lines }
}

/// The config; `auth` is the `smtp_auth_*` lines after the username.
fn config(port: u16, dir: &Path, auth: &str) -> String {
    format!(
        r#"
global:
  smtp_smarthost: '127.0.0.1:{port}'
  smtp_from: 'am@example.org'
  smtp_hello: hearth.test
  smtp_auth_username: user
  {auth}
route:
  receiver: mail
  group_by: [alertname]
  group_wait: 50ms
  group_interval: 2s
receivers:
  - name: mail
    email_configs:
      - to: 'ops@example.org'
        tls_config:
          ca_file: '{}'
"#,
        dir.join("ca.pem").display()
    )
}

fn start(cfg: &str) -> (std::sync::Arc<Alertmanager>, CancellationToken) {
    let cfg = config::parse(cfg).expect("config");
    let am = Alertmanager::start(cfg, Options::default(), Clock::system()).expect("start");
    let cancel = CancellationToken::new();
    tokio::spawn(am.clone().run(cancel.clone()));
    (am, cancel)
}

fn firing(am: &Alertmanager) -> Alert {
    let now = am.clock.now();
    Alert {
        labels: Labels::from_pairs(&[("alertname", "DiskFull")]),
        annotations: Default::default(),
        starts_at: now,
        ends_at: zero_time(),
        generator_url: "".into(),
        updated_at: now,
        timeout: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_starttls_with_cram_md5_to_a_real_smtp_server() {
    sends_with(
        "smtp_auth_secret: secret\n  smtp_auth_password: other",
        "CRAM-MD5",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_starttls_with_the_password_when_there_is_no_secret() {
    // The server lists "CRAM-MD5 LOGIN PLAIN": without a secret CRAM-MD5 is
    // skipped, as Alertmanager does, and LOGIN comes next.
    sends_with("smtp_auth_password: secret", "LOGIN").await;
}

async fn sends_with(auth: &str, mechanism: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = start_server(tmp.path());
    let (am, cancel) = start(&config(server.port, tmp.path(), auth));
    assert_eq!(am.put_alerts(vec![firing(&am)]).accepted, 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let line = loop {
        if let Ok(line) = server.lines.try_recv() {
            break line;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message reached the SMTP server within 30s: {:?}",
            am.metrics.counts("email")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let got: Value = serde_json::from_str(&line).expect("server's JSON line");
    assert_eq!(got["tls"], true, "STARTTLS before the message: {got}");
    assert_eq!(got["auth"]["mechanism"], mechanism, "{got}");
    assert_eq!(got["auth"]["user"], "user");
    assert_eq!(got["from"], "am@example.org");
    assert_eq!(got["rcpt"], serde_json::json!(["ops@example.org"]));
    let data = got["data"].as_str().unwrap_or("");
    assert!(data.contains("Subject: [FIRING:1] DiskFull"), "{data}");
    // The notification was counted as sent, not failed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while am.metrics.counts("email") != (1, 0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            am.metrics.counts("email")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_fails_the_notification() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = start_server(tmp.path());
    let (am, cancel) = start(&config(server.port, tmp.path(), "smtp_auth_secret: wrong"));
    assert_eq!(am.put_alerts(vec![firing(&am)]).accepted, 1);
    // Failed at once or after retries until the flush deadline (10 s), and
    // every notification so far failed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let (sent, failed) = loop {
        let (sent, failed) = am.metrics.counts("email");
        if failed >= 1 {
            break (sent, failed);
        }
        assert!(tokio::time::Instant::now() < deadline, "no failure counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(sent, failed);
    let (requests, failed) = am.metrics.request_counts("email");
    assert!(requests >= 1 && failed == requests, "{requests} {failed}");
    assert!(
        server.lines.try_recv().is_err(),
        "no message may be accepted without authentication"
    );
    cancel.cancel();
}
