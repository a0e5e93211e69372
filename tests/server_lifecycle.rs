//! The real `hearth` binary over its data directory's lifecycle: WAL damage on
//! restart (a torn tail, corruption in the middle, `--storage.tsdb.wal-repair`),
//! clean shutdown on SIGINT and SIGTERM, and `hearth tsdb` tools that only read.

mod common;

use common::*;
use hearth::remote::{encode_write_request, prompb};
use hearth::wal::SEGMENT_HEADER_LEN;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const SERIES: usize = 3;
const T0: i64 = 1_700_000_000_000;
const STEP_MS: i64 = 15_000;

/// A running server and the file its stderr goes to.
struct Server {
    child: Child,
    addr: String,
    stderr_path: PathBuf,
}

impl Server {
    /// Starts `hearth` on `data` and waits until it is ready.
    fn start(data: &Path, extra: &[&str]) -> Server {
        let s = Server::spawn(data, extra);
        wait_ready(&s.addr, Duration::from_secs(30));
        s
    }

    /// Starts `hearth` on `data` without waiting for it.
    fn spawn(data: &Path, extra: &[&str]) -> Server {
        let addr = format!("127.0.0.1:{}", free_port());
        let stderr_path = unique_log_path(data);
        let stderr = std::fs::File::create(&stderr_path).expect("create stderr log");
        let child = Command::new(hearth_bin())
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--web.enable-remote-write-receiver")
            .args(extra)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("start hearth");
        Server {
            child,
            addr,
            stderr_path,
        }
    }

    /// Sends one remote-write request: every series gets one sample at `t`.
    fn write(&self, t: i64) {
        let (code, body) = http(
            "POST",
            &self.addr,
            "/api/v1/write",
            &[
                ("Content-Encoding", "snappy"),
                ("Content-Type", "application/x-protobuf"),
            ],
            &request(t),
        )
        .expect("remote write");
        assert_eq!(code, 204, "write: {}", String::from_utf8_lossy(&body));
    }

    /// Sends `signal` and waits for the process to exit.
    fn stop(mut self, signal: i32) -> (ExitStatus, String) {
        // SAFETY: kill(2) on the pid of a child this test started and still owns.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "send signal {signal}");
        let status = wait_exit(&mut self.child, Duration::from_secs(30));
        (status, self.stderr())
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Server {
    /// A failing test must not leave a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new file for a server's stderr, next to (not inside) the data directory.
fn unique_log_path(data: &Path) -> PathBuf {
    let parent = data.parent().expect("data dir has a parent");
    (0..)
        .map(|n| parent.join(format!("hearth-stderr-{n}.log")))
        .find(|p| !p.exists())
        .expect("a free log file name")
}

fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for hearth") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("hearth did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn value(i: usize, t: i64) -> f64 {
    (t / 1000) as f64 + i as f64 / 4.0
}

fn request(t: i64) -> Vec<u8> {
    let req = prompb::WriteRequest {
        timeseries: (0..SERIES)
            .map(|i| prompb::TimeSeries {
                labels: vec![
                    prompb::Label {
                        name: "__name__".into(),
                        value: "lifecycle_test".into(),
                    },
                    prompb::Label {
                        name: "series".into(),
                        value: i.to_string(),
                    },
                ],
                samples: vec![prompb::Sample {
                    value: value(i, t),
                    timestamp: t,
                }],
            })
            .collect(),
        metadata: vec![],
    };
    encode_write_request(&req)
}

/// The timestamp of request `k`.
fn ts(k: usize) -> i64 {
    T0 + k as i64 * STEP_MS
}

/// `hearth tsdb dump` of the test's series: timestamps seen per series, after
/// checking every value is the one written.
fn dumped(data: &Path) -> BTreeMap<usize, BTreeSet<i64>> {
    let out = run_ok(
        Command::new(hearth_bin())
            .args(["tsdb", "dump", "--match", "lifecycle_test"])
            .arg(data),
    );
    let text = String::from_utf8(out.stdout).expect("dump is UTF-8");
    let mut found: BTreeMap<usize, BTreeSet<i64>> = BTreeMap::new();
    for line in text.lines() {
        let (labels, rest) = line.rsplit_once('}').expect("labels end in }");
        let mut parts = rest.split_whitespace();
        let v = parts.next().expect("value");
        let t: i64 = parts
            .next()
            .expect("timestamp")
            .parse()
            .expect("integer ms");
        let series: usize = labels
            .split("series=\"")
            .nth(1)
            .and_then(|s| s.trim_end_matches('"').parse().ok())
            .expect("series label");
        assert_eq!(v, hearth::gofloat::g(value(series, t)), "{line}");
        assert!(found.entry(series).or_default().insert(t), "{line} twice");
    }
    found
}

/// Asserts the dump holds exactly requests `0..n` for every series.
fn assert_requests(data: &Path, n: usize) {
    let want: BTreeSet<i64> = (0..n).map(ts).collect();
    let got = dumped(data);
    for i in 0..SERIES {
        let g = got.get(&i).cloned().unwrap_or_default();
        assert_eq!(g, want, "series {i}: expected requests 0..{n}");
    }
}

/// Starts a server on a new data directory, writes `n` requests, stops it with
/// SIGTERM, and returns the temporary directory and the data directory.
fn data_with_requests(n: usize) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&data, &[]);
    for k in 0..n {
        s.write(ts(k));
    }
    let (status, err) = s.stop(libc::SIGTERM);
    assert!(status.success(), "clean stop: {status}\n{err}");
    (tmp, data)
}

/// Frames of a WAL segment: (offset, total length with the 8-byte header).
fn frames(seg: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut off = SEGMENT_HEADER_LEN;
    while off + 8 <= seg.len() {
        let len = u32::from_le_bytes(seg[off..off + 4].try_into().unwrap()) as usize;
        let end = off + 8 + len;
        if end > seg.len() {
            break;
        }
        out.push((off, 8 + len));
        off = end;
    }
    assert_eq!(off, seg.len(), "the segment is exactly its frames");
    out
}

fn only_segment(data: &Path) -> PathBuf {
    let wal = data.join("wal");
    let segs: Vec<PathBuf> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(segs.len(), 1, "one WAL segment: {segs:?}");
    segs[0].clone()
}

/// Frames: one series record for the SERIES series the first request created
/// (the head batches new series into one record per commit), then one samples
/// record per request.
fn samples_frame(frames: &[(usize, usize)], request: usize) -> (usize, usize) {
    frames[1 + request]
}

#[test]
fn a_torn_wal_tail_is_cut_with_a_warning_and_the_rest_replayed() {
    let (_tmp, data) = data_with_requests(20);
    let seg = only_segment(&data);
    let bytes = std::fs::read(&seg).unwrap();
    let fr = frames(&bytes);
    assert_eq!(fr.len(), 1 + 20);
    // Cut the last record (request 19's samples) in the middle of its payload.
    let (off, len) = samples_frame(&fr, 19);
    assert_eq!(off + len, bytes.len());
    std::fs::write(&seg, &bytes[..off + 8 + (len - 8) / 2]).unwrap();

    let s = Server::start(&data, &[]);
    s.write(ts(19)); // The lost request can be sent again.
    let (status, err) = s.stop(libc::SIGTERM);
    assert!(status.success(), "{status}\n{err}");
    assert!(
        err.contains("torn tail"),
        "a warning names the torn tail:\n{err}"
    );
    assert!(err.contains(&seg.display().to_string()), "{err}");
    assert_requests(&data, 20);
}

#[test]
fn corruption_in_the_middle_of_the_wal_stops_startup_naming_file_and_offset() {
    let (_tmp, data) = data_with_requests(20);
    let seg = only_segment(&data);
    let mut bytes = std::fs::read(&seg).unwrap();
    let (off, len) = samples_frame(&frames(&bytes), 10);
    bytes[off + 8 + len / 2] ^= 0x5a;
    std::fs::write(&seg, &bytes).unwrap();

    let mut s = Server::spawn(&data, &[]);
    let status = wait_exit(&mut s.child, Duration::from_secs(30));
    let err = s.stderr();
    assert!(!status.success(), "hearth must refuse to start:\n{err}");
    assert!(
        err.contains(&seg.display().to_string()),
        "names the segment:\n{err}"
    );
    assert!(
        err.contains(&format!("at byte {off}")),
        "names offset {off}:\n{err}"
    );
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "nothing was changed");

    // With --storage.tsdb.wal-repair the WAL is cut at the damage: everything
    // before it is kept, the rest is gone.
    let s = Server::start(&data, &["--storage.tsdb.wal-repair"]);
    let (status, err) = s.stop(libc::SIGTERM);
    assert!(status.success(), "{status}\n{err}");
    assert!(
        err.contains("repairing"),
        "a warning says what was repaired:\n{err}"
    );
    assert_requests(&data, 10);
    // And the repaired WAL opens without the flag.
    let s = Server::start(&data, &[]);
    let (status, err) = s.stop(libc::SIGINT);
    assert!(status.success(), "{status}\n{err}");
    assert_requests(&data, 10);
}

#[test]
fn sigint_and_sigterm_both_flush_and_exit_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Without fsync per commit, only the shutdown path makes the data durable
    // beyond the page cache; the check here is that it exits cleanly and that a
    // restart finds everything.
    let flags = ["--storage.tsdb.wal-fsync=false"];
    let s = Server::start(&data, &flags);
    for k in 0..5 {
        s.write(ts(k));
    }
    let (status, err) = s.stop(libc::SIGINT);
    assert!(status.success(), "SIGINT: {status}\n{err}");
    assert!(err.contains("TSDB closed"), "{err}");

    let s = Server::start(&data, &flags);
    for k in 5..10 {
        s.write(ts(k));
    }
    let (status, err) = s.stop(libc::SIGTERM);
    assert!(status.success(), "SIGTERM: {status}\n{err}");
    assert!(err.contains("TSDB closed"), "{err}");
    assert_requests(&data, 10);
}

/// Every file under `dir` with its bytes (directories as `None`).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.insert(p.clone(), None);
                stack.push(p);
            } else {
                out.insert(p.clone(), Some(std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

#[test]
fn tsdb_tools_leave_the_data_directory_byte_identical() {
    use hearth::labels::Labels;
    use hearth::storage::Appendable;
    use hearth::tsdb::db::{Db, DbOptions};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Blocks, a checkpoint, WAL segments, full head chunks, a head tombstone.
    let n_samples;
    {
        let db = Db::open(&data, DbOptions::default()).unwrap();
        let mut app = db.appender();
        let mut count = 0;
        for k in 0..(6 * 3600 / 15) {
            for i in 0..SERIES {
                let l = Labels::from_pairs(&[
                    ("__name__", "lifecycle_test"),
                    ("series", &i.to_string()),
                ]);
                app.append(0, &l, ts(k), value(i, ts(k))).unwrap();
                count += 1;
            }
        }
        app.commit().unwrap();
        db.compact().unwrap();
        assert!(!db.blocks().is_empty());
        n_samples = count;
        db.close().unwrap();
    }
    assert!(data
        .join("chunks_head")
        .read_dir()
        .unwrap()
        .next()
        .is_some());
    // A torn tail too: the dump reads up to it and must not repair it.
    let wal = data.join("wal");
    let last = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .max()
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap();
    std::io::Write::write_all(&mut f, &[7, 0, 0, 0, 1, 2]).unwrap();
    drop(f);

    let before = snapshot(&data);
    let got = dumped(&data);
    assert_eq!(got.values().map(BTreeSet::len).sum::<usize>(), n_samples);
    run_ok(Command::new(hearth_bin()).args(["tsdb", "list"]).arg(&data));
    run_ok(
        Command::new(hearth_bin())
            .args(["tsdb", "analyze"])
            .arg(&data),
    );
    let after = snapshot(&data);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the tools created or removed files"
    );
    for (p, b) in &before {
        assert!(after[p] == *b, "{} changed", p.display());
    }
}
