//! Notification templates as Alertmanager renders them: its template data
//! (`Receiver`, `Status`, `Alerts` with `.Firing`/`.Resolved`, `GroupLabels`,
//! `CommonLabels`, `CommonAnnotations` as `KV` with `SortedPairs`, `Names`,
//! `Values`, `Remove`, `ExternalURL`), its template functions, the default
//! templates by name (`__subject`, `slack.default.title`, …, written for hearth
//! to render the same text as Alertmanager's `default.tmpl`), and the user's
//! `templates:` files. `render` expands one field's text, as Alertmanager's
//! `ExecuteTextString` does (missing keys are empty).

use super::types::{is_zero, zero_time, Alert};
use crate::gotmpl::{
    self, arg_str, gotime::GoDuration, gotime::GoTime, want_args, ExecOptions, Funcs, Object, Value,
};
use crate::labels::Labels;
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most bytes one rendered field may have.
const OUTPUT_BYTES_MAX: usize = 1024 * 1024;

/// Most template files the `templates:` globs may match.
const TEMPLATE_FILES_MAX: usize = 1000;

/// A template could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{0}")]
    Template(#[from] gotmpl::TemplateError),
    #[error("reading template file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("template files: {0}")]
    Glob(String),
}

/// Alertmanager's default templates, by name. The plain-text ones render the
/// same text as Alertmanager's; `email.default.html` is a simpler page (see
/// `docs/templates.md`).
pub const DEFAULT_TEMPLATES: &str = include_str!("default.tmpl");

/// One alert of a notification, as templates see it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertData {
    /// `firing` or `resolved`.
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: Timestamp,
    /// Zero (Go's zero time) while the alert fires.
    pub ends_at: Timestamp,
    pub generator_url: String,
    /// The label fingerprint as 16 hex digits.
    pub fingerprint: String,
}

/// A notification's template data (Alertmanager's `template.Data`).
#[derive(Debug, Clone, PartialEq)]
pub struct Data {
    /// The receiver name with regular-expression metacharacters escaped, as
    /// Alertmanager gives it.
    pub receiver: String,
    pub status: String,
    pub alerts: Vec<AlertData>,
    pub group_labels: BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    pub external_url: String,
}

fn labels_map(l: &Labels) -> BTreeMap<String, String> {
    l.iter()
        .map(|l| (l.name.to_string(), l.value.to_string()))
        .collect()
}

/// Go's `regexp.QuoteMeta`.
pub(crate) fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Data {
    /// The data for a notification of `alerts` to `receiver` at `now`, as
    /// Alertmanager's `Template.Data` builds it: common labels and annotations
    /// are those every alert has with the same value.
    pub fn new(
        receiver: &str,
        group_labels: &Labels,
        alerts: &[Alert],
        external_url: &str,
        now: Timestamp,
    ) -> Data {
        let firing = alerts.iter().any(|a| !a.resolved_at(now));
        let data_alerts: Vec<AlertData> = alerts
            .iter()
            .map(|a| AlertData {
                status: a.status_at(now).to_string(),
                labels: labels_map(&a.labels),
                annotations: (*a.annotations).clone(),
                starts_at: a.starts_at,
                // An end that is not reached yet is not shown.
                ends_at: if a.resolved_at(now) {
                    a.ends_at
                } else {
                    zero_time()
                },
                generator_url: a.generator_url.to_string(),
                fingerprint: format!("{:016x}", a.fingerprint()),
            })
            .collect();
        let common = |get: &dyn Fn(&AlertData) -> &BTreeMap<String, String>| {
            let mut c = data_alerts
                .first()
                .map(|a| get(a).clone())
                .unwrap_or_default();
            for a in data_alerts.iter().skip(1) {
                let m = get(a);
                c.retain(|k, v| m.get(k) == Some(v));
            }
            c
        };
        Data {
            receiver: quote_meta(receiver),
            status: if firing { "firing" } else { "resolved" }.to_string(),
            common_labels: common(&|a| &a.labels),
            common_annotations: common(&|a| &a.annotations),
            alerts: data_alerts,
            group_labels: labels_map(group_labels),
            external_url: external_url.to_string(),
        }
    }

    /// The data as a template value.
    pub fn to_value(&self) -> Value {
        let mut m = BTreeMap::new();
        m.insert("Receiver".into(), Value::str(&self.receiver));
        m.insert("Status".into(), Value::str(&self.status));
        m.insert(
            "Alerts".into(),
            Value::object(Alerts(Arc::new(
                self.alerts.iter().map(alert_value).collect(),
            ))),
        );
        m.insert("GroupLabels".into(), kv(&self.group_labels));
        m.insert("CommonLabels".into(), kv(&self.common_labels));
        m.insert("CommonAnnotations".into(), kv(&self.common_annotations));
        m.insert("ExternalURL".into(), Value::str(&self.external_url));
        Value::map(m)
    }
}

fn time_value(t: Timestamp) -> Value {
    if is_zero(t) {
        GoTime::value(gotmpl::gotime::go_zero_time())
    } else {
        GoTime::value(t)
    }
}

fn alert_value(a: &AlertData) -> Value {
    let mut m = BTreeMap::new();
    m.insert("Status".into(), Value::str(&a.status));
    m.insert("Labels".into(), kv(&a.labels));
    m.insert("Annotations".into(), kv(&a.annotations));
    m.insert("StartsAt".into(), time_value(a.starts_at));
    m.insert("EndsAt".into(), time_value(a.ends_at));
    m.insert("GeneratorURL".into(), Value::str(&a.generator_url));
    m.insert("Fingerprint".into(), Value::str(&a.fingerprint));
    Value::map(m)
}

fn kv(m: &BTreeMap<String, String>) -> Value {
    Value::object(Kv(Arc::new(m.clone())))
}

fn strings(v: impl IntoIterator<Item = String>) -> Value {
    Value::list(v.into_iter().map(Value::String).collect())
}

/// Alertmanager's `KV`: a map of strings with sorted views.
struct Kv(Arc<BTreeMap<String, String>>);

impl Object for Kv {
    fn type_name(&self) -> &str {
        "template.KV"
    }
    fn get(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
        let no_args = |v: Value| want_args(name, args, 0).map(|_| v);
        Some(match name {
            "SortedPairs" => no_args(pairs(&self.0)),
            "Names" => no_args(strings(self.0.keys().cloned())),
            "Values" => no_args(strings(self.0.values().cloned())),
            "Remove" => want_args(name, args, 1).and_then(|_| {
                let drop = string_list(&args[0])?;
                let mut m = (*self.0).clone();
                for k in drop {
                    m.remove(&k);
                }
                Ok(Value::object(Kv(Arc::new(m))))
            }),
            _ => return None,
        })
    }
    fn underlying(&self) -> Value {
        Value::string_map(self.0.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

fn pairs(m: &BTreeMap<String, String>) -> Value {
    Value::object(Pairs(Arc::new(
        m.iter()
            .map(|(k, v)| Value::object(Pair(k.clone(), v.clone())))
            .collect(),
    )))
}

/// Alertmanager's `Pairs`: name/value pairs sorted by name.
struct Pairs(Arc<Vec<Value>>);

impl Object for Pairs {
    fn type_name(&self) -> &str {
        "template.Pairs"
    }
    fn get(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
        let field = match name {
            "Names" => "Name",
            "Values" => "Value",
            _ => return None,
        };
        Some(want_args(name, args, 0).map(|_| {
            Value::list(
                self.0
                    .iter()
                    .map(|p| match p {
                        Value::Object(o) => {
                            o.get(field, &[]).and_then(Result::ok).unwrap_or_default()
                        }
                        _ => Value::NoValue,
                    })
                    .collect(),
            )
        }))
    }
    fn underlying(&self) -> Value {
        Value::List(self.0.clone())
    }
}

/// Alertmanager's `Pair`.
struct Pair(String, String);

impl Object for Pair {
    fn type_name(&self) -> &str {
        "template.Pair"
    }
    fn get(&self, name: &str, _args: &[Value]) -> Option<Result<Value, String>> {
        match name {
            "Name" => Some(Ok(Value::str(&self.0))),
            "Value" => Some(Ok(Value::str(&self.1))),
            _ => None,
        }
    }
    fn underlying(&self) -> Value {
        Value::NoValue
    }
    fn display(&self) -> Option<String> {
        Some(format!("{{{} {}}}", self.0, self.1))
    }
}

/// Alertmanager's `Alerts`, with `Firing` and `Resolved`.
struct Alerts(Arc<Vec<Value>>);

impl Object for Alerts {
    fn type_name(&self) -> &str {
        "template.Alerts"
    }
    fn get(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
        let want = match name {
            "Firing" => "firing",
            "Resolved" => "resolved",
            _ => return None,
        };
        Some(want_args(name, args, 0).map(|_| {
            let keep: Vec<Value> = self
                .0
                .iter()
                .filter(|a| match a {
                    Value::Map(m) => m.get("Status") == Some(&Value::str(want)),
                    _ => false,
                })
                .cloned()
                .collect();
            Value::object(Alerts(Arc::new(keep)))
        }))
    }
    fn underlying(&self) -> Value {
        Value::List(self.0.clone())
    }
}

/// A `[]string` argument.
fn string_list(v: &Value) -> Result<Vec<String>, String> {
    match v.resolved() {
        Value::List(l) => l
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "wrong type for value; expected []string; got []{}",
                    other.type_name()
                )),
            })
            .collect(),
        other => Err(format!(
            "wrong type for value; expected []string; got {}",
            other.type_name()
        )),
    }
}

/// A `time.Time` argument.
fn time_arg(v: &Value) -> Result<jiff::Zoned, String> {
    if let Value::Object(o) = v {
        if let Some(t) = o.as_any().and_then(|a| a.downcast_ref::<GoTime>()) {
            return Ok(t.0.clone());
        }
    }
    Err(format!(
        "wrong type for value; expected time.Time; got {}",
        v.type_name()
    ))
}

/// Go's `url.QueryUnescape`.
fn query_unescape(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3).filter(|h| h.len() == 2);
                let v = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                let Some(v) = v else {
                    let bad: String = s[i..].chars().take(3).collect();
                    return Err(format!("invalid URL escape {}", gotmpl::go_quote(&bad)));
                };
                out.push(v);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn one_str<'v>(name: &str, args: &'v [Value]) -> Result<&'v str, String> {
    want_args(name, args, 1)?;
    arg_str(&args[0])
}

/// Alertmanager's template functions.
pub fn alertmanager_funcs<'a>() -> Funcs<'a> {
    let mut f = Funcs::new();
    f.add("toUpper", |a: &[Value]| {
        Ok(Value::String(one_str("toUpper", a)?.to_uppercase()))
    });
    f.add("toLower", |a: &[Value]| {
        Ok(Value::String(one_str("toLower", a)?.to_lowercase()))
    });
    f.add("title", |a: &[Value]| {
        Ok(Value::String(crate::rules::template::title(one_str(
            "title", a,
        )?)))
    });
    f.add("trimSpace", |a: &[Value]| {
        Ok(Value::str(one_str("trimSpace", a)?.trim()))
    });
    f.add("join", |a: &[Value]| {
        want_args("join", a, 2)?;
        let sep = arg_str(&a[0])?;
        Ok(Value::String(string_list(&a[1])?.join(sep)))
    });
    f.add("match", |a: &[Value]| {
        want_args("match", a, 2)?;
        let re =
            regex::Regex::new(arg_str(&a[0])?).map_err(|e| format!("error parsing regexp: {e}"))?;
        Ok(Value::Bool(re.is_match(arg_str(&a[1])?)))
    });
    f.add("reReplaceAll", |a: &[Value]| {
        want_args("reReplaceAll", a, 3)?;
        let re =
            regex::Regex::new(arg_str(&a[0])?).map_err(|e| format!("error parsing regexp: {e}"))?;
        Ok(Value::String(
            re.replace_all(arg_str(&a[2])?, arg_str(&a[1])?)
                .into_owned(),
        ))
    });
    f.add("safeHtml", |a: &[Value]| {
        Ok(Value::str(one_str("safeHtml", a)?))
    });
    f.add("safeUrl", |a: &[Value]| {
        Ok(Value::str(one_str("safeUrl", a)?))
    });
    f.add("urlUnescape", |a: &[Value]| {
        Ok(Value::String(query_unescape(one_str("urlUnescape", a)?)?))
    });
    f.add("stringSlice", |a: &[Value]| {
        let v: Result<Vec<String>, String> =
            a.iter().map(|x| arg_str(x).map(str::to_string)).collect();
        Ok(strings(v?))
    });
    f.add("date", |a: &[Value]| {
        want_args("date", a, 2)?;
        let layout = arg_str(&a[0])?;
        let t = time_arg(&a[1])?;
        Ok(Value::String(gotmpl::gotime::format_layout(&t, layout)))
    });
    f.add("tz", |a: &[Value]| {
        want_args("tz", a, 2)?;
        let name = arg_str(&a[0])?;
        let t = time_arg(&a[1])?;
        let zone = if name.is_empty() || name == "UTC" {
            jiff::tz::TimeZone::UTC
        } else {
            jiff::tz::TimeZone::get(name).map_err(|_| format!("unknown time zone {name}"))?
        };
        Ok(Value::object(GoTime(t.timestamp().to_zoned(zone))))
    });
    f.add("since", |a: &[Value]| {
        want_args("since", a, 1)?;
        let t = time_arg(&a[0])?;
        let d = Timestamp::now().as_nanosecond() - t.timestamp().as_nanosecond();
        let ns = d.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        Ok(Value::object(GoDuration(ns)))
    });
    f.add("humanizeDuration", |a: &[Value]| {
        want_args("humanizeDuration", a, 1)?;
        let secs = match &a[0] {
            Value::Float(x) => *x,
            Value::Int(i) => *i as f64,
            Value::String(s) => s.parse::<f64>().map_err(|_| {
                format!(
                    "strconv.ParseFloat: parsing {}: invalid syntax",
                    gotmpl::go_quote(s)
                )
            })?,
            Value::Object(o) if o.type_name() == "time.Duration" => match o.underlying() {
                Value::Int(ns) => ns as f64 / 1e9,
                _ => 0.0,
            },
            other => return Err(format!("can't convert {} to float", other.type_name())),
        };
        Ok(Value::String(crate::rules::template::humanize_duration(
            secs,
        )))
    });
    f
}

/// The default templates and the user's template files, ready to render.
#[derive(Debug, Clone)]
pub struct Templates {
    set: gotmpl::Template,
}

impl Templates {
    /// Only the default templates.
    pub fn defaults() -> Result<Templates, TemplateError> {
        let mut set = gotmpl::Template::new("");
        set.parse_named("default.tmpl", DEFAULT_TEMPLATES, &alertmanager_funcs())?;
        Ok(Templates { set })
    }

    /// The default templates, then the files the `templates:` globs match (in
    /// order; a relative glob is relative to `config_dir`). A later definition of
    /// a name replaces an earlier one, so users can override the defaults. A glob
    /// matching no file is not an error, as in Alertmanager.
    pub fn load(config_dir: &Path, patterns: &[String]) -> Result<Templates, TemplateError> {
        let mut t = Templates::defaults()?;
        let funcs = alertmanager_funcs();
        let mut n = 0;
        for p in patterns {
            let full = if Path::new(p).is_absolute() {
                p.clone()
            } else {
                config_dir.join(p).to_string_lossy().into_owned()
            };
            let files = crate::discovery::matching_files(std::slice::from_ref(&full))
                .map_err(|e| TemplateError::Glob(e.to_string()))?;
            for f in files {
                n += 1;
                if n > TEMPLATE_FILES_MAX {
                    return Err(TemplateError::Glob(format!(
                        "more than {TEMPLATE_FILES_MAX} template files"
                    )));
                }
                let text = std::fs::read_to_string(&f).map_err(|source| TemplateError::Read {
                    path: f.clone(),
                    source,
                })?;
                let name = f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                t.set.parse_named(&name, &text, &funcs)?;
            }
        }
        Ok(t)
    }

    /// Whether a template of this name is defined.
    pub fn has(&self, name: &str) -> bool {
        self.set.has(name)
    }

    /// Expands `text` (which may call `{{ template "NAME" . }}` on any loaded
    /// template) with `data`. Empty text renders as empty.
    pub fn render(&self, text: &str, data: &Data) -> Result<String, TemplateError> {
        if text.is_empty() {
            return Ok(String::new());
        }
        let funcs = alertmanager_funcs();
        let mut set = self.set.clone();
        set.parse_named("", text, &funcs)?;
        let opts = ExecOptions {
            output_bytes_max: OUTPUT_BYTES_MAX,
            missing_key_zero: true,
            ..Default::default()
        };
        Ok(set.execute_with("", &data.to_value(), &funcs, &opts)?)
    }
}

/// Renders `template_text` with `data` and the default templates.
pub fn render(template_text: &str, data: &Data) -> Result<String, TemplateError> {
    Templates::defaults()?.render(template_text, data)
}
