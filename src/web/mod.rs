//! The HTTP server: health and readiness endpoints, the server's own metrics,
//! and (later) the Prometheus HTTP API.

use axum::routing::get;
use axum::Router;

/// Shared state for HTTP handlers.
#[derive(Clone)]
pub struct WebState {
    /// Renders the server's own metrics in the text exposition format.
    pub metrics: std::sync::Arc<dyn Fn() -> String + Send + Sync>,
}

/// The router with every endpoint hearth serves.
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/-/healthy", get(|| async { "Healthy.\n" }))
        .route("/-/ready", get(|| async { "Ready.\n" }))
        .route(
            "/metrics",
            get(
                |axum::extract::State(s): axum::extract::State<WebState>| async move {
                    (
                        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                        (s.metrics)(),
                    )
                },
            ),
        )
        .with_state(state)
}
