//! The real `hearth` binary: `hearth check config`, scraping from `--config.file`,
//! and reloads by `POST /-/reload` and SIGHUP.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn check_config_reports_like_promtool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.yml");
    std::fs::write(
        &good,
        "global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['localhost:9090']\n",
    )
    .expect("write");
    let out = run_ok(
        Command::new(hearth_bin())
            .args(["check", "config"])
            .arg(&good),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            " SUCCESS: {} is valid prometheus config file syntax",
            good.display()
        )),
        "{stdout}"
    );

    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "scrape_configs:\n  - job_name: a\n    scrape_intervall: 5s\n",
    )
    .expect("write");
    let out = Command::new(hearth_bin())
        .args(["check", "config"])
        .arg(&bad)
        .output()
        .expect("run hearth");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("  FAILED: parsing YAML file"), "{stderr}");
    assert!(stderr.contains("scrape_intervall"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
}

fn metric_value(addr: &str, name: &str) -> Option<f64> {
    let (_, body) = http("GET", addr, "/metrics", &[], b"").ok()?;
    let text = String::from_utf8_lossy(&body).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn server_scrapes_from_config_and_reloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cfg_path = dir.path().join("prometheus.yml");
    let good = |job: &str| {
        format!(
            "scrape_configs:\n  - job_name: {job}\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{addr}']\n"
        )
    };
    std::fs::write(&cfg_path, good("self")).expect("write config");
    let mut child = Command::new(hearth_bin())
        .arg("--web.listen-address")
        .arg(&addr)
        .arg("--storage.tsdb.path")
        .arg(&data)
        .arg("--config.file")
        .arg(&cfg_path)
        .arg("--web.enable-lifecycle")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hearth");
    wait_ready(&addr, Duration::from_secs(30));
    assert_eq!(
        metric_value(&addr, "prometheus_config_last_reload_successful"),
        Some(1.0)
    );

    // A bad config is refused, the old one stays, and the metric says so.
    std::fs::write(
        &cfg_path,
        "scrape_configs:\n  - job_name: x\n    bogus: 1\n",
    )
    .expect("write");
    let (status, body) = http("POST", &addr, "/-/reload", &[], b"").expect("reload");
    assert_eq!(status, 500, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("bogus"));
    assert_eq!(
        metric_value(&addr, "prometheus_config_last_reload_successful"),
        Some(0.0)
    );

    // A good one by SIGHUP: a second job appears.
    std::fs::write(
        &cfg_path,
        good("self") + &good("again").replace("scrape_configs:\n", ""),
    )
    .expect("write");
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metric_value(&addr, "prometheus_config_last_reload_successful") != Some(1.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let both jobs scrape a few times.
    std::thread::sleep(Duration::from_secs(3));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert!(status.success(), "hearth exited with {status}");

    let out = run_ok(
        Command::new(hearth_bin())
            .args(["tsdb", "dump", "--match", "up"])
            .arg(&data),
    );
    let dump = String::from_utf8_lossy(&out.stdout);
    let self_up = format!("{{__name__=\"up\", instance=\"{addr}\", job=\"self\"}} 1 ");
    let again_up = format!("{{__name__=\"up\", instance=\"{addr}\", job=\"again\"}} 1 ");
    assert!(dump.contains(&self_up), "{dump}");
    assert!(dump.contains(&again_up), "{dump}");
    let out = run_ok(
        Command::new(hearth_bin())
            .args(["tsdb", "dump", "--match", "prometheus_tsdb_head_series"])
            .arg(&data),
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).is_empty(),
        "the server's own metrics were stored"
    );
}

/// `hearth check config` and `promtool check config` on the same `tls_config`
/// and credentials mistakes: the same verdict and the same `FAILED` line, except
/// for a missing CA file, which hearth reports and promtool 2.42 does not look
/// for (its Prometheus fails only at the first scrape).
#[test]
fn check_config_checks_tls_files_like_promtool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exists = dir.path().join("exists.pem");
    std::fs::write(&exists, "not checked for content").expect("write");
    let exists = exists.display().to_string();
    let missing = dir.path().join("missing.pem").display().to_string();
    let cases: Vec<(String, bool)> = vec![
        (format!("tls_config:\n      cert_file: {missing}"), false),
        (format!("tls_config:\n      key_file: {missing}"), false),
        (
            format!("tls_config:\n      cert_file: {missing}\n      key_file: {missing}"),
            false,
        ),
        (
            format!("tls_config:\n      cert_file: {exists}\n      key_file: {missing}"),
            false,
        ),
        ("tls_config:\n      min_version: TLS14".to_string(), false),
        ("tls_config:\n      max_version: SSL3".to_string(), false),
        (
            format!("authorization:\n      credentials_file: {missing}"),
            false,
        ),
        (
            format!(
                "tls_config:\n      ca_file: {exists}\n      cert_file: {exists}\n      key_file: {exists}\n      min_version: TLS12"
            ),
            true,
        ),
    ];
    let check = |cmd: &mut Command, cfg: &std::path::Path| {
        let out = cmd
            .args(["check", "config"])
            .arg(cfg)
            .output()
            .expect("run checker");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .find(|l| l.contains("FAILED"))
                .unwrap_or("")
                .to_string(),
        )
    };
    for (i, (section, valid)) in cases.iter().enumerate() {
        let cfg = dir.path().join(format!("c{i}.yml"));
        std::fs::write(
            &cfg,
            format!("scrape_configs:\n  - job_name: a\n    scheme: https\n    {section}\n    static_configs:\n      - targets: ['x:1']\n"),
        )
        .expect("write");
        let ours = check(&mut Command::new(hearth_bin()), &cfg);
        let theirs = check(&mut promtool(), &cfg);
        assert_eq!(ours, theirs, "case {i}: {section}");
        assert_eq!(
            ours.0,
            Some(if *valid { 0 } else { 1 }),
            "case {i}: {section}"
        );
    }

    // A missing CA file: hearth names it, promtool 2.42 passes the file.
    let cfg = dir.path().join("ca.yml");
    std::fs::write(
        &cfg,
        format!("scrape_configs:\n  - job_name: a\n    scheme: https\n    tls_config:\n      ca_file: {missing}\n    static_configs:\n      - targets: ['x:1']\n"),
    )
    .expect("write");
    let ours = check(&mut Command::new(hearth_bin()), &cfg);
    assert_eq!(ours.0, Some(1));
    assert_eq!(
        ours.1,
        format!("  FAILED: error checking CA file \"{missing}\": stat {missing}: no such file or directory")
    );
    assert_eq!(check(&mut promtool(), &cfg).0, Some(0));
}
