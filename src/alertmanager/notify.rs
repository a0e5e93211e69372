//! Receivers' integrations: Alertmanager's webhook message (version 4), email
//! over SMTP (`email.rs`, `smtp.rs`) and Slack-compatible webhooks (`slack.rs`),
//! the template data every templated field is rendered from (`render_field`),
//! and the per-integration metrics.
//!
//! Other receiver kinds are parsed and validated; a receiver that has them logs
//! that they are not sent yet.

mod data;
mod email;
mod http;
mod slack;
pub mod smtp;
mod webhook;

pub use data::{render_field, NotificationData};
pub use webhook::{go_string, webhook_body};

use super::config::{GlobalConfig, ReceiverConfig, WebhookConfig};
use super::nflog::ReceiverKey;
use super::types::{labels_string, Alert};
use crate::labels::Labels;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use jiff::Timestamp;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// Longest response body read from a receiver, in bytes (only for error text).
pub const RESPONSE_BODY_LEN_MAX: usize = 4096;

/// A notification attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{0}")]
    Retryable(String),
    #[error("{0}")]
    Permanent(String),
}

impl NotifyError {
    /// The same kind of error with its message rewritten.
    pub fn map(self, f: impl FnOnce(String) -> String) -> NotifyError {
        match self {
            NotifyError::Retryable(m) => NotifyError::Retryable(f(m)),
            NotifyError::Permanent(m) => NotifyError::Permanent(f(m)),
        }
    }
}

/// Most notifications one integration sends at the same time; further
/// aggregation groups wait for a free slot. Alertmanager has no such limit (every
/// group's flush sends at once); the cap bounds the memory and connections a
/// burst of groups flushing together takes.
pub const CONCURRENT_SENDS_MAX: usize = 32;

/// One integration of a receiver.
pub struct Integration {
    /// Its key in the notification log.
    pub key: ReceiverKey,
    /// Whether resolved alerts are sent to it.
    pub send_resolved: bool,
    kind: IntegrationKind,
    /// Slots for concurrent sends (`CONCURRENT_SENDS_MAX`).
    sends: tokio::sync::Semaphore,
}

enum IntegrationKind {
    Webhook {
        url: String,
        max_alerts: u64,
        timeout: Option<Duration>,
        poster: Box<http::Poster>,
    },
    Email(Box<email::Email>),
    Slack(Box<slack::Slack>),
}

/// What a notification carries besides the alerts.
pub struct NotifyContext<'a> {
    pub receiver: &'a str,
    pub group_key: &'a str,
    pub group_labels: &'a Labels,
    pub external_url: &'a str,
    pub now: Timestamp,
    /// The default templates and the config's `templates:` files.
    pub templates: &'a crate::alertmanager::template::Templates,
}

/// The HTTP(S) client all integrations share.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A new HTTP client for notifications: plain HTTP, or HTTPS verified against
/// the system's CA certificates.
pub fn http_client() -> HttpClient {
    use crate::scrape::tls;
    let tls_cfg = crate::config::TlsConfig::default();
    let cfg = tls::client_config("alertmanager", &tls_cfg, &tls::TlsMaterial::default())
        .unwrap_or_else(|e| {
            // Without system roots https receivers fail one by one with a clear
            // error; plain http ones keep working.
            tracing::warn!(error = %e, "no CA certificates for https receivers");
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports rustls's default protocol versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
        });
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let conn = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(cfg)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(conn)
}

/// Builds the integrations of one receiver, with the `global` defaults. Kinds
/// that do not send yet are reported in the returned warnings.
pub fn build_integrations(
    rc: &ReceiverConfig,
    global: &GlobalConfig,
) -> Result<(Vec<Integration>, Vec<String>), String> {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let key = |integration: &str, i: usize| ReceiverKey {
        group_name: rc.name.clone(),
        integration: integration.into(),
        idx: i as u32,
    };
    for (i, wh) in rc.webhook_configs.iter().enumerate() {
        out.push(webhook(rc, i, wh, global, &mut warnings)?);
    }
    for (i, ec) in rc.email_configs.iter().enumerate() {
        let e = email::Email::new(ec, global)
            .map_err(|e| format!("receiver {:?}: email_configs[{i}]: {e}", rc.name))?;
        out.push(Integration {
            key: key("email", i),
            send_resolved: ec.send_resolved,
            kind: IntegrationKind::Email(Box::new(e)),
            sends: send_slots(),
        });
    }
    for (i, sc) in rc.slack_configs.iter().enumerate() {
        let what = format!("receiver {:?}: slack_configs[{i}]", rc.name);
        let s = slack::Slack::new(sc, global).map_err(|e| format!("{what}: {e}"))?;
        let poster = http::Poster::new(
            sc.http_config.as_ref(),
            global.http_config.as_ref(),
            &what,
            &mut warnings,
        )?;
        let s = s.with_poster(poster);
        out.push(Integration {
            key: key("slack", i),
            send_resolved: sc.send_resolved,
            kind: IntegrationKind::Slack(Box::new(s)),
            sends: send_slots(),
        });
    }
    for (kind, n) in [
        ("pagerduty", rc.pagerduty_configs.len()),
        ("opsgenie", rc.opsgenie_configs.len()),
        ("msteams", rc.msteams_configs.len()),
        ("telegram", rc.telegram_configs.len()),
        ("discord", rc.discord_configs.len()),
    ] {
        if n > 0 {
            warnings.push(format!(
                "receiver {:?}: {kind} notifications are not sent by hearth yet",
                rc.name
            ));
        }
    }
    Ok((out, warnings))
}

fn webhook(
    rc: &ReceiverConfig,
    i: usize,
    wh: &WebhookConfig,
    global: &GlobalConfig,
    warnings: &mut Vec<String>,
) -> Result<Integration, String> {
    let url = match (&wh.url, &wh.url_file) {
        (Some(u), _) => u.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| format!("receiver {:?}: reading url_file {f}: {e}", rc.name))?
            .trim()
            .to_string(),
        (None, None) => return Err("one of url or url_file must be configured".into()),
    };
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(format!(
            "receiver {:?}: webhook URL {url:?}: only http:// and https:// URLs can be sent to",
            rc.name
        ));
    }
    Ok(Integration {
        key: ReceiverKey {
            group_name: rc.name.clone(),
            integration: "webhook".into(),
            idx: i as u32,
        },
        send_resolved: wh.send_resolved,
        kind: IntegrationKind::Webhook {
            url,
            max_alerts: wh.max_alerts,
            timeout: wh.timeout.map(|d| d.0).filter(|d| !d.is_zero()),
            poster: Box::new(http::Poster::new(
                wh.http_config.as_ref(),
                global.http_config.as_ref(),
                &format!("receiver {:?}: webhook_configs[{i}]", rc.name),
                warnings,
            )?),
        },
        sends: send_slots(),
    })
}

fn send_slots() -> tokio::sync::Semaphore {
    tokio::sync::Semaphore::new(CONCURRENT_SENDS_MAX)
}

impl Integration {
    /// The integration kind's name (`webhook`).
    pub fn name(&self) -> &str {
        &self.key.integration
    }

    /// Sends one notification, once one of the integration's
    /// `CONCURRENT_SENDS_MAX` send slots is free.
    pub async fn notify(
        &self,
        client: &HttpClient,
        ctx: &NotifyContext<'_>,
        alerts: &[Alert],
    ) -> Result<(), NotifyError> {
        // The semaphore is never closed, so acquiring only fails in theory.
        let _slot = self
            .sends
            .acquire()
            .await
            .map_err(|e| NotifyError::Retryable(format!("no send slot: {e}")))?;
        match &self.kind {
            IntegrationKind::Webhook {
                url,
                max_alerts,
                timeout,
                poster,
            } => {
                let body = webhook_body(ctx, alerts, *max_alerts);
                let send = poster.post(client, url, body);
                match timeout {
                    Some(t) => tokio::time::timeout(*t, send)
                        .await
                        .map_err(|_| NotifyError::Retryable(format!("POST {url}: timed out")))?,
                    None => send.await,
                }
            }
            IntegrationKind::Email(e) => e.notify(&NotificationData::new(ctx, alerts)).await,
            IntegrationKind::Slack(s) => {
                s.notify(client, &NotificationData::new(ctx, alerts)).await
            }
        }
    }
}

async fn post_json(
    client: &HttpClient,
    url: &str,
    body: Vec<u8>,
    authorization: Option<&str>,
) -> Result<(), NotifyError> {
    let mut req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("user-agent", concat!("hearth/", env!("CARGO_PKG_VERSION")));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| NotifyError::Permanent(format!("POST {url}: {e}")))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| NotifyError::Retryable(format!("POST {url}: {e}")))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    // Read a little of the body for the error message, no more.
    let mut text = String::new();
    if let Ok(Ok(collected)) =
        tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect()).await
    {
        let b = collected.to_bytes();
        text = String::from_utf8_lossy(&b[..b.len().min(RESPONSE_BODY_LEN_MAX)]).into_owned();
    }
    let msg = format!(
        "POST {url}: unexpected status code {}: {}",
        status.as_u16(),
        text.trim()
    );
    // Alertmanager retries server errors and gives up on client errors.
    if status.is_server_error() || status.as_u16() == 429 {
        Err(NotifyError::Retryable(msg))
    } else {
        Err(NotifyError::Permanent(msg))
    }
}

/// Integration kinds Alertmanager 0.25 exports metrics for before any
/// notification, so dashboards see zeros rather than nothing.
const PRESET_INTEGRATIONS: [&str; 10] = [
    "email",
    "pagerduty",
    "wechat",
    "pushover",
    "slack",
    "opsgenie",
    "webhook",
    "victorops",
    "sns",
    "telegram",
];

/// Upper bounds of `alertmanager_notification_latency_seconds`'s buckets.
pub const LATENCY_BUCKETS_SECONDS: [f64; 5] = [1.0, 5.0, 10.0, 15.0, 20.0];

/// Alertmanager's notification metrics per integration kind.
pub struct NotifyMetrics {
    inner: Mutex<BTreeMap<String, IntegrationCounters>>,
}

impl Default for NotifyMetrics {
    fn default() -> NotifyMetrics {
        let m = PRESET_INTEGRATIONS
            .iter()
            .map(|k| (k.to_string(), IntegrationCounters::default()))
            .collect();
        NotifyMetrics {
            inner: Mutex::new(m),
        }
    }
}

#[derive(Default, Clone)]
struct IntegrationCounters {
    /// Notifications (each possibly several attempts).
    notifications: u64,
    /// Notifications that failed after their last attempt.
    notifications_failed: u64,
    /// Attempts.
    requests: u64,
    requests_failed: u64,
    /// Cumulative count per latency bucket, then the sum and count.
    latency_buckets: [u64; LATENCY_BUCKETS_SECONDS.len()],
    latency_sum_seconds: f64,
    latency_count: u64,
}

impl NotifyMetrics {
    /// Records one attempt (a request to the receiver) and how long it took.
    pub fn observe_request(&self, integration: &str, ok: bool, latency: Duration) {
        let mut m = self.inner.lock();
        let c = m.entry(integration.to_string()).or_default();
        c.requests += 1;
        if !ok {
            c.requests_failed += 1;
        }
        let secs = latency.as_secs_f64();
        for (i, le) in LATENCY_BUCKETS_SECONDS.iter().enumerate() {
            if secs <= *le {
                c.latency_buckets[i] += 1;
            }
        }
        c.latency_sum_seconds += secs;
        c.latency_count += 1;
    }

    /// Records one notification, after its last attempt.
    pub fn observe_notification(&self, integration: &str, ok: bool) {
        let mut m = self.inner.lock();
        let c = m.entry(integration.to_string()).or_default();
        c.notifications += 1;
        if !ok {
            c.notifications_failed += 1;
        }
    }

    /// (notifications, failed notifications) for an integration kind.
    pub fn counts(&self, integration: &str) -> (u64, u64) {
        let m = self.inner.lock();
        m.get(integration)
            .map(|c| (c.notifications, c.notifications_failed))
            .unwrap_or((0, 0))
    }

    /// (requests, failed requests) for an integration kind.
    pub fn request_counts(&self, integration: &str) -> (u64, u64) {
        let m = self.inner.lock();
        m.get(integration)
            .map(|c| (c.requests, c.requests_failed))
            .unwrap_or((0, 0))
    }

    /// Appends the metrics in the text exposition format.
    pub fn render(&self, out: &mut String) {
        let m = self.inner.lock();
        let counter =
            |out: &mut String, name: &str, help: &str, f: &dyn Fn(&IntegrationCounters) -> u64| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for (k, c) in m.iter() {
                    let _ = writeln!(out, "{name}{{integration=\"{k}\"}} {}", f(c));
                }
            };
        counter(
            out,
            "alertmanager_notifications_total",
            "The total number of attempted notifications.",
            &|c| c.notifications,
        );
        counter(
            out,
            "alertmanager_notifications_failed_total",
            "The total number of failed notifications.",
            &|c| c.notifications_failed,
        );
        counter(
            out,
            "alertmanager_notification_requests_total",
            "The total number of attempted notification requests.",
            &|c| c.requests,
        );
        counter(
            out,
            "alertmanager_notification_requests_failed_total",
            "The total number of failed notification requests.",
            &|c| c.requests_failed,
        );
        out.push_str("# HELP alertmanager_notification_latency_seconds The latency of notifications in seconds.\n# TYPE alertmanager_notification_latency_seconds histogram\n");
        for (k, c) in m.iter() {
            for (le, n) in LATENCY_BUCKETS_SECONDS.iter().zip(c.latency_buckets) {
                let _ = writeln!(
                    out,
                    "alertmanager_notification_latency_seconds_bucket{{integration=\"{k}\",le=\"{le}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "alertmanager_notification_latency_seconds_bucket{{integration=\"{k}\",le=\"+Inf\"}} {}",
                c.latency_count
            );
            let _ = writeln!(
                out,
                "alertmanager_notification_latency_seconds_sum{{integration=\"{k}\"}} {}",
                c.latency_sum_seconds
            );
            let _ = writeln!(
                out,
                "alertmanager_notification_latency_seconds_count{{integration=\"{k}\"}} {}",
                c.latency_count
            );
        }
    }
}

/// Orders alerts as Alertmanager's `AlertSlice`: by `job`, then `instance`
/// (alerts lacking one sort after), then by the whole label set.
pub fn sort_alerts(alerts: &mut [Alert]) {
    alerts.sort_by(|a, b| {
        for key in ["job", "instance"] {
            let (x, y) = (a.labels.get(key), b.labels.get(key));
            match (x.is_empty(), y.is_empty()) {
                (true, true) => continue,
                (true, false) => return std::cmp::Ordering::Greater,
                (false, true) => return std::cmp::Ordering::Less,
                _ => {}
            }
            if x != y {
                return x.cmp(y);
            }
        }
        a.labels
            .len()
            .cmp(&b.labels.len())
            .then_with(|| a.labels.iter().cmp(b.labels.iter()))
    });
}

/// The group labels as text, for logs.
pub fn describe_group(key: &str, labels: &Labels) -> String {
    format!("{key} ({})", labels_string(labels))
}
