//! The cost of a commit of a log that fsyncs every commit (`FsyncPolicy::Always`,
//! as every WAL group replica): append one record of a remote-write request's size
//! and `sync`, with and without preallocated segments
//! (`LogOptions::preallocate_bytes`). Prints wall and CPU microseconds per commit
//! (the CPU of this process, which includes the kernel's work in `fdatasync`).
//!
//! Run from the crate root: `cargo bench --bench wal_commit`. The log goes in a
//! temporary directory under `target/` (not `/tmp`, which may be a tmpfs where
//! fsync costs nothing); `WAL_COMMIT_DIR` puts it elsewhere.

use hearth::wal::{FsyncPolicy, Log, LogOptions, PREALLOCATE_BYTES_DEFAULT};
use std::time::Instant;

/// About one remote-write request of 2,000 samples in a WAL group entry.
const RECORD_BYTES: usize = 36_000;
const COMMITS: usize = 3_000;
const ROUNDS: usize = 3;

/// CPU time of this process so far (user + system).
fn cpu_time() -> std::time::Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable rusage for getrusage to fill.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    assert_eq!(rc, 0, "getrusage failed");
    let tv = |t: libc::timeval| {
        std::time::Duration::from_secs(t.tv_sec as u64)
            + std::time::Duration::from_micros(t.tv_usec as u64)
    };
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Wall and CPU microseconds per commit.
fn run(parent: &std::path::Path, preallocate_bytes: u64) -> (f64, f64) {
    let dir = tempfile::tempdir_in(parent).expect("temporary directory");
    let mut log = Log::open(
        dir.path(),
        LogOptions {
            segment_size_bytes: 32 << 20,
            fsync: FsyncPolicy::Always,
            repair: false,
            preallocate_bytes,
        },
    )
    .expect("open log");
    let record: Vec<u8> = (0..RECORD_BYTES).map(|i| (i * 7 + 3) as u8).collect();
    let (wall, cpu) = (Instant::now(), cpu_time());
    for _ in 0..COMMITS {
        log.append(&record).expect("append");
        log.sync().expect("sync");
    }
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / COMMITS as f64;
    (per(wall.elapsed()), per(cpu_time() - cpu))
}

fn main() {
    let parent = std::env::var_os("WAL_COMMIT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("target"));
    std::fs::create_dir_all(&parent).expect("bench directory");
    println!(
        "{COMMITS} commits of {RECORD_BYTES} B each, fsync per commit, in {}",
        parent.display()
    );
    println!("| round | growing file: wall µs | CPU µs | preallocated: wall µs | CPU µs |");
    println!("|---|---:|---:|---:|---:|");
    for round in 1..=ROUNDS {
        let (gw, gc) = run(&parent, 0);
        let (pw, pc) = run(&parent, PREALLOCATE_BYTES_DEFAULT);
        println!("| {round} | {gw:.0} | {gc:.0} | {pw:.0} | {pc:.0} |");
    }
}
