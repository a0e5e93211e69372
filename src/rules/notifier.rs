//! The notifier: sends firing and resolved alerts to the Alertmanagers of the
//! config's `alerting.alertmanagers` as Prometheus's notifier does.
//!
//! Each `alertmanagers` entry is an Alertmanager *set*: its static targets and
//! those its `file_sd_configs` read (the scrape discovery's `run_file_sd`) become
//! URLs through `relabel_configs` (over `__address__`, `__scheme__` and
//! `__alerts_path__`, which start as the target, the entry's `scheme` and
//! `path_prefix` + `/api/v2/alerts`). Alerts pass `alerting.alert_relabel_configs`
//! (after external labels were added) when they are queued, and each set's own
//! `alert_relabel_configs` when they are sent to it. One bounded queue of alerts
//! (`--alertmanager.notification-queue-capacity`) drops its oldest alerts when
//! full; one sender task takes batches from it and posts each batch to every
//! Alertmanager at once, with the set's credentials and `tls_config` (the scrape
//! HTTP client's, `scrape::HttpClient`). The `prometheus_notifications_*` metrics
//! keep Prometheus 2.42's names and meanings.

use super::group::{Alert, AlertState};
use super::RulesError;
use crate::config::{AlertingConfig, AlertmanagerConfig};
use crate::labels::Labels;
use crate::relabel::RelabelConfig;
use crate::scrape::HttpClient;
use hyper::body::Bytes;
use parking_lot::Mutex;
use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Default of `--alertmanager.notification-queue-capacity`, in alerts.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
/// Most alerts in one request, as Prometheus 2.42's `maxBatchSize`.
const BATCH_ALERTS_MAX: usize = 64;
/// Default of how often alerts still firing are sent again (`--rules.alert.resend-delay`).
pub const RESEND_DELAY_MS: i64 = 60_000;
/// The path of Alertmanager's API v2 alerts endpoint under `path_prefix`.
const ALERTS_PATH: &str = "/api/v2/alerts";
/// The label holding an Alertmanager's alerts path during relabeling.
pub const ALERTS_PATH_LABEL: &str = "__alerts_path__";

/// One `alertmanagers` entry: its config and the URLs of its targets after
/// relabeling.
#[derive(Debug, Clone)]
pub struct AlertmanagerSet {
    pub cfg: AlertmanagerConfig,
    pub urls: Vec<String>,
    /// Targets `relabel_configs` dropped, with their labels before relabeling.
    pub dropped: Vec<Labels>,
}

/// The Alertmanager sets of `alerting` from their static targets, as
/// Prometheus's `AlertmanagerFromGroup` builds them. Sets with `file_sd_configs`
/// get those targets once discovery reads them (`run_discovery`).
pub fn alertmanager_sets(alerting: &AlertingConfig) -> Result<Vec<AlertmanagerSet>, RulesError> {
    alerting
        .alertmanagers
        .iter()
        .enumerate()
        .map(|(i, cfg)| {
            let groups = crate::discovery::static_groups("alertmanager", &cfg.static_configs);
            alertmanager_set(i, cfg, &groups)
        })
        .collect()
}

/// One set from its discovered target groups: each target's labels over its
/// group's, with `__scheme__` and `__alerts_path__` set from the config, then
/// `relabel_configs`. Targets it drops are kept (with their labels before
/// relabeling) for `/api/v1/alertmanagers`; URLs are deduplicated as Prometheus
/// does.
pub fn alertmanager_set(
    index: usize,
    cfg: &AlertmanagerConfig,
    groups: &[crate::discovery::TargetGroup],
) -> Result<AlertmanagerSet, RulesError> {
    let mut set = AlertmanagerSet {
        cfg: cfg.clone(),
        urls: Vec::new(),
        dropped: Vec::new(),
    };
    let path = format!(
        "/{}{ALERTS_PATH}",
        cfg.path_prefix.as_deref().unwrap_or("").trim_matches('/')
    )
    .replace("//", "/");
    for group in groups {
        for target in &group.targets {
            let mut lb = crate::labels::LabelsBuilder::new();
            lb.set("__scheme__", cfg.scheme());
            lb.set(ALERTS_PATH_LABEL, &path);
            for l in group.labels.iter() {
                if target.get(l.name).is_empty() {
                    lb.set(l.name, l.value);
                }
            }
            for l in target.iter() {
                lb.set(l.name, l.value);
            }
            let before = lb.build();
            if !crate::relabel::process_builder(&mut lb, &cfg.relabel_configs) {
                set.dropped.push(before);
                continue;
            }
            let addr = lb.get("__address__").to_string();
            crate::config::check_target_address(&addr)
                .map_err(|e| RulesError::Eval(format!("alerting.alertmanagers[{index}]: {e}")))?;
            let url = format!(
                "{}://{addr}{}",
                lb.get("__scheme__"),
                lb.get(ALERTS_PATH_LABEL)
            );
            if !set.urls.contains(&url) {
                set.urls.push(url);
            }
        }
    }
    Ok(set)
}

/// The URL of a target dropped by `relabel_configs`, from its labels before
/// relabeling, as `/api/v1/alertmanagers` shows it.
pub fn dropped_url(labels: &Labels) -> String {
    format!(
        "{}://{}{}",
        labels.get("__scheme__"),
        labels.get("__address__"),
        labels.get(ALERTS_PATH_LABEL)
    )
}

/// Runs the `file_sd_configs` of every set of `alerting` (with its static
/// targets) until `stop`, replacing the set's Alertmanagers in `notifier` at each
/// change. A discovered target with a bad address leaves the set as it was.
pub fn run_discovery(
    notifier: Arc<Notifier>,
    alerting: &AlertingConfig,
    generation: u64,
    stop: tokio_util::sync::CancellationToken,
) {
    for (i, cfg) in alerting.alertmanagers.iter().enumerate() {
        if cfg.file_sd_configs.is_empty() {
            continue;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<crate::discovery::Update>(16);
        for (p, fsd) in cfg.file_sd_configs.iter().enumerate() {
            let (tx, fsd, stop) = (tx.clone(), fsd.clone(), stop.clone());
            tokio::spawn(crate::discovery::run_file_sd(p, fsd, tx, stop));
        }
        drop(tx);
        let (cfg, notifier, stop) = (cfg.clone(), notifier.clone(), stop.clone());
        tokio::spawn(async move {
            let statics = crate::discovery::static_groups("alertmanager", &cfg.static_configs);
            let mut by_provider: BTreeMap<usize, Vec<crate::discovery::TargetGroup>> =
                BTreeMap::new();
            loop {
                let update = tokio::select! {
                    _ = stop.cancelled() => return,
                    u = rx.recv() => match u { Some(u) => u, None => return },
                };
                by_provider.insert(update.provider, update.groups);
                let mut groups = statics.clone();
                groups.extend(by_provider.values().flatten().cloned());
                match alertmanager_set(i, &cfg, &groups) {
                    Ok(set) => notifier.replace_set(generation, i, set),
                    Err(e) => tracing::error!(error = %e, "alertmanager discovery"),
                }
            }
        });
    }
}

/// Per-Alertmanager counters, keyed by URL.
#[derive(Debug, Default, Clone)]
struct AmStats {
    /// Alerts in requests sent (successful or not), as Prometheus counts them.
    sent: u64,
    /// Failed requests.
    errors: u64,
    latency_sum_s: f64,
    latency_count: u64,
}

/// What the sender task and `send` share.
struct Shared {
    queue: Mutex<VecDeque<Json>>,
    capacity: usize,
    more: tokio::sync::Notify,
    sets: Mutex<Arc<Vec<AlertmanagerSet>>>,
    /// Bumped by `apply`, so that discovery of an older config changes nothing.
    generation: AtomicU64,
    /// `alerting.alert_relabel_configs`.
    relabel: Mutex<Arc<Vec<RelabelConfig>>>,
    client: HttpClient,
    /// Alerts dropped: queue overflow, or no Alertmanager took their batch.
    dropped: AtomicU64,
    stats: Mutex<BTreeMap<String, AmStats>>,
}

/// Sends alerts to the configured Alertmanagers.
pub struct Notifier {
    shared: Arc<Shared>,
}

impl Notifier {
    /// Starts the sender task with a queue of `capacity` alerts; must be called
    /// within a tokio runtime.
    pub fn start(capacity: usize, cancel: tokio_util::sync::CancellationToken) -> Notifier {
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            more: tokio::sync::Notify::new(),
            sets: Mutex::new(Arc::new(Vec::new())),
            generation: AtomicU64::new(0),
            relabel: Mutex::new(Arc::new(Vec::new())),
            client: HttpClient::new(),
            dropped: AtomicU64::new(0),
            stats: Mutex::new(BTreeMap::new()),
        });
        let s = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = s.more.notified() => {}
                }
                loop {
                    let batch: Vec<Json> = {
                        let mut q = s.queue.lock();
                        let n = q.len().min(BATCH_ALERTS_MAX);
                        q.drain(..n).collect()
                    };
                    if batch.is_empty() {
                        break;
                    }
                    let n = batch.len() as u64;
                    if !send_all(&s, batch).await {
                        s.dropped.fetch_add(n, Ordering::Relaxed);
                    }
                    if cancel.is_cancelled() {
                        return;
                    }
                }
            }
        });
        Notifier { shared }
    }

    /// Replaces the Alertmanager sets and the alert relabeling (on config load);
    /// returns the new config generation, for `replace_set`.
    pub fn apply(&self, sets: Vec<AlertmanagerSet>, alert_relabel: Vec<RelabelConfig>) -> u64 {
        let mut cur = self.shared.sets.lock();
        *cur = Arc::new(sets);
        *self.shared.relabel.lock() = Arc::new(alert_relabel);
        self.shared.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Replaces set `index` with what discovery found, unless a newer config
    /// was applied since `generation`.
    pub fn replace_set(&self, generation: u64, index: usize, set: AlertmanagerSet) {
        let mut cur = self.shared.sets.lock();
        if self.shared.generation.load(Ordering::Relaxed) != generation || index >= cur.len() {
            return;
        }
        let mut sets: Vec<AlertmanagerSet> = cur.iter().map(AlertmanagerSet::clone).collect();
        sets[index] = set;
        *cur = Arc::new(sets);
    }

    /// `GET /api/v1/alertmanagers`' `data`: the URLs of every set's
    /// Alertmanagers, and of the targets `relabel_configs` dropped.
    pub fn alertmanagers_json(&self) -> Json {
        let sets = self.shared.sets.lock().clone();
        let active: Vec<Json> = sets
            .iter()
            .flat_map(|s| s.urls.iter().map(|u| json!({ "url": u })))
            .collect();
        let dropped: Vec<Json> = sets
            .iter()
            .flat_map(|s| s.dropped.iter().map(|l| json!({ "url": dropped_url(l) })))
            .collect();
        json!({ "activeAlertmanagers": active, "droppedAlertmanagers": dropped })
    }

    /// How many Alertmanagers the sets hold.
    pub fn alertmanagers_discovered(&self) -> usize {
        self.shared.sets.lock().iter().map(|s| s.urls.len()).sum()
    }

    /// Relabels and queues alerts, dropping the oldest queued ones (counted) when
    /// the queue is full, as Prometheus does. Without any Alertmanager the alerts
    /// are dropped (and counted) at once, as Prometheus's sender would.
    pub fn send(&self, alerts: Vec<Json>) {
        if alerts.is_empty() {
            return;
        }
        if self.alertmanagers_discovered() == 0 {
            self.shared
                .dropped
                .fetch_add(alerts.len() as u64, Ordering::Relaxed);
            return;
        }
        let relabel = self.shared.relabel.lock().clone();
        let mut alerts: Vec<Json> = alerts
            .into_iter()
            .filter_map(|a| relabel_alert(a, &relabel))
            .collect();
        if alerts.is_empty() {
            return;
        }
        let cap = self.shared.capacity;
        if alerts.len() > cap {
            let d = alerts.len() - cap;
            alerts.drain(..d);
            self.shared.dropped.fetch_add(d as u64, Ordering::Relaxed);
            tracing::warn!(
                num_dropped = d,
                "alert batch larger than queue capacity, dropping alerts"
            );
        }
        {
            let mut q = self.shared.queue.lock();
            let over = (q.len() + alerts.len()).saturating_sub(cap);
            if over > 0 {
                q.drain(..over);
                self.shared
                    .dropped
                    .fetch_add(over as u64, Ordering::Relaxed);
                tracing::warn!(
                    num_dropped = over,
                    "alert notification queue full, dropping alerts"
                );
            }
            q.extend(alerts);
        }
        self.shared.more.notify_one();
    }

    /// The `prometheus_notifications_*` metrics in the text format.
    pub fn render_metrics(&self) -> String {
        let s = &self.shared;
        let stats = s.stats.lock().clone();
        let mut out = String::new();
        let per_am = |out: &mut String,
                      name: &str,
                      kind: &str,
                      help: &str,
                      f: &dyn Fn(&AmStats) -> String| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (url, st) in &stats {
                out.push_str(&f(st).replace(
                    "{L}",
                    &format!("{{alertmanager={}}}", crate::labels::quote(url)),
                ));
            }
        };
        per_am(
            &mut out,
            "prometheus_notifications_errors_total",
            "counter",
            "Total number of errors sending alert notifications.",
            &|st| format!("prometheus_notifications_errors_total{{L}} {}\n", st.errors),
        );
        per_am(
            &mut out,
            "prometheus_notifications_latency_seconds",
            "summary",
            "Latency quantiles for sending alert notifications.",
            &|st| {
                format!(
                    "prometheus_notifications_latency_seconds_sum{{L}} {}\nprometheus_notifications_latency_seconds_count{{L}} {}\n",
                    st.latency_sum_s, st.latency_count
                )
            },
        );
        per_am(
            &mut out,
            "prometheus_notifications_sent_total",
            "counter",
            "Total number of alerts sent.",
            &|st| format!("prometheus_notifications_sent_total{{L}} {}\n", st.sent),
        );
        let scalar = |out: &mut String, name: &str, kind: &str, help: &str, v: String| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        };
        scalar(
            &mut out,
            "prometheus_notifications_dropped_total",
            "counter",
            "Total number of alerts dropped due to errors when sending to Alertmanager.",
            s.dropped.load(Ordering::Relaxed).to_string(),
        );
        scalar(
            &mut out,
            "prometheus_notifications_queue_length",
            "gauge",
            "The number of alert notifications in the queue.",
            s.queue.lock().len().to_string(),
        );
        scalar(
            &mut out,
            "prometheus_notifications_queue_capacity",
            "gauge",
            "The capacity of the alert notifications queue.",
            s.capacity.to_string(),
        );
        scalar(
            &mut out,
            "prometheus_notifications_alertmanagers_discovered",
            "gauge",
            "The number of alertmanagers discovered and active.",
            self.alertmanagers_discovered().to_string(),
        );
        out
    }
}

/// Applies `rules` to an API v2 alert's labels; None when they drop it.
fn relabel_alert(mut alert: Json, rules: &[RelabelConfig]) -> Option<Json> {
    if rules.is_empty() {
        return Some(alert);
    }
    let pairs: Vec<(String, String)> = alert["labels"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let labels = crate::relabel::process(&Labels::from_pairs(&pairs), rules)?;
    let obj: serde_json::Map<String, Json> = labels
        .iter()
        .map(|l| (l.name.to_string(), json!(l.value)))
        .collect();
    alert["labels"] = Json::Object(obj);
    Some(alert)
}

/// Posts `batch` to every Alertmanager of every set at once; true when at least
/// one took it (Prometheus counts the batch as dropped otherwise).
async fn send_all(s: &Arc<Shared>, batch: Vec<Json>) -> bool {
    let sets = s.sets.lock().clone();
    let mut requests = tokio::task::JoinSet::new();
    for (i, set) in sets.iter().enumerate() {
        if set.urls.is_empty() {
            continue;
        }
        let alerts: Vec<Json> = batch
            .iter()
            .filter_map(|a| relabel_alert(a.clone(), &set.cfg.alert_relabel_configs))
            .collect();
        if alerts.is_empty() {
            continue;
        }
        let body = Bytes::from(serde_json::to_vec(&alerts).unwrap_or_default());
        for url in &set.urls {
            let (s, sets, url, body, n) = (
                s.clone(),
                sets.clone(),
                url.clone(),
                body.clone(),
                alerts.len(),
            );
            requests.spawn(async move {
                let cfg = &sets[i].cfg;
                let begin = Instant::now();
                let res = s
                    .client
                    .post(cfg.http_client(), &url, "application/json", body, cfg.timeout_ms())
                    .await;
                let ok = match res {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(alertmanager = %url, count = n, error = %e, "error sending alerts");
                        false
                    }
                };
                let mut stats = s.stats.lock();
                let st = stats.entry(url).or_default();
                st.sent += n as u64;
                st.latency_sum_s += begin.elapsed().as_secs_f64();
                st.latency_count += 1;
                if !ok {
                    st.errors += 1;
                }
                ok
            });
        }
    }
    let mut any = false;
    while let Some(r) = requests.join_next().await {
        any |= r.unwrap_or(false);
    }
    any
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An alert as Alertmanager's API v2 takes it, with external labels added under
/// the alert's own. `endsAt` is the resolve time, or `valid_until_ms` while firing.
pub fn postable(
    a: &Alert,
    expr: &str,
    valid_until_ms: i64,
    external: &BTreeMap<String, String>,
    external_url: &str,
) -> Json {
    let mut labels: serde_json::Map<String, Json> = external
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    for l in a.labels.iter() {
        labels.insert(l.name.to_string(), json!(l.value));
    }
    let ends = if a.state == AlertState::Inactive {
        a.resolved_at_ms
    } else {
        valid_until_ms
    };
    json!({
        "labels": labels,
        "annotations": a.annotations,
        "startsAt": rfc3339(a.fired_at_ms),
        "endsAt": rfc3339(ends),
        "generatorURL": format!("{external_url}/graph?g0.expr={}&g0.tab=1", url_encode(expr)),
    })
}
