//! Recording and alerting rules: Prometheus's rule file format and its validation
//! (`rulefmt`), rule evaluation (`group`), label/annotation templates (`template`)
//! and the manager that runs every group on its own task (`manager`).

pub mod group;
pub mod manager;
pub mod notifier;
pub mod schedule;
pub mod template;

pub use group::{AlertState, Group, Rule};
pub use manager::RuleManager;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Largest rule file read, so a wrong path cannot exhaust memory.
const RULE_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Most rule files a config may load.
const RULE_FILES_MAX: usize = 10_000;

/// Why rules could not be loaded or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: file is larger than {RULE_FILE_BYTES_MAX} bytes")]
    TooLarge { path: String },
    #[error("{path}: {message}")]
    Yaml { path: String, message: String },
    /// Validation failed; one message per problem, as promtool lists them.
    #[error("{}", .errors.iter().map(|e| format!("{path}: {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: String, errors: Vec<String> },
    #[error("rule files: {0}")]
    Glob(String),
    #[error("{0}")]
    Eval(String),
}

/// A rule file: `groups:` and nothing else.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RuleGroups {
    #[serde(default)]
    pub groups: Vec<RuleGroupDef>,
}

/// One group as written in a rule file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleGroupDef {
    pub name: String,
    /// Evaluation interval (a Prometheus duration); the global one when absent.
    #[serde(default)]
    pub interval: Option<String>,
    /// How far back in time rules are evaluated.
    #[serde(default)]
    pub query_offset: Option<String>,
    /// Most series a recording rule, or alerts an alerting rule, may produce; 0 = none.
    #[serde(default)]
    pub limit: i64,
    /// Labels added to every rule's output, under the rule's own labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub rules: Vec<RuleDef>,
}

/// One rule as written: exactly one of `record` and `alert`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    #[serde(default)]
    pub record: Option<String>,
    #[serde(default)]
    pub alert: Option<String>,
    #[serde(default)]
    pub expr: String,
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
    #[serde(default)]
    pub keep_firing_for: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl RuleDef {
    /// The rule's name: the alert name, else the recorded metric (Prometheus's
    /// order, which shows when both are wrongly set).
    pub fn name(&self) -> &str {
        self.alert
            .as_deref()
            .or(self.record.as_deref())
            .unwrap_or("")
    }
}

/// Whether `s` is a valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn is_valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_duration_field(
    field: &str,
    v: &Option<String>,
    errs: &mut Vec<String>,
    prefix: &str,
) -> i64 {
    match v.as_deref() {
        None => 0,
        Some(s) => match crate::config_units::parse_duration_ms(s) {
            Ok(d) => d,
            Err(e) => {
                errs.push(format!("{prefix}field '{field}': {e}"));
                0
            }
        },
    }
}

impl RuleGroups {
    /// Parses rule file text; `name` is used in messages. An empty file has no groups.
    pub fn parse(text: &str, name: &str) -> Result<RuleGroups, RulesError> {
        if text.trim().is_empty() {
            return Ok(RuleGroups::default());
        }
        let groups: RuleGroups = serde_saphyr::from_str(text).map_err(|e| RulesError::Yaml {
            path: name.to_string(),
            message: yaml_error_message(&e),
        })?;
        let errors = groups.validate();
        if !errors.is_empty() {
            return Err(RulesError::Invalid {
                path: name.to_string(),
                errors,
            });
        }
        Ok(groups)
    }

    /// Reads and validates a rule file.
    pub fn load_file(path: &Path) -> Result<RuleGroups, RulesError> {
        let shown = path.display().to_string();
        let read_err = |source| RulesError::Read {
            path: shown.clone(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        if meta.len() > RULE_FILE_BYTES_MAX {
            return Err(RulesError::TooLarge { path: shown });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        RuleGroups::parse(&text, &shown)
    }

    /// Prometheus's checks (`rulefmt.RuleGroups.Validate`); the messages are its own,
    /// without the YAML line and column (not kept by the parser).
    pub fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for g in &self.groups {
            if g.name.is_empty() {
                errs.push("Groupname must not be empty".to_string());
            }
            if !seen.insert(g.name.as_str()) {
                errs.push(format!(
                    "groupname: \"{}\" is repeated in the same file",
                    g.name
                ));
            }
            let gp = format!("group {:?}: ", g.name);
            let interval = parse_duration_field("interval", &g.interval, &mut errs, &gp);
            if g.interval.is_some() && interval <= 0 {
                errs.push(format!("{gp}interval must be greater than 0"));
            }
            parse_duration_field("query_offset", &g.query_offset, &mut errs, &gp);
            if g.limit < 0 {
                errs.push(format!("{gp}limit must not be negative"));
            }
            for (k, v) in &g.labels {
                check_label(k, v, &mut errs, &gp);
            }
            for (i, r) in g.rules.iter().enumerate() {
                let prefix = format!("group {:?}, rule {}, {:?}: ", g.name, i + 1, r.name());
                for e in validate_rule(r) {
                    errs.push(format!("{prefix}{e}"));
                }
            }
        }
        errs
    }

    /// Number of rules over all groups.
    pub fn num_rules(&self) -> usize {
        self.groups.iter().map(|g| g.rules.len()).sum()
    }
}

fn check_label(k: &str, _v: &str, errs: &mut Vec<String>, prefix: &str) {
    // YAML strings are always valid UTF-8, so only names need checking.
    if !crate::relabel::is_valid_label_name(k) {
        errs.push(format!("{prefix}invalid label name: {k}"));
    }
}

/// One rule's problems (`rulefmt.RuleNode.Validate`).
fn validate_rule(r: &RuleDef) -> Vec<String> {
    let mut errs = Vec::new();
    match (&r.record, &r.alert) {
        (Some(_), Some(_)) => errs.push("only one of 'record' and 'alert' must be set".into()),
        (None, None) => errs.push("one of 'record' or 'alert' must be set".into()),
        _ => {}
    }
    if r.expr.is_empty() {
        errs.push("field 'expr' must be set in rule".into());
    } else if let Err(e) = crate::promql::parse(&r.expr) {
        errs.push(format!("could not parse expression: {e}"));
    }
    if let Some(record) = &r.record {
        if !r.annotations.is_empty() {
            errs.push("invalid field 'annotations' in recording rule".into());
        }
        if r.for_.is_some() {
            errs.push("invalid field 'for' in recording rule".into());
        }
        if r.keep_firing_for.is_some() {
            errs.push("invalid field 'keep_firing_for' in recording rule".into());
        }
        if !is_valid_metric_name(record) {
            errs.push(format!("invalid recording rule name: {record}"));
        }
    }
    if r.alert.is_some() {
        parse_duration_field("for", &r.for_, &mut errs, "");
        parse_duration_field("keep_firing_for", &r.keep_firing_for, &mut errs, "");
    }
    for (k, v) in &r.labels {
        check_label(k, v, &mut errs, "");
        if r.alert.is_some() {
            if let Err(e) = template::Template::parse(v) {
                errs.push(format!("label {k:?}: {e}"));
            }
        }
    }
    for (k, v) in &r.annotations {
        if !crate::relabel::is_valid_label_name(k) {
            errs.push(format!("invalid annotation name: {k}"));
        }
        if let Err(e) = template::Template::parse(v) {
            errs.push(format!("annotation {k:?}: {e}"));
        }
    }
    errs
}

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

/// The files the `rule_files` patterns match, sorted and without duplicates. As in
/// Prometheus (`filepath.Glob`), a pattern without wildcards naming no file matches
/// nothing rather than failing.
pub fn rule_files(patterns: &[String]) -> Result<Vec<PathBuf>, RulesError> {
    let mut out = std::collections::BTreeSet::new();
    for pattern in patterns {
        let name = Path::new(pattern)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.contains(['*', '?', '[']) {
            let matched = crate::discovery::matching_files(std::slice::from_ref(pattern))
                .map_err(|e| RulesError::Glob(e.to_string()))?;
            out.extend(matched);
        } else if Path::new(pattern).exists() {
            out.insert(PathBuf::from(pattern));
        }
        if out.len() > RULE_FILES_MAX {
            return Err(RulesError::Glob(format!(
                "more than {RULE_FILES_MAX} rule files"
            )));
        }
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod notifier_tests;
#[cfg(test)]
mod template_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod timer_tests;
