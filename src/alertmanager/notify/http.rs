//! A receiver's `http_config` (Prometheus's common HTTP client settings) for
//! the integrations that post over HTTP (webhook, Slack): credentials
//! (`basic_auth`, `authorization`, `bearer_token`, `bearer_token_file`, files
//! read at each request) and `tls_config` (its own client, built when the config
//! is loaded). The receiver's own `http_config` wins over `global.http_config`,
//! as in Alertmanager. Proxies and OAuth 2 are accepted but not honoured yet.

use super::{post_json, HttpClient, NotifyError};
use crate::config::{Authorization, BasicAuth, HttpClientRef, TlsConfig};
use crate::scrape::tls;
use hyper_rustls::FixedServerNameResolver;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use std::time::Duration;

/// `http_config:` as Alertmanager reads it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub basic_auth: Option<BasicAuth>,
    pub authorization: Option<Authorization>,
    pub bearer_token: Option<String>,
    pub bearer_token_file: Option<String>,
    pub tls_config: Option<TlsConfig>,
    pub oauth2: Option<serde_json::Value>,
    pub proxy_url: Option<String>,
    pub no_proxy: Option<String>,
    pub proxy_from_environment: Option<bool>,
    pub proxy_connect_header: Option<serde_json::Value>,
    pub follow_redirects: Option<bool>,
    pub enable_http2: Option<bool>,
}

/// How one integration posts: the shared client or its own TLS client, and
/// the credentials to send.
pub(crate) struct Poster {
    conf: HttpConfig,
    /// Built when `tls_config` is set.
    client: Option<HttpClient>,
}

impl Poster {
    /// From the integration's `http_config`, else the global one; `what` names
    /// the integration in errors. Settings that are not honoured yet are added
    /// to `warnings`.
    pub(crate) fn new(
        own: Option<&serde_json::Value>,
        global: Option<&serde_json::Value>,
        what: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Poster, String> {
        let conf: HttpConfig = match own.or(global) {
            None | Some(serde_json::Value::Null) => HttpConfig::default(),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| format!("{what}: http_config: {e}"))?,
        };
        let auth_kinds = [
            conf.basic_auth.is_some(),
            conf.authorization.is_some(),
            conf.bearer_token.is_some() || conf.bearer_token_file.is_some(),
            conf.oauth2.is_some(),
        ];
        if auth_kinds.iter().filter(|x| **x).count() > 1 {
            return Err(format!(
                "{what}: http_config: at most one of basic_auth, oauth2, bearer_token & bearer_token_file, authorization must be configured"
            ));
        }
        if let Some(a) = &conf.authorization {
            if a.kind
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case("basic"))
            {
                return Err(format!(
                    "{what}: http_config: authorization type cannot be set to \"basic\", use \"basic_auth\" instead"
                ));
            }
        }
        if conf.oauth2.is_some() || conf.proxy_url.is_some() {
            warnings.push(format!(
                "{what}: http_config: oauth2 and proxy_url are not honoured by hearth yet"
            ));
        }
        let client = match &conf.tls_config {
            None => None,
            Some(t) => Some(tls_client(what, t)?),
        };
        Ok(Poster { conf, client })
    }

    fn client_ref<'a>(&'a self, what: &'a str) -> HttpClientRef<'a> {
        HttpClientRef {
            owner: what,
            basic_auth: self.conf.basic_auth.as_ref(),
            authorization: self.conf.authorization.as_ref(),
            bearer_token: self.conf.bearer_token.as_deref(),
            bearer_token_file: self.conf.bearer_token_file.as_deref(),
            tls_config: self.conf.tls_config.as_ref(),
        }
    }

    /// POSTs `body` as JSON to `url` with this integration's client and
    /// credentials (credential files are read now).
    pub(crate) async fn post(
        &self,
        shared: &HttpClient,
        url: &str,
        body: Vec<u8>,
    ) -> Result<(), NotifyError> {
        let auth = crate::scrape::http::authorization_header(self.client_ref("receiver"))
            .map_err(|e| NotifyError::Retryable(format!("http_config: {e}")))?;
        post_json(
            self.client.as_ref().unwrap_or(shared),
            url,
            body,
            auth.as_deref(),
        )
        .await
    }
}

/// A client that verifies servers (and presents a certificate) as `tls` says.
fn tls_client(what: &str, t: &TlsConfig) -> Result<HttpClient, String> {
    t.validate()
        .map_err(|e| format!("{what}: tls_config: {e}"))?;
    let material = tls::read_material(what, t).map_err(|e| e.to_string())?;
    let cfg = tls::client_config(what, t, &material).map_err(|e| e.to_string())?;
    let server_name = tls::server_name(what, t).map_err(|e| e.to_string())?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(cfg)
        .https_or_http();
    let builder = match server_name {
        Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
        None => builder,
    }
    .enable_http1();
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(builder.wrap_connector(http)))
}
