//! The HTTP server: health and readiness, the server's own metrics, the remote-write
//! receiver, admin and lifecycle endpoints, and the Prometheus query API (`api`).

pub mod api;
pub mod clusterwide;
pub mod extras;

use crate::labels::Matcher;
use crate::remote::{self, WriteError};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Deletes samples of series matching any of the matcher sets in [start, end] ms.
pub type DeleteSeriesFn =
    Arc<dyn Fn(&[Vec<Matcher>], i64, i64) -> Result<(), String> + Send + Sync>;

/// Reloads the configuration; the error says why the new one was rejected.
pub type ReloadFn = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;
/// Renders the cluster's status (`GET /api/v1/status/cluster`) as JSON.
pub type ClusterStatusFn = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = serde_json::Value> + Send>>
        + Send
        + Sync,
>;

/// Shared state for HTTP handlers.
#[derive(Clone)]
pub struct WebState {
    /// Renders the server's own metrics in the text exposition format.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// Decodes remote-write requests and appends them (to the `Db`, or the
    /// replicated appender in cluster mode).
    pub remote_receiver: Arc<remote::Receiver>,
    /// Serves `POST /api/v1/write` (`--web.enable-remote-write-receiver`).
    pub remote_write_enabled: bool,
    /// Serves the admin API (`--web.enable-admin-api`) when set.
    pub delete_series: Option<DeleteSeriesFn>,
    /// Serves `POST /-/quit` (`--web.enable-lifecycle`) by cancelling this token.
    pub quit: Option<CancellationToken>,
    /// Serves `GET /api/v1/status/cluster` when set.
    pub cluster_status: Option<ClusterStatusFn>,
    /// Serves `POST /-/reload` (`--web.enable-lifecycle`) when set.
    pub reload: Option<ReloadFn>,
    /// Serves the query API (`/api/v1/query`, `query_range`, `series`, `labels`).
    pub query_api: Arc<api::QueryApi>,
}

impl axum::extract::FromRef<WebState> for Arc<api::QueryApi> {
    fn from_ref(s: &WebState) -> Arc<api::QueryApi> {
        s.query_api.clone()
    }
}

/// The router with every endpoint hearth serves.
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/-/healthy", get(|| async { "Healthy.\n" }))
        .route("/-/ready", get(|| async { "Ready.\n" }))
        .route("/-/quit", post(quit))
        .route("/-/reload", post(reload).put(reload))
        .route("/metrics", get(metrics))
        .route("/api/v1/write", post(remote_write))
        .route("/api/v1/admin/tsdb/delete_series", post(delete_series))
        .route("/api/v1/query", get(api::query).post(api::query))
        .route(
            "/api/v1/query_range",
            get(api::query_range).post(api::query_range),
        )
        .route("/api/v1/series", get(api::series).post(api::series))
        .route("/api/v1/labels", get(api::labels).post(api::labels))
        .route("/api/v1/label/{name}/values", get(api::label_values))
        .route("/api/v1/status/cluster", get(cluster_status))
        .with_state(state)
}

async fn metrics(State(s): State<WebState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        (s.metrics)(),
    )
}

async fn cluster_status(State(s): State<WebState>) -> Response {
    match s.cluster_status {
        Some(status) => {
            Json(serde_json::json!({"status": "success", "data": status().await})).into_response()
        }
        None => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "cluster status is not available".to_string(),
        ),
    }
}

async fn quit(State(s): State<WebState>) -> Response {
    match s.quit {
        Some(token) => {
            token.cancel();
            "Requesting termination... Goodbye!\n".into_response()
        }
        None => (StatusCode::FORBIDDEN, "Lifecycle API is not enabled.\n").into_response(),
    }
}

async fn reload(State(s): State<WebState>) -> Response {
    let Some(reload) = s.reload else {
        return (StatusCode::FORBIDDEN, "Lifecycle API is not enabled.\n").into_response();
    };
    match tokio::task::spawn_blocking(move || reload()).await {
        Ok(Ok(())) => StatusCode::OK.into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn remote_write(
    State(s): State<WebState>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    if !s.remote_write_enabled {
        return (
            StatusCode::NOT_FOUND,
            "remote write receiver needs to be enabled with --web.enable-remote-write-receiver\n",
        )
            .into_response();
    }
    // A value that is not text is passed on as one that matches nothing.
    let header = |name| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if let Err(m) = remote::negotiate(
        header(axum::http::header::CONTENT_TYPE),
        header(axum::http::header::CONTENT_ENCODING),
    ) {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, m + "\n").into_response();
    }
    let result = tokio::task::spawn_blocking(move || s.remote_receiver.write_body(&body)).await;
    match result {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(WriteError::BadRequest(m))) => (StatusCode::BAD_REQUEST, m + "\n").into_response(),
        Ok(Err(WriteError::Storage(m))) => {
            (StatusCode::INTERNAL_SERVER_ERROR, m + "\n").into_response()
        }
        Ok(Err(WriteError::Unavailable(m))) => {
            (StatusCode::SERVICE_UNAVAILABLE, m + "\n").into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Prometheus's JSON error envelope.
fn api_error(status: StatusCode, error_type: &str, msg: String) -> Response {
    (
        status,
        Json(serde_json::json!({"status": "error", "errorType": error_type, "error": msg})),
    )
        .into_response()
}

async fn delete_series(State(s): State<WebState>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let Some(delete) = s.delete_series else {
        return api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "admin APIs disabled".to_string(),
        );
    };
    // Parameters may come in the query string or a form body, as in Prometheus.
    let mut params: Vec<(String, String)> = form_pairs(q.as_deref().unwrap_or(""));
    params.extend(form_pairs(&String::from_utf8_lossy(&body)));
    let mut sets = Vec::new();
    let (mut start, mut end) = (i64::MIN, i64::MAX);
    for (k, v) in &params {
        match k.as_str() {
            "match[]" => match crate::labels::parse_selector(v) {
                Ok(ms) => sets.push(ms),
                Err(e) => return api_error(StatusCode::BAD_REQUEST, "bad_data", e.to_string()),
            },
            "start" | "end" => match parse_time_ms(v) {
                Some(t) if k == "start" => start = t,
                Some(t) => end = t,
                None => {
                    return api_error(
                        StatusCode::BAD_REQUEST,
                        "bad_data",
                        format!("invalid time value for '{k}': {v:?}"),
                    )
                }
            },
            _ => {}
        }
    }
    if sets.is_empty() {
        return api_error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "no match[] parameter provided".to_string(),
        );
    }
    let result = tokio::task::spawn_blocking(move || delete(&sets, start, end)).await;
    match result {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(m)) => api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", m),
        Err(e) => api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// Decodes `application/x-www-form-urlencoded` pairs (query strings and form
/// bodies), repeated keys kept in order.
pub fn form_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() && s.is_char_boundary(i + 3) => {
                match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Prometheus API time: Unix seconds with optional fraction, or RFC 3339 (not yet).
fn parse_time_ms(s: &str) -> Option<i64> {
    let secs: f64 = s.parse().ok()?;
    secs.is_finite().then(|| (secs * 1000.0).round() as i64)
}

/// `GET /api/v1/rules`, `GET /api/v1/alerts` and `GET /api/v1/alertmanagers`,
/// served from the rule manager;
/// merged into `router` by the server.
pub fn rules_router(rules: Arc<crate::rules::RuleManager>) -> Router {
    Router::new()
        .route("/api/v1/rules", get(list_rules))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alertmanagers", get(list_alertmanagers))
        .with_state(rules)
}

async fn list_rules(
    State(m): State<Arc<crate::rules::RuleManager>>,
    RawQuery(q): RawQuery,
) -> Response {
    let mut f = crate::rules::manager::RulesFilter::default();
    for (k, v) in form_pairs(q.as_deref().unwrap_or("")) {
        match k.as_str() {
            "type" => match v.as_str() {
                "" => {}
                "alert" | "record" => f.kind = Some(v),
                _ => {
                    return api_error(
                        StatusCode::BAD_REQUEST,
                        "bad_data",
                        format!("invalid query parameter type='{v}'"),
                    )
                }
            },
            "rule_name[]" => f.rule_names.push(v),
            "rule_group[]" => f.group_names.push(v),
            "file[]" => f.files.push(v),
            _ => {}
        }
    }
    Json(serde_json::json!({"status": "success", "data": m.rules_json(&f)})).into_response()
}

async fn list_alertmanagers(State(m): State<Arc<crate::rules::RuleManager>>) -> Response {
    Json(serde_json::json!({"status": "success", "data": m.alertmanagers_json()})).into_response()
}

async fn list_alerts(State(m): State<Arc<crate::rules::RuleManager>>) -> Response {
    Json(serde_json::json!({"status": "success", "data": m.alerts_json()})).into_response()
}
