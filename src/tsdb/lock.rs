//! The data directory's `lock` file: one process at a time opens a TSDB for writing,
//! as Prometheus's `--storage.tsdb.no-lockfile`-less default.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// How long a lock held by someone else is waited for before giving up.
const RETRY_FOR: std::time::Duration = std::time::Duration::from_millis(300);

/// Holds an exclusive `flock` on `<dir>/lock` until dropped.
#[derive(Debug)]
pub struct DirLock {
    /// The open lock file; closing it releases the lock.
    _file: File,
}

impl DirLock {
    /// Takes the lock, or fails naming the file when another process still holds
    /// it after `RETRY_FOR`.
    pub fn acquire(dir: &Path) -> std::io::Result<DirLock> {
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        // A lock this process released a moment ago can still be held by a child
        // forked by another thread before it execs (the child shares the open
        // file until then), so a refusal is retried for a short while.
        let deadline = std::time::Instant::now() + RETRY_FOR;
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is shared.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(DirLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::WouldBlock || std::time::Instant::now() >= deadline
            {
                return Err(std::io::Error::new(
                    err.kind(),
                    format!(
                        "cannot lock {}: {err} (is another hearth or Prometheus using this directory?)",
                        path.display()
                    ),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err();
        assert!(err.to_string().contains("lock"), "{err}");
        drop(first);
        DirLock::acquire(dir.path()).unwrap();
    }
}
