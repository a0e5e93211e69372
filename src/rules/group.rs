//! Rule groups and their evaluation: recording rules append their results,
//! alerting rules move alerts through pending → firing → inactive and append
//! `ALERTS`/`ALERTS_FOR_STATE`; series that vanish between evaluations get stale
//! markers. Evaluation is synchronous and driven by an explicit timestamp, so tests
//! step it by hand and the manager calls it from its timer.

use super::template::{self, TemplateData};
use super::{RuleDef, RuleGroupDef, RulesError};
use crate::labels::{Labels, LabelsBuilder};
use crate::promql::{Engine, Query, Value};
use crate::storage::{Appendable, Queryable};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

/// How long a resolved alert is still kept (and shown), as in Prometheus.
const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// How the `for` state of alerts is restored after a restart
/// (`--rules.alert.for-outage-tolerance`, `--rules.alert.for-grace-period`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Only an `ALERTS_FOR_STATE` sample this recent counts; an older one means
    /// hearth was down too long for the pending time to be trusted.
    pub outage_tolerance_ms: i64,
    /// The least time left before a restored alert fires, so that one which was
    /// about to fire gets a chance to resolve first. Rules with a shorter `for` are
    /// not restored at all.
    pub for_grace_period_ms: i64,
}

impl Default for RestoreOptions {
    /// Prometheus's defaults: 1h and 10m.
    fn default() -> RestoreOptions {
        RestoreOptions {
            outage_tolerance_ms: 3_600_000,
            for_grace_period_ms: 600_000,
        }
    }
}

/// The active time of an alert restored at `ts_ms`, given its last
/// `ALERTS_FOR_STATE` sample (`sample_t_ms`, holding the active time in seconds)
/// and the rule's `for` (`hold_ms`). As in Prometheus, times from the sample are
/// whole seconds. The time it had spent pending before going down counts:
/// - it had already fired: the old active time stays, and it fires again at once;
/// - less than the grace period remained: it fires a grace period after `ts_ms`;
/// - otherwise the active time moves forward by the time hearth was down.
pub fn restored_active_at_ms(
    hold_ms: i64,
    grace_ms: i64,
    ts_ms: i64,
    sample_t_ms: i64,
    active_at_s: f64,
) -> i64 {
    let down_at_ms = (sample_t_ms / 1000) * 1000;
    let active_at_ms = (active_at_s as i64).saturating_mul(1000);
    let remaining_ms = hold_ms - (down_at_ms - active_at_ms);
    if remaining_ms <= 0 {
        active_at_ms
    } else if remaining_ms < grace_ms {
        ts_ms + grace_ms - hold_ms
    } else {
        active_at_ms + (ts_ms - down_at_ms)
    }
}

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    /// Prometheus's name: `inactive`, `pending`, `firing`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert of an alerting rule (one output series of its expression).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub state: AlertState,
    pub value: f64,
    pub active_at_ms: i64,
    /// When it started firing; 0 when it has not.
    pub fired_at_ms: i64,
    /// When it was resolved; 0 while active.
    pub resolved_at_ms: i64,
    /// Since when it has been kept firing after its expression stopped matching.
    pub keep_firing_since_ms: i64,
    /// When it was last sent to Alertmanagers; 0 when never.
    pub last_sent_ms: i64,
}

impl Alert {
    /// Prometheus's rule for sending: never while pending; at once when resolved
    /// since the last send; otherwise once per `resend_delay_ms`.
    pub fn needs_sending(&self, ts_ms: i64, resend_delay_ms: i64) -> bool {
        if self.state == AlertState::Pending {
            return false;
        }
        if self.resolved_at_ms > self.last_sent_ms {
            return true;
        }
        self.last_sent_ms == 0 || self.last_sent_ms + resend_delay_ms < ts_ms
    }
}

/// A rule's evaluation health.
#[derive(Debug, Clone, Default)]
pub struct RuleHealth {
    /// None until first evaluated; Some(None) when ok; Some(Some(err)) on error.
    pub last_error: Option<Option<String>>,
    pub last_eval_ms: i64,
    pub eval_duration_s: f64,
}

/// What a rule is.
#[derive(Debug)]
pub enum RuleKind {
    Recording,
    Alerting {
        for_ms: i64,
        keep_firing_for_ms: i64,
        annotations: BTreeMap<String, String>,
    },
}

/// One rule with its state.
pub struct Rule {
    /// Recorded metric or alert name.
    pub name: String,
    /// The expression as written.
    pub expr: String,
    query: Query,
    /// Group labels merged under the rule's own labels.
    pub labels: BTreeMap<String, String>,
    pub kind: RuleKind,
    pub health: Mutex<RuleHealth>,
    /// Active and recently resolved alerts by label hash (alerting rules only).
    pub alerts: Mutex<HashMap<u64, Alert>>,
    /// `--web.external-url`, for `$externalURL` in templates; empty when unset.
    pub external_url: String,
    /// Whether the `for` state was restored (or needs no restoring). Until then an
    /// alerting rule writes no `ALERTS`/`ALERTS_FOR_STATE`, so the restore reads the
    /// samples written before the restart, not ones written since.
    restored: AtomicBool,
}

/// A group of rules evaluated together, in order, at one interval.
pub struct Group {
    pub name: String,
    pub file: String,
    pub interval_ms: i64,
    pub query_offset_ms: i64,
    pub limit: usize,
    pub rules: Vec<Rule>,
    /// The definition it was built from, to tell on reload whether it changed.
    pub def: RuleGroupDef,
    pub external_labels: BTreeMap<String, String>,
    state: Mutex<GroupState>,
    /// Set for groups loaded at startup: their alerts' `for` state is restored from
    /// `ALERTS_FOR_STATE` after the second evaluation (`restore_for_state`).
    should_restore: AtomicBool,
}

#[derive(Default)]
struct GroupState {
    /// Series each rule wrote last time, for stale markers.
    previous: Vec<HashSet<Labels>>,
    last_eval_ms: i64,
    eval_duration_s: f64,
    iterations_missed: u64,
    /// Counters behind the `prometheus_rule_*` metrics.
    counters: GroupCounters,
}

/// What a group has done since it started, for the server's own metrics
/// (Prometheus's `prometheus_rule_group_*` and `prometheus_rule_evaluation*`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GroupCounters {
    /// Evaluations of the whole group.
    pub iterations: u64,
    /// Rule evaluations.
    pub evaluations: u64,
    /// Rule evaluations that ended in an error.
    pub failures: u64,
    /// Samples the rules returned in the last evaluation.
    pub last_samples: u64,
}

fn dur(s: &Option<String>) -> i64 {
    s.as_deref()
        .and_then(|s| crate::config_units::parse_duration_ms(s).ok())
        .unwrap_or(0)
}

impl Group {
    /// Builds a group from a validated definition. `default_interval_ms` is the
    /// global evaluation interval.
    pub fn new(
        def: &RuleGroupDef,
        file: &str,
        default_interval_ms: i64,
        external_labels: &BTreeMap<String, String>,
    ) -> Result<Group, RulesError> {
        let mut rules = Vec::new();
        for r in &def.rules {
            rules.push(Rule::new(r, &def.labels)?);
        }
        let interval_ms = match dur(&def.interval) {
            0 => default_interval_ms.max(1),
            d => d,
        };
        Ok(Group {
            name: def.name.clone(),
            file: file.to_string(),
            interval_ms,
            query_offset_ms: dur(&def.query_offset),
            limit: def.limit.max(0) as usize,
            state: Mutex::new(GroupState {
                previous: vec![HashSet::new(); rules.len()],
                ..Default::default()
            }),
            rules,
            def: def.clone(),
            external_labels: external_labels.clone(),
            should_restore: AtomicBool::new(false),
        })
    }

    /// Sets `--web.external-url` for the templates of its alerting rules.
    pub fn with_external_url(mut self, url: &str) -> Group {
        for r in &mut self.rules {
            r.external_url = url.to_string();
        }
        self
    }

    /// Marks the group as loaded at startup: its alerting rules write no
    /// `ALERTS`/`ALERTS_FOR_STATE` until `restore_for_state` has run. Groups added
    /// by a later reload are not restored, as in Prometheus.
    pub fn mark_for_restore(&self) {
        self.should_restore.store(true, Ordering::Relaxed);
        for r in &self.rules {
            if matches!(r.kind, RuleKind::Alerting { .. }) {
                r.restored.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Whether `restore_for_state` is still due.
    pub fn should_restore(&self) -> bool {
        self.should_restore.load(Ordering::Relaxed)
    }

    /// Prometheus's `Group.RestoreForState`: for each active alert of a rule whose
    /// `for` is at least the grace period, reads the last `ALERTS_FOR_STATE` sample
    /// within the outage tolerance before `ts_ms` and moves the alert's active time
    /// so that the time spent pending before the restart counts (see
    /// `restored_active_at_ms`). Every rule counts as restored afterwards, even when
    /// reading storage failed, since there is no retry (as in Prometheus).
    pub fn restore_for_state(&self, q: &dyn Queryable, ts_ms: i64, opts: &RestoreOptions) {
        self.should_restore.store(false, Ordering::Relaxed);
        let mint = ts_ms - opts.outage_tolerance_ms;
        for rule in &self.rules {
            let RuleKind::Alerting { for_ms, .. } = rule.kind else {
                continue;
            };
            if for_ms >= opts.for_grace_period_ms {
                if let Err(e) = rule.restore_for_state(q, mint, ts_ms, for_ms, opts) {
                    tracing::error!(group = %self.name, alertname = %rule.name, error = %e,
                        "failed to restore 'for' state");
                }
            }
            rule.restored.store(true, Ordering::Relaxed);
        }
    }

    /// Time of the last evaluation (ms) and how long it took (s).
    pub fn last_eval(&self) -> (i64, f64) {
        let s = self.state.lock();
        (s.last_eval_ms, s.eval_duration_s)
    }

    /// Every alert of the group due to be sent at `ts_ms` (see `Rule::alerts_to_send`).
    pub fn alerts_to_send(&self, ts_ms: i64, resend_delay_ms: i64) -> Vec<serde_json::Value> {
        self.rules
            .iter()
            .flat_map(|r| {
                r.alerts_to_send(
                    ts_ms,
                    resend_delay_ms,
                    self.interval_ms,
                    &self.external_labels,
                )
            })
            .collect()
    }

    /// The group's evaluation counters.
    pub fn counters(&self) -> GroupCounters {
        self.state.lock().counters
    }

    /// Iterations skipped because evaluation fell behind.
    pub fn iterations_missed(&self) -> u64 {
        self.state.lock().iterations_missed
    }

    pub(crate) fn add_missed(&self, n: u64) {
        self.state.lock().iterations_missed += n;
    }

    /// Forgets what earlier evaluations left (series for stale markers, alert
    /// states), for a group that another node evaluated meanwhile.
    pub fn forget_state(&self) {
        for p in self.state.lock().previous.iter_mut() {
            p.clear();
        }
        for r in &self.rules {
            r.alerts.lock().clear();
        }
    }

    /// Prometheus's stable offset of the group within its interval, in
    /// nanoseconds: the labels hash (XXH64) of `{file, name}` modulo the interval
    /// in nanoseconds. Groups do not all evaluate at once, and a group keeps its
    /// phase across restarts and across Prometheus and hearth.
    pub fn offset_ns(&self) -> u64 {
        let h = crate::promql::labels_hash(&Labels::from_pairs(&[
            ("name", self.name.as_str()),
            ("file", self.file.as_str()),
        ]));
        let interval_ns = (self.interval_ms.max(1) as u64).saturating_mul(1_000_000);
        h % interval_ns
    }

    /// The offset in whole milliseconds: the offset of the timestamps (ms) of the
    /// samples the group writes.
    pub fn offset_ms(&self) -> i64 {
        (self.offset_ns() / 1_000_000) as i64
    }

    /// The aligned evaluation time at or before `now_ms` (Prometheus's
    /// `EvalTimestamp`, in milliseconds).
    pub fn eval_timestamp(&self, now_ms: i64) -> i64 {
        let off = self.offset_ms();
        let adj = now_ms - off;
        adj - adj.rem_euclid(self.interval_ms.max(1)) + off
    }

    /// Evaluates every rule in order at `ts_ms`, appending results to `app`. Errors
    /// are kept in each rule's health; one rule failing does not stop the next.
    pub fn eval(&self, engine: &Engine, q: &dyn Queryable, app: &dyn Appendable, ts_ms: i64) {
        let started = std::time::Instant::now();
        let sample_ts = ts_ms - self.query_offset_ms;
        let mut failures = 0;
        let mut samples_out = 0;
        for (i, rule) in self.rules.iter().enumerate() {
            let rule_started = std::time::Instant::now();
            let result = rule.eval(
                engine,
                q,
                ts_ms,
                self.query_offset_ms,
                self.limit,
                &self.external_labels,
            );
            let mut err: Option<String>;
            let mut template_err_seen = None;
            let mut written = HashSet::new();
            match result {
                Ok((samples, template_err)) => {
                    samples_out += samples.len() as u64;
                    template_err_seen.clone_from(&template_err);
                    err = template_err;
                    let mut a = app.appender();
                    for (labels, v) in &samples {
                        match a.append(0, labels, sample_ts, *v) {
                            Ok(_) => {
                                written.insert(labels.clone());
                            }
                            // Prometheus ignores these per sample and goes on.
                            Err(crate::storage::AppendError::OutOfOrder)
                            | Err(crate::storage::AppendError::DuplicateSampleForTimestamp)
                            | Err(crate::storage::AppendError::OutOfBounds) => {
                                written.insert(labels.clone());
                            }
                            Err(e) => err = Some(e.to_string()),
                        }
                    }
                    let mut st = self.state.lock();
                    if let Some(prev) = st.previous.get(i) {
                        for gone in prev.difference(&written) {
                            let _ = a.append(0, gone, sample_ts, crate::storage::stale_nan());
                        }
                    }
                    if let Some(p) = st.previous.get_mut(i) {
                        *p = written;
                    }
                    drop(st);
                    if let Err(e) = a.commit() {
                        err = Some(e.to_string());
                    }
                }
                Err(e) => err = Some(e),
            }
            // As in Prometheus, a template error is in the rule's health but the
            // evaluation itself did not fail.
            failures += u64::from(err.is_some() && err != template_err_seen);
            let mut h = rule.health.lock();
            h.last_error = Some(err);
            h.last_eval_ms = ts_ms;
            h.eval_duration_s = rule_started.elapsed().as_secs_f64();
        }
        let mut st = self.state.lock();
        st.last_eval_ms = ts_ms;
        st.eval_duration_s = started.elapsed().as_secs_f64();
        let c = &mut st.counters;
        c.iterations += 1;
        c.evaluations += self.rules.len() as u64;
        c.failures += failures;
        c.last_samples = samples_out;
    }
}

/// What evaluating a rule gives: samples to append, and the first template
/// error (alerting rules), which goes into the rule's health.
type Evaluated = (Vec<(Labels, f64)>, Option<String>);

/// A query result as a vector, as Prometheus's rule query function gives it: a
/// scalar is one sample with no labels.
fn vector_of(v: Value) -> Result<Vec<(Labels, f64)>, String> {
    match v {
        Value::Vector(v) => Ok(v.into_iter().map(|s| (s.metric, s.f)).collect()),
        Value::Scalar { v, .. } => Ok(vec![(Labels::empty(), v)]),
        other => Err(format!(
            "rule result is not a vector or scalar: {}",
            other.type_name()
        )),
    }
}

fn labels_map(l: &Labels) -> BTreeMap<&str, &str> {
    l.iter().map(|l| (l.name, l.value)).collect()
}

impl Rule {
    fn new(def: &RuleDef, group_labels: &BTreeMap<String, String>) -> Result<Rule, RulesError> {
        let query = crate::promql::parse(&def.expr)
            .map_err(|e| RulesError::Eval(format!("rule {:?}: {e}", def.name())))?;
        let mut labels = group_labels.clone();
        labels.extend(def.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        let kind = if def.alert.is_some() {
            RuleKind::Alerting {
                for_ms: dur(&def.for_),
                keep_firing_for_ms: dur(&def.keep_firing_for),
                annotations: def.annotations.clone(),
            }
        } else {
            RuleKind::Recording
        };
        Ok(Rule {
            name: def.name().to_string(),
            expr: def.expr.clone(),
            query,
            labels,
            kind,
            health: Mutex::new(RuleHealth::default()),
            alerts: Mutex::new(HashMap::new()),
            external_url: String::new(),
            restored: AtomicBool::new(true),
        })
    }

    /// Restores the active time of this rule's alerts from the last
    /// `ALERTS_FOR_STATE` sample in `[mint_ms, ts_ms]` of each.
    fn restore_for_state(
        &self,
        q: &dyn Queryable,
        mint_ms: i64,
        ts_ms: i64,
        hold_ms: i64,
        opts: &RestoreOptions,
    ) -> Result<(), crate::storage::StorageError> {
        let querier = q.querier(mint_ms, ts_ms)?;
        let hints = crate::storage::SelectHints {
            start_ms: mint_ms,
            end_ms: ts_ms,
            series_only: false,
            newest_only: false,
        };
        let matchers = [
            crate::labels::Matcher::equal("__name__", "ALERTS_FOR_STATE"),
            crate::labels::Matcher::equal("alertname", &self.name),
        ];
        // The last sample of each series, by its labels without the metric name,
        // which are the alert's labels.
        let mut last: HashMap<Labels, crate::storage::Sample> = HashMap::new();
        for series in querier.select(&hints, &matchers)? {
            let series = series?;
            if let Some(s) = series.samples.last() {
                let mut b = series.labels.builder();
                b.del("__name__");
                last.insert(b.build(), *s);
            }
        }
        if last.is_empty() {
            return Ok(());
        }
        for a in self.alerts.lock().values_mut() {
            let Some(s) = last.get(&a.labels) else {
                continue;
            };
            // A stale marker means the alert had stopped being active.
            if crate::storage::is_stale_nan(s.v) {
                continue;
            }
            a.active_at_ms =
                restored_active_at_ms(hold_ms, opts.for_grace_period_ms, ts_ms, s.t, s.v);
            tracing::debug!(alertname = %self.name, labels = %a.labels,
                active_at_ms = a.active_at_ms, "'for' state restored");
        }
        Ok(())
    }

    /// `ok`, `err` or `unknown` (not evaluated yet), and the last error.
    pub fn health(&self) -> (&'static str, Option<String>, i64, f64) {
        let h = self.health.lock();
        let (s, e) = match &h.last_error {
            None => ("unknown", None),
            Some(None) => ("ok", None),
            Some(Some(e)) => ("err", Some(e.clone())),
        };
        (s, e, h.last_eval_ms, h.eval_duration_s)
    }

    /// Active (pending or firing) alerts, sorted by labels.
    pub fn active_alerts(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> = self
            .alerts
            .lock()
            .values()
            .filter(|a| a.state != AlertState::Inactive)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        v
    }

    /// The alerts due to be sent at `ts_ms` in Alertmanager's API v2 shape,
    /// marked as sent.
    pub fn alerts_to_send(
        &self,
        ts_ms: i64,
        resend_delay_ms: i64,
        interval_ms: i64,
        external: &BTreeMap<String, String>,
    ) -> Vec<serde_json::Value> {
        let valid_until = ts_ms + 4 * interval_ms.max(resend_delay_ms);
        let mut out = Vec::new();
        for a in self.alerts.lock().values_mut() {
            if a.needs_sending(ts_ms, resend_delay_ms) {
                a.last_sent_ms = ts_ms;
                out.push(super::notifier::postable(
                    a,
                    &self.expr,
                    valid_until,
                    external,
                    &self.external_url,
                ));
            }
        }
        out
    }

    /// Every kept alert, resolved ones included, for the notifier.
    pub fn all_alerts(&self) -> Vec<Alert> {
        self.alerts.lock().values().cloned().collect()
    }

    /// The rule's state: the highest state of its alerts.
    pub fn state(&self) -> AlertState {
        let mut s = AlertState::Inactive;
        for a in self.alerts.lock().values() {
            match a.state {
                AlertState::Firing => return AlertState::Firing,
                AlertState::Pending => s = AlertState::Pending,
                AlertState::Inactive => {}
            }
        }
        s
    }

    fn query_vector(
        &self,
        engine: &Engine,
        q: &dyn Queryable,
        t_ms: i64,
    ) -> Result<Vec<(Labels, f64)>, String> {
        let res = engine
            .instant_query(q, &self.query, t_ms, None)
            .map_err(|e| e.to_string())?;
        vector_of(res.value)
    }

    /// Evaluates the rule at `ts_ms`, returning the samples to append.
    fn eval(
        &self,
        engine: &Engine,
        q: &dyn Queryable,
        ts_ms: i64,
        offset_ms: i64,
        limit: usize,
        external: &BTreeMap<String, String>,
    ) -> Result<Evaluated, String> {
        let vector = self.query_vector(engine, q, ts_ms - offset_ms)?;
        match &self.kind {
            RuleKind::Recording => {
                let mut out = Vec::with_capacity(vector.len());
                let mut seen = HashSet::new();
                for (metric, v) in vector {
                    let mut b: LabelsBuilder = metric.builder();
                    b.set("__name__", &self.name);
                    for (k, val) in &self.labels {
                        if val.is_empty() {
                            b.del(k);
                        } else {
                            b.set(k, val);
                        }
                    }
                    let l = b.build();
                    if !seen.insert(l.clone()) {
                        return Err("vector contains metrics with the same labelset after applying rule labels".into());
                    }
                    out.push((l, v));
                }
                if limit > 0 && out.len() > limit {
                    return Err(format!(
                        "exceeded limit of {limit} with {} series",
                        out.len()
                    ));
                }
                Ok((out, None))
            }
            RuleKind::Alerting {
                for_ms,
                keep_firing_for_ms,
                annotations,
            } => {
                // The `query` template function runs at the rule's query time.
                let query_ts_ms = ts_ms - offset_ms;
                let run_query = |text: &str| -> Result<Vec<(Labels, f64)>, String> {
                    let parsed = crate::promql::parse(text).map_err(|e| e.to_string())?;
                    let res = engine
                        .instant_query(q, &parsed, query_ts_ms, None)
                        .map_err(|e| e.to_string())?;
                    vector_of(res.value)
                };
                self.eval_alerting(
                    vector,
                    ts_ms,
                    *for_ms,
                    *keep_firing_for_ms,
                    annotations,
                    limit,
                    external,
                    &run_query,
                )
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn eval_alerting(
        &self,
        vector: Vec<(Labels, f64)>,
        ts_ms: i64,
        for_ms: i64,
        keep_firing_for_ms: i64,
        annotations: &BTreeMap<String, String>,
        limit: usize,
        external: &BTreeMap<String, String>,
        query: &template::QueryFn,
    ) -> Result<Evaluated, String> {
        let ext: BTreeMap<&str, &str> = external
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut current: HashMap<u64, Alert> = HashMap::new();
        let template_err: std::cell::RefCell<Option<String>> = std::cell::RefCell::new(None);
        for (metric, v) in vector {
            let data = TemplateData {
                labels: labels_map(&metric),
                external_labels: ext.clone(),
                external_url: &self.external_url,
                value: v,
            };
            // As in Prometheus, a template error shows in the expanded text; the
            // first one is also kept for the rule's health.
            let expand =
                |text: &str| match template::expand_alert(&self.name, text, &data, Some(query)) {
                    Ok(s) => s,
                    Err(e) => {
                        let msg = e.to_string();
                        template_err.borrow_mut().get_or_insert_with(|| msg.clone());
                        format!("<error expanding template: {msg}>")
                    }
                };
            let mut b = metric.builder();
            b.del("__name__");
            for (k, val) in &self.labels {
                let x = expand(val);
                if x.is_empty() {
                    b.del(k);
                } else {
                    b.set(k, &x);
                }
            }
            b.set("alertname", &self.name);
            let ann: BTreeMap<String, String> = annotations
                .iter()
                .map(|(k, t)| (k.clone(), expand(t)))
                .collect();
            let labels = b.build();
            let h = labels.stable_hash();
            if current.contains_key(&h) {
                return Err(
                    "vector contains metrics with the same labelset after applying alert labels"
                        .into(),
                );
            }
            current.insert(
                h,
                Alert {
                    labels,
                    annotations: ann,
                    state: AlertState::Pending,
                    value: v,
                    active_at_ms: ts_ms,
                    fired_at_ms: 0,
                    resolved_at_ms: 0,
                    keep_firing_since_ms: 0,
                    last_sent_ms: 0,
                },
            );
        }
        let mut active = self.alerts.lock();
        for (h, new) in current.iter() {
            match active.get_mut(h) {
                Some(a) if a.state != AlertState::Inactive => {
                    a.value = new.value;
                    a.annotations = new.annotations.clone();
                    a.labels = new.labels.clone();
                }
                _ => {
                    active.insert(*h, new.clone());
                }
            }
        }
        let restored = self.restored.load(Ordering::Relaxed);
        let mut out = Vec::new();
        let mut num_active = 0usize;
        let mut remove = Vec::new();
        for (h, a) in active.iter_mut() {
            if !current.contains_key(h) {
                let mut keep_firing = false;
                if a.state == AlertState::Firing && keep_firing_for_ms > 0 {
                    if a.keep_firing_since_ms == 0 {
                        a.keep_firing_since_ms = ts_ms;
                    }
                    if ts_ms - a.keep_firing_since_ms < keep_firing_for_ms {
                        keep_firing = true;
                    }
                }
                if a.state == AlertState::Pending
                    || (a.resolved_at_ms != 0 && ts_ms - a.resolved_at_ms > RESOLVED_RETENTION_MS)
                {
                    remove.push(*h);
                }
                if a.state != AlertState::Inactive && !keep_firing {
                    a.state = AlertState::Inactive;
                    a.resolved_at_ms = ts_ms;
                }
                if !keep_firing {
                    continue;
                }
            } else {
                a.keep_firing_since_ms = 0;
            }
            num_active += 1;
            if a.state == AlertState::Pending && ts_ms - a.active_at_ms >= for_ms {
                a.state = AlertState::Firing;
                a.fired_at_ms = ts_ms;
            }
            if !restored {
                continue;
            }
            let mut b = a.labels.builder();
            b.set("__name__", "ALERTS");
            b.set("alertstate", a.state.as_str());
            out.push((b.build(), 1.0));
            let mut b = a.labels.builder();
            b.set("__name__", "ALERTS_FOR_STATE");
            out.push((b.build(), (a.active_at_ms / 1000) as f64));
        }
        for h in remove {
            active.remove(&h);
        }
        if limit > 0 && num_active > limit {
            active.clear();
            return Err(format!(
                "exceeded limit of {limit} with {num_active} alerts"
            ));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((out, template_err.into_inner()))
    }
}
