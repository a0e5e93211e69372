//! The notifier: sends firing and resolved alerts to the Alertmanagers of the
//! config's `alerting.alertmanagers` (static targets, `scheme: http`, API v2) as
//! `POST {path_prefix}/api/v2/alerts`, through one bounded queue and one sender task.

use super::group::{Alert, AlertState};
use super::RulesError;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Batches waiting to be sent (`--alertmanager.notification-queue-capacity` is in
/// alerts in Prometheus; here a batch is one group evaluation's alerts).
const QUEUE_BATCHES_MAX: usize = 1000;
/// Most alerts in one request, as Prometheus's `maxBatchSize`.
const BATCH_ALERTS_MAX: usize = 256;
/// Default per-request timeout of an Alertmanager config.
const DEFAULT_TIMEOUT_MS: i64 = 10_000;
/// Default of how often alerts still firing are sent again (`--rules.alert.resend-delay`).
pub const RESEND_DELAY_MS: i64 = 60_000;

/// One Alertmanager endpoint: the full URL of its alerts API and the timeout.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub url: String,
    pub timeout_ms: i64,
}

/// The endpoints of `alerting.alertmanagers`; only static targets over http with
/// API v2 are supported, anything else is an error naming it.
pub fn endpoints(alerting: Option<&Json>) -> Result<Vec<Endpoint>, RulesError> {
    let bad = |m: String| RulesError::Eval(format!("alerting.alertmanagers: {m}"));
    let mut out = Vec::new();
    let Some(ams) = alerting.and_then(|a| a.get("alertmanagers")) else {
        return Ok(out);
    };
    let ams = ams.as_array().cloned().unwrap_or_default();
    for am in ams {
        let s = |k: &str| am.get(k).and_then(Json::as_str).map(str::to_string);
        let scheme = s("scheme").unwrap_or_else(|| "http".into());
        if scheme != "http" {
            return Err(bad(format!("scheme {scheme:?} is not supported yet")));
        }
        if let Some(v) = s("api_version") {
            if v != "v2" {
                return Err(bad(format!("api_version {v:?} is not supported")));
            }
        }
        let prefix = s("path_prefix").unwrap_or_default();
        let prefix = prefix.trim_end_matches('/');
        let timeout_ms = match s("timeout") {
            Some(t) => crate::config_units::parse_duration_ms(&t).map_err(bad)?,
            None => DEFAULT_TIMEOUT_MS,
        };
        for sc in am
            .get("static_configs")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default()
        {
            for t in sc
                .get("targets")
                .and_then(Json::as_array)
                .cloned()
                .unwrap_or_default()
            {
                let Some(t) = t.as_str() else {
                    return Err(bad(format!("target {t} is not a string")));
                };
                out.push(Endpoint {
                    url: format!("{scheme}://{t}{prefix}/api/v2/alerts"),
                    timeout_ms,
                });
            }
        }
    }
    Ok(out)
}

/// Sends alert batches to the current endpoints.
pub struct Notifier {
    tx: tokio::sync::mpsc::Sender<Vec<Json>>,
    endpoints: Arc<Mutex<Vec<Endpoint>>>,
    /// Alerts dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Requests that failed.
    pub errors: Arc<AtomicU64>,
    /// Alerts sent successfully (counted once per endpoint).
    pub sent: Arc<AtomicU64>,
}

impl Notifier {
    /// Starts the sender task; must be called within a tokio runtime.
    pub fn start(cancel: tokio_util::sync::CancellationToken) -> Notifier {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Json>>(QUEUE_BATCHES_MAX);
        let endpoints: Arc<Mutex<Vec<Endpoint>>> = Arc::default();
        let (eps, errors, sent) = (
            endpoints.clone(),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let (errs2, sent2) = (errors.clone(), sent.clone());
        tokio::spawn(async move {
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            loop {
                let batch = tokio::select! {
                    _ = cancel.cancelled() => return,
                    b = rx.recv() => match b { Some(b) => b, None => return },
                };
                let targets = eps.lock().clone();
                for chunk in batch.chunks(BATCH_ALERTS_MAX) {
                    let body = Bytes::from(serde_json::to_vec(chunk).unwrap_or_default());
                    for ep in &targets {
                        let req = hyper::Request::post(ep.url.as_str())
                            .header("content-type", "application/json")
                            .header("user-agent", concat!("hearth/", env!("CARGO_PKG_VERSION")))
                            .body(Full::new(body.clone()));
                        let Ok(req) = req else {
                            errs2.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        let timeout = Duration::from_millis(ep.timeout_ms.max(1) as u64);
                        match tokio::time::timeout(timeout, client.request(req)).await {
                            Ok(Ok(resp)) if resp.status().is_success() => {
                                sent2.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            }
                            Ok(Ok(resp)) => {
                                errs2.fetch_add(1, Ordering::Relaxed);
                                tracing::error!(url = %ep.url, status = %resp.status(), "error sending alerts");
                            }
                            Ok(Err(e)) => {
                                errs2.fetch_add(1, Ordering::Relaxed);
                                tracing::error!(url = %ep.url, error = %e, "error sending alerts");
                            }
                            Err(_) => {
                                errs2.fetch_add(1, Ordering::Relaxed);
                                tracing::error!(url = %ep.url, "sending alerts timed out");
                            }
                        }
                    }
                }
            }
        });
        Notifier {
            tx,
            endpoints,
            dropped: AtomicU64::new(0),
            errors,
            sent,
        }
    }

    /// Replaces the endpoints (on config load).
    pub fn set_endpoints(&self, eps: Vec<Endpoint>) {
        *self.endpoints.lock() = eps;
    }

    /// Queues alerts; drops them (counted) when the queue is full.
    pub fn send(&self, alerts: Vec<Json>) {
        if alerts.is_empty() || self.endpoints.lock().is_empty() {
            return;
        }
        let n = alerts.len() as u64;
        if self.tx.try_send(alerts).is_err() {
            self.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }
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
        "generatorURL": format!("/graph?g0.expr={}&g0.tab=1", url_encode(expr)),
    })
}
