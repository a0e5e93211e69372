//! The notification log: what was last sent for each aggregation group and
//! receiver integration, so nothing is re-sent before `repeat_interval` unless
//! the group's firing or resolved set changed (Alertmanager's `nflog`).

use super::types::{add, Clock};
use jiff::Timestamp;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// Most entries held; the oldest are dropped past it.
pub const NFLOG_ENTRIES_MAX: usize = 1_000_000;

/// Which integration of which receiver a notification went to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReceiverKey {
    /// The receiver's name.
    pub group_name: String,
    /// The integration kind (`webhook`, `email`, …).
    pub integration: String,
    /// Position among the receiver's integrations of that kind.
    pub idx: u32,
}

/// One logged notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub group_key: String,
    pub receiver: ReceiverKey,
    pub timestamp: Timestamp,
    /// Fingerprints of the firing alerts notified.
    pub firing_alerts: BTreeSet<u64>,
    /// Fingerprints of the resolved alerts notified.
    pub resolved_alerts: BTreeSet<u64>,
    /// When the entry may be dropped.
    pub expires_at: Timestamp,
}

impl Entry {
    /// Whether every alert in `firing` was already notified as firing.
    pub fn is_firing_subset(&self, firing: &BTreeSet<u64>) -> bool {
        firing.is_subset(&self.firing_alerts)
    }

    /// Whether every alert in `resolved` was already notified as resolved.
    pub fn is_resolved_subset(&self, resolved: &BTreeSet<u64>) -> bool {
        resolved.is_subset(&self.resolved_alerts)
    }
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    entries: Vec<Entry>,
}

const SNAPSHOT_VERSION: u32 = 1;

/// The notification log of one Alertmanager.
pub struct NotificationLog {
    clock: Clock,
    /// How long an entry is kept after it was written.
    retention: Duration,
    entries: Mutex<HashMap<(String, ReceiverKey), Entry>>,
}

impl NotificationLog {
    /// An empty log.
    pub fn new(clock: Clock, retention: Duration) -> NotificationLog {
        NotificationLog {
            clock,
            retention,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Records a notification sent now.
    pub fn log(
        &self,
        receiver: &ReceiverKey,
        group_key: &str,
        firing: BTreeSet<u64>,
        resolved: BTreeSet<u64>,
    ) {
        let now = self.clock.now();
        let e = Entry {
            group_key: group_key.to_string(),
            receiver: receiver.clone(),
            timestamp: now,
            firing_alerts: firing,
            resolved_alerts: resolved,
            expires_at: add(now, self.retention),
        };
        let mut entries = self.entries.lock();
        if entries.len() >= NFLOG_ENTRIES_MAX {
            // Make room by dropping the entry written longest ago.
            if let Some(k) = entries
                .iter()
                .min_by_key(|(_, e)| e.timestamp)
                .map(|(k, _)| k.clone())
            {
                entries.remove(&k);
            }
        }
        entries.insert((group_key.to_string(), receiver.clone()), e);
    }

    /// The last entry for a group and receiver integration.
    pub fn query(&self, receiver: &ReceiverKey, group_key: &str) -> Option<Entry> {
        self.entries
            .lock()
            .get(&(group_key.to_string(), receiver.clone()))
            .cloned()
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops expired entries; returns how many.
    pub fn gc(&self) -> usize {
        let now = self.clock.now();
        let mut entries = self.entries.lock();
        let before = entries.len();
        entries.retain(|_, e| e.expires_at > now);
        before - entries.len()
    }

    /// Serialises the log for a snapshot.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut entries: Vec<Entry> = self.entries.lock().values().cloned().collect();
        entries.sort_by(|a, b| (&a.group_key, &a.receiver).cmp(&(&b.group_key, &b.receiver)));
        serde_json::to_vec(&Snapshot {
            version: SNAPSHOT_VERSION,
            entries,
        })
        .unwrap_or_default()
    }

    /// Replaces the log with a snapshot's entries (expired ones are skipped).
    pub fn restore(&self, data: &[u8]) -> Result<usize, String> {
        let snap: Snapshot =
            serde_json::from_slice(data).map_err(|e| format!("nflog snapshot: {e}"))?;
        if snap.version != SNAPSHOT_VERSION {
            return Err(format!("nflog snapshot: unknown version {}", snap.version));
        }
        let now = self.clock.now();
        let map: HashMap<_, _> = snap
            .entries
            .into_iter()
            .filter(|e| e.expires_at > now)
            .map(|e| ((e.group_key.clone(), e.receiver.clone()), e))
            .collect();
        let n = map.len();
        *self.entries.lock() = map;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn logs_queries_expires_and_restores() {
        let log = NotificationLog::new(Clock::system(), Duration::from_secs(60));
        let r = ReceiverKey {
            group_name: "team".into(),
            integration: "webhook".into(),
            idx: 0,
        };
        log.log(&r, "{}:{a=\"1\"}", [1, 2].into(), [3].into());
        let e = log.query(&r, "{}:{a=\"1\"}").unwrap();
        assert!(e.is_firing_subset(&[1].into()));
        assert!(!e.is_firing_subset(&[4].into()));
        assert!(e.is_resolved_subset(&[3].into()));
        let copy = NotificationLog::new(Clock::system(), Duration::from_secs(60));
        assert_eq!(copy.restore(&log.snapshot()).unwrap(), 1);
        assert_eq!(copy.query(&r, "{}:{a=\"1\"}"), Some(e));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(log.gc(), 1);
        assert!(log.query(&r, "{}:{a=\"1\"}").is_none());
    }
}
