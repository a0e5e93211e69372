//! Relabeling: Prometheus's `relabel_configs` and `metric_relabel_configs`.
//!
//! Every action Prometheus has, with its defaults (separator `;`, regex `(.*)`
//! anchored at both ends, replacement `$1`, action `replace`), its validation
//! messages, and Go's template expansion (`$1`, `${1}`, `$name`, `$$`). `hashmod`
//! uses the last 8 bytes of the MD5 of the joined values, as Prometheus does, so the
//! same targets land in the same shards in both systems.

#[cfg(test)]
mod tests;

use md5::{Digest, Md5};
use regex::Regex;
use serde::Deserialize;

use crate::labels::{Labels, LabelsBuilder};

/// Most source labels one rule may name; Prometheus has no limit, but no real
/// config comes near this.
pub const SOURCE_LABELS_MAX: usize = 1024;

/// A relabeling action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

impl Action {
    /// Parses an action name, case-insensitively as Prometheus does.
    pub fn parse(s: &str) -> Result<Action, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            _ => return Err(format!("unknown relabel action {s:?}")),
        })
    }

    /// The name used in configuration and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }
}

/// One relabeling rule as written in the file, before defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRelabelConfig {
    pub source_labels: Option<Vec<String>>,
    pub separator: Option<String>,
    pub regex: Option<String>,
    pub modulus: Option<u64>,
    pub target_label: Option<String>,
    pub replacement: Option<String>,
    pub action: Option<String>,
}

/// A validated relabeling rule with its regex compiled.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawRelabelConfig")]
pub struct RelabelConfig {
    pub source_labels: Vec<String>,
    pub separator: String,
    /// The regex as written (unanchored), for display and comparison.
    pub regex_text: String,
    /// The `^(?:...)$`-anchored compiled form.
    regex: Regex,
    pub modulus: u64,
    pub target_label: String,
    pub replacement: String,
    pub action: Action,
}

impl PartialEq for RelabelConfig {
    fn eq(&self, o: &RelabelConfig) -> bool {
        self.source_labels == o.source_labels
            && self.separator == o.separator
            && self.regex_text == o.regex_text
            && self.modulus == o.modulus
            && self.target_label == o.target_label
            && self.replacement == o.replacement
            && self.action == o.action
    }
}

const DEFAULT_REGEX: &str = "(.*)";
const DEFAULT_SEPARATOR: &str = ";";
const DEFAULT_REPLACEMENT: &str = "$1";

/// Whether `s` is a valid label name in Prometheus's classic syntax
/// (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_valid_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `s` is a valid target label template: label-name characters and `$1`,
/// `${1}`, `$name` references (Prometheus's `relabelTarget`).
fn is_valid_label_template(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    let mut i = 0;
    let mut first = true;
    while i < b.len() {
        if b[i] == b'$' {
            i += 1;
            if i < b.len() && b[i] == b'{' {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                if j == start || j >= b.len() || b[j] != b'}' {
                    return false;
                }
                i = j + 1;
            } else {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                if i == start {
                    return false;
                }
            }
        } else if b[i].is_ascii_alphabetic() || b[i] == b'_' || (!first && b[i].is_ascii_digit()) {
            i += 1;
        } else {
            return false;
        }
        first = false;
    }
    true
}

/// Compiles a regex anchored at both ends, as Prometheus compiles `^(?:re)$`
/// (without the `s` flag, so `.` does not match a newline in either).
fn compile_anchored(re: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{re})$")).map_err(|e| format!("invalid regex {re:?}: {e}"))
}

impl TryFrom<RawRelabelConfig> for RelabelConfig {
    type Error = String;

    fn try_from(raw: RawRelabelConfig) -> Result<RelabelConfig, String> {
        let action = match raw.action.as_deref() {
            None => Action::Replace,
            Some("") => return Err("relabel action cannot be empty".into()),
            Some(a) => Action::parse(a)?,
        };
        let regex_text = raw.regex.clone().unwrap_or_else(|| DEFAULT_REGEX.into());
        let regex = compile_anchored(&regex_text)?;
        let source_labels = raw.source_labels.clone().unwrap_or_default();
        if source_labels.len() > SOURCE_LABELS_MAX {
            return Err(format!(
                "relabel configuration has more than {SOURCE_LABELS_MAX} source labels"
            ));
        }
        for l in &source_labels {
            if !is_valid_label_name(l) {
                return Err(format!("{l:?} is not a valid label name"));
            }
        }
        let c = RelabelConfig {
            source_labels,
            separator: raw
                .separator
                .clone()
                .unwrap_or_else(|| DEFAULT_SEPARATOR.into()),
            regex_text,
            regex,
            modulus: raw.modulus.unwrap_or(0),
            target_label: raw.target_label.clone().unwrap_or_default(),
            replacement: raw
                .replacement
                .clone()
                .unwrap_or_else(|| DEFAULT_REPLACEMENT.into()),
            action,
        };
        c.validate(&raw)?;
        Ok(c)
    }
}

impl RelabelConfig {
    /// Builds a rule from its parts as they would be written in YAML.
    pub fn from_raw(raw: RawRelabelConfig) -> Result<RelabelConfig, String> {
        RelabelConfig::try_from(raw)
    }

    /// Prometheus's `Config.Validate`, with its messages.
    fn validate(&self, raw: &RawRelabelConfig) -> Result<(), String> {
        let a = self.action;
        let name = a.as_str();
        if self.modulus == 0 && a == Action::HashMod {
            return Err("relabel configuration for hashmod requires non-zero modulus".into());
        }
        let needs_target = matches!(
            a,
            Action::Replace
                | Action::HashMod
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        );
        if needs_target && self.target_label.is_empty() {
            return Err(format!(
                "relabel configuration for {name} action requires 'target_label' value"
            ));
        }
        let bad_target = || {
            Err(format!(
                "{:?} is invalid 'target_label' for {name} action",
                self.target_label
            ))
        };
        if a == Action::Replace {
            let ok = if self.target_label.contains('$') {
                is_valid_label_template(&self.target_label)
            } else {
                is_valid_label_name(&self.target_label)
            };
            if !ok {
                return bad_target();
            }
        }
        let equal_or_case = matches!(
            a,
            Action::Lowercase | Action::Uppercase | Action::KeepEqual | Action::DropEqual
        );
        if equal_or_case && !is_valid_label_name(&self.target_label) {
            return bad_target();
        }
        if equal_or_case && self.replacement != DEFAULT_REPLACEMENT {
            return Err(format!("'replacement' can not be set for {name} action"));
        }
        if a == Action::LabelMap && !is_valid_label_template(&self.replacement) {
            return Err(format!(
                "{:?} is invalid 'replacement' for {name} action",
                self.replacement
            ));
        }
        if a == Action::HashMod && !is_valid_label_name(&self.target_label) {
            return bad_target();
        }
        if matches!(a, Action::KeepEqual | Action::DropEqual)
            && (self.regex_text != DEFAULT_REGEX
                || self.modulus != 0
                || self.separator != DEFAULT_SEPARATOR
                || self.replacement != DEFAULT_REPLACEMENT)
        {
            return Err(format!(
                "{name} action requires only 'source_labels' and `target_label`, and no other fields"
            ));
        }
        if matches!(a, Action::LabelDrop | Action::LabelKeep)
            && (raw.source_labels.is_some()
                || !self.target_label.is_empty()
                || self.modulus != 0
                || self.separator != DEFAULT_SEPARATOR
                || self.replacement != DEFAULT_REPLACEMENT)
        {
            return Err(format!(
                "{name} action requires only 'regex', and no other fields"
            ));
        }
        Ok(())
    }

    /// Applies this rule to `lb`; false means the series or target is dropped.
    pub fn apply(&self, lb: &mut LabelsBuilder) -> bool {
        let val = if self.source_labels.len() == 1 {
            lb.get(&self.source_labels[0]).to_string()
        } else {
            let mut v = String::new();
            for (i, name) in self.source_labels.iter().enumerate() {
                if i > 0 {
                    v.push_str(&self.separator);
                }
                v.push_str(lb.get(name));
            }
            v
        };
        match self.action {
            Action::Drop => {
                if self.regex.is_match(&val) {
                    return false;
                }
            }
            Action::Keep => {
                if !self.regex.is_match(&val) {
                    return false;
                }
            }
            Action::DropEqual => {
                if lb.get(&self.target_label) == val {
                    return false;
                }
            }
            Action::KeepEqual => {
                if lb.get(&self.target_label) != val {
                    return false;
                }
            }
            Action::Replace => {
                // Setting a fixed value needs no regex work (Prometheus's fast path).
                if val.is_empty()
                    && self.regex_text == DEFAULT_REGEX
                    && !self.target_label.contains('$')
                    && !self.replacement.contains('$')
                {
                    lb.set(&self.target_label, &self.replacement);
                    return true;
                }
                let Some(caps) = self.regex.captures(&val) else {
                    return true;
                };
                let mut target = String::new();
                caps.expand(&self.target_label, &mut target);
                if !is_valid_label_name(&target) {
                    return true;
                }
                let mut res = String::new();
                caps.expand(&self.replacement, &mut res);
                if res.is_empty() {
                    lb.del(&target);
                } else {
                    lb.set(&target, &res);
                }
            }
            Action::Lowercase => {
                lb.set(&self.target_label, &val.to_lowercase());
            }
            Action::Uppercase => {
                lb.set(&self.target_label, &val.to_uppercase());
            }
            Action::HashMod => {
                let sum = Md5::digest(val.as_bytes());
                let mut last = [0u8; 8];
                last.copy_from_slice(&sum[8..16]);
                let m = u64::from_be_bytes(last) % self.modulus;
                lb.set(&self.target_label, &m.to_string());
            }
            Action::LabelMap => {
                for (name, value) in lb.pairs() {
                    if let Some(caps) = self.regex.captures(&name) {
                        let mut res = String::new();
                        caps.expand(&self.replacement, &mut res);
                        lb.set(&res, &value);
                    }
                }
            }
            Action::LabelDrop => {
                for (name, _) in lb.pairs() {
                    if self.regex.is_match(&name) {
                        lb.del(&name);
                    }
                }
            }
            Action::LabelKeep => {
                for (name, _) in lb.pairs() {
                    if !self.regex.is_match(&name) {
                        lb.del(&name);
                    }
                }
            }
        }
        true
    }
}

/// Applies `rules` in order to `lb`; false as soon as one drops the label set.
pub fn process_builder(lb: &mut LabelsBuilder, rules: &[RelabelConfig]) -> bool {
    rules.iter().all(|r| r.apply(lb))
}

/// Applies `rules` in order to `labels`: the relabeled set, or `None` when dropped.
pub fn process(labels: &Labels, rules: &[RelabelConfig]) -> Option<Labels> {
    let mut lb = labels.builder();
    process_builder(&mut lb, rules).then(|| lb.build())
}
