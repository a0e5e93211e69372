//! Runs Prometheus's own PromQL test scripts (`../shared/promql-tests/*.test`, the
//! `promqltest` format) through hearth's engine over an in-memory store.
//!
//! It prints a per-file table and the closing line `N passed, N failed, N skipped`.
//! Evals are skipped only when `../shared/research/promqltest_stats.py --evals`
//! (called at run time with `python3`) tags them as native-histogram evals; the test
//! fails if the script cannot be run, so nothing is skipped silently. The test
//! asserts that at least `PASS_FLOOR` evals pass, as a regression guard; set
//! `HEARTH_PROMQL_VERBOSE=1` to print every failure.
//!
//! What runs per eval (see the format note): the query as written, and for instant
//! evals the range-mode cross-check (the same query as a range query from t-1m to
//! t+1m, step 1m, compared at t). The `@` re-runs are not done yet.

use hearth::labels::Labels;
use hearth::promql::{self, Engine, EngineOptions, QueryError, QueryResult, Value};
use hearth::storage::memory::MemStorage;
use hearth::storage::{stale_nan, Appendable};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Evals that passed when this floor was last raised; the test fails below it.
const PASS_FLOOR: usize = 1288;

const TESTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/promql-tests");
const STATS_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/research/promqltest_stats.py"
);

/// One value slot of a series description.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Float(f64),
    Omitted,
    /// A native histogram: not loaded (histogram evals are skipped).
    Histogram,
}

#[derive(Debug, Clone)]
struct SeriesDesc {
    labels: Labels,
    slots: Vec<Slot>,
    /// Start times from a `metric@st …` line, relative to each sample's time
    /// (`Omitted`: unknown); empty without such a line.
    start_offsets: Vec<Slot>,
}

#[derive(Debug, Default, Clone)]
struct Expect {
    fail: Option<Option<Matcher>>,
    ordered: bool,
    /// `expect warn [msg:|regex:]` lines (`None`: any warning).
    warn: Vec<Option<Matcher>>,
    info: Vec<Option<Matcher>>,
    no_warn: bool,
    no_info: bool,
    range_vector: Option<(i64, i64, i64)>,
    string: Option<String>,
    scalar: Option<f64>,
    series: Vec<SeriesDesc>,
}

#[derive(Debug, Clone)]
enum Matcher {
    Msg(String),
    Regex(regex::Regex),
}

#[derive(Debug)]
enum Command {
    Clear,
    Load {
        interval_ms: i64,
        series: Vec<SeriesDesc>,
    },
    Eval(Box<Eval>),
}

#[derive(Debug)]
struct Eval {
    line: usize,
    expr: String,
    /// `Some((start, end, step))` for range evals; instant evals have start = end.
    range: Option<(i64, i64, i64)>,
    at: i64,
    expect: Expect,
}

/// Prometheus duration syntax (`1h30m`, `0`), in ms.
fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let units: [(&str, i64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    let b = s.as_bytes();
    let mut i = 0;
    let mut total: i64 = 0;
    let mut last_unit = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!("bad duration {s:?}"));
        }
        let n: i64 = s[start..i]
            .parse()
            .map_err(|_| format!("bad duration {s:?}"))?;
        let us = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &s[us..i];
        let idx = units
            .iter()
            .position(|(u, _)| *u == unit)
            .ok_or_else(|| format!("bad unit in duration {s:?}"))?;
        if idx < last_unit {
            return Err(format!("units out of order in {s:?}"));
        }
        last_unit = idx + 1;
        total += n * units[idx].1;
    }
    Ok(total)
}

/// Reads a quoted string (`"…"`, `'…'` with Go escapes, or `` `…` ``) at `s[i..]`.
fn read_quoted(s: &str, i: &mut usize) -> Result<String, String> {
    let b = s.as_bytes();
    let q = b[*i];
    *i += 1;
    let mut out = String::new();
    if q == b'`' {
        let rest = &s[*i..];
        let end = rest.find('`').ok_or("unterminated raw string")?;
        out.push_str(&rest[..end]);
        *i += end + 1;
        return Ok(out);
    }
    let mut chars = s[*i..].char_indices();
    while let Some((off, c)) = chars.next() {
        if c as u32 == q as u32 {
            *i += off + 1;
            return Ok(out);
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        let (_, e) = chars.next().ok_or("bad escape")?;
        match e {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            '\'' => out.push('\''),
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'v' => out.push('\x0b'),
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let mut hex = String::new();
                for _ in 0..n {
                    hex.push(chars.next().ok_or("bad escape")?.1);
                }
                let v = u32::from_str_radix(&hex, 16).map_err(|_| "bad escape")?;
                out.push(char::from_u32(v).ok_or("bad escape")?);
            }
            d if d.is_ascii_digit() => {
                let mut oct = String::from(d);
                for _ in 0..2 {
                    oct.push(chars.next().ok_or("bad escape")?.1);
                }
                let v = u32::from_str_radix(&oct, 8).map_err(|_| "bad escape")?;
                out.push(char::from_u32(v).ok_or("bad escape")?);
            }
            other => return Err(format!("unknown escape \\{other}")),
        }
    }
    Err("unterminated string".into())
}

/// Parses the metric part of a series description; returns labels and the rest.
fn parse_metric(s: &str) -> Result<(Labels, &str), String> {
    let s = s.trim_start();
    let b = s.as_bytes();
    let mut i = 0;
    let mut pairs: Vec<(String, String)> = Vec::new();
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
        i += 1;
    }
    if i > 0 {
        pairs.push(("__name__".into(), s[..i].to_string()));
    }
    if i < b.len() && b[i] == b'{' {
        i += 1;
        loop {
            while i < b.len() && (b[i] == b' ' || b[i] == b',' || b[i] == b'\t') {
                i += 1;
            }
            if i >= b.len() {
                return Err("unterminated label set".into());
            }
            if b[i] == b'}' {
                i += 1;
                break;
            }
            let name = if b[i] == b'"' || b[i] == b'\'' || b[i] == b'`' {
                read_quoted(s, &mut i)?
            } else {
                let st = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                if st == i {
                    return Err(format!("bad label name in {s:?}"));
                }
                s[st..i].to_string()
            };
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            if i < b.len() && b[i] == b'=' {
                i += 1;
                while i < b.len() && b[i] == b' ' {
                    i += 1;
                }
                let v = read_quoted(s, &mut i)?;
                pairs.push((name, v));
            } else {
                pairs.push(("__name__".into(), name));
            }
        }
    }
    if i == 0 {
        return Err(format!("no metric in {s:?}"));
    }
    Ok((Labels::from_pairs(&pairs), &s[i..]))
}

/// Parses a number at the start of `s` (sign, decimals, exponent, `_`, Inf/NaN).
fn read_number(s: &str) -> Option<(f64, &str)> {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let lower = s[i..].to_ascii_lowercase();
    if lower.starts_with("inf") || lower.starts_with("nan") {
        let v = if lower.starts_with("inf") {
            f64::INFINITY
        } else {
            f64::NAN
        };
        let v = if b.first() == Some(&b'-') { -v } else { v };
        return Some((v, &s[i + 3..]));
    }
    let st = i;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'_') {
        i += 1;
    }
    if i == st {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            i = j;
        }
    }
    let text: String = s[..i].chars().filter(|&c| c != '_').collect();
    text.parse::<f64>().ok().map(|v| (v, &s[i..]))
}

/// Expands the values part of a series description into slots.
fn parse_values(s: &str) -> Result<Vec<Slot>, String> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("{{") {
            // A native histogram (possibly `{{…}}xN` or `{{…}}+{{…}}xN`).
            let end = r.find("}}").ok_or("unterminated histogram")?;
            rest = &r[end + 2..];
            let mut count = 1;
            if let Some(r2) = rest.strip_prefix('+').or_else(|| rest.strip_prefix('-')) {
                if let Some(r3) = r2.strip_prefix("{{") {
                    let end = r3.find("}}").ok_or("unterminated histogram")?;
                    rest = &r3[end + 2..];
                }
            }
            if let Some(r2) = rest.strip_prefix('x') {
                let n_end = r2.find(|c: char| !c.is_ascii_digit()).unwrap_or(r2.len());
                count = r2[..n_end].parse::<usize>().map_err(|e| e.to_string())? + 1;
                rest = &r2[n_end..];
            }
            out.extend(std::iter::repeat_n(Slot::Histogram, count));
            rest = rest.trim_start();
            continue;
        }
        let tok_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let tok = &rest[..tok_end];
        rest = rest[tok_end..].trim_start();
        if tok == "_" {
            out.push(Slot::Omitted);
            continue;
        }
        if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("bad token {tok:?}"))?;
            out.extend(std::iter::repeat_n(Slot::Omitted, n));
            continue;
        }
        if tok == "stale" {
            out.push(Slot::Float(stale_nan()));
            continue;
        }
        let (a, r) = read_number(tok).ok_or_else(|| format!("bad value {tok:?}"))?;
        if r.is_empty() {
            out.push(Slot::Float(a));
            continue;
        }
        if let Some(n) = r.strip_prefix('x') {
            let n: usize = n.parse().map_err(|_| format!("bad token {tok:?}"))?;
            out.extend(std::iter::repeat_n(Slot::Float(a), n + 1));
            continue;
        }
        let neg = r.starts_with('-');
        let r = r
            .strip_prefix('+')
            .or_else(|| r.strip_prefix('-'))
            .ok_or_else(|| format!("bad token {tok:?}"))?;
        let (d, r) = read_number(r).ok_or_else(|| format!("bad token {tok:?}"))?;
        let n: usize = r
            .strip_prefix('x')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("bad token {tok:?}"))?;
        let d = if neg { -d } else { d };
        let mut v = a;
        out.push(Slot::Float(v));
        for _ in 0..n {
            v += d;
            out.push(Slot::Float(v));
        }
    }
    Ok(out)
}

fn parse_series(line: &str) -> Result<SeriesDesc, String> {
    let (labels, rest) = parse_metric(line)?;
    Ok(SeriesDesc {
        labels,
        slots: parse_values(rest)?,
        start_offsets: Vec::new(),
    })
}

/// Parses a `metric@st …` line: start times relative to the samples' times, in
/// the values syntax with durations for numbers (`-30s-1mx2`, `0`, `_`).
fn parse_start_times(line: &str) -> Result<(Labels, Vec<Slot>), String> {
    let (labels, rest) = parse_metric(line)?;
    let rest = rest
        .strip_prefix("@st")
        .ok_or_else(|| format!("no @st in {line:?}"))?;
    let dur = regex::Regex::new(r"(?:\d+(?:ms|[smhdwy]))+").map_err(|e| e.to_string())?;
    let mut err = None;
    let as_ms = dur.replace_all(rest, |c: &regex::Captures| match parse_duration(&c[0]) {
        Ok(ms) => ms.to_string(),
        Err(e) => {
            err = Some(e);
            String::new()
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    Ok((labels, parse_values(&as_ms)?))
}

fn parse_number_line(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Ok(i) = s.parse::<i64>() {
        return Some(i as f64);
    }
    match s.to_ascii_lowercase().as_str() {
        "+inf" | "inf" => return Some(f64::INFINITY),
        "-inf" => return Some(f64::NEG_INFINITY),
        "nan" | "+nan" | "-nan" => return Some(f64::NAN),
        _ => {}
    }
    if s.chars()
        .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
    {
        return None;
    }
    s.parse::<f64>().ok()
}

fn parse_file(text: &str) -> Result<Vec<Command>, String> {
    let lines: Vec<String> = text
        .split('\n')
        .map(|l| {
            let t = l.trim();
            if t.starts_with('#') {
                String::new()
            } else {
                t.to_string()
            }
        })
        .collect();
    let instant_re = regex::Regex::new(
        r"^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$",
    )
    .map_err(|e| e.to_string())?;
    let range_re = regex::Regex::new(
        r"^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$",
    )
    .map_err(|e| e.to_string())?;
    let expect_re = regex::Regex::new(
        r"^expect\s+(ordered|fail|warn|no_warn|info|no_info)(?:\s+(regex|msg):(.+))?$",
    )
    .map_err(|e| e.to_string())?;
    let range_vec_re =
        regex::Regex::new(r"^expect range vector\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+)$")
            .map_err(|e| e.to_string())?;
    let mut cmds = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        if line.is_empty() {
            i += 1;
            continue;
        }
        let header_line = i + 1;
        let first = line.split_whitespace().next().unwrap_or("").to_lowercase();
        i += 1;
        if first == "clear" {
            cmds.push(Command::Clear);
            continue;
        }
        if first.starts_with("load") {
            let interval = line
                .split_whitespace()
                .nth(1)
                .ok_or(format!("line {header_line}: load without interval"))?;
            let interval_ms =
                parse_duration(interval).map_err(|e| format!("line {header_line}: {e}"))?;
            let mut series = Vec::new();
            let mut start_offsets: Vec<(Labels, Vec<Slot>)> = Vec::new();
            while i < lines.len() && !lines[i].is_empty() {
                let l = &lines[i];
                i += 1;
                let first_tok = l.split_whitespace().next().unwrap_or("");
                if first_tok.ends_with("@st") {
                    start_offsets.push(parse_start_times(l).map_err(|e| format!("line {i}: {e}"))?);
                    continue;
                }
                series.push(parse_series(l).map_err(|e| format!("line {i}: {e}"))?);
            }
            for (labels, offsets) in start_offsets {
                let s = series
                    .iter_mut()
                    .find(|s| s.labels == labels)
                    .ok_or(format!(
                        "line {header_line}: start times for {labels} without samples"
                    ))?;
                s.start_offsets = offsets;
            }
            cmds.push(Command::Load {
                interval_ms,
                series,
            });
            continue;
        }
        if !first.starts_with("eval") {
            return Err(format!("line {header_line}: invalid command {line:?}"));
        }
        let mut expect = Expect::default();
        let (range, at, expr) = if let Some(c) = instant_re.captures(line) {
            match c.get(1).map(|m| m.as_str()) {
                Some("fail") => expect.fail = Some(None),
                Some("ordered") => expect.ordered = true,
                Some("warn") => expect.warn.push(None),
                Some("info") => expect.info.push(None),
                _ => {}
            }
            let at = parse_duration(c.get(2).map(|m| m.as_str()).unwrap_or(""))
                .map_err(|e| format!("line {header_line}: {e}"))?;
            (None, at, c[3].to_string())
        } else if let Some(c) = range_re.captures(line) {
            match c.get(1).map(|m| m.as_str()) {
                Some("fail") => expect.fail = Some(None),
                Some("warn") => expect.warn.push(None),
                Some("info") => expect.info.push(None),
                _ => {}
            }
            let start = parse_duration(&c[2]).map_err(|e| format!("line {header_line}: {e}"))?;
            let end = parse_duration(&c[3]).map_err(|e| format!("line {header_line}: {e}"))?;
            let step = parse_duration(&c[4]).map_err(|e| format!("line {header_line}: {e}"))?;
            (Some((start, end, step)), start, c[5].to_string())
        } else {
            return Err(format!("line {header_line}: bad eval header {line:?}"));
        };
        while i < lines.len() && !lines[i].is_empty() {
            let l = lines[i].clone();
            i += 1;
            if expect.fail.is_some() && l.starts_with("expected_fail_message") {
                let m = l["expected_fail_message".len()..].trim().to_string();
                expect.fail = Some(Some(Matcher::Msg(m)));
                break;
            }
            if expect.fail.is_some() && l.starts_with("expected_fail_regexp") {
                let r = l["expected_fail_regexp".len()..].trim();
                let re = regex::Regex::new(r).map_err(|e| e.to_string())?;
                expect.fail = Some(Some(Matcher::Regex(re)));
                break;
            }
            if let Some(c) = range_vec_re.captures(&l) {
                expect.range_vector = Some((
                    parse_duration(&c[1])?,
                    parse_duration(&c[2])?,
                    parse_duration(&c[3])?,
                ));
                continue;
            }
            if let Some(s) = l.strip_prefix("expect string") {
                let s = s.trim();
                let mut j = 0;
                expect.string = Some(read_quoted(s, &mut j)?);
                continue;
            }
            if l.split(' ').next() == Some("expect") {
                let c = expect_re
                    .captures(&l)
                    .ok_or(format!("line {i}: bad expect line {l:?}"))?;
                let matcher = match c.get(2).map(|m| m.as_str()) {
                    Some("msg") => Some(Matcher::Msg(c[3].trim().to_string())),
                    Some(_) => Some(Matcher::Regex(
                        regex::Regex::new(c[3].trim()).map_err(|e| e.to_string())?,
                    )),
                    None => None,
                };
                match &c[1] {
                    "fail" => expect.fail = Some(matcher),
                    "ordered" => expect.ordered = true,
                    "warn" => expect.warn.push(matcher),
                    "info" => expect.info.push(matcher),
                    "no_warn" => expect.no_warn = true,
                    "no_info" => expect.no_info = true,
                    _ => {}
                }
                continue;
            }
            if let Some(v) = parse_number_line(&l) {
                expect.scalar = Some(v);
                break;
            }
            expect
                .series
                .push(parse_series(&l).map_err(|e| format!("line {i}: {e}"))?);
        }
        cmds.push(Command::Eval(Box::new(Eval {
            line: header_line,
            expr,
            range,
            at,
            expect,
        })));
    }
    Ok(cmds)
}

/// Prometheus's `almost.Equal` with epsilon 1e-6, plus the stale-marker rule.
fn almost_equal(a: f64, b: f64) -> bool {
    let stale = |x: f64| hearth::storage::is_stale_nan(x);
    if stale(a) || stale(b) {
        return stale(a) && stale(b);
    }
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < 1e-6 * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < 1e-6
}

fn engine() -> Engine {
    Engine::new(EngineOptions {
        lookback_delta_ms: 5 * 60 * 1000,
        max_samples: 50_000_000,
        timeout_ms: 100_000,
        no_step_subquery_interval_ms: 60 * 1000,
    })
}

fn fmt_f(v: f64) -> String {
    format!("{v}")
}

/// Compares an instant-vector result with the expectations.
fn compare_vector(exp: &Expect, got: &[(Labels, f64)]) -> Result<(), String> {
    if let Some(s) = exp.scalar {
        return Err(format!("expected scalar {s} but got vector"));
    }
    let expected: HashMap<&Labels, (usize, f64)> = exp
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let v = match s.slots.first() {
                Some(Slot::Float(f)) => *f,
                _ => f64::NAN,
            };
            (&s.labels, (i, v))
        })
        .collect();
    for (pos, (l, v)) in got.iter().enumerate() {
        let Some((i, ev)) = expected.get(l) else {
            return Err(format!(
                "unexpected metric {l} in result, has value {}",
                fmt_f(*v)
            ));
        };
        if exp.ordered && *i != pos {
            return Err(format!(
                "expected metric {l} at position {} but was at {}",
                i + 1,
                pos + 1
            ));
        }
        if !almost_equal(*ev, *v) {
            return Err(format!(
                "expected {} for {l} but got {}",
                fmt_f(*ev),
                fmt_f(*v)
            ));
        }
    }
    if got.len() != expected.len() {
        let gotset: HashSet<&Labels> = got.iter().map(|(l, _)| l).collect();
        let missing: Vec<String> = expected
            .keys()
            .filter(|l| !gotset.contains(*l))
            .map(|l| l.to_string())
            .collect();
        return Err(format!(
            "expected {} series but got {}; missing {missing:?}",
            expected.len(),
            got.len()
        ));
    }
    Ok(())
}

fn compare_matrix(
    exp: &Expect,
    got: &[promql::Series],
    start: i64,
    step: i64,
) -> Result<(), String> {
    for w in got.windows(2) {
        if w[0].metric >= w[1].metric {
            return Err(format!(
                "matrix not sorted: {} before {}",
                w[0].metric, w[1].metric
            ));
        }
    }
    let expected: HashMap<&Labels, &SeriesDesc> =
        exp.series.iter().map(|s| (&s.labels, s)).collect();
    for s in got {
        let Some(e) = expected.get(&s.metric) else {
            return Err(format!("unexpected metric {} in result", s.metric));
        };
        let want: Vec<(i64, f64)> = e
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, sl)| match sl {
                Slot::Float(f) => Some((start + i as i64 * step, *f)),
                _ => None,
            })
            .collect();
        if want.len() != s.floats.len() {
            return Err(format!(
                "expected {} points for {} but got {}: {:?}",
                want.len(),
                s.metric,
                s.floats.len(),
                s.floats.iter().map(|p| (p.t, p.f)).collect::<Vec<_>>()
            ));
        }
        for ((t, v), p) in want.iter().zip(&s.floats) {
            if *t != p.t || !almost_equal(*v, p.f) {
                return Err(format!(
                    "expected ({t}, {}) for {} but got ({}, {})",
                    fmt_f(*v),
                    s.metric,
                    p.t,
                    fmt_f(p.f)
                ));
            }
        }
    }
    if got.len() != expected.len() {
        return Err(format!(
            "expected {} series but got {}",
            expected.len(),
            got.len()
        ));
    }
    Ok(())
}

impl Matcher {
    fn matches(&self, s: &str) -> bool {
        match self {
            Matcher::Msg(m) => m == s,
            Matcher::Regex(re) => re.is_match(s),
        }
    }
}

/// The annotation rules of the format: with `expect warn` lines there must be a
/// warning, every line must match one and every warning must match a line; with
/// `expect no_warn` there must be none. The same for infos.
fn check_annotations(
    kind: &str,
    want: &[Option<Matcher>],
    none: bool,
    got: &[String],
) -> Result<(), String> {
    if none && !got.is_empty() {
        return Err(format!("expected no {kind} annotations but got {got:?}"));
    }
    if want.is_empty() {
        return Ok(());
    }
    if got.is_empty() {
        return Err(format!("expected {kind} annotations but got none"));
    }
    let ok = |m: &Option<Matcher>, a: &str| m.as_ref().is_none_or(|m| m.matches(a));
    for m in want {
        if !got.iter().any(|a| ok(m, a)) {
            return Err(format!("no {kind} annotation matches {m:?}; got {got:?}"));
        }
    }
    for a in got {
        if !want.iter().any(|m| ok(m, a)) {
            return Err(format!("unexpected {kind} annotation {a:?}"));
        }
    }
    Ok(())
}

/// Checks one query outcome against the expectations.
fn check(
    exp: &Expect,
    result: Result<QueryResult, QueryError>,
    range: Option<(i64, i64, i64)>,
) -> Result<(), String> {
    let value = match (result, &exp.fail) {
        (Err(e), Some(m)) => {
            let msg = e.to_string();
            return match m {
                None => Ok(()),
                Some(Matcher::Msg(want)) if *want == msg => Ok(()),
                Some(Matcher::Regex(re)) if re.is_match(&msg) => Ok(()),
                Some(_) => Err(format!("error {msg:?} does not match the expected one")),
            };
        }
        (Err(e), None) => return Err(format!("unexpected error: {e}")),
        (Ok(_), Some(_)) => return Err("expected an error but the query succeeded".into()),
        (Ok(v), None) => v,
    };
    check_annotations("warn", &exp.warn, exp.no_warn, &value.warnings)?;
    check_annotations("info", &exp.info, exp.no_info, &value.infos)?;
    match value.value {
        Value::Scalar { v, .. } => match exp.scalar {
            Some(want) if almost_equal(want, v) => Ok(()),
            Some(want) => Err(format!(
                "expected scalar {} but got {}",
                fmt_f(want),
                fmt_f(v)
            )),
            None => Err("expected vector or matrix result, but got scalar".into()),
        },
        Value::String { s, .. } => match &exp.string {
            Some(want) if *want == s => Ok(()),
            _ => Err(format!("unexpected string result {s:?}")),
        },
        Value::Vector(v) => {
            if exp.range_vector.is_some() {
                return Err("expected range vector but got instant vector".into());
            }
            let got: Vec<(Labels, f64)> = v.into_iter().map(|s| (s.metric, s.f)).collect();
            compare_vector(exp, &got)
        }
        Value::Matrix(m) => {
            if let Some((start, _, step)) = range.or(exp.range_vector) {
                if exp.scalar.is_some() && range.is_some() {
                    // A scalar range result is one series without labels.
                    let want = exp.scalar.unwrap_or(f64::NAN);
                    return match m.as_slice() {
                        [s] if s.floats.iter().all(|p| almost_equal(want, p.f)) => Ok(()),
                        _ => Err("scalar result mismatch".into()),
                    };
                }
                compare_matrix(exp, &m, start, step)
            } else {
                Err("unexpected range vector result".into())
            }
        }
    }
}

/// Runs one eval against the store.
fn run_eval(store: &MemStorage, e: &Eval) -> Result<(), String> {
    let eng = engine();
    let query = match promql::parse(&e.expr) {
        Ok(q) => q,
        Err(err) => {
            return match &e.expect.fail {
                Some(_) => check(&e.expect, Err(err), None),
                None => Err(format!("parse error: {err}")),
            }
        }
    };
    if let Some((start, end, step)) = e.range {
        let r = eng.range_query(store, &query, start, end, step, None);
        return check(&e.expect, r, Some((start, end, step)));
    }
    let at = match e.expect.range_vector {
        Some((_, end, _)) => end,
        None => e.at,
    };
    let r = eng.instant_query(store, &query, at, None);
    let failed_as_expected = r.is_err() && e.expect.fail.is_some();
    check(&e.expect, r, None)?;
    // The range-mode cross-check.
    let skip_cross = e.expect.range_vector.is_some()
        || e.expect.string.is_some()
        || failed_as_expected
        || regex::Regex::new(r"(start|end|range|step)\(\)")
            .map(|re| re.is_match(&e.expr))
            .unwrap_or(false);
    if skip_cross {
        return Ok(());
    }
    let r = eng.range_query(store, &query, at - 60_000, at + 60_000, 60_000, None);
    let m = match r {
        Ok(QueryResult {
            value: Value::Matrix(m),
            ..
        }) => m,
        Ok(other) => {
            return Err(format!(
                "range cross-check gave {}",
                other.value.type_name()
            ))
        }
        Err(err) => return Err(format!("range cross-check failed: {err}")),
    };
    if e.expect.ordered {
        return Ok(());
    }
    if let Some(want) = e.expect.scalar {
        let v = m
            .first()
            .and_then(|s| s.floats.iter().find(|p| p.t == at))
            .map(|p| p.f);
        return match v {
            Some(v) if almost_equal(want, v) => Ok(()),
            _ => Err(format!("range cross-check: scalar {v:?} != {want}")),
        };
    }
    for w in m.windows(2) {
        if w[0].metric >= w[1].metric {
            return Err("range cross-check: matrix not sorted".into());
        }
    }
    let got: Vec<(Labels, f64)> = m
        .into_iter()
        .filter_map(|s| {
            let metric = s.metric;
            s.floats.iter().find(|p| p.t == at).map(|p| (metric, p.f))
        })
        .collect();
    compare_vector(&e.expect, &got).map_err(|err| format!("range cross-check: {err}"))
}

fn load(store: &MemStorage, interval_ms: i64, series: &[SeriesDesc]) -> Result<(), String> {
    // A later line for the same series replaces an earlier one.
    let mut by_labels: BTreeMap<&Labels, &SeriesDesc> = BTreeMap::new();
    for s in series {
        by_labels.insert(&s.labels, s);
    }
    let mut app = store.appender();
    for s in by_labels.values() {
        for (i, slot) in s.slots.iter().enumerate() {
            if let Slot::Float(v) = slot {
                let t = i as i64 * interval_ms;
                let st = match s.start_offsets.get(i) {
                    Some(Slot::Float(off)) => t + *off as i64,
                    _ => 0,
                };
                app.append_with_start_time(0, &s.labels, t, *v, st)
                    .map_err(|e| format!("loading {}: {e}", s.labels))?;
            }
        }
    }
    app.commit().map_err(|e| e.to_string())
}

/// (file, header line) of every eval tagged as native-histogram by the stats script.
fn histogram_evals() -> HashSet<(String, usize)> {
    let out = std::process::Command::new("python3")
        .arg(STATS_SCRIPT)
        .arg(TESTS_DIR)
        .arg("--evals")
        .output()
        .expect("running python3 promqltest_stats.py --evals (python3 is required to tag histogram evals)");
    assert!(
        out.status.success(),
        "promqltest_stats.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut set = HashSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut cols = line.split('\t');
        let (Some(loc), _, Some(hist)) = (cols.next(), cols.next(), cols.next()) else {
            continue;
        };
        if hist != "hist=1" {
            continue;
        }
        if let Some((file, l)) = loc.rsplit_once(':') {
            if let Ok(l) = l.parse() {
                set.insert((file.to_string(), l));
            }
        }
    }
    set
}

#[derive(Default)]
struct FileResult {
    passed: usize,
    failed: usize,
    skipped: usize,
    failures: Vec<String>,
}

fn run_file(path: &Path, hist: &HashSet<(String, usize)>) -> FileResult {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut res = FileResult::default();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            res.failed += 1;
            res.failures.push(format!("{name}: cannot read: {e}"));
            return res;
        }
    };
    let cmds = match parse_file(&text) {
        Ok(c) => c,
        Err(e) => {
            res.failed += 1;
            res.failures.push(format!("{name}: cannot parse: {e}"));
            return res;
        }
    };
    let mut store = MemStorage::new();
    let mut load_error: Option<String> = None;
    for c in cmds {
        match c {
            Command::Clear => {
                store = MemStorage::new();
                load_error = None;
            }
            Command::Load {
                interval_ms,
                series,
            } => {
                if let Err(e) = load(&store, interval_ms, &series) {
                    load_error = Some(e);
                }
            }
            Command::Eval(e) => {
                if hist.contains(&(name.clone(), e.line)) {
                    res.skipped += 1;
                    continue;
                }
                let outcome = match &load_error {
                    Some(le) => Err(format!("load failed: {le}")),
                    None => {
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            run_eval(&store, &e)
                        }));
                        r.unwrap_or_else(|_| Err("panicked".into()))
                    }
                };
                match outcome {
                    Ok(()) => res.passed += 1,
                    Err(msg) => {
                        res.failed += 1;
                        res.failures
                            .push(format!("{name}:{} {}: {msg}", e.line, e.expr));
                    }
                }
            }
        }
    }
    res
}

#[test]
fn prometheus_promql_test_scripts() {
    let hist = histogram_evals();
    let mut files: Vec<PathBuf> = std::fs::read_dir(TESTS_DIR)
        .expect("reading ../shared/promql-tests")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .test files in {TESTS_DIR}");
    let verbose = std::env::var_os("HEARTH_PROMQL_VERBOSE").is_some();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    println!(
        "{:<28} {:>7} {:>7} {:>7}",
        "file", "passed", "failed", "skipped"
    );
    let mut all_failures = Vec::new();
    for f in &files {
        let r = run_file(f, &hist);
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        println!(
            "{name:<28} {:>7} {:>7} {:>7}",
            r.passed, r.failed, r.skipped
        );
        passed += r.passed;
        failed += r.failed;
        skipped += r.skipped;
        all_failures.extend(r.failures);
    }
    println!();
    let shown = if verbose {
        all_failures.len()
    } else {
        all_failures.len().min(40)
    };
    println!("failures (first {shown} of {}):", all_failures.len());
    for f in &all_failures[..shown] {
        println!("  {f}");
    }
    println!();
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    assert!(
        passed >= PASS_FLOOR,
        "only {passed} evals passed; the floor is {PASS_FLOOR}"
    );
}
