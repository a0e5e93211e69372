//! The HTTP client that fetches expositions: Prometheus's request headers, a
//! timeout on the whole exchange, a body size limit (after gzip decoding, as
//! Prometheus applies it), and credentials from the scrape config. The notifier
//! posts alerts through it too (`post`), with an Alertmanager set's credentials
//! and `tls_config`.
//!
//! Built on hyper-util's client (already in the tree through axum), which keeps
//! the dependency list short. https goes through hyper-rustls with one client
//! per distinct `tls_config` (see `tls.rs`), rebuilt when its files change.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;

use super::tls::{self, TlsMaterial};
use crate::config::{HttpClientRef, ScrapeConfig, TlsConfig};

/// What Prometheus 2.42 sends: OpenMetrics preferred, the text format as fallback.
pub const ACCEPT_HEADER: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
/// Largest body read when the job sets no `body_size_limit`: a safety limit, far
/// above any real exposition.
pub const BODY_BYTES_MAX: u64 = 1 << 30;
/// Largest body buffer reserved up front from a `Content-Length` header.
const PRESIZE_BYTES_MAX: u64 = 16 << 20;
/// Largest credentials file read.
const CREDENTIALS_FILE_BYTES_MAX: u64 = 64 << 10;

/// Why a scrape's HTTP exchange failed; the message is shown on the target.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScrapeHttpError {
    #[error("{method} \"{url}\": context deadline exceeded")]
    Timeout { method: &'static str, url: String },
    #[error("{method} \"{url}\": {message}")]
    Request {
        method: &'static str,
        url: String,
        message: String,
    },
    #[error("server returned HTTP status {0}")]
    Status(String),
    /// A POST answered with a status other than 2xx (Prometheus's notifier's words).
    #[error("bad response status {0}")]
    PostStatus(String),
    #[error("body size limit exceeded")]
    BodySizeLimit,
    #[error("decompressing gzip body: {0}")]
    Gzip(String),
    #[error("{0}")]
    Config(String),
}

/// A fetched exposition.
pub struct Fetched {
    pub body: Vec<u8>,
    pub content_type: String,
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An https client and the TLS config and file contents it was built from.
struct TlsEntry {
    tls: TlsConfig,
    material: TlsMaterial,
    client: HttpsClient,
}

/// The shared client of all scrape loops.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    /// One https client per distinct `tls_config`, shared by the jobs that have it.
    tls_clients: Arc<Mutex<Vec<TlsEntry>>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::new()
    }
}

impl HttpClient {
    pub fn new() -> HttpClient {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(2)
            .build(http_connector());
        HttpClient {
            client,
            tls_clients: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The https client for the `tls_config`, reading its files now and
    /// building a new client when they differ from the cached client's (as
    /// Prometheus re-reads rotated CA and client certificate files).
    fn https_client(&self, cfg: HttpClientRef<'_>) -> Result<HttpsClient, ScrapeHttpError> {
        let tls = cfg.tls_config.cloned().unwrap_or_default();
        let job = cfg.owner;
        let material =
            tls::read_material(job, &tls).map_err(|e| ScrapeHttpError::Config(e.to_string()))?;
        let mut clients = self.tls_clients.lock();
        if let Some(e) = clients
            .iter()
            .find(|e| e.tls == tls && e.material == material)
        {
            return Ok(e.client.clone());
        }
        let config = tls::client_config(job, &tls, &material)
            .map_err(|e| ScrapeHttpError::Config(e.to_string()))?;
        let server_name =
            tls::server_name(job, &tls).map_err(|e| ScrapeHttpError::Config(e.to_string()))?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http();
        let builder = match server_name {
            Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
            None => builder,
        }
        .enable_http1();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(2)
            .build(builder.wrap_connector(http_connector()));
        clients.retain(|e| e.tls != tls);
        clients.push(TlsEntry {
            tls,
            material,
            client: client.clone(),
        });
        Ok(client)
    }

    /// GETs `url` within `timeout_ms`, with the job's credentials and Prometheus's
    /// headers.
    pub async fn fetch(
        &self,
        cfg: &ScrapeConfig,
        url: &str,
        timeout_ms: i64,
    ) -> Result<Fetched, ScrapeHttpError> {
        let timeout = Duration::from_millis(timeout_ms.max(1) as u64);
        match tokio::time::timeout(timeout, self.fetch_inner(cfg, url, timeout_ms)).await {
            Ok(r) => r,
            Err(_) => Err(ScrapeHttpError::Timeout {
                method: "Get",
                url: url.to_string(),
            }),
        }
    }

    /// POSTs `body` to `url` within `timeout_ms` with the credentials and TLS of
    /// `cfg`; any 2xx answer is success.
    pub async fn post(
        &self,
        cfg: HttpClientRef<'_>,
        url: &str,
        content_type: &str,
        body: Bytes,
        timeout_ms: i64,
    ) -> Result<(), ScrapeHttpError> {
        let timeout = Duration::from_millis(timeout_ms.max(1) as u64);
        let req_err = |message: String| ScrapeHttpError::Request {
            method: "Post",
            url: url.to_string(),
            message,
        };
        let exchange = async {
            let mut req = hyper::Request::post(url)
                .header("Content-Type", content_type)
                .header("User-Agent", concat!("hearth/", env!("CARGO_PKG_VERSION")));
            if let Some(auth) = authorization_header(cfg)? {
                req = req.header("Authorization", auth);
            }
            let req = req
                .body(Full::new(body))
                .map_err(|e| req_err(e.to_string()))?;
            let resp = if url.starts_with("https://") {
                self.https_client(cfg)?.request(req).await
            } else {
                self.client.request(req).await
            };
            let resp = resp.map_err(|e| req_err(error_chain(&e)))?;
            let status = resp.status();
            // Read the answer so the connection can be reused.
            let _ = resp.into_body().collect().await;
            if !status.is_success() {
                return Err(ScrapeHttpError::PostStatus(format!(
                    "{} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                )));
            }
            Ok(())
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(ScrapeHttpError::Timeout {
                method: "Post",
                url: url.to_string(),
            }),
        }
    }

    async fn fetch_inner(
        &self,
        cfg: &ScrapeConfig,
        url: &str,
        timeout_ms: i64,
    ) -> Result<Fetched, ScrapeHttpError> {
        let req_err = |message: String| ScrapeHttpError::Request {
            method: "Get",
            url: url.to_string(),
            message,
        };
        let client_cfg = cfg.http_client();
        let mut req = hyper::Request::get(url)
            .header("Accept", ACCEPT_HEADER)
            .header("Accept-Encoding", "gzip")
            .header("User-Agent", concat!("hearth/", env!("CARGO_PKG_VERSION")))
            .header(
                "X-Prometheus-Scrape-Timeout-Seconds",
                format!("{}", timeout_ms as f64 / 1000.0),
            );
        if let Some(auth) = authorization_header(client_cfg)? {
            req = req.header("Authorization", auth);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| req_err(e.to_string()))?;
        let resp = if url.starts_with("https://") {
            self.https_client(client_cfg)?.request(req).await
        } else {
            self.client.request(req).await
        };
        let resp = resp.map_err(|e| req_err(error_chain(&e)))?;
        let status = resp.status();
        if status != hyper::StatusCode::OK {
            return Err(ScrapeHttpError::Status(format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )));
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let content_type = header("content-type");
        let gzip = header("content-encoding").eq_ignore_ascii_case("gzip");
        let limit = match cfg.body_size_limit_bytes() {
            0 => BODY_BYTES_MAX,
            n => n.min(BODY_BYTES_MAX),
        };
        let mut body = resp.into_body();
        // Sized from Content-Length when there is one, so a large body is not
        // copied again at every doubling; capped, since the header is the
        // target's word.
        let announced = hyper::body::Body::size_hint(&body).exact().unwrap_or(0);
        let mut raw = Vec::with_capacity(announced.min(limit).min(PRESIZE_BYTES_MAX) as usize);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| req_err(error_chain(&e)))?;
            if let Ok(data) = frame.into_data() {
                raw.extend_from_slice(&data);
                if !gzip && raw.len() as u64 > limit {
                    return Err(ScrapeHttpError::BodySizeLimit);
                }
                // A gzip body is limited after decoding; this cap only stops a
                // runaway compressed stream.
                if raw.len() as u64 > BODY_BYTES_MAX {
                    return Err(ScrapeHttpError::BodySizeLimit);
                }
            }
        }
        let body = if gzip { gunzip(&raw, limit)? } else { raw };
        Ok(Fetched { body, content_type })
    }
}

fn http_connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    // hyper-rustls wraps this connector and needs https URLs passed through.
    connector.enforce_http(false);
    connector
}

/// Decodes a gzip body, failing once more than `limit` bytes come out.
fn gunzip(raw: &[u8], limit: u64) -> Result<Vec<u8>, ScrapeHttpError> {
    let mut out = Vec::new();
    let mut dec = flate2::read::GzDecoder::new(raw).take(limit + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| ScrapeHttpError::Gzip(e.to_string()))?;
    if out.len() as u64 > limit {
        return Err(ScrapeHttpError::BodySizeLimit);
    }
    Ok(out)
}

/// The `Authorization` header value the config asks for, reading credential
/// files at each request as Prometheus does.
pub fn authorization_header(cfg: HttpClientRef<'_>) -> Result<Option<String>, ScrapeHttpError> {
    if let Some(b) = cfg.basic_auth {
        let user = match &b.username_file {
            Some(f) => read_secret(f)?,
            None => b.username.clone(),
        };
        let pass = match (&b.password, &b.password_file) {
            (_, Some(f)) => read_secret(f)?,
            (Some(p), None) => p.clone(),
            (None, None) => String::new(),
        };
        return Ok(Some(format!(
            "Basic {}",
            base64(format!("{user}:{pass}").as_bytes())
        )));
    }
    if let Some(a) = cfg.authorization {
        let kind = a.kind.as_deref().unwrap_or("Bearer");
        let cred = match (&a.credentials, &a.credentials_file) {
            (_, Some(f)) => read_secret(f)?,
            (Some(c), None) => c.clone(),
            (None, None) => return Ok(None),
        };
        return Ok(Some(format!("{kind} {cred}")));
    }
    if let Some(t) = cfg.bearer_token {
        return Ok(Some(format!("Bearer {t}")));
    }
    if let Some(f) = cfg.bearer_token_file {
        return Ok(Some(format!("Bearer {}", read_secret(f)?)));
    }
    Ok(None)
}

fn read_secret(path: &str) -> Result<String, ScrapeHttpError> {
    let bad = |e: String| ScrapeHttpError::Config(format!("unable to read {path}: {e}"));
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.len() > CREDENTIALS_FILE_BYTES_MAX {
        return Err(bad("file too large".into()));
    }
    let s = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    Ok(s.trim().to_string())
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// The rustls error behind `e`, looking inside `io::Error`s too (whose
/// `source` skips the error they wrap).
fn find_rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(t) = e.downcast_ref::<rustls::Error>() {
        return Some(t);
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        let inner: &(dyn std::error::Error + 'static) = inner;
        if let Some(t) = find_rustls_error(inner) {
            return Some(t);
        }
    }
    e.source().and_then(find_rustls_error)
}

/// An error with its causes, since hyper's top-level messages are vague; a TLS
/// failure is told in Go's words alone, as Prometheus shows it.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    if let Some(t) = find_rustls_error(e) {
        return tls::describe_error(t);
    }
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(super::base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(super::base64(b"a"), "YQ==");
        assert_eq!(super::base64(b"ab"), "YWI=");
    }
}
