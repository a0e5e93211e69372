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
use crate::textparse::{Entry, MetricType, RawEntry, TextFormat, TextParser};

use super::http::HttpClient;
use super::series_cache::SeriesCache;
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

/// What the cache knows about one series as the target writes it, and whether it
/// was in the last committed scrape (staleness, as Prometheus's `seriesCur`).
struct CacheEntry {
    /// The series after target labels and metric relabeling; None when dropped.
    labels: Option<Labels>,
    /// `labels`' hash: two entries with the same hash are one series for
    /// staleness (two spellings of one series, or relabeling that joins them).
    labels_hash: u64,
    series_ref: SeriesRef,
    last_attempt: u64,
    /// Attempt that last appended this series with staleness tracking (maybe not
    /// committed).
    pending_attempt: u64,
    /// Attempt whose commit last included this series; 0 once it was marked stale.
    committed_attempt: u64,
}

/// A target's series cache and staleness tracking, owned by its loop.
#[derive(Default)]
pub struct LoopState {
    /// Keyed by the series text as the target writes it (name and label set, see
    /// `RawSample::series`), so a known series costs a lookup: no label set is
    /// built, labeled or relabeled again, and its staleness state is in the same
    /// entry. Series dropped by relabeling are kept too, with no labels.
    cache: SeriesCache<CacheEntry>,
    attempt: u64,
    last_committed: u64,
    report_refs: [SeriesRef; 5],
    /// The label sets of the report series and the target labels they were built
    /// from: built once, not at every scrape (the same buffers also make the
    /// head's check of a series ref a pointer comparison).
    report_labels: Option<(Labels, [Labels; 5])>,
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
        let mut parser = TextParser::new(format, body);
        self.cache.begin_pass();
        while let Some(entry) = parser.next_raw() {
            let sample = match entry {
                Ok(RawEntry::Sample(sample)) => sample,
                Ok(RawEntry::Other(e)) => {
                    self.note_entry(e, attempt);
                    continue;
                }
                Err(e) => return Err((st, AppendFailure::Parse(e.to_string()))),
            };
            st.total += 1;
            let (id, is_new) = match self.cache.find(sample.series) {
                Some(id) => (id, false),
                None => {
                    let new = new_cache_entry(cfg, target_labels, &mut parser, attempt)
                        .map_err(|failure| (st.clone(), failure))?;
                    let id = self.cache.insert(sample.series, new).ok_or_else(|| {
                        (
                            st.clone(),
                            AppendFailure::Storage("series cache full".into()),
                        )
                    })?;
                    (id, true)
                }
            };
            let entry = self.cache.get_mut(id);
            entry.last_attempt = attempt;
            let Some(final_labels) = &entry.labels else {
                continue;
            };
            st.added += 1;
            if sample_limit > 0 && st.added > sample_limit {
                sample_limit_hit = true;
                continue;
            }
            let honored_ts = if cfg.honor_timestamps() {
                sample.timestamp_ms
            } else {
                None
            };
            let t = honored_ts.unwrap_or(t_ms);
            match app.append(entry.series_ref, final_labels, t, sample.value) {
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
                entry.pending_attempt = attempt;
            }
        }
        if sample_limit_hit {
            return Err((st, AppendFailure::SampleLimit));
        }
        self.append_stale_markers(app, t_ms)
            .map_err(|e| (st.clone(), AppendFailure::Storage(e)))?;
        Ok(st)
    }

    /// Appends a staleness marker at `t_ms` for every series of the last committed
    /// scrape that this attempt did not append: once per label hash, and not when
    /// another spelling of the series was appended.
    fn append_stale_markers(&mut self, app: &mut dyn Appender, t_ms: i64) -> Result<(), String> {
        let (attempt, prev) = (self.attempt, self.last_committed);
        if prev == 0 {
            return Ok(());
        }
        let mut gone: Vec<(u64, SeriesRef, Labels)> = Vec::new();
        for e in self.cache.values_mut() {
            if e.committed_attempt != prev || e.pending_attempt == attempt {
                continue;
            }
            // Marked once: a later attempt does not mark it again.
            e.committed_attempt = 0;
            if let Some(l) = &e.labels {
                gone.push((e.labels_hash, e.series_ref, l.clone()));
            }
        }
        if gone.is_empty() {
            return Ok(());
        }
        let mut skip: crate::fxhash::HashSet<u64> = self
            .cache
            .values()
            .filter(|e| e.pending_attempt == attempt)
            .map(|e| e.labels_hash)
            .collect();
        for (hash, series_ref, labels) in gone {
            if !skip.insert(hash) {
                continue;
            }
            refused_is_fine(app.append(series_ref, &labels, t_ms, stale_nan()))?;
        }
        Ok(())
    }

    /// Records that the last `append_body` was committed.
    pub fn committed(&mut self) {
        let a = self.attempt;
        self.last_committed = a;
        self.cache.retain(|e| {
            if e.pending_attempt == a {
                e.committed_attempt = a;
            }
            e.last_attempt + CACHE_KEEP_SCRAPES >= a
        });
        let before = self.metadata.len();
        self.metadata
            .retain(|_, (_, seen)| *seen + METADATA_KEEP_SCRAPES >= a);
        if self.metadata.len() != before {
            self.metadata_changed = true;
        }
    }

    /// Records what a non-sample entry says about metadata.
    fn note_entry(&mut self, entry: Entry<'_>, attempt: u64) {
        match entry {
            Entry::Type {
                metric_family,
                kind,
            } => self.note_metadata(&metric_family, attempt, |m| {
                let changed = m.kind != kind;
                m.kind = kind;
                changed
            }),
            Entry::Help {
                metric_family,
                help,
            } => self.note_metadata(&metric_family, attempt, |m| {
                let changed = m.help != help;
                if changed {
                    m.help = help.into_owned();
                }
                changed
            }),
            Entry::Unit {
                metric_family,
                unit,
            } => self.note_metadata(&metric_family, attempt, |m| {
                let changed = m.unit != unit;
                if changed {
                    m.unit = unit.to_string();
                }
                changed
            }),
            Entry::Comment | Entry::Sample { .. } => {}
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
        if self
            .report_labels
            .as_ref()
            .is_some_and(|(target, _)| target != target_labels)
        {
            self.report_labels = None;
        }
        let (_, built) = self.report_labels.get_or_insert_with(|| {
            let built = REPORT_SERIES.map(|name| {
                let mut b = target_labels.builder();
                b.set(METRIC_NAME, name);
                b.build()
            });
            (target_labels.clone(), built)
        });
        for (i, labels) in built.iter().enumerate() {
            if let Some(r) =
                refused_is_fine(app.append(self.report_refs[i], labels, t_ms, values[i]))?
            {
                self.report_refs[i] = r;
            }
        }
        Ok(())
    }
}

/// The result of a stale marker's or report sample's append: a refusal for its
/// time (out of order, duplicate, out of bounds) is no error, just no ref;
/// anything else fails the scrape with its text.
fn refused_is_fine(r: Result<SeriesRef, AppendError>) -> Result<Option<SeriesRef>, String> {
    match r {
        Ok(r) => Ok(Some(r)),
        Err(
            AppendError::OutOfOrder
            | AppendError::DuplicateSampleForTimestamp
            | AppendError::OutOfBounds,
        ) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The cache entry for a series seen for the first time: its labels as `parser`
/// builds them for the sample it returned last, labeled and relabeled, and checked
/// against the label limits.
fn new_cache_entry(
    cfg: &ScrapeConfig,
    target_labels: &Labels,
    parser: &mut TextParser<'_>,
    attempt: u64,
) -> Result<CacheEntry, AppendFailure> {
    let exposed = parser
        .labels()
        .map_err(|e| AppendFailure::Parse(e.to_string()))?;
    let labels = sample_labels(cfg, target_labels, &exposed);
    if let Some(l) = &labels {
        check_label_limits(cfg, l).map_err(AppendFailure::LabelLimit)?;
    }
    Ok(CacheEntry {
        labels_hash: labels.as_ref().map_or(0, label_hash),
        labels,
        series_ref: 0,
        last_attempt: attempt,
        pending_attempt: 0,
        committed_attempt: 0,
    })
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

/// A label set's hash with the cache's hasher.
fn label_hash(l: &Labels) -> u64 {
    use std::hash::BuildHasher;
    crate::fxhash::FxBuild::default().hash_one(l)
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

    /// Every series `db` holds, as (labels, values), with stale markers as "stale".
    fn stored(db: &crate::tsdb::db::Db) -> Vec<(String, Vec<String>)> {
        use crate::storage::{is_stale_nan, Queryable, SelectHints};
        let q = db.querier(i64::MIN, i64::MAX).unwrap();
        let hints = SelectHints {
            start_ms: i64::MIN,
            end_ms: i64::MAX,
            series_only: false,
            newest_only: false,
        };
        let all = crate::labels::Matcher::new(crate::labels::MatchType::Regexp, "__name__", ".+")
            .unwrap();
        q.select(&hints, &[all])
            .unwrap()
            .map(|s| {
                let s = s.unwrap();
                let values = s
                    .samples
                    .iter()
                    .map(|x| {
                        if is_stale_nan(x.v) {
                            "stale".to_string()
                        } else {
                            x.v.to_string()
                        }
                    })
                    .collect();
                (s.labels.to_string(), values)
            })
            .collect()
    }

    /// One scrape of `body` at `t`, committed as the loop commits it.
    fn scrape(
        state: &mut LoopState,
        db: &crate::tsdb::db::Db,
        cfg: &ScrapeConfig,
        body: &str,
        t: i64,
    ) -> Result<AppendStats, AppendFailure> {
        let target = Labels::from_pairs(&[("job", "a"), ("instance", "h:1")]);
        let mut app = db.appender();
        match state.append_body(
            cfg,
            &target,
            app.as_mut(),
            body.as_bytes(),
            TextFormat::Prometheus,
            t,
        ) {
            Ok(st) => {
                app.commit().unwrap();
                state.committed();
                Ok(st)
            }
            Err((_, failure)) => {
                app.rollback();
                Err(failure)
            }
        }
    }

    #[test]
    fn cache_by_series_text_keeps_labels_relabeling_and_staleness() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::tsdb::db::Db::open(dir.path(), Default::default()).unwrap();
        let cfg = job(
            "scrape_configs:\n  - job_name: a\n    metric_relabel_configs:\n      - source_labels: [__name__]\n        regex: dropped\n        action: drop\n",
        );
        let mut state = LoopState::default();
        let body = "m{job=\"inner\",x=\"1\"} 1\ndropped 5\nc 7\n";
        let st = scrape(&mut state, &db, &cfg, body, 1000).unwrap();
        assert_eq!((st.total, st.added, st.series_added), (3, 2, 2));
        // The same series again, one written with other spacing: cached entries are
        // used (the dropped series stays dropped), no new series appear in the head.
        let body = "m{job=\"inner\",x=\"1\"} 2\ndropped 6\nc   7\n";
        let st = scrape(&mut state, &db, &cfg, body, 2000).unwrap();
        assert_eq!((st.total, st.added, st.series_added), (3, 2, 0));
        let body = "m {job=\"inner\", x=\"1\"} 3\ndropped 7\n";
        let st = scrape(&mut state, &db, &cfg, body, 3000).unwrap();
        assert_eq!((st.total, st.added, st.series_added), (2, 1, 1));
        // A repeated label name fails the scrape, as it did with labels built eagerly.
        let bad = scrape(&mut state, &db, &cfg, "m{x=\"1\",x=\"2\"} 1\n", 4000);
        assert!(matches!(bad, Err(AppendFailure::Parse(e)) if e.contains("duplicate label name")));
        assert_eq!(
            stored(&db),
            vec![
                ("{__name__=\"c\", instance=\"h:1\", job=\"a\"}".to_string(), vec!["7".into(), "7".into(), "stale".into()]),
                (
                    "{__name__=\"m\", exported_job=\"inner\", instance=\"h:1\", job=\"a\", x=\"1\"}".to_string(),
                    vec!["1".into(), "2".into(), "3".into()],
                ),
            ]
        );
    }
    #[test]
    fn stale_markers_once_per_disappearance() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::tsdb::db::Db::open(dir.path(), Default::default()).unwrap();
        let cfg = job("scrape_configs:\n  - job_name: a\n");
        let mut state = LoopState::default();
        scrape(&mut state, &db, &cfg, "a 1\nb 1\n", 1000).unwrap();
        scrape(&mut state, &db, &cfg, "a 2\n", 2000).unwrap();
        scrape(&mut state, &db, &cfg, "a 3\n", 3000).unwrap();
        // Back under another spelling, then gone with the old spelling still cached.
        scrape(&mut state, &db, &cfg, "a 4\nb{} 4\n", 4000).unwrap();
        scrape(&mut state, &db, &cfg, "a 5\nb 5\n", 5000).unwrap();
        scrape(&mut state, &db, &cfg, "", 6000).unwrap();
        scrape(&mut state, &db, &cfg, "", 7000).unwrap();
        assert_eq!(
            stored(&db),
            vec![
                (
                    "{__name__=\"a\", instance=\"h:1\", job=\"a\"}".to_string(),
                    vec![
                        "1".into(),
                        "2".into(),
                        "3".into(),
                        "4".into(),
                        "5".into(),
                        "stale".into()
                    ],
                ),
                (
                    "{__name__=\"b\", instance=\"h:1\", job=\"a\"}".to_string(),
                    vec![
                        "1".into(),
                        "stale".into(),
                        "4".into(),
                        "5".into(),
                        "stale".into()
                    ],
                ),
            ]
        );
    }
}
