//! Crash safety of a real `hearth` process: every sample whose remote-write request
//! was acknowledged before a SIGKILL is there after restart.

mod common;

use common::*;
use hearth::remote::{encode_write_request, prompb};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn start_hearth(data: &std::path::Path, addr: &str) -> Child {
    Command::new(hearth_bin())
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hearth")
}

fn request(series: usize, t: i64) -> Vec<u8> {
    let req = prompb::WriteRequest {
        timeseries: (0..series)
            .map(|i| prompb::TimeSeries {
                labels: vec![
                    prompb::Label {
                        name: "__name__".into(),
                        value: "crash_test".into(),
                    },
                    prompb::Label {
                        name: "series".into(),
                        value: i.to_string(),
                    },
                ],
                samples: vec![prompb::Sample {
                    value: (t + i as i64) as f64,
                    timestamp: t,
                }],
            })
            .collect(),
        metadata: vec![],
    };
    encode_write_request(&req)
}

#[test]
fn acknowledged_samples_survive_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = start_hearth(&data, &addr);
    wait_ready(&addr, Duration::from_secs(30));

    const SERIES: usize = 50;
    let acked: Arc<Mutex<Vec<i64>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, addr) = (acked.clone(), stop.clone(), addr.clone());
        std::thread::spawn(move || {
            let mut t = 1_700_000_000_000i64;
            // Bounded: at most 100k requests, and it stops once the server is gone.
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let body = request(SERIES, t);
                match http(
                    "POST",
                    &addr,
                    "/api/v1/write",
                    &[
                        ("Content-Encoding", "snappy"),
                        ("Content-Type", "application/x-protobuf"),
                    ],
                    &body,
                ) {
                    Ok((204, _)) => acked.lock().unwrap().push(t),
                    Ok((code, body)) => {
                        panic!("write answered {code}: {}", String::from_utf8_lossy(&body))
                    }
                    Err(_) => break, // the server was killed mid-request
                }
                t += 1000;
            }
        })
    };
    // Let it write for a while, then kill it mid-stream.
    while acked.lock().unwrap().len() < 300 {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL hearth");
    child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);

    // Restart: the server comes up again on the same data.
    let mut child = start_hearth(&data, &addr);
    wait_ready(&addr, Duration::from_secs(30));
    let (code, _) = http(
        "POST",
        &addr,
        "/api/v1/write",
        &[("Content-Encoding", "snappy")],
        &request(SERIES, 1_800_000_000_000),
    )
    .unwrap();
    assert_eq!(code, 204, "writes work after recovery");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "clean shutdown on SIGTERM: {status}");

    // Every acknowledged sample is there.
    let out = run_ok(
        Command::new(hearth_bin())
            .args(["tsdb", "dump", "--match", "crash_test"])
            .arg(&data),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut found: HashMap<(String, i64), String> = HashMap::new();
    for line in text.lines() {
        let (labels, rest) = line.rsplit_once('}').unwrap();
        let mut parts = rest.split_whitespace();
        let v = parts.next().unwrap().to_string();
        let t: i64 = parts.next().unwrap().parse().unwrap();
        let series = labels
            .split("series=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches('"')
            .to_string();
        found.insert((series, t), v);
    }
    for &t in &acked {
        for i in 0..SERIES {
            let v = found.get(&(i.to_string(), t)).unwrap_or_else(|| {
                panic!(
                    "acknowledged sample series={i} t={t} lost ({} acked requests)",
                    acked.len()
                )
            });
            assert_eq!(v, &hearth::gofloat::g((t + i as i64) as f64));
        }
    }
    assert!(found.contains_key(&("0".to_string(), 1_800_000_000_000)));
}
