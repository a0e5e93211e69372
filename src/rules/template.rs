//! A small subset of Go's text/template, enough for the usual alert labels and
//! annotations: text with `{{ … }}` actions whose pipeline is a value (`$labels.x`,
//! `$externalLabels.x`, `$value`, `.Labels.x`, `.ExternalLabels.x`, `.Value`,
//! `index $labels "x"`, a string or number literal) optionally followed by
//! `| func` steps, or a function applied to one such value (`humanize $value`).
//! Functions: `humanize`, `humanizePercentage`, `humanizeDuration`, `toUpper`,
//! `toLower`. `{{-`/`-}}` trim whitespace. Anything else (if/range/with, `query`,
//! `printf`, variables other than the three above) is a parse error naming it, so
//! an unsupported template is reported when the rule file is checked.

use std::collections::BTreeMap;

/// Most bytes a template may expand to, so a template cannot blow up memory.
const OUTPUT_BYTES_MAX: usize = 64 * 1024;

/// A template error, with the message shown in the rule's health.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("template: {0}")]
    Parse(String),
    #[error("template: error executing: {0}")]
    Exec(String),
}

/// What a template sees: the alert's labels, its value and the external labels.
#[derive(Debug, Clone, Default)]
pub struct TemplateData<'a> {
    pub labels: BTreeMap<&'a str, &'a str>,
    pub external_labels: BTreeMap<&'a str, &'a str>,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Labels(String),
    ExternalLabels(String),
    Value,
    Str(String),
    Num(f64),
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    /// A value, then the functions it is piped through, in order.
    Action(Arg, Vec<String>),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

const FUNCS: [&str; 5] = [
    "humanize",
    "humanizePercentage",
    "humanizeDuration",
    "toUpper",
    "toLower",
];

impl Template {
    /// Parses template text.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut nodes = Vec::new();
        let mut rest = text;
        let mut trim_next = false;
        while let Some(open) = rest.find("{{") {
            let mut before = &rest[..open];
            if trim_next {
                before = before.trim_start();
            }
            let after_open = &rest[open + 2..];
            let (trim_before, body_start) = match after_open.strip_prefix("- ") {
                Some(b) => (true, b),
                None => (false, after_open),
            };
            if trim_before {
                before = before.trim_end();
            }
            if !before.is_empty() {
                nodes.push(Node::Text(before.to_string()));
            }
            let close = body_start
                .find("}}")
                .ok_or_else(|| TemplateError::Parse("unclosed action".into()))?;
            let mut body = &body_start[..close];
            trim_next = false;
            if let Some(b) = body.strip_suffix(" -") {
                body = b;
                trim_next = true;
            }
            nodes.push(parse_action(body.trim())?);
            rest = &body_start[close + 2..];
        }
        let tail = if trim_next { rest.trim_start() } else { rest };
        if !tail.is_empty() {
            nodes.push(Node::Text(tail.to_string()));
        }
        Ok(Template { nodes })
    }

    /// Expands the template with `data`.
    pub fn execute(&self, data: &TemplateData) -> Result<String, TemplateError> {
        let mut out = String::new();
        for n in &self.nodes {
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Action(arg, funcs) => {
                    let mut v = match arg {
                        Arg::Labels(k) => {
                            Val::Str(data.labels.get(k.as_str()).unwrap_or(&"").to_string())
                        }
                        Arg::ExternalLabels(k) => Val::Str(
                            data.external_labels
                                .get(k.as_str())
                                .unwrap_or(&"")
                                .to_string(),
                        ),
                        Arg::Value => Val::Num(data.value),
                        Arg::Str(s) => Val::Str(s.clone()),
                        Arg::Num(f) => Val::Num(*f),
                    };
                    for f in funcs {
                        v = apply(f, v)?;
                    }
                    match v {
                        Val::Str(s) => out.push_str(&s),
                        Val::Num(f) => out.push_str(&go_float_v(f)),
                    }
                }
            }
            if out.len() > OUTPUT_BYTES_MAX {
                return Err(TemplateError::Exec(format!(
                    "output longer than {OUTPUT_BYTES_MAX} bytes"
                )));
            }
        }
        Ok(out)
    }
}

/// Expands `text` (parse and execute), as rules do for each alert.
pub fn expand(text: &str, data: &TemplateData) -> Result<String, TemplateError> {
    Template::parse(text)?.execute(data)
}

enum Val {
    Str(String),
    Num(f64),
}

fn to_num(f: &str, v: Val) -> Result<f64, TemplateError> {
    match v {
        Val::Num(x) => Ok(x),
        Val::Str(s) => s.trim().parse::<f64>().map_err(|_| {
            TemplateError::Exec(format!(
                "{f}: strconv.ParseFloat: parsing {s:?}: invalid syntax"
            ))
        }),
    }
}

fn apply(f: &str, v: Val) -> Result<Val, TemplateError> {
    Ok(match f {
        "humanize" => Val::Str(humanize(to_num(f, v)?)),
        "humanizePercentage" => Val::Str(format!("{}%", go_g(to_num(f, v)? * 100.0, 4))),
        "humanizeDuration" => Val::Str(humanize_duration(to_num(f, v)?)),
        "toUpper" | "toLower" => {
            let s = match v {
                Val::Str(s) => s,
                Val::Num(x) => go_float_v(x),
            };
            Val::Str(if f == "toUpper" {
                s.to_uppercase()
            } else {
                s.to_lowercase()
            })
        }
        other => {
            return Err(TemplateError::Exec(format!(
                "function {other:?} not defined"
            )))
        }
    })
}

fn parse_arg(tok: &str) -> Result<Arg, TemplateError> {
    let field = |prefix: &str| -> Option<String> {
        tok.strip_prefix(prefix)
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .map(str::to_string)
    };
    if tok == "$value" || tok == ".Value" {
        return Ok(Arg::Value);
    }
    if let Some(k) = field("$labels.").or_else(|| field(".Labels.")) {
        return Ok(Arg::Labels(k));
    }
    if let Some(k) = field("$externalLabels.").or_else(|| field(".ExternalLabels.")) {
        return Ok(Arg::ExternalLabels(k));
    }
    if tok.len() >= 2 && (tok.starts_with('"') && tok.ends_with('"')) {
        return serde_json::from_str::<String>(tok)
            .map(Arg::Str)
            .map_err(|_| TemplateError::Parse(format!("bad string literal {tok}")));
    }
    if tok.len() >= 2 && tok.starts_with('`') && tok.ends_with('`') {
        return Ok(Arg::Str(tok[1..tok.len() - 1].to_string()));
    }
    if let Ok(f) = tok.parse::<f64>() {
        return Ok(Arg::Num(f));
    }
    Err(TemplateError::Parse(format!(
        "unsupported template argument {tok:?} (hearth supports $labels.NAME, $externalLabels.NAME, $value and literals)"
    )))
}

/// Splits on whitespace outside string literals.
fn tokens(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) => {
                if c == q && !(q == '"' && prev == '\\') {
                    quote = None;
                }
            }
            None if c.is_whitespace() => {
                if let Some(st) = start.take() {
                    out.push(&s[st..i]);
                }
            }
            None => {
                if start.is_none() {
                    start = Some(i);
                }
                if c == '"' || c == '`' {
                    quote = Some(c);
                }
            }
        }
        prev = c;
    }
    if let Some(st) = start {
        out.push(&s[st..]);
    }
    out
}

fn parse_action(body: &str) -> Result<Node, TemplateError> {
    if body.starts_with("/*") {
        return Ok(Node::Text(String::new()));
    }
    let mut stages = body.split('|').map(str::trim);
    let first = stages.next().unwrap_or("");
    let toks = tokens(first);
    let (arg, mut funcs) = match toks.as_slice() {
        [one] => (parse_arg(one)?, Vec::new()),
        ["index", m, key] => {
            let key = match parse_arg(key)? {
                Arg::Str(k) => k,
                _ => return Err(TemplateError::Parse("index key must be a string".into())),
            };
            match *m {
                "$labels" | ".Labels" => (Arg::Labels(key), Vec::new()),
                "$externalLabels" | ".ExternalLabels" => (Arg::ExternalLabels(key), Vec::new()),
                other => {
                    return Err(TemplateError::Parse(format!(
                        "unsupported index target {other:?}"
                    )))
                }
            }
        }
        [f, a] if FUNCS.contains(f) => (parse_arg(a)?, vec![f.to_string()]),
        [] => return Err(TemplateError::Parse("missing value for command".into())),
        _ => {
            return Err(TemplateError::Parse(format!(
                "unsupported action {{{{{body}}}}} (hearth supports values, index and {})",
                FUNCS.join(", ")
            )))
        }
    };
    for f in stages {
        if !FUNCS.contains(&f) {
            return Err(TemplateError::Parse(format!(
                "function {f:?} not defined (hearth supports {})",
                FUNCS.join(", ")
            )));
        }
        funcs.push(f.to_string());
    }
    Ok(Node::Action(arg, funcs))
}

/// Go's `%v` of a float64: shortest digits, exponent form below 1e-4 and from 1e6.
pub fn go_float_v(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let e = format!("{v:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        go_exp(mant, exp)
    } else {
        format!("{v}")
    }
}

fn go_exp(mant: &str, exp: i32) -> String {
    format!("{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
}

/// Go's `%.{prec}g`.
pub fn go_g(v: f64, prec: usize) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let p = prec.max(1);
    let e = format!("{v:.*e}", p - 1);
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let strip = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if exp < -4 || exp >= p as i32 {
        go_exp(&strip(mant), exp)
    } else {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        strip(&format!("{v:.decimals$}"))
    }
}

/// Prometheus's `humanize`: SI prefixes, four significant digits.
pub fn humanize(v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return go_g(v, 4);
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
        return format!("{}{prefix}", go_g(x, 4));
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if x.abs() >= 1.0 {
            break;
        }
        prefix = p;
        x *= 1000.0;
    }
    format!("{}{prefix}", go_g(x, 4))
}

/// Prometheus's `humanizeDuration`: seconds as `1d 2h 3m 4s`, or with SI prefixes
/// below one second.
pub fn humanize_duration(v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return go_g(v, 4);
    }
    if v == 0.0 {
        return "0s".into();
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let a = v.abs();
        let days = (a / 86400.0) as i64;
        let hours = (a / 3600.0) as i64 % 24;
        let minutes = (a / 60.0) as i64 % 60;
        let seconds = a % 60.0;
        let s = format!("{}s", go_g(seconds, 4));
        return if days != 0 {
            format!("{sign}{days}d {hours}h {minutes}m {s}")
        } else if hours != 0 {
            format!("{sign}{hours}h {minutes}m {s}")
        } else if minutes != 0 {
            format!("{sign}{minutes}m {s}")
        } else {
            format!("{sign}{s}")
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
    format!("{}{prefix}s", go_g(x, 4))
}
