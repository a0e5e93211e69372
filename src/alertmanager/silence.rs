//! Silences: create, update, expire, query, and the question "which active
//! silences mute this label set?", with Alertmanager's rules
//! (`silence/silence.go`). State is a plain map with a JSON snapshot, so the
//! cluster can later hold it as replicated state behind the same methods.

use super::matchers::matches_all;
use super::types::{is_zero, Clock};
use crate::labels::{Labels, MatchType, Matcher};
use jiff::Timestamp;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

/// Most silences held (active, pending and retained expired ones together).
pub const SILENCES_MAX: usize = 100_000;
/// Most matchers in one silence.
pub const SILENCE_MATCHERS_MAX: usize = 256;
/// Longest comment or author, in bytes.
pub const SILENCE_TEXT_LEN_MAX: usize = 64 * 1024;

/// A silence operation failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SilenceError {
    #[error("silence not found")]
    NotFound,
    #[error("invalid silence: {0}")]
    Invalid(String),
    #[error("silence {0} already expired")]
    AlreadyExpired(String),
    #[error("too many silences (at most {SILENCES_MAX})")]
    Full,
}

/// A silence matcher as the API and the snapshot write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SilenceMatcher {
    pub name: String,
    pub value: String,
    #[serde(rename = "isRegex")]
    pub is_regex: bool,
    #[serde(rename = "isEqual", default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl SilenceMatcher {
    /// The matcher kind this stands for.
    pub fn kind(&self) -> MatchType {
        match (self.is_regex, self.is_equal) {
            (false, true) => MatchType::Equal,
            (false, false) => MatchType::NotEqual,
            (true, true) => MatchType::Regexp,
            (true, false) => MatchType::NotRegexp,
        }
    }

    /// Compiles it into a label matcher.
    pub fn compile(&self) -> Result<Matcher, String> {
        if !super::config::is_valid_label_name(&self.name) {
            return Err(format!("invalid label name {:?}", self.name));
        }
        Matcher::new(self.kind(), &self.name, &self.value).map_err(|e| e.to_string())
    }
}

/// A silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// Empty when asking to create one.
    pub id: String,
    pub matchers: Vec<SilenceMatcher>,
    #[serde(rename = "startsAt")]
    pub starts_at: Timestamp,
    #[serde(rename = "endsAt")]
    pub ends_at: Timestamp,
    #[serde(rename = "updatedAt")]
    pub updated_at: Timestamp,
    #[serde(rename = "createdBy")]
    pub created_by: String,
    pub comment: String,
}

/// Where a silence is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SilenceState {
    Active,
    Pending,
    Expired,
}

impl SilenceState {
    /// The API's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            SilenceState::Active => "active",
            SilenceState::Pending => "pending",
            SilenceState::Expired => "expired",
        }
    }
}

impl Silence {
    /// The state at `now`: pending before its start, expired after its end.
    pub fn state(&self, now: Timestamp) -> SilenceState {
        if now < self.starts_at {
            SilenceState::Pending
        } else if now > self.ends_at {
            SilenceState::Expired
        } else {
            SilenceState::Active
        }
    }

    fn validate(&self) -> Result<Vec<Matcher>, String> {
        if self.id.is_empty() {
            return Err("ID missing".into());
        }
        if self.matchers.is_empty() {
            return Err("at least one matcher required".into());
        }
        if self.matchers.len() > SILENCE_MATCHERS_MAX {
            return Err(format!("more than {SILENCE_MATCHERS_MAX} matchers"));
        }
        if self.comment.len() > SILENCE_TEXT_LEN_MAX || self.created_by.len() > SILENCE_TEXT_LEN_MAX
        {
            return Err(format!(
                "comment or author longer than {SILENCE_TEXT_LEN_MAX} bytes"
            ));
        }
        let mut compiled = Vec::with_capacity(self.matchers.len());
        for (i, m) in self.matchers.iter().enumerate() {
            compiled.push(
                m.compile()
                    .map_err(|e| format!("invalid label matcher {i}: {e}"))?,
            );
        }
        if compiled.iter().all(|m| m.matches_empty()) {
            return Err("at least one matcher must not match the empty string".into());
        }
        if is_zero(self.starts_at) {
            return Err("invalid zero start timestamp".into());
        }
        if is_zero(self.ends_at) {
            return Err("invalid zero end timestamp".into());
        }
        if self.ends_at < self.starts_at {
            return Err("end time must not be before start time".into());
        }
        Ok(compiled)
    }
}

struct Entry {
    silence: Silence,
    compiled: Vec<Matcher>,
}

/// The snapshot written to disk.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    silences: Vec<Silence>,
}

const SNAPSHOT_VERSION: u32 = 1;

/// All silences of one Alertmanager.
pub struct Silences {
    clock: Clock,
    /// How long expired silences are kept before `gc` drops them.
    retention: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

/// A fresh random silence ID in UUID form, as Alertmanager's.
fn new_id() -> String {
    let mut v = ulid::Ulid::new().0;
    // Version 4, RFC 4122 variant.
    v = (v & !(0xf << 76)) | (0x4 << 76);
    v = (v & !(0x3 << 62)) | (0x2 << 62);
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

impl Silences {
    /// An empty set of silences.
    pub fn new(clock: Clock, retention: Duration) -> Silences {
        Silences {
            clock,
            retention,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Creates or updates a silence and returns its ID. An update that changes
    /// the matchers, or a time change not allowed in the silence's state, expires
    /// the old silence and creates a new one with a new ID.
    pub fn set(&self, mut sil: Silence) -> Result<String, SilenceError> {
        let now = self.clock.now();
        let mut entries = self.entries.lock();
        let prev = if sil.id.is_empty() {
            None
        } else {
            Some(
                entries
                    .get(&sil.id)
                    .map(|e| e.silence.clone())
                    .ok_or(SilenceError::NotFound)?,
            )
        };
        sil.updated_at = now;
        if let Some(prev) = &prev {
            if can_update(prev, &sil, now) {
                let compiled = sil.validate().map_err(SilenceError::Invalid)?;
                let id = sil.id.clone();
                entries.insert(
                    id.clone(),
                    Entry {
                        silence: sil,
                        compiled,
                    },
                );
                return Ok(id);
            }
        }
        sil.id = new_id();
        if sil.starts_at < now {
            sil.starts_at = now;
        }
        let compiled = sil.validate().map_err(SilenceError::Invalid)?;
        if entries.len() >= SILENCES_MAX {
            return Err(SilenceError::Full);
        }
        if let Some(prev) = prev {
            if prev.state(now) != SilenceState::Expired {
                expire_locked(&mut entries, &prev.id, now)?;
            }
        }
        let id = sil.id.clone();
        entries.insert(
            id.clone(),
            Entry {
                silence: sil,
                compiled,
            },
        );
        Ok(id)
    }

    /// Expires a silence now: an active one ends now, a pending one starts and
    /// ends now.
    pub fn expire(&self, id: &str) -> Result<(), SilenceError> {
        let now = self.clock.now();
        expire_locked(&mut self.entries.lock(), id, now)
    }

    /// One silence by ID.
    pub fn get(&self, id: &str) -> Option<Silence> {
        self.entries.lock().get(id).map(|e| e.silence.clone())
    }

    /// Every silence held.
    pub fn list(&self) -> Vec<Silence> {
        self.entries
            .lock()
            .values()
            .map(|e| e.silence.clone())
            .collect()
    }

    /// IDs of the active silences that mute `labels`, sorted.
    pub fn mutes(&self, labels: &Labels) -> Vec<String> {
        let now = self.clock.now();
        let mut ids: Vec<String> = self
            .entries
            .lock()
            .values()
            .filter(|e| {
                e.silence.state(now) == SilenceState::Active && matches_all(&e.compiled, labels)
            })
            .map(|e| e.silence.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// The current time on this store's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Drops silences that expired more than the retention ago; returns how many.
    pub fn gc(&self) -> usize {
        let cutoff = super::types::sub(self.clock.now(), self.retention);
        let mut entries = self.entries.lock();
        let before = entries.len();
        entries.retain(|_, e| e.silence.ends_at >= cutoff);
        before - entries.len()
    }

    /// Serialises every silence for a snapshot.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut silences = self.list();
        silences.sort_by(|a, b| a.id.cmp(&b.id));
        serde_json::to_vec(&Snapshot {
            version: SNAPSHOT_VERSION,
            silences,
        })
        .unwrap_or_default()
    }

    /// Replaces the state with a snapshot's; every silence is re-validated.
    pub fn restore(&self, data: &[u8]) -> Result<usize, String> {
        let snap: Snapshot =
            serde_json::from_slice(data).map_err(|e| format!("silences snapshot: {e}"))?;
        if snap.version != SNAPSHOT_VERSION {
            return Err(format!(
                "silences snapshot: unknown version {}",
                snap.version
            ));
        }
        let mut map = HashMap::new();
        for s in snap.silences {
            let compiled = s.validate().map_err(|e| format!("silence {}: {e}", s.id))?;
            map.insert(
                s.id.clone(),
                Entry {
                    silence: s,
                    compiled,
                },
            );
        }
        let n = map.len();
        *self.entries.lock() = map;
        Ok(n)
    }
}

fn expire_locked(
    entries: &mut HashMap<String, Entry>,
    id: &str,
    now: Timestamp,
) -> Result<(), SilenceError> {
    let e = entries.get_mut(id).ok_or(SilenceError::NotFound)?;
    match e.silence.state(now) {
        SilenceState::Expired => return Err(SilenceError::AlreadyExpired(id.to_string())),
        SilenceState::Active => e.silence.ends_at = now,
        SilenceState::Pending => {
            e.silence.starts_at = now;
            e.silence.ends_at = now;
        }
    }
    e.silence.updated_at = now;
    Ok(())
}

/// Whether `b` may replace `a` in place (Alertmanager's `canUpdate`).
fn can_update(a: &Silence, b: &Silence, now: Timestamp) -> bool {
    if a.matchers != b.matchers {
        return false;
    }
    match a.state(now) {
        SilenceState::Active => {
            b.starts_at.as_second() == a.starts_at.as_second() && b.ends_at >= now
        }
        SilenceState::Pending => b.starts_at >= now,
        SilenceState::Expired => false,
    }
}

/// Orders silences as Alertmanager's API lists them: active by end time, then
/// pending by start time, then expired, most recently ended first.
pub fn sort_for_api(sils: &mut [Silence], now: Timestamp) {
    sils.sort_by(|a, b| {
        let (sa, sb) = (a.state(now), b.state(now));
        sa.cmp(&sb).then_with(|| match sa {
            SilenceState::Active => a.ends_at.cmp(&b.ends_at),
            SilenceState::Pending => a.starts_at.cmp(&b.starts_at),
            SilenceState::Expired => b.ends_at.cmp(&a.ends_at),
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alertmanager::types::add;

    fn sil(now: Timestamp, start_s: u64, end_s: u64, value: &str) -> Silence {
        Silence {
            id: String::new(),
            matchers: vec![SilenceMatcher {
                name: "alertname".into(),
                value: value.into(),
                is_regex: false,
                is_equal: true,
            }],
            starts_at: add(now, Duration::from_secs(start_s)),
            ends_at: add(now, Duration::from_secs(end_s)),
            updated_at: now,
            created_by: "me".into(),
            comment: "c".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lifecycle_and_updates() {
        let s = Silences::new(Clock::system(), Duration::from_secs(3600));
        let now = s.now();
        let id = s.set(sil(now, 0, 60, "A")).unwrap();
        let a = Labels::from_pairs(&[("alertname", "A")]);
        assert_eq!(s.mutes(&a), vec![id.clone()]);
        assert!(s
            .mutes(&Labels::from_pairs(&[("alertname", "B")]))
            .is_empty());

        // Extending an active silence keeps its ID.
        let mut upd = s.get(&id).unwrap();
        upd.ends_at = add(now, Duration::from_secs(120));
        assert_eq!(s.set(upd).unwrap(), id);

        // Changing the matchers expires the old one and creates a new one.
        let mut changed = s.get(&id).unwrap();
        changed.matchers[0].value = "B".into();
        let id2 = s.set(changed).unwrap();
        assert_ne!(id2, id);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(s.get(&id).unwrap().state(s.now()), SilenceState::Expired);
        assert!(s.mutes(&a).is_empty());

        // A pending silence expires by moving both ends to now.
        let p = s.set(sil(s.now(), 60, 120, "C")).unwrap();
        assert_eq!(s.get(&p).unwrap().state(s.now()), SilenceState::Pending);
        s.expire(&p).unwrap();
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(s.get(&p).unwrap().state(s.now()), SilenceState::Expired);
        assert_eq!(s.expire(&p), Err(SilenceError::AlreadyExpired(p.clone())));
        assert_eq!(s.expire("nope"), Err(SilenceError::NotFound));

        // Expired silences are dropped after the retention.
        tokio::time::advance(Duration::from_secs(3800)).await;
        assert_eq!(s.gc(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn rejects_invalid_silences() {
        let s = Silences::new(Clock::system(), Duration::from_secs(3600));
        let now = s.now();
        let mut none = sil(now, 0, 60, "A");
        none.matchers.clear();
        assert_eq!(
            s.set(none),
            Err(SilenceError::Invalid(
                "at least one matcher required".into()
            ))
        );
        assert!(
            matches!(s.set(sil(now, 0, 60, "")), Err(SilenceError::Invalid(m)) if m.contains("empty string"))
        );
        assert!(
            matches!(s.set(sil(now, 60, 30, "A")), Err(SilenceError::Invalid(m)) if m.contains("end time"))
        );
        let mut unknown = sil(now, 0, 60, "A");
        unknown.id = "x".into();
        assert_eq!(s.set(unknown), Err(SilenceError::NotFound));
        assert!(s.list().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn snapshot_round_trip() {
        let s = Silences::new(Clock::system(), Duration::from_secs(3600));
        let id = s.set(sil(s.now(), 0, 60, "A")).unwrap();
        let t = Silences::new(Clock::system(), Duration::from_secs(3600));
        assert_eq!(t.restore(&s.snapshot()).unwrap(), 1);
        assert_eq!(t.get(&id), s.get(&id));
        assert!(t.restore(b"{").is_err());
    }
}
