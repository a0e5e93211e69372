//! The rule manager: loads the config's rule files, runs each group on its own
//! tokio task at its interval (aligned to the group's stable offset), keeps
//! unchanged groups running across reloads, and renders `/api/v1/rules` and
//! `/api/v1/alerts`.
//!
//! In a cluster every node loads every group, but a group is evaluated only by the
//! node that owns it at each evaluation time (`cluster::Ownership`, keyed by
//! `group_key`), and the APIs show the groups this node owns now.

use super::group::{Alert, Group, GroupCounters, RestoreOptions, RuleKind};
use super::schedule::Schedule;
use super::{RuleGroups, RulesError};
use crate::clock::Clock;
use crate::cluster::{OwnAll, Ownership};
use crate::promql::Engine;
use crate::storage::{Appendable, Queryable};
use parking_lot::Mutex;
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What a group hands its due alerts to after each evaluation (Prometheus's
/// `NotifyFunc`): the alerts in Alertmanager's API v2 shape, possibly none. The
/// evaluation waits for the returned future, so a slow hook is a slow evaluation.
/// The default queues them on the notifier; tests capture them instead.
pub type NotifyFn =
    Arc<dyn Fn(Vec<Json>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// One running group: the group, and the token stopping its task.
struct Running {
    group: Arc<Group>,
    stop: CancellationToken,
}

/// The manager's settings from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleOptions {
    /// `--rules.alert.for-outage-tolerance` and `--rules.alert.for-grace-period`.
    pub restore: RestoreOptions,
    /// `--rules.alert.resend-delay`: least time between two sends of a firing alert.
    pub resend_delay_ms: i64,
    /// `--alertmanager.notification-queue-capacity`, in alerts.
    pub notification_queue_capacity: usize,
    /// `--web.external-url` without a trailing slash: `$externalURL` in templates
    /// and the base of alerts' `generatorURL`. Empty gives relative links.
    pub external_url: String,
    /// The built-in Alertmanager's API v2 alerts URL when it runs in this node
    /// (`--alertmanager.config.file`): alerts go there as well as to
    /// `alerting.alertmanagers`.
    pub builtin_alertmanager_url: Option<String>,
}

impl Default for RuleOptions {
    /// Prometheus's defaults: 1h, 10m and 1m.
    fn default() -> RuleOptions {
        RuleOptions {
            restore: RestoreOptions::default(),
            resend_delay_ms: super::notifier::RESEND_DELAY_MS,
            notification_queue_capacity: super::notifier::DEFAULT_QUEUE_CAPACITY,
            external_url: String::new(),
            builtin_alertmanager_url: None,
        }
    }
}

/// Runs rule groups against storage.
pub struct RuleManager {
    queryable: Arc<dyn Queryable>,
    appendable: Arc<dyn Appendable>,
    engine: Engine,
    /// Which groups this node evaluates when.
    ownership: Arc<dyn Ownership>,
    groups: Mutex<Vec<Running>>,
    /// Started with the first config.
    notifier: Arc<Mutex<Option<Arc<super::notifier::Notifier>>>>,
    /// Stops the notifier.
    stop_all: CancellationToken,
    options: RuleOptions,
    /// Set once the first config is applied: groups loaded later are not restored.
    started: std::sync::atomic::AtomicBool,
    /// Wall time, following tokio's clock.
    clock: Clock,
    /// Replaces the notifier when set (`with_notify`).
    notify: Option<NotifyFn>,
    /// Stops the Alertmanager discovery of the config applied last.
    discovery: Mutex<CancellationToken>,
}

/// A group's key on the cluster's ring: its file and name.
pub fn group_key(g: &Group) -> Vec<u8> {
    let mut key = Vec::with_capacity(g.file.len() + g.name.len() + 1);
    key.extend_from_slice(g.file.as_bytes());
    key.push(0xff);
    key.extend_from_slice(g.name.as_bytes());
    key
}

/// Loads every group of the given rule files.
pub fn load_groups(
    files: &[std::path::PathBuf],
    default_interval_ms: i64,
    external_labels: &BTreeMap<String, String>,
) -> Result<Vec<Group>, RulesError> {
    let mut out = Vec::new();
    for f in files {
        let shown = f.display().to_string();
        let rgs = RuleGroups::load_file(f)?;
        for def in &rgs.groups {
            out.push(Group::new(
                def,
                &shown,
                default_interval_ms,
                external_labels,
            )?);
        }
    }
    Ok(out)
}

impl RuleManager {
    /// A manager with no groups and Prometheus's default options; `apply_config`
    /// starts them.
    pub fn new(
        queryable: Arc<dyn Queryable>,
        appendable: Arc<dyn Appendable>,
        engine: Engine,
    ) -> RuleManager {
        RuleManager::with_options(queryable, appendable, engine, RuleOptions::default())
    }

    /// A manager with no groups and the given options.
    pub fn with_options(
        queryable: Arc<dyn Queryable>,
        appendable: Arc<dyn Appendable>,
        engine: Engine,
        options: RuleOptions,
    ) -> RuleManager {
        RuleManager {
            queryable,
            appendable,
            engine,
            ownership: Arc::new(OwnAll { seed: 0 }),
            groups: Mutex::new(Vec::new()),
            notifier: Arc::default(),
            stop_all: CancellationToken::new(),
            options,
            started: std::sync::atomic::AtomicBool::new(false),
            clock: Clock::system(),
            notify: None,
            discovery: Mutex::new(CancellationToken::new()),
        }
    }

    /// The same manager reading wall time from `clock`. Call before `apply_config`.
    pub fn with_clock(mut self, clock: Clock) -> RuleManager {
        self.clock = clock;
        self
    }

    /// The same manager handing due alerts to `notify` instead of the notifier
    /// (which still follows the config, for its metrics and the APIs). Call
    /// before `apply_config`.
    pub fn with_notify(mut self, notify: NotifyFn) -> RuleManager {
        self.notify = Some(notify);
        self
    }

    /// The same manager evaluating only the groups `ownership` gives this node.
    /// Call before `apply_config`.
    pub fn with_ownership(mut self, ownership: Arc<dyn Ownership>) -> RuleManager {
        self.ownership = ownership;
        self
    }

    /// Loads the config's rule files and (re)starts groups. Unchanged groups (same
    /// file, name, definition, interval and external labels) keep running with their
    /// state; others are replaced. On error nothing changes. Must be called within a
    /// tokio runtime.
    pub fn apply_config(&self, cfg: &crate::config::Config) -> Result<(), RulesError> {
        let files = super::rule_files(cfg.rule_file_patterns())?;
        let external = cfg.global.external_labels.clone();
        let new = load_groups(&files, cfg.global.evaluation_interval_ms(), &external)?;
        let mut sets = super::notifier::alertmanager_sets(&cfg.alerting)?;
        if let Some(url) = &self.options.builtin_alertmanager_url {
            sets.push(super::notifier::AlertmanagerSet {
                cfg: Default::default(),
                urls: vec![url.clone()],
                dropped: Vec::new(),
            });
        }
        {
            let mut n = self.notifier.lock();
            let n = n.get_or_insert_with(|| {
                Arc::new(super::notifier::Notifier::start(
                    self.options.notification_queue_capacity,
                    self.stop_all.clone(),
                ))
            });
            let generation = n.apply(sets, cfg.alerting.alert_relabel_configs.clone());
            let stop = self.stop_all.child_token();
            std::mem::replace(&mut *self.discovery.lock(), stop.clone()).cancel();
            super::notifier::run_discovery(n.clone(), &cfg.alerting, generation, stop);
        }
        let mut running = self.groups.lock();
        let mut old: Vec<Running> = std::mem::take(&mut *running);
        // Only the groups of the first config restore their alerts' `for` state.
        let first = !self
            .started
            .swap(true, std::sync::atomic::Ordering::Relaxed);
        for g in new {
            let g = g.with_external_url(&self.options.external_url);
            if first {
                g.mark_for_restore();
            }
            let same = old.iter().position(|r| {
                r.group.file == g.file
                    && r.group.name == g.name
                    && r.group.def == g.def
                    && r.group.interval_ms == g.interval_ms
                    && r.group.external_labels == g.external_labels
            });
            match same {
                Some(i) => running.push(old.swap_remove(i)),
                None => running.push(self.start(Arc::new(g))),
            }
        }
        for r in old {
            r.stop.cancel();
        }
        Ok(())
    }

    fn start(&self, group: Arc<Group>) -> Running {
        let stop = CancellationToken::new();
        let (g, token) = (group.clone(), stop.clone());
        let (q, a, engine) = (
            self.queryable.clone(),
            self.appendable.clone(),
            self.engine.clone(),
        );
        // Read at each evaluation: a reload may add Alertmanagers to a kept group.
        let notifier = self.notifier.clone();
        let options = self.options.clone();
        let ownership = self.ownership.clone();
        let clock = self.clock.clone();
        let notify = self.notify.clone();
        tokio::spawn(async move {
            let key = group_key(&g);
            // A fresh group's state is as good as a reset one.
            let mut owned = true;
            let mut schedule = Schedule::new(
                clock.clone(),
                g.interval_ms,
                g.eval_timestamp(clock.now_ms()),
            );
            let mut evaluations = 0u64;
            loop {
                let tick = tokio::select! {
                    _ = token.cancelled() => return,
                    t = schedule.next() => t,
                };
                if tick.missed > 0 {
                    g.add_missed(tick.missed);
                }
                let ts = tick.ts_ms;
                if !ownership.owns(&key, ts) {
                    // Another node evaluates it now; when it comes back here it
                    // starts afresh, without this node's stale alert states.
                    owned = false;
                    continue;
                }
                if !owned {
                    // Taken over from another node: restore the `for` state that
                    // node recorded in ALERTS_FOR_STATE, as after a restart.
                    g.forget_state();
                    g.mark_for_restore();
                    evaluations = 0;
                    owned = true;
                }
                evaluations += 1;
                let (g2, q2, a2, e2) = (g.clone(), q.clone(), a.clone(), engine.clone());
                if let Err(e) =
                    tokio::task::spawn_blocking(move || g2.eval(&e2, q2.as_ref(), a2.as_ref(), ts))
                        .await
                {
                    tracing::error!(group = %g.name, error = %e, "rule evaluation panicked");
                }
                let alerts = g.alerts_to_send(ts, options.resend_delay_ms);
                match &notify {
                    Some(f) => f(alerts).await,
                    None => {
                        let n = notifier.lock().clone();
                        if let Some(n) = n {
                            n.send(alerts);
                        }
                    }
                }
                // As Prometheus, restore after the second evaluation: by then
                // scrapes and recording rules have written fresh data, so the
                // alerts are those active now.
                if evaluations >= 2 && g.should_restore() {
                    let (g2, q2, now) = (g.clone(), q.clone(), clock.now_ms());
                    let restore = options.restore;
                    if let Err(e) = tokio::task::spawn_blocking(move || {
                        g2.restore_for_state(q2.as_ref(), now, &restore)
                    })
                    .await
                    {
                        tracing::error!(group = %g.name, error = %e, "restoring alerts panicked");
                    }
                }
            }
        });
        Running { group, stop }
    }

    /// Stops every group and the notifier.
    pub fn stop(&self) {
        self.stop_all.cancel();
        for r in self.groups.lock().drain(..) {
            r.stop.cancel();
        }
    }

    /// The running groups, in file and config order.
    pub fn groups(&self) -> Vec<Arc<Group>> {
        self.groups.lock().iter().map(|r| r.group.clone()).collect()
    }

    /// The groups this node evaluates now.
    pub fn owned_groups(&self) -> Vec<Arc<Group>> {
        let now = self.clock.now_ms();
        self.groups()
            .into_iter()
            .filter(|g| self.ownership.owns(&group_key(g), now))
            .collect()
    }

    /// Every group's `prometheus_rule_group_*` and `prometheus_rule_evaluation*`
    /// metrics in the text format, with Prometheus's names and `rule_group` label
    /// (`file;name`).
    /// The notifier's `prometheus_notifications_*` metrics come first.
    pub fn render_metrics(&self) -> String {
        let groups = self.groups();
        let rows: Vec<(String, &Group, GroupCounters, (i64, f64))> = groups
            .iter()
            .map(|g| {
                let key = crate::labels::quote(&format!("{};{}", g.file, g.name));
                (key, g.as_ref(), g.counters(), g.last_eval())
            })
            .collect();
        type Column = fn(&Group, &GroupCounters, (i64, f64)) -> String;
        let families: [(&str, &str, &str, Column); 9] = [
            (
                "prometheus_rule_evaluations_total",
                "counter",
                "Rule evaluations run.",
                |_, c, _| c.evaluations.to_string(),
            ),
            (
                "prometheus_rule_evaluation_failures_total",
                "counter",
                "Rule evaluations that failed.",
                |_, c, _| c.failures.to_string(),
            ),
            (
                "prometheus_rule_group_iterations_total",
                "counter",
                "Scheduled evaluations of the group, run or missed.",
                |g, c, _| (c.iterations + g.iterations_missed()).to_string(),
            ),
            (
                "prometheus_rule_group_iterations_missed_total",
                "counter",
                "Scheduled evaluations skipped because the group was still evaluating.",
                |g, _, _| g.iterations_missed().to_string(),
            ),
            (
                "prometheus_rule_group_interval_seconds",
                "gauge",
                "The group's evaluation interval.",
                |g, _, _| crate::promql::format_value(g.interval_ms as f64 / 1000.0),
            ),
            (
                "prometheus_rule_group_last_duration_seconds",
                "gauge",
                "How long the group's last evaluation took.",
                |_, _, (_, d)| crate::promql::format_value(d),
            ),
            (
                "prometheus_rule_group_last_evaluation_timestamp_seconds",
                "gauge",
                "When the group was last evaluated (-1 before the first time).",
                |_, _, (t, _)| {
                    if t == 0 {
                        "-1".into()
                    } else {
                        crate::promql::format_value(t as f64 / 1000.0)
                    }
                },
            ),
            (
                "prometheus_rule_group_last_evaluation_samples",
                "gauge",
                "Samples the group's rules returned in its last evaluation.",
                |_, c, _| c.last_samples.to_string(),
            ),
            (
                "prometheus_rule_group_rules",
                "gauge",
                "Rules in the group.",
                |g, _, _| g.rules.len().to_string(),
            ),
        ];
        let mut out = self
            .notifier
            .lock()
            .as_ref()
            .map(|n| n.render_metrics())
            .unwrap_or_default();
        for (name, kind, help, column) in families {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (key, g, c, last) in &rows {
                out.push_str(&format!(
                    "{name}{{rule_group={key}}} {}\n",
                    column(g, c, *last)
                ));
            }
        }
        out
    }
}

/// RFC 3339 time as Prometheus's JSON shows it; Go's zero time before any evaluation.
fn rfc3339(ms: i64) -> String {
    if ms == 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn map_json<'a>(it: impl Iterator<Item = (&'a str, &'a str)>) -> Json {
    Json::Object(
        it.map(|(k, v)| (k.to_string(), Json::String(v.to_string())))
            .collect(),
    )
}

/// One alert in Prometheus's API shape.
pub fn alert_json(a: &Alert) -> Json {
    let mut j = json!({
        "labels": map_json(a.labels.iter().map(|l| (l.name, l.value))),
        "annotations": map_json(a.annotations.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        "state": a.state.as_str(),
        "activeAt": rfc3339(a.active_at_ms),
        "value": format_e(a.value),
    });
    if a.keep_firing_since_ms != 0 {
        j["keepFiringSince"] = json!(rfc3339(a.keep_firing_since_ms));
    }
    j
}

/// Go's `strconv.FormatFloat(v, 'e', -1, 64)`.
fn format_e(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let e = format!("{v:e}");
    let (m, x) = e.split_once('e').unwrap_or((&e, "0"));
    let x: i32 = x.parse().unwrap_or(0);
    format!("{m}e{}{:02}", if x < 0 { '-' } else { '+' }, x.abs())
}

/// Filters of `GET /api/v1/rules`.
#[derive(Debug, Default, Clone)]
pub struct RulesFilter {
    /// `alert` or `record`; None for both.
    pub kind: Option<String>,
    pub rule_names: Vec<String>,
    pub group_names: Vec<String>,
    pub files: Vec<String>,
}

impl RuleManager {
    /// The `data` of `GET /api/v1/rules`.
    pub fn rules_json(&self, f: &RulesFilter) -> Json {
        let mut groups = Vec::new();
        for g in self.owned_groups() {
            if (!f.group_names.is_empty() && !f.group_names.contains(&g.name))
                || (!f.files.is_empty() && !f.files.contains(&g.file))
            {
                continue;
            }
            let mut rules = Vec::new();
            for r in &g.rules {
                if !f.rule_names.is_empty() && !f.rule_names.contains(&r.name) {
                    continue;
                }
                let (health, last_error, last_eval, dur_s) = r.health();
                let labels = map_json(r.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                let mut j = match &r.kind {
                    RuleKind::Recording => {
                        if f.kind.as_deref() == Some("alert") {
                            continue;
                        }
                        json!({"name": r.name, "query": r.expr, "labels": labels, "type": "recording"})
                    }
                    RuleKind::Alerting {
                        for_ms,
                        keep_firing_for_ms,
                        annotations,
                    } => {
                        if f.kind.as_deref() == Some("record") {
                            continue;
                        }
                        let alerts: Vec<Json> = r.active_alerts().iter().map(alert_json).collect();
                        json!({
                            "state": r.state().as_str(),
                            "name": r.name,
                            "query": r.expr,
                            "duration": *for_ms as f64 / 1000.0,
                            "keepFiringFor": *keep_firing_for_ms as f64 / 1000.0,
                            "labels": labels,
                            "annotations": map_json(annotations.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                            "alerts": alerts,
                            "type": "alerting",
                        })
                    }
                };
                j["health"] = json!(health);
                if let Some(e) = last_error {
                    j["lastError"] = json!(e);
                }
                j["evaluationTime"] = json!(dur_s);
                j["lastEvaluation"] = json!(rfc3339(last_eval));
                rules.push(j);
            }
            if rules.is_empty() && (!f.rule_names.is_empty() || f.kind.is_some()) {
                continue;
            }
            let (last, dur_s) = g.last_eval();
            groups.push(json!({
                "name": g.name,
                "file": g.file,
                "rules": rules,
                "interval": g.interval_ms as f64 / 1000.0,
                "limit": g.limit,
                "evaluationTime": dur_s,
                "lastEvaluation": rfc3339(last),
            }));
        }
        json!({ "groups": groups })
    }

    /// The `data` of `GET /api/v1/alertmanagers`: the notifier's Alertmanagers.
    pub fn alertmanagers_json(&self) -> Json {
        match self.notifier.lock().as_ref() {
            Some(n) => n.alertmanagers_json(),
            None => json!({ "activeAlertmanagers": [], "droppedAlertmanagers": [] }),
        }
    }

    /// The `data` of `GET /api/v1/alerts`: every pending or firing alert.
    pub fn alerts_json(&self) -> Json {
        let mut alerts = Vec::new();
        for g in self.owned_groups() {
            for r in &g.rules {
                alerts.extend(r.active_alerts().iter().map(alert_json));
            }
        }
        json!({ "alerts": alerts })
    }
}

impl Drop for RuleManager {
    fn drop(&mut self) {
        self.stop();
    }
}
