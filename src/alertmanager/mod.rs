//! hearth's Alertmanager: the same `alertmanager.yml`, routing, grouping,
//! inhibition, silences, notification log, webhook notifications and API v2 as
//! Prometheus's Alertmanager, for one node.
//!
//! `Alertmanager` holds the state that outlives a config (alerts, silences, the
//! notification log) and one `Dispatcher` + `Pipeline` per loaded config. The
//! state sits behind narrow APIs (`Silences`, `NotificationLog`, `AlertStore`) so
//! the cluster can later replace them with replicated state.

pub mod api;
pub mod config;
pub mod dispatch;
pub mod inhibit;
pub mod matchers;
pub mod nflog;
pub mod notify;
pub mod route;
pub mod silence;
pub mod template;
#[cfg(test)]
mod template_tests;
pub mod timeinterval;
pub mod types;

use config::Config;
use dispatch::{Dispatcher, Pipeline};
use inhibit::Inhibitor;
use nflog::NotificationLog;
use notify::NotifyMetrics;
use parking_lot::{Mutex, RwLock};
use route::RouteTree;
use silence::Silences;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use types::{add, Alert, Clock};

/// Most alerts held at once.
pub const ALERTS_MAX: usize = 1_000_000;
/// Alertmanager's default `--data.retention`.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(120 * 3600);
/// Alertmanager's default `--data.maintenance-interval`.
pub const DEFAULT_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// Something went wrong loading or persisting Alertmanager state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Options that come from the command line, not from `alertmanager.yml`.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--storage.path`: where silences and the notification log are snapshotted;
    /// `None` keeps them in memory only.
    pub storage_path: Option<PathBuf>,
    /// `--data.retention`: how long expired silences and log entries are kept.
    pub retention: Duration,
    /// `--data.maintenance-interval`: how often state is garbage-collected and
    /// snapshotted.
    pub maintenance_interval: Duration,
    /// `--web.external-url`, sent in notifications.
    pub external_url: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            storage_path: None,
            retention: DEFAULT_RETENTION,
            maintenance_interval: DEFAULT_MAINTENANCE_INTERVAL,
            external_url: String::new(),
        }
    }
}

/// Every alert received and not yet garbage-collected, by fingerprint.
pub struct AlertStore {
    alerts: Mutex<HashMap<u64, Alert>>,
}

impl AlertStore {
    fn new() -> AlertStore {
        AlertStore {
            alerts: Mutex::new(HashMap::new()),
        }
    }

    /// Stores an alert, merging it with a stored one whose activity overlaps
    /// (Alertmanager's provider `Put`); returns what was stored.
    fn put(&self, alert: Alert, now: jiff::Timestamp) -> Result<Alert, String> {
        let mut m = self.alerts.lock();
        let fp = alert.fingerprint();
        let alert = match m.get(&fp) {
            Some(old) => {
                let overlaps = (alert.ends_at > old.starts_at && alert.ends_at < old.ends_at)
                    || (alert.starts_at > old.starts_at && alert.starts_at < old.ends_at);
                if overlaps {
                    old.merge(&alert, now)
                } else {
                    alert
                }
            }
            None if m.len() >= ALERTS_MAX => {
                return Err(format!("too many alerts (at most {ALERTS_MAX})"))
            }
            None => alert,
        };
        m.insert(fp, alert.clone());
        Ok(alert)
    }

    /// All stored alerts.
    pub fn list(&self) -> Vec<Alert> {
        self.alerts.lock().values().cloned().collect()
    }

    /// Number of stored alerts.
    pub fn len(&self) -> usize {
        self.alerts.lock().len()
    }

    /// Whether no alert is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops alerts resolved before `now`.
    fn gc(&self, now: jiff::Timestamp) -> usize {
        let mut m = self.alerts.lock();
        let before = m.len();
        m.retain(|_, a| !a.resolved_at(now));
        before - m.len()
    }
}

/// One loaded config and what was built from it.
pub struct Loaded {
    pub config: Config,
    pub routes: Arc<RouteTree>,
    pub inhibitor: Arc<Inhibitor>,
    pub dispatcher: Arc<Dispatcher>,
}

/// A single-node Alertmanager.
pub struct Alertmanager {
    pub clock: Clock,
    pub options: Options,
    pub alerts: AlertStore,
    pub silences: Arc<Silences>,
    pub nflog: Arc<NotificationLog>,
    pub metrics: Arc<NotifyMetrics>,
    /// When this Alertmanager started (for `/api/v2/status`).
    pub started: jiff::Timestamp,
    loaded: RwLock<Arc<Loaded>>,
    client: notify::HttpClient,
}

/// Outcome of a batch of alerts posted.
#[derive(Debug, Default)]
pub struct PutResult {
    pub accepted: usize,
    /// One message per rejected alert.
    pub errors: Vec<String>,
}

impl Alertmanager {
    /// Starts an Alertmanager with a validated config, restoring silences and
    /// the notification log from `options.storage_path` when present.
    pub fn start(
        config: Config,
        options: Options,
        clock: Clock,
    ) -> Result<Arc<Alertmanager>, Error> {
        let silences = Arc::new(Silences::new(clock.clone(), options.retention));
        let nflog = Arc::new(NotificationLog::new(clock.clone(), options.retention));
        if let Some(dir) = &options.storage_path {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.display().to_string(),
                source,
            })?;
            restore(&dir.join("silences"), |d| silences.restore(d))?;
            restore(&dir.join("nflog"), |d| nflog.restore(d))?;
        }
        let metrics = Arc::new(NotifyMetrics::default());
        let client = notify::http_client();
        let loaded = build(
            &config, &options, &clock, &silences, &nflog, &metrics, &client,
        )?;
        let am = Arc::new(Alertmanager {
            started: clock.now(),
            clock,
            options,
            alerts: AlertStore::new(),
            silences,
            nflog,
            metrics,
            loaded: RwLock::new(loaded),
            client,
        });
        Ok(am)
    }

    /// The loaded config and what was built from it.
    pub fn loaded(&self) -> Arc<Loaded> {
        self.loaded.read().clone()
    }

    /// Applies a new config: a new dispatcher and inhibitor are built and fed
    /// every stored alert, then the old dispatcher stops (as Alertmanager does).
    pub async fn apply_config(&self, config: Config) -> Result<(), Error> {
        let new = build(
            &config,
            &self.options,
            &self.clock,
            &self.silences,
            &self.nflog,
            &self.metrics,
            &self.client,
        )?;
        for a in self.alerts.list() {
            new.inhibitor.observe(&a);
            new.dispatcher.process(&a);
        }
        new.dispatcher.start_maintenance();
        let old = std::mem::replace(&mut *self.loaded.write(), new);
        old.dispatcher.stop().await;
        Ok(())
    }

    /// Receives alerts as the API does: fills in missing start and end times
    /// (`resolve_timeout`), validates each, stores the valid ones and dispatches
    /// them. Invalid alerts are reported, valid ones are kept (best effort, like
    /// Alertmanager).
    pub fn put_alerts(&self, alerts: Vec<Alert>) -> PutResult {
        let now = self.clock.now();
        let loaded = self.loaded();
        let resolve_timeout = loaded.config.global().resolve_timeout();
        let mut res = PutResult::default();
        for mut a in alerts {
            a.updated_at = now;
            if types::is_zero(a.starts_at) {
                a.starts_at = if types::is_zero(a.ends_at) {
                    now
                } else {
                    a.ends_at
                };
            }
            if types::is_zero(a.ends_at) {
                a.timeout = true;
                a.ends_at = add(now, resolve_timeout);
            }
            if let Err(e) = a.validate() {
                res.errors.push(e);
                continue;
            }
            match self.alerts.put(a, now) {
                Ok(stored) => {
                    loaded.inhibitor.observe(&stored);
                    loaded.dispatcher.process(&stored);
                    res.accepted += 1;
                }
                Err(e) => res.errors.push(e),
            }
        }
        res
    }

    /// Garbage-collects resolved alerts, expired silences and log entries, and
    /// writes snapshots when a storage path is set.
    pub fn maintenance(&self) -> Result<(), Error> {
        let now = self.clock.now();
        self.alerts.gc(now);
        self.loaded().inhibitor.gc(now);
        self.silences.gc();
        self.nflog.gc();
        self.persist()
    }

    /// Writes the silences and notification log snapshots (atomically: a
    /// temporary file, fsync, rename).
    pub fn persist(&self) -> Result<(), Error> {
        let Some(dir) = &self.options.storage_path else {
            return Ok(());
        };
        write_atomic(&dir.join("silences"), &self.silences.snapshot())?;
        write_atomic(&dir.join("nflog"), &self.nflog.snapshot())
    }

    /// Runs maintenance every `maintenance_interval` until `cancel`, then once
    /// more, and stops the dispatcher.
    pub async fn run(self: Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        self.loaded().dispatcher.start_maintenance();
        let mut tick = tokio::time::interval(self.options.maintenance_interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.maintenance() {
                        tracing::error!(error = %e, "alertmanager maintenance failed");
                    }
                }
                _ = cancel.cancelled() => break,
            }
        }
        // Stop notifying first, so the final snapshot has every log entry.
        self.loaded().dispatcher.stop().await;
        if let Err(e) = self.maintenance() {
            tracing::error!(error = %e, "alertmanager final snapshot failed");
        }
    }

    /// Renders the notification metrics in the text exposition format.
    pub fn render_metrics(&self) -> String {
        let mut s = String::new();
        self.metrics.render(&mut s);
        s
    }
}

fn build(
    config: &Config,
    options: &Options,
    clock: &Clock,
    silences: &Arc<Silences>,
    nflog: &Arc<NotificationLog>,
    metrics: &Arc<NotifyMetrics>,
    client: &notify::HttpClient,
) -> Result<Arc<Loaded>, Error> {
    let root = config
        .route
        .as_ref()
        .ok_or_else(|| Error::Invalid("no routes provided".into()))?;
    let routes = Arc::new(RouteTree::new(root).map_err(Error::Invalid)?);
    let inhibitor = Arc::new(Inhibitor::new(&config.inhibit_rules).map_err(Error::Invalid)?);
    let mut receivers = HashMap::new();
    let global = config.global();
    for rc in &config.receivers {
        let (integrations, warnings) =
            notify::build_integrations(rc, &global).map_err(Error::Invalid)?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        receivers.insert(rc.name.clone(), integrations);
    }
    let templates = template::Templates::load(&config.dir, &config.templates)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let pipeline = Arc::new(Pipeline {
        templates,
        receivers,
        time_intervals: config.named_time_intervals(),
        inhibitor: inhibitor.clone(),
        silences: silences.clone(),
        nflog: nflog.clone(),
        clock: clock.clone(),
        client: client.clone(),
        metrics: metrics.clone(),
        external_url: options.external_url.clone(),
    });
    let dispatcher = Dispatcher::new(routes.clone(), pipeline);
    Ok(Arc::new(Loaded {
        config: config.clone(),
        routes,
        inhibitor,
        dispatcher,
    }))
}

fn restore(path: &Path, f: impl FnOnce(&[u8]) -> Result<usize, String>) -> Result<(), Error> {
    match std::fs::read(path) {
        Ok(data) => {
            let n = f(&data).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
            tracing::info!(path = %path.display(), entries = n, "restored alertmanager state");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// `hearth check alertmanager-config FILE`: loads and validates the file and
/// describes it as `amtool check-config` does.
pub fn check_config_file(path: &Path) -> Result<String, Error> {
    let cfg = config::load_file(path)?;
    RouteTree::new(
        cfg.route
            .as_ref()
            .ok_or_else(|| Error::Invalid("no routes provided".into()))?,
    )
    .map_err(Error::Invalid)?;
    Inhibitor::new(&cfg.inhibit_rules).map_err(Error::Invalid)?;
    template::Templates::load(&cfg.dir, &cfg.templates)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(format!(
        "Checking '{}'  SUCCESS\nFound:\n - global config\n - route\n - {} inhibit rules\n - {} receivers\n - {} templates\n",
        path.display(),
        cfg.inhibit_rules.len(),
        cfg.receivers.len(),
        cfg.templates.len()
    ))
}
