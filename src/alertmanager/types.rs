//! The alert as Alertmanager holds it, its fingerprint, and the clock the whole
//! pipeline reads (`crate::clock::Clock`, wall time that follows tokio's clock, so
//! tests can pause it).

use crate::labels::Labels;
use jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Go's zero `time.Time` (0001-01-01T00:00:00Z): Alertmanager's "not set".
pub fn zero_time() -> Timestamp {
    Timestamp::new(-62_135_596_800, 0).unwrap_or(Timestamp::MIN)
}

/// Whether `t` is Go's zero time (or earlier, which means the same to us).
pub fn is_zero(t: Timestamp) -> bool {
    t <= zero_time()
}

/// `t + d`, saturating at the representable range.
pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    let sd = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    t.checked_add(sd).unwrap_or(Timestamp::MAX)
}

/// `t - d`, saturating at the representable range.
pub fn sub(t: Timestamp, d: Duration) -> Timestamp {
    let sd = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    t.checked_sub(sd).unwrap_or(Timestamp::MIN)
}

/// Formats as Go's `time.RFC3339Nano` (what Go's JSON encoder writes for a
/// `time.Time`): fractional seconds only as long as needed.
pub fn format_rfc3339_nano(t: Timestamp) -> String {
    let mut s = t.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    let ns = t.subsec_nanosecond();
    if ns > 0 {
        let frac = format!("{ns:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Formats as go-swagger's `strfmt.DateTime` (API v2): always milliseconds.
pub fn format_rfc3339_millis(t: Timestamp) -> String {
    format!(
        "{}.{:03}Z",
        t.strftime("%Y-%m-%dT%H:%M:%S"),
        t.subsec_nanosecond() / 1_000_000
    )
}

/// Parses an RFC 3339 timestamp with any offset.
pub fn parse_rfc3339(s: &str) -> Result<Timestamp, String> {
    s.parse::<Timestamp>()
        .map_err(|e| format!("invalid timestamp {s:?}: {e}"))
}

pub use crate::clock::Clock;

/// An alert: identity (labels), payload, and its activity range. The store,
/// every aggregation group and every notification in flight hold copies, so
/// the payload is shared between them rather than copied.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// The alert's identity; never empty once validated.
    pub labels: Labels,
    pub annotations: Arc<BTreeMap<String, String>>,
    pub starts_at: Timestamp,
    /// Zero while the alert fires with no known end.
    pub ends_at: Timestamp,
    pub generator_url: Arc<str>,
    /// When the alert was last received.
    pub updated_at: Timestamp,
    /// True when `ends_at` was filled in from `resolve_timeout` rather than sent.
    pub timeout: bool,
}

impl Alert {
    /// The label fingerprint (Prometheus's `LabelSet.Fingerprint`).
    pub fn fingerprint(&self) -> u64 {
        fingerprint(&self.labels)
    }

    /// Whether the alert has ended at `t`.
    pub fn resolved_at(&self, t: Timestamp) -> bool {
        !is_zero(self.ends_at) && self.ends_at <= t
    }

    /// `"firing"` or `"resolved"` at `t`.
    pub fn status_at(&self, t: Timestamp) -> &'static str {
        if self.resolved_at(t) {
            "resolved"
        } else {
            "firing"
        }
    }

    /// Checks an alert as Alertmanager's `Alert.Validate` does.
    pub fn validate(&self) -> Result<(), String> {
        if is_zero(self.starts_at) {
            return Err("start time missing".into());
        }
        if !is_zero(self.ends_at) && self.ends_at < self.starts_at {
            return Err("start time must be before end time".into());
        }
        for l in self.labels.iter() {
            if !super::config::is_valid_label_name(l.name) {
                return Err(format!("invalid label set: invalid name {:?}", l.name));
            }
        }
        if self.labels.is_empty() {
            return Err("at least one label pair required".into());
        }
        for k in self.annotations.keys() {
            if !super::config::is_valid_label_name(k) {
                return Err(format!("invalid annotations: invalid name {k:?}"));
            }
        }
        Ok(())
    }

    /// Merges a newer copy of the same alert into an older one, as Alertmanager's
    /// `Alert.Merge`: the later update wins, with the earliest start, and an
    /// explicit end time that is later wins over a timeout-derived one.
    pub fn merge(&self, other: &Alert, now: Timestamp) -> Alert {
        let (older, newer) = if other.updated_at < self.updated_at {
            (other, self)
        } else {
            (self, other)
        };
        let mut res = newer.clone();
        if older.starts_at < newer.starts_at {
            res.starts_at = older.starts_at;
        }
        if newer.resolved_at(now) {
            if older.resolved_at(now) && older.ends_at > newer.ends_at {
                res.ends_at = older.ends_at;
            }
        } else if older.ends_at > newer.ends_at && !older.timeout {
            res.ends_at = older.ends_at;
        }
        res
    }
}

const FNV_OFFSET: u64 = 14_695_981_039_346_656_037;
const FNV_PRIME: u64 = 1_099_511_628_211;

fn fnv_add(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// Prometheus's label-set fingerprint: FNV-1a over sorted names and values, each
/// followed by the separator byte 0xff. Alertmanager shows it as 16 hex digits.
pub fn fingerprint(labels: &Labels) -> u64 {
    let mut h = FNV_OFFSET;
    for l in labels.iter() {
        h = fnv_add(h, l.name.as_bytes());
        h = fnv_add(h, &[0xff]);
        h = fnv_add(h, l.value.as_bytes());
        h = fnv_add(h, &[0xff]);
    }
    h
}

/// Formats a label set as Prometheus's `LabelSet.String()`: `{a="1", b="2"}`.
pub fn labels_string(labels: &Labels) -> String {
    let parts: Vec<String> = labels
        .iter()
        .map(|l| format!("{}={}", l.name, crate::labels::quote(l.value)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_matches_prometheus() {
        // Values from Prometheus's model tests (signature_test.go).
        assert_eq!(fingerprint(&Labels::empty()), 14695981039346656037);
        let l = Labels::from_pairs(&[("name", "garland, briggs"), ("fear", "love is not enough")]);
        assert_eq!(fingerprint(&l), 5799056148416392346);
    }

    #[test]
    fn formats_times_like_go() {
        let t: Timestamp = "2024-01-02T03:04:05.120Z".parse().unwrap();
        assert_eq!(format_rfc3339_nano(t), "2024-01-02T03:04:05.12Z");
        assert_eq!(format_rfc3339_millis(t), "2024-01-02T03:04:05.120Z");
        assert_eq!(format_rfc3339_nano(zero_time()), "0001-01-01T00:00:00Z");
    }

    fn ts(s: i64) -> Timestamp {
        if s == 0 {
            zero_time()
        } else {
            Timestamp::from_second(s).unwrap()
        }
    }

    fn alert(start: i64, end: i64, upd: i64, timeout: bool) -> Alert {
        Alert {
            labels: Labels::from_pairs(&[("a", "1")]),
            annotations: Default::default(),
            starts_at: ts(start),
            ends_at: ts(end),
            generator_url: "".into(),
            updated_at: ts(upd),
            timeout,
        }
    }

    #[test]
    fn merge_keeps_earliest_start_and_explicit_end() {
        let old = alert(100, 500, 100, false);
        let new = alert(200, 400, 200, true);
        let m = old.merge(&new, ts(250));
        assert_eq!(m.starts_at, old.starts_at);
        assert_eq!(m.ends_at, old.ends_at); // the explicit later end wins
        let new = alert(200, 300, 400, false); // resolved at its own update time
        let m = old.merge(&new, ts(400));
        assert_eq!(m.ends_at, new.ends_at);
    }
}
