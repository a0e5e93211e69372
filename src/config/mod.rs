//! Prometheus's configuration file (`prometheus.yml`): parsing, defaults and validation.
//!
//! The file is read exactly as Prometheus reads it: the same sections, field names,
//! defaults and checks, and unknown fields are errors that name the file, line and
//! column. `alerting` is typed (`AlertingConfig`); sections used by later parts of
//! hearth (`remote_write`, `remote_read`, `storage`, `tracing`) are parsed into
//! opaque values for now.
//! Service discovery mechanisms other than `static_configs` and `file_sd_configs` are
//! recognised by name and refused with a clear error, rather than reported as
//! unknown fields.

mod serde_util;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::relabel::RelabelConfig;
pub use serde_util::{ByteSize, DurationMs};

/// Largest configuration file read, in bytes. Real configs are kilobytes.
pub const CONFIG_FILE_BYTES_MAX: u64 = 64 << 20;

/// Prometheus's default global scrape and evaluation interval (1m).
pub const DEFAULT_SCRAPE_INTERVAL_MS: i64 = 60_000;
/// Prometheus's default global scrape timeout (10s).
pub const DEFAULT_SCRAPE_TIMEOUT_MS: i64 = 10_000;
/// Prometheus's default refresh interval of file-based discovery (5m).
pub const DEFAULT_FILE_SD_REFRESH_MS: i64 = 300_000;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is larger than {CONFIG_FILE_BYTES_MAX} bytes")]
    TooLarge { path: String },
    /// A YAML syntax error or a field that cannot be decoded; the message carries
    /// the line and column.
    #[error("parsing YAML file {path}: {message}")]
    Yaml { path: String, message: String },
    /// The file parsed, but a value breaks one of Prometheus's rules.
    #[error("parsing YAML file {path}: {message}")]
    Invalid { path: String, message: String },
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub global: GlobalConfig,
    #[serde(deserialize_with = "serde_util::null_default")]
    pub rule_files: Vec<String>,
    #[serde(deserialize_with = "serde_util::null_default")]
    pub scrape_configs: Vec<ScrapeConfig>,
    /// Where alerts go, and how they are relabeled first.
    pub alerting: AlertingConfig,
    /// Remote write endpoints; parsed for later use.
    #[serde(deserialize_with = "serde_util::null_default")]
    pub remote_write: Vec<serde_json::Value>,
    /// Remote read endpoints; parsed for later use.
    #[serde(deserialize_with = "serde_util::null_default")]
    pub remote_read: Vec<serde_json::Value>,
    /// `storage:` (tsdb / exemplars); parsed for later use.
    pub storage: Option<serde_json::Value>,
    /// `tracing:`; parsed for later use.
    pub tracing: Option<serde_json::Value>,
}

/// The `global:` section: defaults for every scrape config.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GlobalConfig {
    pub scrape_interval: Option<DurationMs>,
    pub scrape_timeout: Option<DurationMs>,
    pub evaluation_interval: Option<DurationMs>,
    /// Labels added to every series and alert leaving this server.
    #[serde(deserialize_with = "serde_util::null_default")]
    pub external_labels: BTreeMap<String, String>,
    pub query_log_file: Option<String>,
    pub body_size_limit: Option<ByteSize>,
    pub sample_limit: Option<u64>,
    pub target_limit: Option<u64>,
    pub label_limit: Option<u64>,
    pub label_name_length_limit: Option<u64>,
    pub label_value_length_limit: Option<u64>,
}

impl GlobalConfig {
    /// The effective scrape interval in ms (after `Config::validate`, always set).
    pub fn scrape_interval_ms(&self) -> i64 {
        self.scrape_interval
            .map_or(DEFAULT_SCRAPE_INTERVAL_MS, |d| d.0)
    }
    /// The effective scrape timeout in ms.
    pub fn scrape_timeout_ms(&self) -> i64 {
        self.scrape_timeout
            .map_or(DEFAULT_SCRAPE_TIMEOUT_MS, |d| d.0)
    }
    /// The effective rule evaluation interval in ms.
    pub fn evaluation_interval_ms(&self) -> i64 {
        self.evaluation_interval
            .map_or(DEFAULT_SCRAPE_INTERVAL_MS, |d| d.0)
    }
}

/// `alerting:`: the Alertmanagers alerts go to, and how alerts are relabeled
/// before they are queued.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    #[serde(deserialize_with = "serde_util::null_default")]
    pub alert_relabel_configs: Vec<RelabelConfig>,
    #[serde(deserialize_with = "serde_util::null_default")]
    pub alertmanagers: Vec<AlertmanagerConfig>,
}

/// Default `timeout` of an Alertmanager set.
pub const DEFAULT_ALERTMANAGER_TIMEOUT_MS: i64 = 10_000;

/// One `alerting.alertmanagers` entry: a set of Alertmanagers with one HTTP
/// client config. Its targets come from `static_configs` and `file_sd_configs`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerConfig {
    pub scheme: Option<String>,
    pub path_prefix: Option<String>,
    pub timeout: Option<DurationMs>,
    pub api_version: Option<String>,
    #[serde(deserialize_with = "serde_util::null_default")]
    pub static_configs: Vec<StaticConfig>,
    /// Targets read from files, as for scrape jobs.
    #[serde(deserialize_with = "serde_util::null_default")]
    pub file_sd_configs: Vec<FileSdConfig>,
    /// Applied to each target (`__address__`, `__scheme__`, `__alerts_path__`).
    #[serde(deserialize_with = "serde_util::null_default")]
    pub relabel_configs: Vec<RelabelConfig>,
    /// Applied to alerts sent to this set only.
    #[serde(deserialize_with = "serde_util::null_default")]
    pub alert_relabel_configs: Vec<RelabelConfig>,

    // The HTTP client, as in `ScrapeConfig`.
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

    // Discovery mechanisms not run for Alertmanagers yet: recognised so that the
    // error says "not supported" instead of "unknown field".
    pub dns_sd_configs: Option<serde_json::Value>,
    pub consul_sd_configs: Option<serde_json::Value>,
    pub kubernetes_sd_configs: Option<serde_json::Value>,
    pub http_sd_configs: Option<serde_json::Value>,
    pub ec2_sd_configs: Option<serde_json::Value>,
}

impl AlertmanagerConfig {
    /// `http` or `https` (`http` by default).
    pub fn scheme(&self) -> &str {
        self.scheme.as_deref().unwrap_or("http")
    }
    /// Per-request timeout in ms (10s by default).
    pub fn timeout_ms(&self) -> i64 {
        self.timeout
            .map_or(DEFAULT_ALERTMANAGER_TIMEOUT_MS, |d| d.0)
    }
    /// The set's HTTP client settings.
    pub fn http_client(&self) -> HttpClientRef<'_> {
        HttpClientRef {
            owner: "alertmanager",
            basic_auth: self.basic_auth.as_ref(),
            authorization: self.authorization.as_ref(),
            bearer_token: self.bearer_token.as_deref(),
            bearer_token_file: self.bearer_token_file.as_deref(),
            tls_config: self.tls_config.as_ref(),
        }
    }

    fn validate(&mut self) -> Result<(), String> {
        let bad = |m: String| Err(format!("alerting.alertmanagers: {m}"));
        let sd = [
            ("dns_sd_configs", self.dns_sd_configs.is_some()),
            ("consul_sd_configs", self.consul_sd_configs.is_some()),
            (
                "kubernetes_sd_configs",
                self.kubernetes_sd_configs.is_some(),
            ),
            ("http_sd_configs", self.http_sd_configs.is_some()),
            ("ec2_sd_configs", self.ec2_sd_configs.is_some()),
        ];
        if let Some((n, _)) = sd.iter().find(|(_, set)| *set) {
            return bad(format!(
                "{n}: this discovery mechanism is not supported for Alertmanagers yet (use static_configs or file_sd_configs)"
            ));
        }
        if self.oauth2.is_some() {
            return bad("oauth2 is not supported yet".into());
        }
        if self.proxy_url.is_some() || self.proxy_from_environment == Some(true) {
            return bad("proxies (proxy_url, proxy_from_environment) are not supported yet".into());
        }
        match self.scheme() {
            "http" | "https" => {}
            other => return bad(format!("scheme {other:?} is not http or https")),
        }
        match self.api_version.as_deref() {
            None | Some("v2") => {}
            Some(v) => return bad(format!("api_version {v:?} is not supported (only v2)")),
        }
        if self.timeout_ms() <= 0 {
            return bad("timeout must be greater than 0".into());
        }
        if self
            .file_sd_configs
            .iter()
            .any(|f| f.refresh_interval_ms() <= 0)
        {
            return bad("file_sd_configs refresh_interval must be greater than 0".into());
        }
        for f in &self.file_sd_configs {
            for pattern in &f.files {
                if let Err(e) = check_file_sd_path(pattern) {
                    return bad(e);
                }
            }
        }
        let auth_kinds = [
            self.basic_auth.is_some(),
            self.authorization.is_some(),
            self.bearer_token.is_some() || self.bearer_token_file.is_some(),
        ];
        if auth_kinds.iter().filter(|x| **x).count() > 1 {
            return Err(
                "at most one of basic_auth, oauth2, bearer_token & bearer_token_file, \
                 authorization must be configured"
                    .into(),
            );
        }
        if let Some(a) = &mut self.authorization {
            if a.credentials.is_some() && a.credentials_file.is_some() {
                return Err(
                    "at most one of authorization credentials & credentials_file must be configured"
                        .into(),
                );
            }
            let kind = a.kind.get_or_insert_with(|| "Bearer".to_string());
            if kind.eq_ignore_ascii_case("basic") {
                return Err(
                    "authorization type cannot be set to \"basic\", use \"basic_auth\" instead"
                        .into(),
                );
            }
        }
        if let Some(t) = &self.tls_config {
            t.validate()?;
        }
        for sc in &self.static_configs {
            for t in &sc.targets {
                check_target_address(t)?;
            }
        }
        Ok(())
    }
}

/// The HTTP client settings of a scrape job or an Alertmanager set
/// (Prometheus's common `HTTPClientConfig`), borrowed from either.
#[derive(Debug, Clone, Copy)]
pub struct HttpClientRef<'a> {
    /// Names the owner in errors: a job name, or `alertmanager`.
    pub owner: &'a str,
    pub basic_auth: Option<&'a BasicAuth>,
    pub authorization: Option<&'a Authorization>,
    pub bearer_token: Option<&'a str>,
    pub bearer_token_file: Option<&'a str>,
    pub tls_config: Option<&'a TlsConfig>,
}

/// `basic_auth:` of an HTTP client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasicAuth {
    pub username: String,
    pub username_file: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
}

/// `authorization:` of an HTTP client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Authorization {
    /// Defaults to `Bearer`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub credentials: Option<String>,
    pub credentials_file: Option<String>,
}

/// `tls_config:` of an HTTP client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub ca: Option<String>,
    pub ca_file: Option<String>,
    pub cert: Option<String>,
    pub cert_file: Option<String>,
    pub key: Option<String>,
    pub key_file: Option<String>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
}

/// The TLS version names `min_version` and `max_version` take, as Go's config
/// package spells them.
pub const TLS_VERSIONS: [&str; 4] = ["TLS10", "TLS11", "TLS12", "TLS13"];

impl TlsConfig {
    /// The checks Prometheus makes when it loads a `tls_config` (files are not
    /// read here: `hearth check config` looks for them, scraping reads them).
    pub fn validate(&self) -> Result<(), String> {
        for v in [&self.min_version, &self.max_version].into_iter().flatten() {
            if !v.is_empty() && !TLS_VERSIONS.contains(&v.as_str()) {
                return Err(format!("unknown TLS version: {v}"));
            }
        }
        for (what, inline, file) in [
            ("ca", &self.ca, &self.ca_file),
            ("cert", &self.cert, &self.cert_file),
            ("key", &self.key, &self.key_file),
        ] {
            if inline.is_some() && file.is_some() {
                return Err(format!(
                    "at most one of {what} and {what}_file must be configured"
                ));
            }
        }
        Ok(())
    }
}

/// One `static_configs:` entry, which is also the shape of a target group in
/// `file_sd_configs` files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticConfig {
    #[serde(deserialize_with = "serde_util::null_default")]
    pub targets: Vec<String>,
    #[serde(deserialize_with = "serde_util::null_default")]
    pub labels: BTreeMap<String, String>,
}

/// One `file_sd_configs:` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSdConfig {
    /// Glob patterns; only the last path element may hold wildcards.
    #[serde(deserialize_with = "serde_util::null_default")]
    pub files: Vec<String>,
    pub refresh_interval: Option<DurationMs>,
}

impl FileSdConfig {
    /// The effective refresh interval in ms (5m by default).
    pub fn refresh_interval_ms(&self) -> i64 {
        self.refresh_interval
            .map_or(DEFAULT_FILE_SD_REFRESH_MS, |d| d.0)
    }
}

/// One entry of `scrape_configs:`: a job. Fields left out take the global value or
/// Prometheus's default; `Config::validate` fills them in.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeConfig {
    pub job_name: String,
    pub honor_labels: bool,
    pub honor_timestamps: Option<bool>,
    pub track_timestamps_staleness: bool,
    #[serde(deserialize_with = "serde_util::null_default")]
    pub params: BTreeMap<String, Vec<String>>,
    pub scrape_interval: Option<DurationMs>,
    pub scrape_timeout: Option<DurationMs>,
    pub metrics_path: Option<String>,
    pub scheme: Option<String>,
    pub body_size_limit: Option<ByteSize>,
    pub sample_limit: Option<u64>,
    pub target_limit: Option<u64>,
    pub label_limit: Option<u64>,
    pub label_name_length_limit: Option<u64>,
    pub label_value_length_limit: Option<u64>,
    #[serde(deserialize_with = "serde_util::null_default")]
    pub static_configs: Vec<StaticConfig>,
    #[serde(deserialize_with = "serde_util::null_default")]
    pub file_sd_configs: Vec<FileSdConfig>,
    #[serde(deserialize_with = "serde_util::null_default")]
    pub relabel_configs: Vec<RelabelConfig>,
    #[serde(deserialize_with = "serde_util::null_default")]
    pub metric_relabel_configs: Vec<RelabelConfig>,

    // The HTTP client (Prometheus's common `HTTPClientConfig`, inlined).
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

    // Discovery mechanisms hearth does not have yet: recognised so that the error
    // says "not supported" instead of "unknown field".
    pub azure_sd_configs: Option<serde_json::Value>,
    pub consul_sd_configs: Option<serde_json::Value>,
    pub digitalocean_sd_configs: Option<serde_json::Value>,
    pub docker_sd_configs: Option<serde_json::Value>,
    pub dockerswarm_sd_configs: Option<serde_json::Value>,
    pub dns_sd_configs: Option<serde_json::Value>,
    pub ec2_sd_configs: Option<serde_json::Value>,
    pub eureka_sd_configs: Option<serde_json::Value>,
    pub gce_sd_configs: Option<serde_json::Value>,
    pub hetzner_sd_configs: Option<serde_json::Value>,
    pub http_sd_configs: Option<serde_json::Value>,
    pub ionos_sd_configs: Option<serde_json::Value>,
    pub kubernetes_sd_configs: Option<serde_json::Value>,
    pub kuma_sd_configs: Option<serde_json::Value>,
    pub lightsail_sd_configs: Option<serde_json::Value>,
    pub linode_sd_configs: Option<serde_json::Value>,
    pub marathon_sd_configs: Option<serde_json::Value>,
    pub nerve_sd_configs: Option<serde_json::Value>,
    pub nomad_sd_configs: Option<serde_json::Value>,
    pub openstack_sd_configs: Option<serde_json::Value>,
    pub ovhcloud_sd_configs: Option<serde_json::Value>,
    pub puppetdb_sd_configs: Option<serde_json::Value>,
    pub scaleway_sd_configs: Option<serde_json::Value>,
    pub serverset_sd_configs: Option<serde_json::Value>,
    pub triton_sd_configs: Option<serde_json::Value>,
    pub uyuni_sd_configs: Option<serde_json::Value>,
    pub vultr_sd_configs: Option<serde_json::Value>,
}

impl ScrapeConfig {
    /// Scrape interval in ms (set by `Config::validate`).
    pub fn scrape_interval_ms(&self) -> i64 {
        self.scrape_interval
            .map_or(DEFAULT_SCRAPE_INTERVAL_MS, |d| d.0)
    }
    /// Scrape timeout in ms (set by `Config::validate`).
    pub fn scrape_timeout_ms(&self) -> i64 {
        self.scrape_timeout
            .map_or(DEFAULT_SCRAPE_TIMEOUT_MS, |d| d.0)
    }
    /// Path scraped on each target (`/metrics` by default).
    pub fn metrics_path(&self) -> &str {
        self.metrics_path.as_deref().unwrap_or("/metrics")
    }
    /// `http` or `https` (`http` by default).
    pub fn scheme(&self) -> &str {
        self.scheme.as_deref().unwrap_or("http")
    }
    /// Whether timestamps in the exposition are kept (true by default).
    pub fn honor_timestamps(&self) -> bool {
        self.honor_timestamps.unwrap_or(true)
    }
    /// Largest accepted body in bytes; 0 is no limit.
    pub fn body_size_limit_bytes(&self) -> u64 {
        self.body_size_limit.map_or(0, |b| b.0)
    }
    /// The job's HTTP client settings.
    pub fn http_client(&self) -> HttpClientRef<'_> {
        HttpClientRef {
            owner: &self.job_name,
            basic_auth: self.basic_auth.as_ref(),
            authorization: self.authorization.as_ref(),
            bearer_token: self.bearer_token.as_deref(),
            bearer_token_file: self.bearer_token_file.as_deref(),
            tls_config: self.tls_config.as_ref(),
        }
    }

    /// Names of configured discovery mechanisms hearth cannot run.
    fn unsupported_discovery(&self) -> Vec<&'static str> {
        let all: [(&'static str, bool); 27] = [
            ("azure_sd_configs", self.azure_sd_configs.is_some()),
            ("consul_sd_configs", self.consul_sd_configs.is_some()),
            (
                "digitalocean_sd_configs",
                self.digitalocean_sd_configs.is_some(),
            ),
            ("docker_sd_configs", self.docker_sd_configs.is_some()),
            (
                "dockerswarm_sd_configs",
                self.dockerswarm_sd_configs.is_some(),
            ),
            ("dns_sd_configs", self.dns_sd_configs.is_some()),
            ("ec2_sd_configs", self.ec2_sd_configs.is_some()),
            ("eureka_sd_configs", self.eureka_sd_configs.is_some()),
            ("gce_sd_configs", self.gce_sd_configs.is_some()),
            ("hetzner_sd_configs", self.hetzner_sd_configs.is_some()),
            ("http_sd_configs", self.http_sd_configs.is_some()),
            ("ionos_sd_configs", self.ionos_sd_configs.is_some()),
            (
                "kubernetes_sd_configs",
                self.kubernetes_sd_configs.is_some(),
            ),
            ("kuma_sd_configs", self.kuma_sd_configs.is_some()),
            ("lightsail_sd_configs", self.lightsail_sd_configs.is_some()),
            ("linode_sd_configs", self.linode_sd_configs.is_some()),
            ("marathon_sd_configs", self.marathon_sd_configs.is_some()),
            ("nerve_sd_configs", self.nerve_sd_configs.is_some()),
            ("nomad_sd_configs", self.nomad_sd_configs.is_some()),
            ("openstack_sd_configs", self.openstack_sd_configs.is_some()),
            ("ovhcloud_sd_configs", self.ovhcloud_sd_configs.is_some()),
            ("puppetdb_sd_configs", self.puppetdb_sd_configs.is_some()),
            ("scaleway_sd_configs", self.scaleway_sd_configs.is_some()),
            ("serverset_sd_configs", self.serverset_sd_configs.is_some()),
            ("triton_sd_configs", self.triton_sd_configs.is_some()),
            ("uyuni_sd_configs", self.uyuni_sd_configs.is_some()),
            ("vultr_sd_configs", self.vultr_sd_configs.is_some()),
        ];
        all.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect()
    }
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        if meta.len() > CONFIG_FILE_BYTES_MAX {
            return Err(ConfigError::TooLarge { path: shown });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut cfg = Config::parse(&text, &shown)?;
        cfg.resolve_paths(path.parent().unwrap_or(Path::new("")));
        Ok(cfg)
    }

    /// Parses and validates configuration text; `name` is used in errors.
    pub fn parse(text: &str, name: &str) -> Result<Config, ConfigError> {
        // An empty file is a valid, empty configuration, as in Prometheus.
        let mut cfg: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml {
                path: name.to_string(),
                message: yaml_error_message(&e),
            })?
        };
        cfg.validate().map_err(|message| ConfigError::Invalid {
            path: name.to_string(),
            message,
        })?;
        Ok(cfg)
    }

    /// The text of the embedded default configuration (`default_for_self`), which
    /// `/api/v1/status/config` shows.
    pub fn default_text_for_self(listen_port: u16) -> String {
        format!(
            "global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\n\
             scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      \
             - targets: [\"localhost:{listen_port}\"]\n"
        )
    }

    /// The embedded configuration used without `--config.file`: hearth scrapes
    /// itself every 15s, as Prometheus's example configuration does.
    pub fn default_for_self(listen_port: u16) -> Config {
        let text = Config::default_text_for_self(listen_port);
        match Config::parse(&text, "<embedded default>") {
            Ok(c) => c,
            // The text above is fixed; failing to parse it is a bug, not an input error.
            Err(e) => panic!("embedded default config is invalid: {e}"),
        }
    }

    /// Applies Prometheus's defaults and checks its rules, filling in each scrape
    /// config's interval and timeout from the global section.
    fn validate(&mut self) -> Result<(), String> {
        let g = &mut self.global;
        let interval = g.scrape_interval_ms();
        if interval <= 0 {
            return Err("global scrape interval must be greater than 0".into());
        }
        g.scrape_interval = Some(DurationMs(interval));
        match g.scrape_timeout {
            Some(t) if t.0 > interval => {
                return Err("global scrape timeout greater than scrape interval".into())
            }
            Some(_) => {}
            None => {
                g.scrape_timeout = Some(DurationMs(DEFAULT_SCRAPE_TIMEOUT_MS.min(interval)));
            }
        }
        if g.evaluation_interval.is_none() {
            g.evaluation_interval = Some(DurationMs(DEFAULT_SCRAPE_INTERVAL_MS));
        }
        for name in g.external_labels.keys() {
            if !crate::relabel::is_valid_label_name(name) {
                return Err(format!("{name:?} is not a valid label name"));
            }
        }
        let global = self.global.clone();
        let mut names = HashSet::new();
        for sc in &mut self.scrape_configs {
            sc.validate(&global)?;
            if !names.insert(sc.job_name.clone()) {
                return Err(format!(
                    "found multiple scrape configs with job name {:?}",
                    sc.job_name
                ));
            }
        }
        for rf in &self.rule_files {
            if rf.is_empty() {
                return Err("rule file path must not be empty".into());
            }
        }
        for am in &mut self.alerting.alertmanagers {
            am.validate()?;
        }
        Ok(())
    }

    /// Makes relative paths (rule files, file_sd files, credential files) relative
    /// to the directory of the configuration file, as Prometheus does.
    fn resolve_paths(&mut self, dir: &Path) {
        let join = |p: &mut String| {
            if !p.is_empty() && Path::new(p.as_str()).is_relative() {
                *p = dir.join(p.as_str()).display().to_string();
            }
        };
        self.rule_files.iter_mut().for_each(join);
        for sc in &mut self.scrape_configs {
            for f in &mut sc.file_sd_configs {
                f.files.iter_mut().for_each(join);
            }
            if let Some(b) = &mut sc.basic_auth {
                b.password_file.iter_mut().for_each(join);
                b.username_file.iter_mut().for_each(join);
            }
            if let Some(a) = &mut sc.authorization {
                a.credentials_file.iter_mut().for_each(join);
            }
            sc.bearer_token_file.iter_mut().for_each(join);
            if let Some(t) = &mut sc.tls_config {
                for f in [&mut t.ca_file, &mut t.cert_file, &mut t.key_file] {
                    f.iter_mut().for_each(join);
                }
            }
        }
        for am in &mut self.alerting.alertmanagers {
            for f in &mut am.file_sd_configs {
                f.files.iter_mut().for_each(join);
            }
            if let Some(b) = &mut am.basic_auth {
                b.password_file.iter_mut().for_each(join);
                b.username_file.iter_mut().for_each(join);
            }
            if let Some(a) = &mut am.authorization {
                a.credentials_file.iter_mut().for_each(join);
            }
            am.bearer_token_file.iter_mut().for_each(join);
            if let Some(t) = &mut am.tls_config {
                for f in [&mut t.ca_file, &mut t.cert_file, &mut t.key_file] {
                    f.iter_mut().for_each(join);
                }
            }
        }
    }

    /// Rule file patterns (already resolved against the config's directory).
    pub fn rule_file_patterns(&self) -> &[String] {
        &self.rule_files
    }

    /// The scrape config of job `name`.
    pub fn scrape_config(&self, name: &str) -> Option<&ScrapeConfig> {
        self.scrape_configs.iter().find(|s| s.job_name == name)
    }
}

impl ScrapeConfig {
    fn validate(&mut self, global: &GlobalConfig) -> Result<(), String> {
        if self.job_name.is_empty() {
            return Err("job_name is empty".into());
        }
        let job = &self.job_name;
        if let Some(n) = self.unsupported_discovery().first() {
            return Err(format!(
                "{n} in scrape config with job name {job:?}: this discovery mechanism is not \
                 supported yet (use static_configs or file_sd_configs)"
            ));
        }
        if self.oauth2.is_some() {
            return Err(format!(
                "oauth2 in scrape config with job name {job:?} is not supported yet"
            ));
        }
        if self.proxy_url.is_some() || self.proxy_from_environment == Some(true) {
            return Err(format!(
                "proxies (proxy_url, proxy_from_environment) in scrape config with job name \
                 {job:?} are not supported yet"
            ));
        }
        let auth_kinds = [
            self.basic_auth.is_some(),
            self.authorization.is_some(),
            self.bearer_token.is_some() || self.bearer_token_file.is_some(),
        ];
        if auth_kinds.iter().filter(|x| **x).count() > 1 {
            return Err(
                "at most one of basic_auth, oauth2, bearer_token & bearer_token_file, \
                 authorization must be configured"
                    .into(),
            );
        }
        if self.bearer_token.is_some() && self.bearer_token_file.is_some() {
            return Err(
                "at most one of bearer_token & bearer_token_file must be configured".into(),
            );
        }
        if let Some(b) = &self.basic_auth {
            if b.password.is_some() && b.password_file.is_some() {
                return Err(
                    "at most one of basic_auth password & password_file must be configured".into(),
                );
            }
        }
        if let Some(a) = &mut self.authorization {
            if a.credentials.is_some() && a.credentials_file.is_some() {
                return Err(
                    "at most one of authorization credentials & credentials_file must be configured"
                        .into(),
                );
            }
            let kind = a.kind.get_or_insert_with(|| "Bearer".to_string());
            if kind.eq_ignore_ascii_case("basic") {
                return Err(
                    "authorization type cannot be set to \"basic\", use \"basic_auth\" instead"
                        .into(),
                );
            }
        }
        if let Some(t) = &self.tls_config {
            t.validate()?;
        }
        match self.scheme() {
            "http" | "https" => {}
            other => {
                return Err(format!(
                    "scheme {other:?} in scrape config with job name {job:?} is not http or https"
                ))
            }
        }
        let interval = match self.scrape_interval {
            Some(d) => d.0,
            None => global.scrape_interval_ms(),
        };
        if interval <= 0 {
            return Err(format!(
                "scrape interval must be greater than 0 for scrape config with job name {job:?}"
            ));
        }
        self.scrape_interval = Some(DurationMs(interval));
        match self.scrape_timeout {
            Some(t) if t.0 > interval => {
                return Err(format!(
                    "scrape timeout greater than scrape interval for scrape config with job name {job:?}"
                ))
            }
            Some(_) => {}
            None => {
                self.scrape_timeout = Some(DurationMs(global.scrape_timeout_ms().min(interval)));
            }
        }
        if self.metrics_path.is_none() {
            self.metrics_path = Some("/metrics".into());
        }
        if self.scheme.is_none() {
            self.scheme = Some("http".into());
        }
        if self.honor_timestamps.is_none() {
            self.honor_timestamps = Some(true);
        }
        // Limits not set on the job take the global ones.
        fn inherit<T: Copy>(own: &mut Option<T>, global: Option<T>) {
            if own.is_none() {
                *own = global;
            }
        }
        inherit(&mut self.body_size_limit, global.body_size_limit);
        inherit(&mut self.sample_limit, global.sample_limit);
        inherit(&mut self.target_limit, global.target_limit);
        inherit(&mut self.label_limit, global.label_limit);
        inherit(
            &mut self.label_name_length_limit,
            global.label_name_length_limit,
        );
        inherit(
            &mut self.label_value_length_limit,
            global.label_value_length_limit,
        );
        for sc in &self.static_configs {
            for t in &sc.targets {
                check_target_address(t)?;
            }
            for name in sc.labels.keys() {
                if !crate::relabel::is_valid_label_name(name) {
                    return Err(format!("{name:?} is not a valid label name"));
                }
            }
        }
        for f in &self.file_sd_configs {
            for pattern in &f.files {
                check_file_sd_path(pattern)?;
            }
            if f.refresh_interval_ms() <= 0 {
                return Err(format!(
                    "file_sd_configs refresh_interval must be greater than 0 in job {job:?}"
                ));
            }
        }
        Ok(())
    }

    /// Whether two configs scrape the same way, so a reload can keep the pool's
    /// loops running. Discovery settings are compared too: a changed discovery
    /// restarts the pool, which is simpler and always correct.
    pub fn same_as(&self, other: &ScrapeConfig) -> bool {
        self == other
    }
}

/// A target address must be `host[:port]`, without a scheme or path, as Prometheus
/// checks it.
pub fn check_target_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() || addr.contains('/') {
        return Err(format!("{addr:?} is not a valid hostname"));
    }
    Ok(())
}

/// Prometheus's rule for file_sd paths: a `.json`, `.yml` or `.yaml` file, with
/// wildcards only in the last path element.
fn check_file_sd_path(pattern: &str) -> Result<(), String> {
    let ok_ext = [".json", ".yml", ".yaml"]
        .iter()
        .any(|e| pattern.ends_with(e));
    let dir = Path::new(pattern).parent().unwrap_or(Path::new(""));
    let dir_has_glob = dir.to_string_lossy().contains(['*', '?', '[']);
    if !ok_ext || dir_has_glob {
        return Err(format!("path {pattern:?} is not valid for file discovery"));
    }
    Ok(())
}

/// The parser's error, which already names line and column; the source snippet it
/// may render is dropped so the message fits one log line.
fn yaml_error_message(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("").trim().to_string();
    match e.location() {
        Some(loc) if !first.contains(&format!("line {}", loc.line())) => {
            format!("line {} column {}: {first}", loc.line(), loc.column())
        }
        _ => first,
    }
}

/// Paths from a config file made absolute relative to its directory.
pub fn resolve_relative(dir: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_relative() {
        dir.join(path)
    } else {
        path.to_path_buf()
    }
}
