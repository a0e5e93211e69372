//! Wiring: opens storage, starts the HTTP server and the background loops, and shuts
//! everything down in order. All components are connected here and nowhere else.

use crate::tsdb::db::{Db, DbOptions};
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
    /// The cluster this node is part of (a one-node cluster without cluster flags).
    pub cluster: crate::cluster::ClusterConfig,
}

/// The server failed to start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("opening storage at {path}: {source}")]
    Storage {
        path: String,
        source: crate::tsdb::TsdbError,
    },
    #[error("listening on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
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

    // The cluster starts before anything else runs, so a node that must not join
    // (another cluster's data directory, a duplicate id) stops with storage untouched.
    let cluster = match crate::cluster::Cluster::start(cfg.cluster.clone(), shutdown.clone()).await
    {
        Ok(c) => c,
        Err(e) => {
            let closing = db.clone();
            let _ = tokio::task::spawn_blocking(move || closing.close()).await;
            return Err(e.into());
        }
    };

    let compactor = {
        let db = db.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(COMPACTION_INTERVAL);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let db = db.clone();
                match tokio::task::spawn_blocking(move || db.compact()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "compaction failed"),
                    Err(e) => tracing::error!(error = %e, "compaction task panicked"),
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

    let metrics_db = db.clone();
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
        metrics: Arc::new(move || render_metrics(&metrics_db)),
        appendable: db.clone(),
        remote_write_enabled: cfg.enable_remote_write_receiver,
        delete_series: cfg.enable_admin_api.then_some(delete_series),
        quit: cfg.enable_lifecycle.then(|| shutdown.clone()),
        cluster_status: Some({
            let cluster = cluster.clone();
            Arc::new(move || {
                let cluster = cluster.clone();
                Box::pin(async move {
                    serde_json::to_value(cluster.status(true).await).unwrap_or_default()
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
    tracing::info!(address = %cfg.listen_address, "listening");
    axum::serve(listener, crate::web::router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await?;
    shutdown.cancel();
    let _ = compactor.await;
    let cluster_result = cluster_task.await.map_err(std::io::Error::other)?;
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
fn render_metrics(db: &Db) -> String {
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
    out
}
