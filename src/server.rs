//! Wiring: opens storage, starts the HTTP server and the background loops, and shuts
//! everything down in order. All components are connected here and nowhere else.

use crate::tsdb::db::{Db, DbOptions};
use axum::serve::ListenerExt as _;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the head is checked for a block to cut, and blocks for compaction.
const COMPACTION_INTERVAL: Duration = Duration::from_secs(60);

/// What `hearth` (the server) was started with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen_address: SocketAddr,
    pub storage_path: PathBuf,
    pub db: DbOptions,
    pub enable_admin_api: bool,
    pub enable_lifecycle: bool,
    pub enable_remote_write_receiver: bool,
    /// `--config.file`; without it, the embedded default config (scrape self).
    pub config_file: Option<PathBuf>,
    /// PromQL engine settings (`--query.*`).
    pub query: crate::promql::EngineOptions,
    /// The cluster this node is part of (a one-node cluster without cluster flags).
    pub cluster: crate::cluster::ClusterConfig,
    /// `--alertmanager.config.file`: run the built-in Alertmanager in this node,
    /// serving API v2 on the same listener, with its state under
    /// `<storage path>/alertmanager`.
    pub alertmanager_config: Option<PathBuf>,
    /// `--query.max-concurrency`: most queries evaluated at once.
    pub query_max_concurrency: usize,
    /// `--rules.alert.*`: restoring `for` state and resending alerts.
    pub rules: crate::rules::manager::RuleOptions,
    /// Every server flag and its value as given, for `/api/v1/status/flags`.
    pub flags: Vec<(String, String)>,
}

/// The rule manager's options: the flags, and the built-in Alertmanager (reached
/// over this node's own listener) when it runs here.
fn rule_options(cfg: &ServerConfig) -> crate::rules::manager::RuleOptions {
    let mut opts = cfg.rules.clone();
    if cfg.alertmanager_config.is_some() {
        let mut addr = cfg.listen_address;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        opts.builtin_alertmanager_url = Some(format!("http://{addr}/api/v2/alerts"));
    }
    opts
}

/// The server failed to start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    // The source is printed after the message by the error chain (`{:#}`).
    #[error("opening storage at {path}")]
    Storage {
        path: String,
        source: crate::tsdb::TsdbError,
    },
    #[error("listening on {address}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Alertmanager(String),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("loading rule files: {0}")]
    Rules(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Loads the configuration file, or the embedded default that scrapes this server.
fn load_config(cfg: &ServerConfig) -> Result<crate::config::Config, crate::config::ConfigError> {
    match &cfg.config_file {
        Some(path) => crate::config::Config::load_file(path),
        None => Ok(crate::config::Config::default_for_self(
            cfg.listen_address.port(),
        )),
    }
}

/// What the API shows of a loaded configuration: the file's text (or the embedded
/// default's) and its external labels.
fn config_view(
    cfg: &ServerConfig,
    loaded: &crate::config::Config,
) -> crate::web::extras::ConfigView {
    let yaml = match &cfg.config_file {
        // The file was just read and size-checked by `load_config`.
        Some(path) => std::fs::read_to_string(path).unwrap_or_default(),
        None => crate::config::Config::default_text_for_self(cfg.listen_address.port()),
    };
    crate::web::extras::ConfigView {
        yaml,
        external_labels: loaded.global.external_labels.clone(),
        reload_success: true,
        last_config_time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
    }
}

/// The outcome of the last configuration (re)load, for `/metrics`.
#[derive(Default)]
struct ReloadStatus {
    successful: std::sync::atomic::AtomicBool,
    success_timestamp_s: std::sync::atomic::AtomicI64,
}

impl ReloadStatus {
    fn record(&self, ok: bool) {
        self.successful.store(ok, Ordering::Relaxed);
        if ok {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            self.success_timestamp_s.store(now, Ordering::Relaxed);
        }
    }
}

/// Runs the server until `shutdown` is cancelled, then flushes storage.
pub async fn run(cfg: ServerConfig, shutdown: CancellationToken) -> Result<(), ServerError> {
    let path = cfg.storage_path.clone();
    let db_opts = cfg.db.clone();
    let db = tokio::task::spawn_blocking(move || Db::open(&path, db_opts))
        .await
        .map_err(std::io::Error::other)?
        .map_err(|source| ServerError::Storage {
            path: cfg.storage_path.display().to_string(),
            source,
        })?;
    let db = Arc::new(db);
    tracing::info!(path = %cfg.storage_path.display(), "TSDB started");

    // In cluster mode every append goes through this node's WAL group, and the
    // local storage other members read is every group replica this node holds.
    let networked = cfg.cluster.listen_address.is_some();
    let groups = networked.then(|| {
        crate::cluster::raft::group::WalGroups::new(
            &cfg.cluster.dir.join("groups"),
            cfg.cluster.node_id,
            cfg.cluster.raft.clone(),
            cfg.db.clone(),
        )
    });
    if let Some(g) = &groups {
        // Data from before cluster mode: other members' reads cannot get it from
        // another replica, so they warn when this node fails unless there is none.
        g.set_own_storage_empty(db.blocks().is_empty() && db.head().num_series() == 0);
    }
    let local_groups = groups
        .as_ref()
        .map(|g| crate::cluster::replication::LocalGroups::new(g.clone(), db.clone()));
    let local: Arc<dyn crate::storage::Queryable> = match &local_groups {
        Some(l) => Arc::new(l.clone()),
        None => db.clone(),
    };

    // The cluster starts before anything else runs, so a node that must not join
    // (another cluster's data directory, a duplicate id) stops with storage untouched.
    let started = crate::cluster::Cluster::start(
        cfg.cluster.clone(),
        local.clone(),
        local_groups
            .clone()
            .map(|l| Arc::new(l) as Arc<dyn crate::cluster::query_service::GroupedStorage>),
        groups.clone(),
        shutdown.clone(),
    )
    .await;
    let started = match (started, &groups) {
        // A restart: every group replays its log into its TSDB.
        (Ok(c), Some(g)) => g
            .open_existing()
            .await
            .map(|()| c)
            .map_err(crate::cluster::ClusterError::Raft),
        (r, _) => r,
    };
    let cluster = match started {
        Ok(c) => c,
        Err(e) => {
            if let Some(g) = &groups {
                g.shutdown().await;
            }
            let closing = db.clone();
            let _ = tokio::task::spawn_blocking(move || closing.close()).await;
            return Err(e.into());
        }
    };
    let mut commit_stats = None;
    // What the other members hold, relayed by the meta leader or asked by the
    // reconciler; the fan-out plans its reads with it.
    let directory = cluster.directory().clone();
    let appendable: Arc<dyn crate::storage::Appendable> = match &groups {
        Some(g) => {
            tokio::spawn(crate::cluster::replication::run_group_setup(
                cluster.clone(),
                g.clone(),
                cfg.cluster.replication_factor,
                shutdown.clone(),
            ));
            tokio::spawn(crate::cluster::repair::run_reconciler(
                cluster.clone(),
                g.clone(),
                directory.clone(),
                cfg.cluster.replication_factor,
                shutdown.clone(),
            ));
            let replicated = crate::cluster::replication::ReplicatedAppendable::new(
                g.clone(),
                cfg.cluster.node_id,
                crate::cluster::replication::COMMIT_TIMEOUT,
            );
            commit_stats = Some(replicated.stats());
            Arc::new(replicated)
        }
        None => db.clone(),
    };

    // Every reader (PromQL, the API, /federate, rules) reads the whole cluster; a
    // node without cluster flags reads its own storage directly. Each WAL group is
    // read from one replica (this node's when it holds one that is not behind its
    // leader), so a node holding a replica of every group answers from them alone.
    let queryable: Arc<dyn crate::storage::Queryable> = match &local_groups {
        Some(held) => {
            let (held, c, directory) = (held.clone(), cluster.clone(), directory.clone());
            let peers: crate::cluster::PeersFn = Arc::new(move || {
                let (peers, members) = c.peers_and_members();
                directory.plan_read(peers, &held.held_applied(), &members)
            });
            Arc::new(crate::cluster::FanoutQueryable::new(
                local.clone(),
                peers,
                cfg.cluster.fanout,
            ))
        }
        None => db.clone(),
    };

    // Scraping: a bad config at startup is fatal, as in Prometheus; on reload the
    // old config stays. Every node runs every target and rule group; the cluster's
    // assignment (the same on every node) says which ones this node does, and
    // gives every node the same scrape seed (derived from the cluster id).
    let initial = load_config(&cfg)?;
    let mut ownership = cluster.assignment() as Arc<dyn crate::cluster::Ownership>;
    if cfg.config_file.is_none() {
        // The embedded default config scrapes this node itself: every node has its
        // own such target, so it is not shared out by the ring.
        let prefix = initial
            .scrape_configs
            .iter()
            .map(|sc| sc.job_name.as_bytes().to_vec())
            .collect();
        ownership = Arc::new(OwnJobs {
            inner: ownership,
            jobs: prefix,
        });
    }
    let scrape_manager = Arc::new(crate::scrape::ScrapeManager::with_ownership(
        appendable.clone(),
        ownership.clone(),
    ));
    scrape_manager.apply_config(&initial);
    let rule_manager = Arc::new(
        crate::rules::RuleManager::with_options(
            queryable.clone(),
            appendable.clone(),
            crate::promql::Engine::new(cfg.query.clone()),
            rule_options(&cfg),
        )
        .with_ownership(ownership),
    );
    rule_manager
        .apply_config(&initial)
        .map_err(|e| ServerError::Rules(e.to_string()))?;
    let start_time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let shown_config = Arc::new(parking_lot::RwLock::new(config_view(&cfg, &initial)));
    let reload_status = Arc::new(ReloadStatus::default());
    reload_status.record(true);
    let reload: crate::web::ReloadFn = {
        let cfg = cfg.clone();
        let manager = scrape_manager.clone();
        let rules = rule_manager.clone();
        let status = reload_status.clone();
        let shown = shown_config.clone();
        let rt = tokio::runtime::Handle::current();
        Arc::new(move || {
            let result = load_config(&cfg).map_err(|e| e.to_string());
            // Rules load first: a bad rule file rejects the whole reload, as in
            // Prometheus, and leaves scraping untouched.
            let result = result.and_then(|new| {
                let _guard = rt.enter();
                rules.apply_config(&new).map_err(|e| e.to_string())?;
                Ok(new)
            });
            match &result {
                Ok(new) => {
                    let _guard = rt.enter();
                    manager.apply_config(new);
                    *shown.write() = config_view(&cfg, new);
                    tracing::info!("completed loading of configuration file");
                }
                Err(e) => {
                    shown.write().reload_success = false;
                    tracing::error!(error = %e, "error reloading config; keeping the old one")
                }
            }
            status.record(result.is_ok());
            result.map(|_| ())
        })
    };
    let sighup = {
        let reload = reload.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::error!("cannot install the SIGHUP handler; reload by signal is off");
                return;
            };
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = hup.recv() => {}
                }
                let reload = reload.clone();
                let _ = tokio::task::spawn_blocking(move || reload()).await;
            }
        })
    };

    let compactor = {
        let db = db.clone();
        let groups = groups.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(COMPACTION_INTERVAL);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                // The node's own TSDB, then each WAL group's: blocks are cut from
                // each group's head like from any head.
                let mut dbs = vec![db.clone()];
                if let Some(g) = &groups {
                    dbs.extend(g.all().iter().map(|g| g.db().clone()));
                }
                for db in dbs {
                    match tokio::task::spawn_blocking(move || db.compact()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::error!(error = %e, "compaction failed"),
                        Err(e) => tracing::error!(error = %e, "compaction task panicked"),
                    }
                }
            }
        })
    };

    let cluster_task = {
        let (cluster, shutdown) = (cluster.clone(), shutdown.clone());
        tokio::spawn(async move {
            let result = cluster.run(shutdown.clone()).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "cluster failed; stopping");
                shutdown.cancel();
            }
            result
        })
    };

    // The built-in Alertmanager starts before the web state so that /metrics
    // includes its notification metrics.
    let builtin_am = match &cfg.alertmanager_config {
        Some(file) => Some(
            start_builtin_alertmanager(file, &cfg.storage_path, &cfg.rules.external_url, &shutdown)
                .await?,
        ),
        None => None,
    };
    let metrics_am = builtin_am.as_ref().map(|(am, _)| am.clone());
    let metrics_db = db.clone();
    let metrics_reload = reload_status.clone();
    let metrics_rules = rule_manager.clone();
    let metrics_groups = groups.clone();
    let delete_db = db.clone();
    let delete_series: crate::web::DeleteSeriesFn = Arc::new(move |sets, start, end| {
        for ms in sets {
            delete_db
                .delete(ms, start, end)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    let state = crate::web::WebState {
        metrics: Arc::new(move || {
            let mut out =
                render_metrics(&metrics_db, &metrics_reload) + &metrics_rules.render_metrics();
            if let Some(g) = &metrics_groups {
                out.push_str(&g.render_metrics());
            }
            if let Some(c) = &commit_stats {
                out.push_str(&c.render());
            }
            if let Some(am) = &metrics_am {
                out.push_str(&am.render_metrics());
            }
            out
        }),
        remote_receiver: Arc::new(crate::remote::Receiver::new(appendable.clone())),
        remote_write_enabled: cfg.enable_remote_write_receiver,
        delete_series: cfg.enable_admin_api.then_some(delete_series),
        quit: cfg.enable_lifecycle.then(|| shutdown.clone()),
        reload: cfg.enable_lifecycle.then(|| reload.clone()),
        query_api: Arc::new(crate::web::api::QueryApi {
            queryable: queryable.clone(),
            engine: crate::promql::Engine::new(cfg.query.clone()),
        }),
        cluster_status: Some({
            let cluster = cluster.clone();
            let scrape = scrape_manager.clone();
            Arc::new(move || {
                let (cluster, scrape) = (cluster.clone(), scrape.clone());
                Box::pin(async move {
                    let mut status = cluster.status(true).await;
                    let now_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0);
                    status.count_owned_targets(
                        &cluster.assignment().get(),
                        &scrape.target_keys(),
                        now_ms,
                    );
                    serde_json::to_value(status).unwrap_or_default()
                })
            })
        }),
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen_address)
        .await
        .map_err(|source| ServerError::Listen {
            address: cfg.listen_address,
            source,
        })?;
    let extras = Arc::new(crate::web::extras::Extras {
        queryable: queryable.clone(),
        lookback_delta_ms: cfg.query.lookback_delta_ms,
        config: shown_config.clone(),
        flags: cfg.flags.clone(),
        start_time_ms,
        storage_retention: crate::web::extras::format_duration_ms(cfg.db.retention_ms),
        targets: Some({
            let manager = scrape_manager.clone();
            Arc::new(move || (manager.active_targets(), manager.dropped_targets()))
        }),
        clean_tombstones: cfg.enable_admin_api.then(|| {
            let db = db.clone();
            Arc::new(move || db.clean_tombstones().map_err(|e| e.to_string()))
                as crate::web::extras::CleanTombstonesFn
        }),
        head_stats: Some({
            let db = db.clone();
            Arc::new(move || {
                let head = db.head();
                crate::web::extras::HeadStats {
                    num_series: head.num_series() as u64,
                    min_time_ms: head.min_time(),
                    max_time_ms: head.max_time(),
                    chunk_count: None,
                }
            })
        }),
    });
    let query_slots = Arc::new(tokio::sync::Semaphore::new(
        cfg.query_max_concurrency.max(1),
    ));
    let mut app = crate::web::router(state)
        .merge(crate::web::rules_router(rule_manager.clone()))
        .merge(crate::web::extras::router(extras))
        .layer(axum::middleware::from_fn_with_state(
            query_slots,
            crate::web::extras::limit_query_concurrency,
        ));
    if cluster.is_networked() {
        let peers_of = cluster.clone();
        let cw = crate::web::clusterwide::ClusterWide::new(
            cluster.node_id(),
            Arc::new(move || peers_of.peers()),
            cluster.fanout_options(),
        );
        app = app.layer(axum::middleware::from_fn_with_state(
            Arc::new(cw),
            crate::web::clusterwide::cluster_wide,
        ));
    }
    let mut alertmanager_task = None;
    if let Some((am, task)) = builtin_am {
        app = app.merge(crate::alertmanager::api::router(am));
        alertmanager_task = Some(task);
    }
    tracing::info!(address = %cfg.listen_address, "listening");
    axum::serve(listener.tap_io(set_nodelay), app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await?;
    if let Some(task) = alertmanager_task {
        let _ = task.await;
    }
    shutdown.cancel();
    scrape_manager.stop();
    rule_manager.stop();
    let _ = sighup.await;
    let _ = compactor.await;
    let cluster_result = cluster_task.await.map_err(std::io::Error::other)?;
    if let Some(g) = &groups {
        g.shutdown().await;
    }
    let closing = db.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .map_err(std::io::Error::other)?
        .map_err(|source| ServerError::Storage {
            path: cfg.storage_path.display().to_string(),
            source,
        })?;
    tracing::info!("TSDB closed; bye");
    cluster_result?;
    Ok(())
}

/// The server's own metrics, with Prometheus's names where they exist.
fn render_metrics(db: &Db, reload: &ReloadStatus) -> String {
    let head = db.head();
    let s = &head.stats;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "prometheus_tsdb_head_series",
        "gauge",
        "Total number of series in the head block.",
        head.num_series() as f64,
    );
    metric(
        "prometheus_tsdb_head_samples_appended_total",
        "counter",
        "Total number of appended samples.",
        s.samples_appended.load(Ordering::Relaxed) as f64,
    );
    metric(
        "prometheus_tsdb_out_of_order_samples_total",
        "counter",
        "Total number of out of order samples ingestion failed attempts.",
        s.out_of_order_samples.load(Ordering::Relaxed) as f64,
    );
    metric(
        "prometheus_tsdb_out_of_bounds_samples_total",
        "counter",
        "Total number of out of bound samples ingestion failed attempts.",
        s.out_of_bounds_samples.load(Ordering::Relaxed) as f64,
    );
    metric(
        "prometheus_tsdb_head_series_created_total",
        "counter",
        "Total number of series created in the head",
        s.series_created.load(Ordering::Relaxed) as f64,
    );
    metric(
        "prometheus_tsdb_head_series_removed_total",
        "counter",
        "Total number of series removed in the head",
        s.series_removed.load(Ordering::Relaxed) as f64,
    );
    metric(
        "prometheus_tsdb_blocks_loaded",
        "gauge",
        "Number of currently loaded data blocks",
        db.blocks().len() as f64,
    );
    metric(
        "prometheus_config_last_reload_successful",
        "gauge",
        "Whether the last configuration reload attempt was successful.",
        if reload.successful.load(Ordering::Relaxed) {
            1.0
        } else {
            0.0
        },
    );
    metric(
        "prometheus_config_last_reload_success_timestamp_seconds",
        "gauge",
        "Timestamp of the last successful configuration reload.",
        reload.success_timestamp_s.load(Ordering::Relaxed) as f64,
    );
    out
}

/// Starts the Alertmanager inside a hearth node, its state under
/// `<storage_path>/alertmanager`, its notifications carrying the node's
/// `--web.external-url`; returns it and its maintenance task.
async fn start_builtin_alertmanager(
    file: &std::path::Path,
    storage_path: &std::path::Path,
    external_url: &str,
    shutdown: &CancellationToken,
) -> Result<
    (
        Arc<crate::alertmanager::Alertmanager>,
        tokio::task::JoinHandle<()>,
    ),
    ServerError,
> {
    use crate::alertmanager::{self, Alertmanager};
    let config = alertmanager::config::load_file(file)
        .map_err(|e| ServerError::Alertmanager(e.to_string()))?;
    let dir = storage_path.join("alertmanager");
    std::fs::create_dir_all(&dir)?;
    let options = alertmanager::Options {
        storage_path: Some(dir),
        external_url: external_url.to_string(),
        ..Default::default()
    };
    let am = Alertmanager::start(config, options, alertmanager::types::Clock::system())
        .map_err(|e| ServerError::Alertmanager(e.to_string()))?;
    let task = tokio::spawn(am.clone().run(shutdown.clone()));
    tracing::info!(config = %file.display(), "built-in alertmanager started");
    Ok((am, task))
}

/// What `hearth alertmanager` (the Alertmanager alone) was started with; the flags
/// are Alertmanager's own.
#[derive(Debug, Clone)]
pub struct AlertmanagerServerConfig {
    pub config_file: PathBuf,
    pub listen_address: SocketAddr,
    pub options: crate::alertmanager::Options,
}

/// Runs the Alertmanager alone until `shutdown` is cancelled: API v2, health and
/// readiness, `/metrics`, and reload on SIGHUP or `POST /-/reload`.
pub async fn run_alertmanager(
    cfg: AlertmanagerServerConfig,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    use crate::alertmanager::{self, Alertmanager};
    use axum::routing::{get, post};
    let config = alertmanager::config::load_file(&cfg.config_file)
        .map_err(|e| ServerError::Alertmanager(e.to_string()))?;
    if let Some(dir) = &cfg.options.storage_path {
        std::fs::create_dir_all(dir)?;
    }
    let am = Alertmanager::start(
        config,
        cfg.options.clone(),
        alertmanager::types::Clock::system(),
    )
    .map_err(|e| ServerError::Alertmanager(e.to_string()))?;
    let runner = tokio::spawn(am.clone().run(shutdown.clone()));

    let reload = {
        let (am, file) = (am.clone(), cfg.config_file.clone());
        move || {
            let (am, file) = (am.clone(), file.clone());
            async move {
                let config = alertmanager::config::load_file(&file).map_err(|e| e.to_string())?;
                am.apply_config(config).await.map_err(|e| e.to_string())
            }
        }
    };
    {
        let reload = reload.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = hup.recv() => match reload().await {
                        Ok(()) => tracing::info!("alertmanager configuration reloaded"),
                        Err(e) => tracing::error!(error = %e, "alertmanager reload failed; keeping the old configuration"),
                    },
                }
            }
        });
    }
    let metrics_am = am.clone();
    let app = alertmanager::api::router(am.clone())
        .route("/-/healthy", get(|| async { "OK" }))
        .route("/-/ready", get(|| async { "OK" }))
        .route(
            "/metrics",
            get(move || {
                let am = metrics_am.clone();
                async move { am.render_metrics() }
            }),
        )
        .route(
            "/-/reload",
            post(move || {
                let reload = reload.clone();
                async move {
                    match reload().await {
                        Ok(()) => (axum::http::StatusCode::OK, String::new()),
                        Err(e) => (
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            format!("failed to reload config: {e}\n"),
                        ),
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(cfg.listen_address)
        .await
        .map_err(|source| ServerError::Listen {
            address: cfg.listen_address,
            source,
        })?;
    tracing::info!(address = %cfg.listen_address, "alertmanager listening");
    axum::serve(listener.tap_io(set_nodelay), app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await?;
    shutdown.cancel();
    let _ = runner.await;
    Ok(())
}

/// Owns every target of `jobs` on this node, and otherwise what `inner` says.
struct OwnJobs {
    inner: Arc<dyn crate::cluster::Ownership>,
    jobs: Vec<Vec<u8>>,
}

impl crate::cluster::Ownership for OwnJobs {
    fn owns(&self, key: &[u8], at_ms: i64) -> bool {
        // A target's key is its job, then 0xff before each label (Target::ring_key).
        let job = key.split(|b| *b == 0xff).next().unwrap_or_default();
        self.jobs.iter().any(|j| j == job) || self.inner.owns(key, at_ms)
    }

    fn scrape_seed(&self) -> Option<u64> {
        self.inner.scrape_seed()
    }
}

/// Answers go out as soon as they are written, without waiting for the ACK of an
/// earlier segment (Nagle's algorithm), as Go's HTTP server does for Prometheus:
/// a small answer written in parts (a streamed body) would otherwise wait for the
/// client's delayed ACK.
fn set_nodelay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "setting TCP_NODELAY on an HTTP connection");
    }
}
