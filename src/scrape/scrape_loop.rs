//! One scrape loop per target: fetch, parse, label, relabel, append, report, and
//! write staleness markers, as Prometheus's `scrapeLoop` does.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::ScrapeConfig;
use crate::labels::{Labels, LabelsBuilder, METRIC_NAME};
use crate::storage::{stale_nan, AppendError, Appendable, Appender, SeriesRef};
use crate::textparse::{Entry, MetricType, TextFormat, TextParser};

use super::http::HttpClient;
use super::target::Target;
use crate::cluster::Ownership;

/// Cached series not seen for this many scrapes are forgotten.
const CACHE_KEEP_SCRAPES: u64 = 10;

/// Metadata of a metric family not seen for more than this many scrapes is
/// forgotten (Prometheus keeps it for 10 scrapes after the family disappeared).
const METADATA_KEEP_SCRAPES: u64 = 10;

/// Most metric families whose metadata one target keeps: a limit on memory for
/// a target that invents family names.
pub const METADATA_FAMILIES_MAX: usize = 100_000;

/// Prefix given to an exposed label that clashes with a target label when
/// `honor_labels` is false.
pub const EXPORTED_LABEL_PREFIX: &str = "exported_";

/// The five series Prometheus writes about every scrape.
pub const REPORT_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// Health of a target, shown by the targets API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    #[default]
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// What a target's `# TYPE`, `# HELP` and `# UNIT` lines said about one metric
/// family, as the metadata APIs show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MetricMetadata {
    /// `Unknown` when the family has a `HELP` or `UNIT` line but no `TYPE`.
    pub kind: MetricType,
    pub help: String,
    pub unit: String,
}

/// A target's metadata by metric family name (as written in the exposition).
pub type TargetMetadata = BTreeMap<String, MetricMetadata>;

/// What the last scrape of a target did.
#[derive(Debug, Clone, Default)]
pub struct TargetStatus {
    pub health: Health,
    pub last_error: String,
    /// Wall-clock time of the last scrape's start, ms.
    pub last_scrape_ms: i64,
    pub last_scrape_duration_s: f64,
    pub last_samples_scraped: u64,
    /// The metadata the target exposed recently. Replaced as a whole (not edited)
    /// when it changes, so readers clone the `Arc` and never hold the lock long.
    pub metadata: Arc<TargetMetadata>,
}

/// Everything a scrape loop needs that does not change while it runs.
pub struct LoopContext {
    pub target: Target,
    pub cfg: Arc<ScrapeConfig>,
    pub url: String,
    pub appendable: Arc<dyn Appendable>,
    pub client: HttpClient,
    /// Which slots of this target this node scrapes, and the slots' seed (see
    /// `Target::next_slot_ms`).
    pub ownership: Arc<dyn Ownership>,
    /// The target's key for `ownership` (`Target::ring_key`).
    pub key: Vec<u8>,
    pub status: Arc<Mutex<TargetStatus>>,
}

/// How a loop is told to end.
#[derive(Clone, Default)]
pub struct LoopControl {
    /// End, writing staleness markers for everything the target exposed after one
    /// more interval (the target went away).
    pub stop: CancellationToken,
    /// End at once without markers (server shutdown, or a reload that replaces the
    /// loop).
    pub kill: CancellationToken,
}

struct CacheEntry {
    /// The series after target labels and metric relabeling; None when dropped.
    labels: Option<Labels>,
    series_ref: SeriesRef,
    last_attempt: u64,
}

struct StaleEntry {
    series_ref: SeriesRef,
    /// Attempt that last appended this series (maybe not committed).
    pending_attempt: u64,
    /// Attempt whose commit last included this series.
    committed_attempt: u64,
}

/// A target's series cache and staleness tracking, owned by its loop.
#[derive(Default)]
pub struct LoopState {
    /// Keyed by the series as exposed, so known series skip labeling and
    /// relabeling.
    cache: HashMap<Labels, CacheEntry>,
    /// Series of the last committed scrape, keyed by final labels.
    stale: HashMap<Labels, StaleEntry>,
    attempt: u64,
    last_committed: u64,
    report_refs: [SeriesRef; 5],
    /// Metadata by family name, with the attempt that last saw it.
    metadata: HashMap<String, (MetricMetadata, u64)>,
    /// Whether `metadata` changed since `take_changed_metadata` last looked.
    metadata_changed: bool,
}

/// What one append pass found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AppendStats {
    pub total: u64,
    pub added: u64,
    pub series_added: u64,
}

/// Why an append pass failed the scrape.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppendFailure {
    #[error("{0}")]
    Parse(String),
    #[error("sample limit exceeded")]
    SampleLimit,
    #[error("{0}")]
    LabelLimit(String),
    #[error("{0}")]
    Storage(String),
}

impl LoopState {
    /// Appends one exposition's samples (an empty body marks everything stale).
    /// On error the caller rolls `app` back.
    pub fn append_body(
        &mut self,
        cfg: &ScrapeConfig,
        target_labels: &Labels,
        app: &mut dyn Appender,
        body: &[u8],
        format: TextFormat,
        t_ms: i64,
    ) -> Result<AppendStats, (AppendStats, AppendFailure)> {
        self.attempt += 1;
        let attempt = self.attempt;
        let mut st = AppendStats::default();
        let sample_limit = cfg.sample_limit.unwrap_or(0);
        let mut sample_limit_hit = false;
        for entry in TextParser::new(format, body) {
            let (labels, value, ts) = match entry {
                Ok(Entry::Sample {
                    labels,
                    value,
                    timestamp_ms,
                    ..
                }) => (labels, value, timestamp_ms),
                Ok(Entry::Type {
                    metric_family,
                    kind,
                }) => {
                    self.note_metadata(&metric_family, attempt, |m| {
                        let changed = m.kind != kind;
                        m.kind = kind;
                        changed
                    });
                    continue;
                }
                Ok(Entry::Help {
                    metric_family,
                    help,
                }) => {
                    self.note_metadata(&metric_family, attempt, |m| {
                        let changed = m.help != help;
                        if changed {
                            m.help = help.into_owned();
                        }
                        changed
                    });
                    continue;
                }
                Ok(Entry::Unit {
                    metric_family,
                    unit,
                }) => {
                    self.note_metadata(&metric_family, attempt, |m| {
                        let changed = m.unit != unit;
                        if changed {
                            m.unit = unit.to_string();
                        }
                        changed
                    });
                    continue;
                }
                Ok(Entry::Comment) => continue,
                Err(e) => return Err((st, AppendFailure::Parse(e.to_string()))),
            };
            st.total += 1;
            let is_new = !self.cache.contains_key(&labels);
            if is_new {
                let final_labels = sample_labels(cfg, target_labels, &labels);
                if let Some(l) = &final_labels {
                    if let Err(e) = check_label_limits(cfg, l) {
                        return Err((st, AppendFailure::LabelLimit(e)));
                    }
                }
                self.cache.insert(
                    labels.clone(),
                    CacheEntry {
                        labels: final_labels,
                        series_ref: 0,
                        last_attempt: attempt,
                    },
                );
            }
            let Some(entry) = self.cache.get_mut(&labels) else {
                continue;
            };
            entry.last_attempt = attempt;
            let Some(final_labels) = &entry.labels else {
                continue;
            };
            st.added += 1;
            if sample_limit > 0 && st.added > sample_limit {
                sample_limit_hit = true;
                continue;
            }
            let honored_ts = if cfg.honor_timestamps() { ts } else { None };
            let t = honored_ts.unwrap_or(t_ms);
            match app.append(entry.series_ref, final_labels, t, value) {
                Ok(r) => entry.series_ref = r,
                Err(
                    AppendError::OutOfOrder
                    | AppendError::DuplicateSampleForTimestamp
                    | AppendError::OutOfBounds,
                ) => continue,
                Err(e) => return Err((st, AppendFailure::Storage(e.to_string()))),
            }
            if is_new {
                st.series_added += 1;
            }
            // Series with their own timestamps are not marked stale, unless asked.
            if honored_ts.is_none() || cfg.track_timestamps_staleness {
                let r = entry.series_ref;
                match self.stale.get_mut(final_labels) {
                    Some(s) => {
                        s.pending_attempt = attempt;
                        s.series_ref = r;
                    }
                    None => {
                        self.stale.insert(
                            final_labels.clone(),
                            StaleEntry {
                                series_ref: r,
                                pending_attempt: attempt,
                                committed_attempt: 0,
                            },
                        );
                    }
                }
            }
        }
        if sample_limit_hit {
            return Err((st, AppendFailure::SampleLimit));
        }
        // Everything in the last committed scrape but not in this one is stale now.
        let prev = self.last_committed;
        let mut stale_err = None;
        self.stale.retain(|labels, s| {
            if s.pending_attempt == attempt {
                return true;
            }
            if prev != 0 && s.committed_attempt == prev {
                match app.append(s.series_ref, labels, t_ms, stale_nan()) {
                    Ok(_)
                    | Err(
                        AppendError::OutOfOrder
                        | AppendError::DuplicateSampleForTimestamp
                        | AppendError::OutOfBounds,
                    ) => {}
                    Err(e) => stale_err = Some(e.to_string()),
                }
            }
            false
        });
        if let Some(e) = stale_err {
            return Err((st, AppendFailure::Storage(e)));
        }
        Ok(st)
    }

    /// Records that the last `append_body` was committed.
    pub fn committed(&mut self) {
        let a = self.attempt;
        for s in self.stale.values_mut() {
            if s.pending_attempt == a {
                s.committed_attempt = a;
            }
        }
        self.last_committed = a;
        self.cache
            .retain(|_, e| e.last_attempt + CACHE_KEEP_SCRAPES >= a);
        let before = self.metadata.len();
        self.metadata
            .retain(|_, (_, seen)| *seen + METADATA_KEEP_SCRAPES >= a);
        if self.metadata.len() != before {
            self.metadata_changed = true;
        }
    }

    /// Records one metadata line of `family` seen by `attempt`; `update` changes
    /// the entry and says whether it did. Cheap when nothing changed: a lookup
    /// by the borrowed name and a comparison.
    fn note_metadata(
        &mut self,
        family: &str,
        attempt: u64,
        update: impl FnOnce(&mut MetricMetadata) -> bool,
    ) {
        if let Some((m, seen)) = self.metadata.get_mut(family) {
            *seen = attempt;
            if update(m) {
                self.metadata_changed = true;
            }
            return;
        }
        if self.metadata.len() >= METADATA_FAMILIES_MAX {
            return;
        }
        let mut m = MetricMetadata::default();
        update(&mut m);
        self.metadata.insert(family.to_string(), (m, attempt));
        self.metadata_changed = true;
    }

    /// The target's metadata when it changed since the last call.
    pub fn take_changed_metadata(&mut self) -> Option<Arc<TargetMetadata>> {
        if !std::mem::take(&mut self.metadata_changed) {
            return None;
        }
        Some(Arc::new(
            self.metadata
                .iter()
                .map(|(k, (m, _))| (k.clone(), m.clone()))
                .collect(),
        ))
    }

    /// Appends the five report series.
    pub fn append_report(
        &mut self,
        target_labels: &Labels,
        app: &mut dyn Appender,
        t_ms: i64,
        values: [f64; 5],
    ) -> Result<(), String> {
        for (i, name) in REPORT_SERIES.iter().enumerate() {
            let mut b = target_labels.builder();
            b.set(METRIC_NAME, name);
            match app.append(self.report_refs[i], &b.build(), t_ms, values[i]) {
                Ok(r) => self.report_refs[i] = r,
                Err(
                    AppendError::OutOfOrder
                    | AppendError::DuplicateSampleForTimestamp
                    | AppendError::OutOfBounds,
                ) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }
}

/// The labels of an exposed series once the target's labels are attached
/// (honoring or renaming conflicts as `honor_labels` says) and metric relabeling
/// ran; None when relabeling drops it.
pub fn sample_labels(
    cfg: &ScrapeConfig,
    target_labels: &Labels,
    exposed: &Labels,
) -> Option<Labels> {
    let mut lb = exposed.builder();
    if cfg.honor_labels {
        for l in target_labels.iter() {
            if !exposed.has(l.name) {
                lb.set(l.name, l.value);
            }
        }
    } else {
        let mut conflicts: Vec<(&str, &str)> = Vec::new();
        for l in target_labels.iter() {
            let existing = exposed.get(l.name);
            if !existing.is_empty() {
                conflicts.push((l.name, existing));
            }
            lb.set(l.name, l.value);
        }
        resolve_conflicts(&mut lb, &mut conflicts);
    }
    if !crate::relabel::process_builder(&mut lb, &cfg.metric_relabel_configs) {
        return None;
    }
    let l = lb.build();
    // Relabeling may remove the name; such a series cannot be stored.
    (!l.metric_name().is_empty()).then_some(l)
}

/// Renames clashing exposed labels to `exported_<name>`, adding more prefixes
/// until the name is free, shortest names first (Prometheus's order).
fn resolve_conflicts(lb: &mut LabelsBuilder, conflicts: &mut [(&str, &str)]) {
    conflicts.sort_by_key(|(n, _)| n.len());
    for (name, value) in conflicts.iter() {
        let mut new_name = name.to_string();
        loop {
            new_name = format!("{EXPORTED_LABEL_PREFIX}{new_name}");
            if lb.get(&new_name).is_empty() {
                lb.set(&new_name, value);
                break;
            }
        }
    }
}

/// Prometheus's per-series limits, with its messages.
fn check_label_limits(cfg: &ScrapeConfig, l: &Labels) -> Result<(), String> {
    let met: String = l.metric_name().chars().take(50).collect();
    if let Some(limit) = cfg.label_limit.filter(|x| *x > 0) {
        if l.len() as u64 > limit {
            return Err(format!(
                "label_limit exceeded (metric: {met}, number of labels: {}, limit: {limit})",
                l.len()
            ));
        }
    }
    let name_limit = cfg.label_name_length_limit.unwrap_or(0);
    let value_limit = cfg.label_value_length_limit.unwrap_or(0);
    for lab in l.iter() {
        let short: String = lab.name.chars().take(50).collect();
        if name_limit > 0 && lab.name.len() as u64 > name_limit {
            return Err(format!(
                "label_name_length_limit exceeded (metric: {met}, label name: {short}, length: {}, limit: {name_limit})",
                lab.name.len()
            ));
        }
        if value_limit > 0 && lab.value.len() as u64 > value_limit {
            let v: String = lab.value.chars().take(50).collect();
            return Err(format!(
                "label_value_length_limit exceeded (metric: {met}, label name: {short}, value: {v:?}, length: {}, limit: {value_limit})",
                lab.value.len()
            ));
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs the loop of one target until told to end. The loop wakes at each of the
/// target's slots and scrapes it when this node owns the target at that slot; a
/// slot it does not own drops its state without staleness markers, since the owner
/// at that slot carries the series on.
pub async fn run(ctx: Arc<LoopContext>, control: LoopControl) {
    let interval_ms = ctx.target.interval_ms.max(1);
    let interval = Duration::from_millis(interval_ms as u64);
    // Some while this node scrapes the target.
    let mut state: Option<Box<LoopState>> = None;
    let mut last_slot_ms: Option<i64> = None;
    loop {
        let Some(seed) = ctx.ownership.scrape_seed() else {
            // Not yet part of a cluster with an id: nothing is owned.
            tokio::select! {
                _ = control.kill.cancelled() => return,
                _ = control.stop.cancelled() => return,
                _ = tokio::time::sleep(interval.min(Duration::from_millis(200))) => {}
            }
            continue;
        };
        let now = now_ms();
        let mut slot = ctx.target.next_slot_ms(seed, now);
        if let Some(last) = last_slot_ms {
            if slot <= last {
                slot = last + interval_ms;
            }
        }
        tokio::select! {
            _ = control.kill.cancelled() => return,
            _ = control.stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis((slot - now).max(0) as u64)) => {}
        }
        last_slot_ms = Some(slot);
        if !ctx.ownership.owns(&ctx.key, slot) {
            if state.take().is_some() {
                tracing::debug!(target = %ctx.url, slot_ms = slot, "target handed over");
                *ctx.status.lock() = TargetStatus::default();
            }
            continue;
        }
        let s = state.take().unwrap_or_default();
        state = scrape_once(&ctx, s).await;
    }
    // The target went away. Only its scraper marks its series stale: after the time
    // of the next scrape, and one more interval for a recreated target to have
    // taken over.
    if state.is_none() {
        return;
    }
    tokio::select! {
        _ = control.kill.cancelled() => return,
        _ = tokio::time::sleep(interval) => {}
    }
    let stale_t = now_ms();
    tokio::select! {
        _ = control.kill.cancelled() => return,
        _ = tokio::time::sleep(interval) => {}
    }
    if let Some(mut s) = state.take() {
        let ctx2 = ctx.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let labels = ctx2.target.series_labels();
            let mut app = ctx2.appendable.appender();
            let res = s.append_body(
                &ctx2.cfg,
                &labels,
                app.as_mut(),
                b"",
                TextFormat::Prometheus,
                stale_t,
            );
            let rep = s.append_report(&labels, app.as_mut(), stale_t, [stale_nan(); 5]);
            if res.is_ok() && rep.is_ok() {
                if let Err(e) = app.commit() {
                    tracing::warn!(target = %ctx2.url, error = %e, "writing staleness markers");
                }
            } else {
                app.rollback();
            }
        })
        .await;
    }
}

/// One scrape: fetch, then append on a blocking thread (appends write the WAL).
async fn scrape_once(ctx: &Arc<LoopContext>, state: Box<LoopState>) -> Option<Box<LoopState>> {
    let start_ms = now_ms();
    let started = Instant::now();
    let fetched = ctx
        .client
        .fetch(&ctx.cfg, &ctx.url, ctx.target.timeout_ms)
        .await;
    let duration_s = started.elapsed().as_secs_f64();
    let ctx2 = ctx.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let mut state = state;
        let labels = ctx2.target.series_labels();
        let (body, format, scrape_err) = match fetched {
            Ok(f) => {
                // Prometheus falls back to the text format for unknown types.
                let format = TextFormat::from_content_type(&f.content_type)
                    .unwrap_or(TextFormat::Prometheus);
                (f.body, format, None)
            }
            Err(e) => (Vec::new(), TextFormat::Prometheus, Some(e.to_string())),
        };
        let mut app = ctx2.appendable.appender();
        let (stats, err) =
            match state.append_body(&ctx2.cfg, &labels, app.as_mut(), &body, format, start_ms) {
                Ok(st) => (st, scrape_err),
                Err((st, failure)) => {
                    app.rollback();
                    app = ctx2.appendable.appender();
                    // A failed append is an empty scrape: everything goes stale.
                    let _ = state.append_body(
                        &ctx2.cfg,
                        &labels,
                        app.as_mut(),
                        b"",
                        TextFormat::Prometheus,
                        start_ms,
                    );
                    (st, scrape_err.or(Some(failure.to_string())))
                }
            };
        let up = if err.is_none() { 1.0 } else { 0.0 };
        let report = [
            up,
            duration_s,
            stats.total as f64,
            stats.added as f64,
            stats.series_added as f64,
        ];
        let mut err = err;
        match state.append_report(&labels, app.as_mut(), start_ms, report) {
            Ok(()) => match app.commit() {
                Ok(()) => state.committed(),
                Err(e) => err = Some(format!("committing samples: {e}")),
            },
            Err(e) => {
                app.rollback();
                err = Some(format!("appending report series: {e}"));
            }
        }
        (state, stats, err)
    })
    .await;
    let (state, stats, err) = match joined {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(target = %ctx.url, error = %e, "scrape append task failed");
            return None;
        }
    };
    let mut state = state;
    let metadata = state.take_changed_metadata();
    let mut st = ctx.status.lock();
    if let Some(m) = metadata {
        st.metadata = m;
    }
    st.last_scrape_ms = start_ms;
    st.last_scrape_duration_s = duration_s;
    st.last_samples_scraped = stats.total;
    match err {
        None => {
            st.health = Health::Up;
            st.last_error.clear();
        }
        Some(e) => {
            tracing::debug!(target = %ctx.url, error = %e, "scrape failed");
            st.health = Health::Down;
            st.last_error = e;
        }
    }
    Some(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn job(yaml: &str) -> ScrapeConfig {
        let c = Config::parse(yaml, "t.yml").unwrap_or_else(|e| panic!("{e}"));
        c.scrape_configs[0].clone()
    }

    #[test]
    fn conflicting_labels_get_exported_prefix() {
        let cfg = job("scrape_configs:\n  - job_name: a\n");
        let target = Labels::from_pairs(&[("job", "a"), ("instance", "h:1")]);
        let exposed = Labels::from_pairs(&[
            ("__name__", "m"),
            ("job", "inner"),
            ("exported_job", "taken"),
            ("instance", "i"),
        ]);
        let got = sample_labels(&cfg, &target, &exposed);
        let want = Labels::from_pairs(&[
            ("__name__", "m"),
            ("job", "a"),
            ("instance", "h:1"),
            ("exported_instance", "i"),
            ("exported_job", "taken"),
            ("exported_exported_job", "inner"),
        ]);
        assert_eq!(got, Some(want));
    }

    #[test]
    fn honor_labels_keeps_exposed_values() {
        let cfg = job("scrape_configs:\n  - job_name: a\n    honor_labels: true\n");
        let target = Labels::from_pairs(&[("job", "a"), ("instance", "h:1")]);
        let exposed = Labels::from_pairs(&[("__name__", "m"), ("job", "inner")]);
        let got = sample_labels(&cfg, &target, &exposed);
        let want = Labels::from_pairs(&[("__name__", "m"), ("job", "inner"), ("instance", "h:1")]);
        assert_eq!(got, Some(want));
    }

    #[test]
    fn label_limits_have_prometheus_messages() {
        let cfg = job("scrape_configs:\n  - job_name: a\n    label_limit: 2\n    label_name_length_limit: 3\n    label_value_length_limit: 4\n");
        let e = check_label_limits(
            &cfg,
            &Labels::from_pairs(&[("__name__", "m"), ("a", "1"), ("b", "2")]),
        );
        assert_eq!(
            e,
            Err("label_limit exceeded (metric: m, number of labels: 3, limit: 2)".into())
        );
        let cfg = job("scrape_configs:\n  - job_name: a\n    label_name_length_limit: 3\n    label_value_length_limit: 4\n");
        let e = check_label_limits(
            &cfg,
            &Labels::from_pairs(&[("__name__", "m"), ("abcd", "1")]),
        );
        assert!(e.is_err_and(|e| e.starts_with("label_name_length_limit exceeded")));
        // `__name__` is a label like any other for the limits.
        let cfg = job("scrape_configs:\n  - job_name: a\n    label_value_length_limit: 4\n");
        let e = check_label_limits(
            &cfg,
            &Labels::from_pairs(&[("__name__", "m"), ("a", "12345")]),
        );
        assert!(e.is_err_and(|e| e.starts_with("label_value_length_limit exceeded")));
    }
}
