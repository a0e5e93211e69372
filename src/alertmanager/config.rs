//! `alertmanager.yml`: parsing, Alertmanager's defaults and its validation rules
//! (`config/config.go`), with errors that name the file and the problem.
//!
//! Unknown keys are errors, as in Alertmanager's strict YAML decoding. Receivers of
//! kinds hearth does not notify yet are parsed loosely (kept as YAML values) so a
//! valid Alertmanager config is never rejected for naming them.

use super::matchers::{parse_matchers, sort_matchers};
use super::timeinterval::TimeInterval;
use crate::config_units::parse_duration_ms;
use crate::labels::{MatchType, Matcher};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

/// Largest config file read, in bytes.
pub const CONFIG_FILE_LEN_MAX: u64 = 16 << 20;

/// Alertmanager's default `group_wait`.
pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(30);
/// Alertmanager's default `group_interval`.
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Alertmanager's default `repeat_interval`.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);
/// Alertmanager's default `global.resolve_timeout`.
pub const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// A config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: file is too large ({len} bytes, at most {CONFIG_FILE_LEN_MAX})")]
    TooLarge { file: String, len: u64 },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

/// Any YAML value, for the parts hearth keeps but does not interpret.
pub type Opaque = serde_json::Value;

/// A duration in Prometheus's syntax (`30s`, `1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelDuration(pub Duration);

impl<'de> Deserialize<'de> for ModelDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let ms = parse_duration_ms(&s).map_err(serde::de::Error::custom)?;
        Ok(ModelDuration(Duration::from_millis(ms.max(0) as u64)))
    }
}

/// The `global` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    pub resolve_timeout: Option<ModelDuration>,
    pub http_config: Option<Opaque>,
    pub smtp_from: Option<String>,
    pub smtp_hello: Option<String>,
    pub smtp_smarthost: Option<String>,
    pub smtp_auth_username: Option<String>,
    pub smtp_auth_password: Option<String>,
    pub smtp_auth_password_file: Option<String>,
    pub smtp_auth_secret: Option<String>,
    pub smtp_auth_secret_file: Option<String>,
    pub smtp_auth_identity: Option<String>,
    pub smtp_require_tls: Option<bool>,
    pub smtp_tls_config: Option<crate::config::TlsConfig>,
    pub slack_api_url: Option<String>,
    pub slack_api_url_file: Option<String>,
    pub pagerduty_url: Option<String>,
    pub opsgenie_api_url: Option<String>,
    pub opsgenie_api_key: Option<String>,
    pub opsgenie_api_key_file: Option<String>,
    pub wechat_api_url: Option<String>,
    pub wechat_api_secret: Option<String>,
    pub wechat_api_corp_id: Option<String>,
    pub victorops_api_url: Option<String>,
    pub victorops_api_key: Option<String>,
    pub victorops_api_key_file: Option<String>,
    pub telegram_api_url: Option<String>,
    pub webex_api_url: Option<String>,
    pub jira_api_url: Option<String>,
    pub rocketchat_api_url: Option<String>,
    pub rocketchat_token: Option<String>,
    pub rocketchat_token_file: Option<String>,
    pub rocketchat_token_id: Option<String>,
    pub rocketchat_token_id_file: Option<String>,
}

impl GlobalConfig {
    /// `resolve_timeout`, defaulted.
    pub fn resolve_timeout(&self) -> Duration {
        self.resolve_timeout
            .map(|d| d.0)
            .unwrap_or(DEFAULT_RESOLVE_TIMEOUT)
    }
}

/// A `route` node as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub receiver: String,
    pub group_by: Option<Vec<String>>,
    #[serde(default, rename = "match")]
    pub match_eq: BTreeMap<String, String>,
    #[serde(default)]
    pub match_re: BTreeMap<String, String>,
    #[serde(default)]
    pub matchers: Vec<String>,
    #[serde(default)]
    pub mute_time_intervals: Vec<String>,
    #[serde(default)]
    pub active_time_intervals: Vec<String>,
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    pub group_wait: Option<ModelDuration>,
    pub group_interval: Option<ModelDuration>,
    pub repeat_interval: Option<ModelDuration>,
}

/// An inhibition rule as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    pub name: Option<String>,
    #[serde(default)]
    pub source_match: BTreeMap<String, String>,
    #[serde(default)]
    pub source_match_re: BTreeMap<String, String>,
    #[serde(default)]
    pub source_matchers: Vec<String>,
    #[serde(default)]
    pub target_match: BTreeMap<String, String>,
    #[serde(default)]
    pub target_match_re: BTreeMap<String, String>,
    #[serde(default)]
    pub target_matchers: Vec<String>,
    #[serde(default)]
    pub equal: Vec<String>,
}

/// A `webhook_configs` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Webhooks send resolved notifications unless told otherwise.
    #[serde(default = "yes")]
    pub send_resolved: bool,
    pub http_config: Option<Opaque>,
    pub url: Option<String>,
    pub url_file: Option<String>,
    /// Most alerts in one message; 0 means all.
    #[serde(default)]
    pub max_alerts: u64,
    pub timeout: Option<ModelDuration>,
}

fn yes() -> bool {
    true
}

/// An `email_configs` entry; empty fields take the `global` `smtp_*` values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    #[serde(default)]
    pub send_resolved: bool,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub hello: String,
    #[serde(default)]
    pub smarthost: String,
    pub auth_username: Option<String>,
    pub auth_password: Option<String>,
    pub auth_password_file: Option<String>,
    pub auth_secret: Option<String>,
    pub auth_secret_file: Option<String>,
    pub auth_identity: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub html: Option<String>,
    pub text: Option<String>,
    pub require_tls: Option<bool>,
    pub tls_config: Option<crate::config::TlsConfig>,
    pub threading: Option<Opaque>,
}

/// A `slack_configs` entry. Templated fields are `None` when not written, and
/// then take Alertmanager's defaults (`notify::slack`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    #[serde(default)]
    pub send_resolved: bool,
    pub http_config: Option<Opaque>,
    pub api_url: Option<String>,
    pub api_url_file: Option<String>,
    pub channel: Option<String>,
    pub username: Option<String>,
    pub color: Option<String>,
    pub title: Option<String>,
    pub title_link: Option<String>,
    pub pretext: Option<String>,
    pub text: Option<String>,
    #[serde(default)]
    pub fields: Vec<SlackField>,
    #[serde(default)]
    pub short_fields: bool,
    pub footer: Option<String>,
    pub fallback: Option<String>,
    pub callback_id: Option<String>,
    pub icon_emoji: Option<String>,
    pub icon_url: Option<String>,
    pub image_url: Option<String>,
    pub thumb_url: Option<String>,
    #[serde(default)]
    pub link_names: bool,
    #[serde(default)]
    pub mrkdwn_in: Vec<String>,
    #[serde(default)]
    pub actions: Vec<SlackAction>,
}

/// A field of a Slack attachment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackField {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub value: String,
    /// Falls back to the config's `short_fields` when not written.
    pub short: Option<bool>,
}

/// A button of a Slack attachment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackAction {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub style: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
    pub confirm: Option<SlackConfirm>,
}

/// The confirmation dialog of a Slack action.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfirm {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub ok_text: String,
    #[serde(default)]
    pub dismiss_text: String,
}

/// A `receivers` entry as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub webhook_configs: Vec<WebhookConfig>,
    #[serde(default)]
    pub email_configs: Vec<EmailConfig>,
    #[serde(default)]
    pub slack_configs: Vec<SlackConfig>,
    // Kinds hearth does not send to yet: kept so configs that use them load.
    #[serde(default)]
    pub discord_configs: Vec<Opaque>,
    #[serde(default)]
    pub incidentio_configs: Vec<Opaque>,
    #[serde(default)]
    pub pagerduty_configs: Vec<Opaque>,
    #[serde(default)]
    pub opsgenie_configs: Vec<Opaque>,
    #[serde(default)]
    pub wechat_configs: Vec<Opaque>,
    #[serde(default)]
    pub pushover_configs: Vec<Opaque>,
    #[serde(default)]
    pub victorops_configs: Vec<Opaque>,
    #[serde(default)]
    pub sns_configs: Vec<Opaque>,
    #[serde(default)]
    pub telegram_configs: Vec<Opaque>,
    #[serde(default)]
    pub webex_configs: Vec<Opaque>,
    #[serde(default)]
    pub msteams_configs: Vec<Opaque>,
    #[serde(default)]
    pub msteamsv2_configs: Vec<Opaque>,
    #[serde(default)]
    pub jira_configs: Vec<Opaque>,
    #[serde(default)]
    pub rocketchat_configs: Vec<Opaque>,
    #[serde(default)]
    pub mattermost_configs: Vec<Opaque>,
}

/// A named list of time intervals (`time_intervals` / `mute_time_intervals`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeIntervalsConfig {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub time_intervals: Vec<TimeInterval>,
}

/// The whole file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub global: Option<GlobalConfig>,
    pub route: Option<RouteConfig>,
    #[serde(default)]
    pub inhibit_rules: Vec<InhibitRuleConfig>,
    #[serde(default)]
    pub receivers: Vec<ReceiverConfig>,
    #[serde(default)]
    pub templates: Vec<String>,
    #[serde(default)]
    pub mute_time_intervals: Vec<TimeIntervalsConfig>,
    #[serde(default)]
    pub time_intervals: Vec<TimeIntervalsConfig>,
    /// The text the config was parsed from (served by `/api/v2/status`).
    #[serde(skip)]
    pub original: String,
    /// The directory of the file it was loaded from: relative `templates:`
    /// globs are relative to it. Empty (the working directory) for parsed text.
    #[serde(skip)]
    pub dir: std::path::PathBuf,
}

/// Loads and validates a config file; errors start with the file's name.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Io {
        file: file.clone(),
        source,
    })?;
    if meta.len() > CONFIG_FILE_LEN_MAX {
        return Err(ConfigError::TooLarge {
            file,
            len: meta.len(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        file: file.clone(),
        source,
    })?;
    let mut cfg = parse(&text).map_err(|message| ConfigError::Invalid { file, message })?;
    cfg.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(cfg)
}

/// Parses and validates config text. The error is Alertmanager's message.
pub fn parse(text: &str) -> Result<Config, String> {
    // An empty document is an empty config (which then fails validation for
    // lacking a route, as in Alertmanager).
    let mut cfg: Config = if text.trim().is_empty() {
        Config::default()
    } else {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())?
    };
    cfg.original = text.to_string();
    cfg.validate()?;
    Ok(cfg)
}

/// Whether `s` is a valid label name in Alertmanager's (legacy) rules.
pub fn is_valid_label_name(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_url(what: &str, s: &str) -> Result<(), String> {
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(format!("unsupported scheme \"\" for URL in {what}"));
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("unsupported scheme {scheme:?} for URL"));
    }
    if rest.split(['/', '?', '#']).next().unwrap_or("").is_empty() {
        return Err("missing host for URL".to_string());
    }
    Ok(())
}

/// Builds Alertmanager's matcher list from the legacy `match`/`match_re` maps and
/// the `matchers` strings, sorted as Alertmanager sorts them.
pub fn build_matchers(
    eq: &BTreeMap<String, String>,
    re: &BTreeMap<String, String>,
    lines: &[String],
) -> Result<Vec<Matcher>, String> {
    let mut out = Vec::new();
    for (k, v) in eq {
        if !is_valid_label_name(k) {
            return Err(format!("invalid label name {k:?}"));
        }
        out.push(Matcher::equal(k, v));
    }
    for (k, v) in re {
        if !is_valid_label_name(k) {
            return Err(format!("invalid label name {k:?}"));
        }
        out.push(Matcher::new(MatchType::Regexp, k, v).map_err(|e| e.to_string())?);
    }
    for line in lines {
        out.extend(parse_matchers(line).map_err(|e| e.to_string())?);
    }
    sort_matchers(&mut out);
    Ok(out)
}

impl Config {
    /// The global section with defaults applied.
    pub fn global(&self) -> GlobalConfig {
        self.global.clone().unwrap_or_default()
    }

    /// Checks everything Alertmanager checks when it loads a config.
    pub fn validate(&self) -> Result<(), String> {
        let g = self.global();
        let both = |a: bool, b: bool, what: &str| {
            if a && b {
                Err(format!("at most one of {what} must be configured"))
            } else {
                Ok(())
            }
        };
        both(
            g.slack_api_url.is_some(),
            g.slack_api_url_file.is_some(),
            "slack_api_url & slack_api_url_file",
        )?;
        both(
            g.opsgenie_api_key.is_some(),
            g.opsgenie_api_key_file.is_some(),
            "opsgenie_api_key & opsgenie_api_key_file",
        )?;
        both(
            g.victorops_api_key.is_some(),
            g.victorops_api_key_file.is_some(),
            "victorops_api_key & victorops_api_key_file",
        )?;
        both(
            g.smtp_auth_password.is_some(),
            g.smtp_auth_password_file.is_some(),
            "smtp_auth_password & smtp_auth_password_file",
        )?;
        if let Some(u) = &g.slack_api_url {
            check_url("slack_api_url", u)?;
        }
        let mut names = HashSet::new();
        for rcv in &self.receivers {
            if rcv.name.is_empty() {
                return Err("missing name in receiver".into());
            }
            if names.contains(&rcv.name) {
                return Err(format!(
                    "notification config name {:?} is not unique",
                    rcv.name
                ));
            }
            for wh in &rcv.webhook_configs {
                match (&wh.url, &wh.url_file) {
                    (None, None) => return Err("one of url or url_file must be configured".into()),
                    (Some(_), Some(_)) => {
                        return Err("at most one of url & url_file must be configured".into())
                    }
                    (Some(u), None) => check_url("webhook_configs", u)?,
                    (None, Some(_)) => {}
                }
            }
            for ec in &rcv.email_configs {
                if ec.to.is_empty() {
                    return Err("missing to address in email config".into());
                }
                let mut seen = HashSet::new();
                for h in ec.headers.keys() {
                    let norm = canonical_header(h);
                    if !seen.insert(norm.clone()) {
                        return Err(format!("duplicate header {norm:?} in email config"));
                    }
                }
                if ec.smarthost.is_empty() && g.smtp_smarthost.as_deref().unwrap_or("").is_empty() {
                    return Err("no global SMTP smarthost set".into());
                }
                if ec.from.is_empty() && g.smtp_from.as_deref().unwrap_or("").is_empty() {
                    return Err("no global SMTP from set".into());
                }
            }
            for sc in &rcv.slack_configs {
                both(
                    sc.api_url.is_some(),
                    sc.api_url_file.is_some(),
                    "api_url or api_url_file",
                )?;
                if let Some(u) = &sc.api_url {
                    check_url("slack_configs", u)?;
                }
                for f in &sc.fields {
                    if f.title.is_empty() {
                        return Err("missing title in Slack field configuration".into());
                    }
                    if f.value.is_empty() {
                        return Err("missing value in Slack field configuration".into());
                    }
                }
                for a in &sc.actions {
                    if a.kind.is_empty() {
                        return Err("missing type in Slack action configuration".into());
                    }
                    if a.text.is_empty() {
                        return Err("missing text in Slack action configuration".into());
                    }
                    if a.url.is_empty() && a.name.is_empty() {
                        return Err("missing name or url in Slack action configuration".into());
                    }
                }
                if sc.api_url.is_none()
                    && sc.api_url_file.is_none()
                    && g.slack_api_url.is_none()
                    && g.slack_api_url_file.is_none()
                {
                    return Err("no global Slack API URL set either inline or in a file".into());
                }
            }
            names.insert(rcv.name.clone());
        }
        for rule in &self.inhibit_rules {
            build_matchers(
                &rule.source_match,
                &rule.source_match_re,
                &rule.source_matchers,
            )?;
            build_matchers(
                &rule.target_match,
                &rule.target_match_re,
                &rule.target_matchers,
            )?;
            for l in &rule.equal {
                if !is_valid_label_name(l) {
                    return Err(format!("invalid label name {l:?} in equal list"));
                }
            }
        }
        let Some(route) = &self.route else {
            return Err("no routes provided".into());
        };
        if route.receiver.is_empty() {
            return Err("root route must specify a default receiver".into());
        }
        if !route.match_eq.is_empty() || !route.match_re.is_empty() || !route.matchers.is_empty() {
            return Err("root route must not have any matchers".into());
        }
        if !route.mute_time_intervals.is_empty() {
            return Err("root route must not have any mute time intervals".into());
        }
        if !route.active_time_intervals.is_empty() {
            return Err("root route must not have any active time intervals".into());
        }
        check_route(route)?;
        check_receiver(route, &names)?;
        let mut ti_names = HashSet::new();
        for (list, what) in [
            (&self.mute_time_intervals, "mute time interval"),
            (&self.time_intervals, "time interval"),
        ] {
            for ti in list {
                if ti.name.is_empty() {
                    return Err(format!("missing name in {what}"));
                }
                if !ti_names.insert(ti.name.clone()) {
                    return Err(format!("{what} {:?} is not unique", ti.name));
                }
            }
        }
        check_time_intervals(route, &ti_names)
    }

    /// All named time intervals (both the deprecated and the current section).
    pub fn named_time_intervals(&self) -> BTreeMap<String, Vec<TimeInterval>> {
        self.mute_time_intervals
            .iter()
            .chain(&self.time_intervals)
            .map(|t| (t.name.clone(), t.time_intervals.clone()))
            .collect()
    }
}

/// `X-Foo-Bar` form of a header name, as Go's `textproto.CanonicalMIMEHeaderKey`.
pub(crate) fn canonical_header(h: &str) -> String {
    let mut up = true;
    h.chars()
        .map(|c| {
            let out = if up {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            up = c == '-';
            out
        })
        .collect()
}

/// Per-node checks of `Route.UnmarshalYAML`, recursively.
fn check_route(r: &RouteConfig) -> Result<(), String> {
    build_matchers(&r.match_eq, &r.match_re, &r.matchers)?;
    if let Some(gb) = &r.group_by {
        let mut all = false;
        let mut seen = HashSet::new();
        for l in gb {
            if l == "..." {
                all = true;
            } else {
                if !is_valid_label_name(l) {
                    return Err(format!("invalid label name {l:?} in group_by list"));
                }
                if !seen.insert(l.as_str()) {
                    return Err(format!("duplicated label {l:?} in group_by"));
                }
            }
        }
        if all && !seen.is_empty() {
            return Err(
                "cannot have wildcard group_by (`...`) and other labels at the same time".into(),
            );
        }
    }
    if r.group_interval.is_some_and(|d| d.0.is_zero()) {
        return Err("group_interval cannot be zero".into());
    }
    if r.repeat_interval.is_some_and(|d| d.0.is_zero()) {
        return Err("repeat_interval cannot be zero".into());
    }
    r.routes.iter().try_for_each(check_route)
}

fn check_receiver(r: &RouteConfig, names: &HashSet<String>) -> Result<(), String> {
    for sub in &r.routes {
        check_receiver(sub, names)?;
    }
    if !r.receiver.is_empty() && !names.contains(&r.receiver) {
        return Err(format!("undefined receiver {:?} used in route", r.receiver));
    }
    Ok(())
}

fn check_time_intervals(r: &RouteConfig, names: &HashSet<String>) -> Result<(), String> {
    for sub in &r.routes {
        check_time_intervals(sub, names)?;
    }
    for ti in r.active_time_intervals.iter().chain(&r.mute_time_intervals) {
        if !names.contains(ti) {
            return Err(format!("undefined time interval {ti:?} used in route"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
global:
  resolve_timeout: 1m
  slack_api_url: https://hooks.slack.example/x
route:
  receiver: default
  group_by: ['alertname']
  routes:
    - matchers: ['severity="critical"', team=~"db|web"]
      receiver: pager
      continue: true
      mute_time_intervals: [weekends]
    - match: {team: ops}
      match_re: {service: "api.*"}
      receiver: default
      group_by: ['...']
receivers:
  - name: default
    webhook_configs:
      - url: http://127.0.0.1:1/hook
        max_alerts: 5
  - name: pager
    slack_configs:
      - channel: '#x'
        title: '{{ template "slack.default.title" . }}'
    pagerduty_configs:
      - routing_key: abc
inhibit_rules:
  - source_matchers: [severity=critical]
    target_matchers: [severity=warning]
    equal: [alertname]
time_intervals:
  - name: weekends
    time_intervals:
      - weekdays: ['saturday', 'sunday']
templates: ['/etc/am/*.tmpl']
"#;

    #[test]
    fn loads_a_full_config() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.global().resolve_timeout(), Duration::from_secs(60));
        assert_eq!(c.receivers.len(), 2);
        assert_eq!(c.receivers[0].webhook_configs[0].max_alerts, 5);
        assert!(c.receivers[0].webhook_configs[0].send_resolved);
        assert!(!c.receivers[1].slack_configs[0].send_resolved);
        assert_eq!(c.named_time_intervals().len(), 1);
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err()
    }

    #[test]
    fn rejects_like_alertmanager() {
        let rcv = "receivers: [{name: a}]\n";
        assert_eq!(err(rcv), "no routes provided");
        assert_eq!(
            err(&format!("{rcv}route: {{group_by: [x]}}")),
            "root route must specify a default receiver"
        );
        assert_eq!(
            err(&format!("{rcv}route: {{receiver: b}}")),
            "undefined receiver \"b\" used in route"
        );
        assert_eq!(
            err(&format!(
                "{rcv}route: {{receiver: a, routes: [{{receiver: c}}]}}"
            )),
            "undefined receiver \"c\" used in route"
        );
        assert_eq!(
            err(&format!("{rcv}route: {{receiver: a, matchers: [x=y]}}")),
            "root route must not have any matchers"
        );
        assert_eq!(
            err(&format!("{rcv}route: {{receiver: a, group_by: [x, x]}}")),
            "duplicated label \"x\" in group_by"
        );
        assert!(err(&format!(
            "{rcv}route: {{receiver: a, group_by: ['...', x]}}"
        ))
        .starts_with("cannot have wildcard group_by"));
        assert_eq!(
            err(&format!("{rcv}route: {{receiver: a, group_interval: 0s}}")),
            "group_interval cannot be zero"
        );
        assert_eq!(
            err(&format!(
                "{rcv}route: {{receiver: a, routes: [{{mute_time_intervals: [nope]}}]}}"
            )),
            "undefined time interval \"nope\" used in route"
        );
        assert!(err(&format!(
            "{rcv}route: {{receiver: a, routes: [{{matchers: ['a=\"b']}}]}}"
        ))
        .contains("unescaped double quote"));
        assert_eq!(
            err("receivers: [{name: a}, {name: a}]\nroute: {receiver: a}"),
            "notification config name \"a\" is not unique"
        );
        assert_eq!(
            err("receivers: [{name: a, webhook_configs: [{}]}]\nroute: {receiver: a}"),
            "one of url or url_file must be configured"
        );
        assert_eq!(
            err("receivers: [{name: a, slack_configs: [{}]}]\nroute: {receiver: a}"),
            "no global Slack API URL set either inline or in a file"
        );
        assert_eq!(
            err("receivers: [{name: a, email_configs: [{to: x@y}]}]\nroute: {receiver: a}"),
            "no global SMTP smarthost set"
        );
        assert!(err("receivers: [{name: a}]\nroute: {receiver: a, bogus: 1}").contains("bogus"));
    }

    #[test]
    fn load_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("am.yml");
        std::fs::write(&p, "route: {receiver: x}\n").unwrap();
        let e = load_file(&p).unwrap_err().to_string();
        assert!(e.contains("am.yml"), "{e}");
        assert!(e.contains("undefined receiver \"x\""), "{e}");
        let e = load_file(&dir.path().join("missing.yml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.yml"), "{e}");
    }
}
