//! https scraping with `tls_config`, end to end: certificates made by the
//! `openssl` command line tool in a temporary directory, real TLS exporters on
//! loopback (tokio-rustls), and the real `hearth` binary scraping them with a
//! prometheus.yml, checked through `/api/v1/targets` and the query API.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::tls::{make_ca, make_leaf, server_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

const BODY: &str = "# TYPE tls_test_metric gauge\ntls_test_metric{via=\"https\"} 42\n";

/// An https exporter: serves `BODY` to every request, and records the SNI
/// names clients sent.
struct Exporter {
    port: u16,
    sni: Arc<Mutex<Vec<String>>>,
}

async fn serve(config: rustls::ServerConfig) -> Exporter {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind exporter");
    let port = listener.local_addr().expect("local addr").port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let sni = Arc::new(Mutex::new(Vec::new()));
    let seen = sni.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                // Failed handshakes are expected for the jobs that must fail.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Some(name) = tls.get_ref().1.server_name() {
                    seen.lock().expect("sni lock").push(name.to_string());
                }
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
                    BODY.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Exporter { port, sni }
}

fn get_json(addr: &str, path: &str) -> serde_json::Value {
    let (status, body) =
        http("GET", addr, path, &[], b"").unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Job → (health, lastError) from `/api/v1/targets`.
fn targets(addr: &str) -> BTreeMap<String, (String, String)> {
    let v = get_json(addr, "/api/v1/targets");
    let mut out = BTreeMap::new();
    for t in v["data"]["activeTargets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        out.insert(
            t["labels"]["job"].as_str().unwrap_or("").to_string(),
            (
                t["health"].as_str().unwrap_or("").to_string(),
                t["lastError"].as_str().unwrap_or("").to_string(),
            ),
        );
    }
    out
}

/// Job → value of an instant query's result.
fn query_by_job(addr: &str, query: &str) -> BTreeMap<String, String> {
    let v = get_json(addr, &format!("/api/v1/query?query={query}"));
    let mut out = BTreeMap::new();
    for r in v["data"]["result"].as_array().cloned().unwrap_or_default() {
        out.insert(
            r["metric"]["job"].as_str().unwrap_or("").to_string(),
            r["value"][1].as_str().unwrap_or("").to_string(),
        );
    }
    out
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn https_scraping_with_tls_config() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir: PathBuf = tmp.path().to_path_buf();
    make_ca(&dir, "ca");
    make_ca(&dir, "other-ca");
    make_leaf(
        &dir,
        "ca",
        "server",
        "subjectAltName=IP:127.0.0.1,DNS:exporter.test\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    );
    make_leaf(
        &dir,
        "ca",
        "client",
        "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
    );

    // The exporters run on their own runtime while the test talks to hearth.
    let (tx, rx) = std::sync::mpsc::channel();
    let server_dir = dir.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let all = rustls::DEFAULT_VERSIONS;
            let plain = serve(server_config(&server_dir, None, all)).await;
            let mtls = serve(server_config(&server_dir, Some("ca.pem"), all)).await;
            let tls12 = serve(server_config(&server_dir, None, &[&rustls::version::TLS12])).await;
            let _ = tx.send((plain, mtls, tls12));
            std::future::pending::<()>().await;
        });
    });
    let (plain, mtls, tls12) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("exporters started");

    let d = dir.display();
    let job = |name: &str, port: u16, host: &str, tls: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    static_configs:\n      - targets: ['{host}:{port}']\n    tls_config:\n{tls}"
        )
    };
    let jobs = [
        job("ca_file", plain.port, "127.0.0.1", &format!("      ca_file: {d}/ca.pem\n")),
        job(
            "server_name",
            plain.port,
            "localhost",
            &format!("      ca_file: {d}/ca.pem\n      server_name: exporter.test\n"),
        ),
        job(
            "no_server_name",
            plain.port,
            "localhost",
            &format!("      ca_file: {d}/ca.pem\n"),
        ),
        job("wrong_ca", plain.port, "127.0.0.1", &format!("      ca_file: {d}/other-ca.pem\n")),
        job(
            "insecure",
            plain.port,
            "127.0.0.1",
            &format!("      ca_file: {d}/other-ca.pem\n      insecure_skip_verify: true\n"),
        ),
        job(
            "client_cert",
            mtls.port,
            "127.0.0.1",
            &format!(
                "      ca_file: {d}/ca.pem\n      cert_file: {d}/client.pem\n      key_file: {d}/client.key\n"
            ),
        ),
        job("no_client_cert", mtls.port, "127.0.0.1", &format!("      ca_file: {d}/ca.pem\n")),
        job(
            "missing_ca_file",
            plain.port,
            "127.0.0.1",
            &format!("      ca_file: {d}/missing-ca.pem\n"),
        ),
        job(
            "min_tls13",
            tls12.port,
            "127.0.0.1",
            &format!("      ca_file: {d}/ca.pem\n      min_version: TLS13\n"),
        ),
        job("tls12", tls12.port, "127.0.0.1", &format!("      ca_file: {d}/ca.pem\n")),
    ];
    let cfg = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{}",
        jobs.concat()
    );
    let cfg_path = dir.join("prometheus.yml");
    std::fs::write(&cfg_path, &cfg).expect("write config");

    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _hearth = Kill(
        Command::new(hearth_bin())
            .arg("--web.listen-address")
            .arg(&addr)
            .arg("--storage.tsdb.path")
            .arg(dir.join("data"))
            .arg("--config.file")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hearth"),
    );
    wait_ready(&addr, Duration::from_secs(30));

    // Every target has been scraped at least once (healthy or not), and the
    // healthy ones have their series queryable.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (t, up, metric) = loop {
        let t = targets(&addr);
        let up = query_by_job(&addr, "up");
        let metric = query_by_job(&addr, "tls_test_metric");
        let scraped = t.len() == jobs.len() && t.values().all(|(h, _)| h != "unknown");
        if scraped && up.len() == jobs.len() && metric.len() >= 5 {
            break (t, up, metric);
        }
        assert!(
            Instant::now() < deadline,
            "targets not all scraped in time: {t:?} up={up:?} metric={metric:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("targets: {t:#?}");

    for ok in ["ca_file", "server_name", "insecure", "client_cert", "tls12"] {
        assert_eq!(
            up.get(ok).map(String::as_str),
            Some("1"),
            "{ok}: {:?}",
            t.get(ok)
        );
        assert_eq!(t[ok].0, "up", "{ok}: {:?}", t[ok]);
        assert_eq!(metric.get(ok).map(String::as_str), Some("42"), "{ok}");
    }
    let failed = [
        ("wrong_ca", "x509: certificate signed by unknown authority"),
        (
            "no_server_name",
            "x509: certificate is valid for 127.0.0.1, exporter.test, not localhost",
        ),
        ("no_client_cert", "remote error: tls: certificate required"),
        ("missing_ca_file", "missing-ca.pem"),
        (
            "min_tls13",
            "remote error: tls: protocol version not supported",
        ),
    ];
    for (job, wanted) in failed {
        assert_eq!(
            up.get(job).map(String::as_str),
            Some("0"),
            "{job}: {:?}",
            t.get(job)
        );
        let (health, err) = &t[job];
        assert_eq!(health, "down", "{job}");
        assert!(
            err.contains(wanted),
            "{job}: error {err:?} lacks {wanted:?}"
        );
        assert!(!metric.contains_key(job), "{job} must yield no samples");
    }
    assert!(
        t["missing_ca_file"].1.contains("job \"missing_ca_file\""),
        "{:?}",
        t["missing_ca_file"]
    );
    // server_name is what the client sent as SNI (for the IP targets rustls
    // sends none, as Go does).
    let sni = plain.sni.lock().expect("sni lock").clone();
    assert!(
        sni.iter().any(|n| n == "exporter.test"),
        "SNI seen: {sni:?}"
    );
    assert!(!sni.iter().any(|n| n == "127.0.0.1"), "SNI seen: {sni:?}");
    drop(mtls);

    // Files are read again at each scrape, as Prometheus does: once the CA
    // file appears, its job recovers without a reload.
    std::fs::copy(dir.join("ca.pem"), dir.join("missing-ca.pem")).expect("copy CA");
    let deadline = Instant::now() + Duration::from_secs(30);
    while query_by_job(&addr, "tls_test_metric")
        .get("missing_ca_file")
        .map(String::as_str)
        != Some("42")
    {
        assert!(
            Instant::now() < deadline,
            "missing_ca_file did not recover: {:?}",
            targets(&addr).get("missing_ca_file")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(targets(&addr)["missing_ca_file"].0, "up");
}
