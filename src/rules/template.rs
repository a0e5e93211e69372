//! Alert label and annotation templates as Prometheus expands them: Go's
//! text/template (the `gotmpl` engine) with the data Prometheus gives
//! (`.Labels`, `.ExternalLabels`, `.ExternalURL`, `.Value` and the variables
//! `$labels`, `$externalLabels`, `$externalURL`, `$value`) and Prometheus's
//! template functions (`humanize*`, `query`, `first`, `label`, `value`,
//! `sortByLabel`, `reReplaceAll`, `tmpl`, …). Missing map keys expand to the
//! empty string (`missingkey=zero`), as in Prometheus.

use crate::gotmpl::{self, arg_str, gotime::GoTime, want_args, ExecOptions, Funcs, Object, Value};
use crate::labels::Labels;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most bytes a template may expand to, so a template cannot blow up memory.
const OUTPUT_BYTES_MAX: usize = 64 * 1024;

/// The text Prometheus puts before every alert template to define its
/// variables. hearth defines them directly, and adds this text's length to
/// columns on the first line so error positions match Prometheus's.
const PROMETHEUS_DEFS: &str = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}";

/// The variables alert templates may use without declaring them.
const VARS: [&str; 4] = ["$labels", "$externalLabels", "$externalURL", "$value"];

/// A template error, with Prometheus's wording (shown in the expanded text and
/// in the rule's health).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("error parsing template {name}: {source}")]
    Parse {
        name: String,
        source: gotmpl::TemplateError,
    },
    #[error("error executing template {name}: {source}")]
    Exec {
        name: String,
        source: gotmpl::TemplateError,
    },
}

/// Runs an instant PromQL query for the `query` function: the result as a
/// vector (a scalar is one sample with no labels).
pub type QueryFn<'a> = dyn Fn(&str) -> Result<Vec<(Labels, f64)>, String> + 'a;

/// What a template sees: the alert's labels, its value, the external labels and
/// URL.
#[derive(Debug, Clone, Default)]
pub struct TemplateData<'a> {
    pub labels: BTreeMap<&'a str, &'a str>,
    pub external_labels: BTreeMap<&'a str, &'a str>,
    /// `--web.external-url`; empty when not set.
    pub external_url: &'a str,
    pub value: f64,
}

/// A parsed alert template.
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    inner: gotmpl::Template,
}

impl Template {
    /// Parses template text, under Prometheus's name for an unnamed alert.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        Template::parse_named("__alert_", text)
    }

    /// Parses template text as `name` (Prometheus uses `__alert_ALERTNAME`).
    pub fn parse_named(name: &str, text: &str) -> Result<Template, TemplateError> {
        let mut inner = gotmpl::Template::new(name);
        inner.declare_vars(&VARS);
        let funcs = prometheus_funcs(None, "");
        inner
            .parse(text, &funcs)
            .map_err(|source| TemplateError::Parse {
                name: name.to_string(),
                source,
            })?;
        Ok(Template {
            name: name.to_string(),
            inner,
        })
    }

    /// Expands the template with `data`; `query` is called to run PromQL.
    pub fn execute_with(
        &self,
        data: &TemplateData,
        query: Option<&QueryFn>,
    ) -> Result<String, TemplateError> {
        let labels = Value::string_map(data.labels.iter().map(|(k, v)| (*k, *v)));
        let external = Value::string_map(data.external_labels.iter().map(|(k, v)| (*k, *v)));
        let url = Value::str(data.external_url);
        let value = Value::Float(data.value);
        let mut dot = BTreeMap::new();
        dot.insert("Labels".to_string(), labels.clone());
        dot.insert("ExternalLabels".to_string(), external.clone());
        dot.insert("ExternalURL".to_string(), url.clone());
        dot.insert("Value".to_string(), value.clone());
        let opts = ExecOptions {
            output_bytes_max: OUTPUT_BYTES_MAX,
            vars: vec![
                ("$labels".into(), labels),
                ("$externalLabels".into(), external),
                ("$externalURL".into(), url),
                ("$value".into(), value),
            ],
            first_line_col_offset: PROMETHEUS_DEFS.len(),
            missing_key_zero: true,
        };
        let funcs = prometheus_funcs(query, data.external_url);
        self.inner
            .execute_with(&self.name, &Value::map(dot), &funcs, &opts)
            .map_err(|source| TemplateError::Exec {
                name: self.name.clone(),
                source,
            })
    }

    /// Expands the template with `data`, without a query engine.
    pub fn execute(&self, data: &TemplateData) -> Result<String, TemplateError> {
        self.execute_with(data, None)
    }
}

/// Expands `text` (parse and execute) without a query engine.
pub fn expand(text: &str, data: &TemplateData) -> Result<String, TemplateError> {
    Template::parse(text)?.execute(data)
}

/// Expands `text` for alert `alert_name` as Prometheus does for each alert:
/// named `__alert_NAME`, with `query` running PromQL at the evaluation time.
pub fn expand_alert(
    alert_name: &str,
    text: &str,
    data: &TemplateData,
    query: Option<&QueryFn>,
) -> Result<String, TemplateError> {
    Template::parse_named(&format!("__alert_{alert_name}"), text)?.execute_with(data, query)
}

/// One sample of a `query` result: `.Labels` and `.Value`.
struct Sample {
    labels: Value,
    value: f64,
}

impl Object for Sample {
    fn type_name(&self) -> &str {
        "*template.sample"
    }
    fn get(&self, name: &str, _args: &[Value]) -> Option<Result<Value, String>> {
        match name {
            "Labels" => Some(Ok(self.labels.clone())),
            "Value" => Some(Ok(Value::Float(self.value))),
            _ => None,
        }
    }
    fn underlying(&self) -> Value {
        Value::NoValue
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
    fn display(&self) -> Option<String> {
        Some(format!(
            "{{{} {}}}",
            gotmpl::fmt_value(&self.labels),
            crate::gofloat::g(self.value)
        ))
    }
}

fn sample_of(v: &Value) -> Result<&Sample, String> {
    if let Value::Object(o) = v {
        if let Some(s) = o.as_any().and_then(|a| a.downcast_ref::<Sample>()) {
            return Ok(s);
        }
    }
    Err(format!(
        "wrong type for value; expected *template.sample; got {}",
        v.type_name()
    ))
}

fn sample_value(labels: &Labels, value: f64) -> Value {
    Value::object(Sample {
        labels: Value::string_map(labels.iter().map(|l| (l.name, l.value))),
        value,
    })
}

fn query_result(v: &Value) -> Result<Arc<Vec<Value>>, String> {
    match v {
        Value::List(l) => Ok(l.clone()),
        other => Err(format!(
            "wrong type for value; expected template.queryResult; got {}",
            other.type_name()
        )),
    }
}

/// Prometheus's `convertToFloat`: numbers as they are, strings parsed.
fn to_float(v: &Value) -> Result<f64, String> {
    match v {
        Value::Float(f) => Ok(*f),
        Value::Int(i) => Ok(*i as f64),
        Value::String(s) => s.parse::<f64>().map_err(|_| {
            format!(
                "strconv.ParseFloat: parsing {}: invalid syntax",
                gotmpl::go_quote(s)
            )
        }),
        Value::Object(o) if o.type_name() == "time.Duration" => match o.underlying() {
            Value::Int(ns) => Ok(ns as f64 / 1e9),
            _ => Err("can't convert time.Duration to float".into()),
        },
        other => Err(format!("can't convert {} to float", other.type_name())),
    }
}

fn one_float(name: &str, args: &[Value]) -> Result<f64, String> {
    want_args(name, args, 1)?;
    to_float(&args[0])
}

fn one_str<'v>(name: &str, args: &'v [Value]) -> Result<&'v str, String> {
    want_args(name, args, 1)?;
    arg_str(&args[0])
}

/// Go's `%.4g`.
fn g4(v: f64) -> String {
    crate::gofloat::format(v, 'g', Some(4))
}

/// Prometheus's `floatToTime`: seconds to a UTC time, with millisecond
/// precision.
fn float_to_time(v: f64) -> Result<jiff::Timestamp, String> {
    if v.is_nan() || v.is_infinite() {
        return Err("value is NaN or Inf".into());
    }
    let ns = v * 1e9;
    if ns > i64::MAX as f64 || ns < i64::MIN as f64 {
        return Err(format!(
            "{} cannot be represented as a nanoseconds timestamp since it overflows int64",
            crate::gofloat::g(v)
        ));
    }
    let ms = (ns as i64).div_euclid(1_000_000);
    jiff::Timestamp::from_millisecond(ms).map_err(|e| e.to_string())
}

/// Go's `strings.Title`: the first letter of each word upper-cased.
pub fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_sep = true;
    for c in s.chars() {
        if prev_sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_sep = if c.is_ascii() {
            !(c.is_ascii_alphanumeric() || c == '_')
        } else {
            !c.is_alphanumeric() && c.is_whitespace()
        };
    }
    out
}

/// Go's `net.SplitHostPort`, for `stripPort`/`stripDomain`.
fn split_host_port(hp: &str) -> Option<(&str, &str)> {
    if let Some(rest) = hp.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((host, port));
    }
    let (host, port) = hp.rsplit_once(':')?;
    if host.contains(':') {
        return None;
    }
    Some((host, port))
}

fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn compile(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(pattern).map_err(|e| format!("error parsing regexp: {e}"))
}

/// The path of an external URL (`pathPrefix`).
fn url_path(url: &str) -> String {
    let after_scheme = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    match after_scheme.find('/') {
        Some(i) => {
            let p = &after_scheme[i..];
            p.split(['?', '#']).next().unwrap_or("").to_string()
        }
        None => String::new(),
    }
}

/// Prometheus's template functions. `query` runs PromQL through `query`; with
/// none it is an error.
pub fn prometheus_funcs<'a>(query: Option<&'a QueryFn<'a>>, external_url: &'a str) -> Funcs<'a> {
    let mut f = Funcs::new();
    f.add("query", move |a: &[Value]| {
        let q = one_str("query", a)?;
        let Some(run) = query else {
            return Err("queries are not available here".into());
        };
        let v = run(q)?;
        Ok(Value::list(
            v.iter().map(|(l, x)| sample_value(l, *x)).collect(),
        ))
    });
    f.add("first", |a: &[Value]| {
        want_args("first", a, 1)?;
        let v = query_result(&a[0])?;
        v.first()
            .cloned()
            .ok_or_else(|| "first() called on vector with no elements".to_string())
    });
    f.add("label", |a: &[Value]| {
        want_args("label", a, 2)?;
        let name = arg_str(&a[0])?;
        let s = sample_of(&a[1])?;
        Ok(match &s.labels {
            Value::Map(m) => m.get(name).cloned().unwrap_or(Value::str("")),
            _ => Value::str(""),
        })
    });
    f.add("value", |a: &[Value]| {
        want_args("value", a, 1)?;
        Ok(Value::Float(sample_of(&a[0])?.value))
    });
    f.add("strvalue", |a: &[Value]| {
        want_args("strvalue", a, 1)?;
        let s = sample_of(&a[0])?;
        Ok(match &s.labels {
            Value::Map(m) => m.get("__value__").cloned().unwrap_or(Value::str("")),
            _ => Value::str(""),
        })
    });
    f.add("sortByLabel", |a: &[Value]| {
        want_args("sortByLabel", a, 2)?;
        let name = arg_str(&a[0])?.to_string();
        let v = query_result(&a[1])?;
        let mut keyed = Vec::with_capacity(v.len());
        for s in v.iter() {
            let key = match &sample_of(s)?.labels {
                Value::Map(m) => match m.get(&name) {
                    Some(Value::String(x)) => x.clone(),
                    _ => String::new(),
                },
                _ => String::new(),
            };
            keyed.push((key, s.clone()));
        }
        keyed.sort_by(|x, y| x.0.cmp(&y.0));
        Ok(Value::list(keyed.into_iter().map(|(_, s)| s).collect()))
    });
    f.add("humanize", |a: &[Value]| {
        Ok(Value::String(humanize(one_float("humanize", a)?)))
    });
    f.add("humanize1024", |a: &[Value]| {
        let v = one_float("humanize1024", a)?;
        if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
            return Ok(Value::String(g4(v)));
        }
        let mut x = v;
        let mut prefix = "";
        for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
            if x.abs() < 1024.0 {
                break;
            }
            prefix = p;
            x /= 1024.0;
        }
        Ok(Value::String(format!("{}{prefix}", g4(x))))
    });
    f.add("humanizeDuration", |a: &[Value]| {
        Ok(Value::String(humanize_duration(one_float(
            "humanizeDuration",
            a,
        )?)))
    });
    f.add("humanizePercentage", |a: &[Value]| {
        let v = one_float("humanizePercentage", a)?;
        Ok(Value::String(format!("{}%", g4(v * 100.0))))
    });
    f.add("humanizeTimestamp", |a: &[Value]| {
        let v = one_float("humanizeTimestamp", a)?;
        if v.is_nan() || v.is_infinite() {
            return Ok(Value::String(g4(v)));
        }
        let t = float_to_time(v)?;
        Ok(Value::String(gotmpl::gotime::time_string(
            &GoTime::utc(t).0,
        )))
    });
    f.add("toTime", |a: &[Value]| {
        let v = one_float("toTime", a)?;
        Ok(GoTime::value(float_to_time(v)?))
    });
    f.add("title", |a: &[Value]| {
        Ok(Value::String(title(one_str("title", a)?)))
    });
    f.add("toUpper", |a: &[Value]| {
        Ok(Value::String(one_str("toUpper", a)?.to_uppercase()))
    });
    f.add("toLower", |a: &[Value]| {
        Ok(Value::String(one_str("toLower", a)?.to_lowercase()))
    });
    f.add("match", |a: &[Value]| {
        want_args("match", a, 2)?;
        let re = compile(arg_str(&a[0])?)?;
        Ok(Value::Bool(re.is_match(arg_str(&a[1])?)))
    });
    f.add("reReplaceAll", |a: &[Value]| {
        want_args("reReplaceAll", a, 3)?;
        let re = compile(arg_str(&a[0])?)?;
        let repl = arg_str(&a[1])?;
        Ok(Value::String(
            re.replace_all(arg_str(&a[2])?, repl).into_owned(),
        ))
    });
    f.add("args", |a: &[Value]| {
        Ok(Value::map(
            a.iter()
                .enumerate()
                .map(|(i, v)| (format!("arg{i}"), v.clone()))
                .collect(),
        ))
    });
    f.add_exec_template("tmpl");
    f.add("safeHtml", |a: &[Value]| {
        Ok(Value::str(one_str("safeHtml", a)?))
    });
    f.add("pathPrefix", move |a: &[Value]| {
        want_args("pathPrefix", a, 0)?;
        Ok(Value::String(url_path(external_url)))
    });
    f.add("externalURL", move |a: &[Value]| {
        want_args("externalURL", a, 0)?;
        Ok(Value::str(external_url))
    });
    f.add("graphLink", |a: &[Value]| {
        let e = one_str("graphLink", a)?;
        Ok(Value::String(format!(
            "/graph?g0.expr={}&g0.tab=0",
            gotmpl::query_escape(e)
        )))
    });
    f.add("tableLink", |a: &[Value]| {
        let e = one_str("tableLink", a)?;
        Ok(Value::String(format!(
            "/graph?g0.expr={}&g0.tab=1",
            gotmpl::query_escape(e)
        )))
    });
    f.add("parseDuration", |a: &[Value]| {
        let d = one_str("parseDuration", a)?;
        let ms = crate::config_units::parse_duration_ms(d)?;
        Ok(Value::Float(ms as f64 / 1000.0))
    });
    f.add("stripPort", |a: &[Value]| {
        let hp = one_str("stripPort", a)?;
        Ok(Value::str(
            split_host_port(hp).map(|(h, _)| h).unwrap_or(hp),
        ))
    });
    f.add("stripDomain", |a: &[Value]| {
        let hp = one_str("stripDomain", a)?;
        let (host, port) = split_host_port(hp).unwrap_or((hp, ""));
        if host.parse::<std::net::IpAddr>().is_ok() {
            return Ok(Value::str(hp));
        }
        let short = host.split('.').next().unwrap_or(host);
        Ok(Value::String(if port.is_empty() {
            short.to_string()
        } else {
            join_host_port(short, port)
        }))
    });
    f
}

/// Prometheus's `humanize`: SI prefixes, four significant digits.
pub fn humanize(v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return g4(v);
    }
    let mut x = v;
    if x.abs() >= 1.0 {
        let mut prefix = "";
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if x.abs() < 1000.0 {
                break;
            }
            prefix = p;
            x /= 1000.0;
        }
        return format!("{}{prefix}", g4(x));
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if x.abs() >= 1.0 {
            break;
        }
        prefix = p;
        x *= 1000.0;
    }
    format!("{}{prefix}", g4(x))
}

/// Prometheus's `humanizeDuration`: seconds as `1d 2h 3m 4s` (whole seconds
/// once there are minutes), `1.5s`, or with SI prefixes below one second.
pub fn humanize_duration(v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return g4(v);
    }
    if v == 0.0 {
        return "0s".into();
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let a = v.abs();
        let d = a as i64;
        let (days, hours, minutes, seconds) = (d / 86400, (d / 3600) % 24, (d / 60) % 60, d % 60);
        return if days != 0 {
            format!("{sign}{days}d {hours}h {minutes}m {seconds}s")
        } else if hours != 0 {
            format!("{sign}{hours}h {minutes}m {seconds}s")
        } else if minutes != 0 {
            format!("{sign}{minutes}m {seconds}s")
        } else {
            format!("{sign}{}s", g4(a))
        };
    }
    let mut x = v;
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if x.abs() >= 1.0 {
            break;
        }
        prefix = p;
        x *= 1000.0;
    }
    format!("{}{prefix}s", g4(x))
}
