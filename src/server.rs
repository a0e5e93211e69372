//! Wiring: opens storage, starts the HTTP server and shuts everything down in order.
//! All components are connected here and nowhere else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What `hearth` (the server) was started with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen_address: SocketAddr,
    pub storage_path: PathBuf,
}

/// Runs the server until `shutdown` is cancelled.
pub async fn run(cfg: ServerConfig, shutdown: CancellationToken) -> std::io::Result<()> {
    std::fs::create_dir_all(&cfg.storage_path)?;
    let state = crate::web::WebState {
        metrics: Arc::new(String::new),
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen_address).await?;
    tracing::info!(address = %cfg.listen_address, "listening");
    axum::serve(listener, crate::web::router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}
