//! `hearth test rules TEST.yml…`: runs promtool's rule unit-test files (`rule_files`,
//! `evaluation_interval`, `group_eval_order`, `tests` with `input_series`,
//! `alert_rule_test` and `promql_expr_test`) with promtool's output and exit status.
//! Each test group loads its input series into a `MemStorage` and steps the rule
//! groups through simulated time from 0, one evaluation interval at a time, with the
//! same `Group::eval` the server runs.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::labels::{Labels, LabelsBuilder, MatchType};
use crate::promql::{Engine, EngineOptions, Value};
use crate::rules::group::{AlertState, Group, RuleKind};
use crate::storage::memory::MemStorage;
use crate::storage::Appendable;

/// Largest test file read, so a wrong path cannot exhaust memory.
const TEST_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Most samples all input series of one test group may expand to.
const INPUT_SAMPLES_MAX: usize = 50_000_000;
/// Most evaluation steps of one test group (its largest `eval_time` over the
/// evaluation interval).
const EVAL_STEPS_MAX: i64 = 10_000_000;

/// Why a test file could not be run, or what failed in it. The messages are those
/// promtool prints.
#[derive(Debug, thiserror::Error)]
pub enum TestRulesError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: file is larger than {TEST_FILE_BYTES_MAX} bytes")]
    TooLarge { path: String },
    #[error("{path}: {message}")]
    Yaml { path: String, message: String },
    #[error("group name repeated in evaluation order: {0}")]
    RepeatedGroup(String),
    #[error("{0}")]
    Rules(#[from] crate::rules::RulesError),
    #[error("{0}")]
    Input(String),
    /// A failed expectation or evaluation, already in promtool's words.
    #[error("{0}")]
    Failed(String),
}

/// A duration as promtool's YAML takes it: a Prometheus duration string, or a bare
/// number read as text (so `0` is valid and `5` is not).
fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Int(i64),
    }
    let text = match Raw::deserialize(d)? {
        Raw::Text(s) => s,
        Raw::Int(i) => i.to_string(),
    };
    crate::config_units::parse_duration_ms(&text).map_err(serde::de::Error::custom)
}

/// A unit test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitTestFile {
    #[serde(default)]
    rule_files: Vec<String>,
    /// 1m when absent or 0.
    #[serde(default, deserialize_with = "de_duration")]
    evaluation_interval: i64,
    #[serde(default)]
    group_eval_order: Vec<String>,
    #[serde(default)]
    tests: Vec<TestGroup>,
}

/// Input series and the tests run over them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    /// Time between two values of an input series (0 when absent, as promtool).
    #[serde(default, deserialize_with = "de_duration")]
    interval: i64,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTestCase>,
    #[serde(default)]
    promql_expr_test: Vec<PromqlTestCase>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    /// Accepted as promtool does; templates here have no `$externalURL`.
    #[serde(default)]
    #[allow(dead_code)]
    external_url: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    #[serde(default)]
    values: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTestCase {
    #[serde(default, deserialize_with = "de_duration")]
    eval_time: i64,
    #[serde(default)]
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromqlTestCase {
    expr: String,
    #[serde(default, deserialize_with = "de_duration")]
    eval_time: i64,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    #[serde(default)]
    labels: String,
    value: f64,
}

/// Runs each test file like `promtool test rules`: `Unit Testing:  FILE` and
/// `  SUCCESS` on `out`, or `  FAILED:` and the failures on `err`. True when every
/// file passed.
pub fn test_rules(files: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> bool {
    // promtool's flag parser refuses a missing file before testing any.
    if let Some(missing) = files.iter().find(|f| !f.exists()) {
        let _ = writeln!(
            err,
            "hearth: error: path '{}' does not exist, try --help",
            missing.display()
        );
        return false;
    }
    let mut all_ok = true;
    for f in files {
        let _ = writeln!(out, "Unit Testing:  {}", f.display());
        let errs = run_file(f, err);
        if errs.is_empty() {
            let _ = writeln!(out, "  SUCCESS");
        } else {
            let _ = writeln!(err, "  FAILED:");
            for e in &errs {
                let _ = writeln!(err, "{e}");
                let _ = writeln!(out);
            }
            all_ok = false;
        }
        let _ = writeln!(out);
    }
    all_ok
}

/// Every failure of one file; empty when it passed. Warnings go to `warn`.
fn run_file(path: &Path, warn: &mut dyn Write) -> Vec<TestRulesError> {
    let file = match read_test_file(path) {
        Ok(f) => f,
        Err(e) => return vec![e],
    };
    let base = path.parent().unwrap_or(Path::new(""));
    let mut rule_files = Vec::new();
    for pattern in &file.rule_files {
        let joined = if pattern.is_empty() || Path::new(pattern).is_absolute() {
            pattern.clone()
        } else {
            base.join(pattern).display().to_string()
        };
        match crate::rules::rule_files(std::slice::from_ref(&joined)) {
            Ok(m) if m.is_empty() => {
                let _ = writeln!(warn, "  WARNING: no file match pattern {joined}");
            }
            Ok(m) => rule_files.extend(m),
            Err(e) => return vec![e.into()],
        }
    }
    let eval_interval_ms = if file.evaluation_interval > 0 {
        file.evaluation_interval
    } else {
        60_000
    };
    let mut order: HashMap<&str, usize> = HashMap::new();
    for (i, name) in file.group_eval_order.iter().enumerate() {
        if order.insert(name.as_str(), i).is_some() {
            return vec![TestRulesError::RepeatedGroup(name.clone())];
        }
    }
    let mut errs = Vec::new();
    for tg in &file.tests {
        errs.extend(run_test_group(tg, eval_interval_ms, &order, &rule_files));
    }
    errs
}

fn read_test_file(path: &Path) -> Result<UnitTestFile, TestRulesError> {
    let shown = path.display().to_string();
    let read_err = |source| TestRulesError::Read {
        path: shown.clone(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.len() > TEST_FILE_BYTES_MAX {
        return Err(TestRulesError::TooLarge { path: shown });
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    if text.trim().is_empty() {
        return Ok(UnitTestFile {
            rule_files: Vec::new(),
            evaluation_interval: 0,
            group_eval_order: Vec::new(),
            tests: Vec::new(),
        });
    }
    serde_saphyr::from_str(&text).map_err(|e| TestRulesError::Yaml {
        path: shown,
        message: e.to_string().lines().next().unwrap_or("").to_string(),
    })
}

/// A firing alert's labels and annotations, ordered as promtool sorts them.
type LabelsAndAnnotations = (Labels, Labels);

fn run_test_group(
    tg: &TestGroup,
    eval_interval_ms: i64,
    order: &HashMap<&str, usize>,
    rule_files: &[PathBuf],
) -> Vec<TestRulesError> {
    let storage = MemStorage::new();
    let mut input = match InputLoader::new(tg) {
        Ok(l) => l,
        Err(e) => return vec![e],
    };
    let engine = Engine::new(EngineOptions {
        no_step_subquery_interval_ms: eval_interval_ms,
        ..Default::default()
    });
    let mut groups = Vec::new();
    for f in rule_files {
        let shown = f.display().to_string();
        let rgs = match crate::rules::RuleGroups::load_file(f) {
            Ok(r) => r,
            Err(e) => return vec![e.into()],
        };
        for def in &rgs.groups {
            match Group::new(def, &shown, tg.interval, &tg.external_labels) {
                Ok(g) => groups.push(g),
                Err(e) => return vec![e.into()],
            }
        }
    }
    // Groups named in `group_eval_order` go in that order; others first, in file
    // order (promtool leaves their order unspecified).
    groups.sort_by_key(|g| order.get(g.name.as_str()).copied().unwrap_or(0));

    let mut alert_tests: BTreeMap<i64, Vec<&AlertTestCase>> = BTreeMap::new();
    for a in &tg.alert_rule_test {
        if a.alertname.is_empty() {
            let in_group = if tg.name.is_empty() {
                String::new()
            } else {
                format!(" (in TestGroup {})", tg.name)
            };
            return vec![TestRulesError::Failed(format!(
                "an item under alert_rule_test misses required attribute alertname at eval_time {}{in_group}",
                model_duration(a.eval_time)
            ))];
        }
        alert_tests.entry(a.eval_time).or_default().push(a);
    }
    let max_eval_ms = tg
        .alert_rule_test
        .iter()
        .map(|a| a.eval_time)
        .chain(tg.promql_expr_test.iter().map(|p| p.eval_time))
        .max()
        .unwrap_or(0);
    if max_eval_ms / eval_interval_ms > EVAL_STEPS_MAX {
        return vec![TestRulesError::Input(format!(
            "eval_time {} is more than {EVAL_STEPS_MAX} evaluation intervals away",
            model_duration(max_eval_ms)
        ))];
    }

    let mut errs = Vec::new();
    let mut pending_checks = alert_tests.iter().peekable();
    let mut ts = 0;
    while ts <= max_eval_ms {
        if let Err(e) = input.load_till(&storage, ts) {
            errs.push(e);
            return errs;
        }
        let mut eval_errs = Vec::new();
        for g in &groups {
            g.eval(&engine, &storage, &storage, ts);
            for r in &g.rules {
                if let (_, Some(e), _, _) = r.health() {
                    eval_errs.push(TestRulesError::Failed(format!(
                        "    rule: {}, time: {}, err: {e}",
                        r.name,
                        go_duration(ts)
                    )));
                }
            }
        }
        if !eval_errs.is_empty() {
            errs.extend(eval_errs);
            return errs;
        }
        // Alert tests whose eval_time falls in [ts, ts + interval) see this step.
        while let Some((&t, cases)) =
            pending_checks.next_if(|(t, _)| ts <= **t && **t < ts + eval_interval_ms)
        {
            for case in cases {
                let got = firing_alerts(&groups, &case.alertname);
                let mut exp: Vec<LabelsAndAnnotations> = case
                    .exp_alerts
                    .iter()
                    .map(|a| {
                        let mut l = a.exp_labels.clone();
                        l.insert("alertname".into(), case.alertname.clone());
                        (map_labels(&l), map_labels(&a.exp_annotations))
                    })
                    .collect();
                exp.sort();
                if exp != got {
                    let name = if tg.name.is_empty() {
                        String::new()
                    } else {
                        format!("    name: {},\n", tg.name)
                    };
                    let indent = "            ";
                    errs.push(TestRulesError::Failed(format!(
                        "{name}    alertname: {}, time: {}, \n        exp:{}, \n        got:{}",
                        case.alertname,
                        model_duration(t),
                        indent_lines(&alerts_string(&exp), indent),
                        indent_lines(&alerts_string(&got), indent)
                    )));
                }
            }
        }
        ts += eval_interval_ms;
    }

    for case in &tg.promql_expr_test {
        errs.extend(check_expr(&engine, &storage, case));
    }
    errs
}

/// The input series expanded, value `i` at `i × interval` from time 0, appended
/// to storage step by step as simulated time passes (promtool's lazy loader): a
/// query only ever sees samples up to the last evaluation.
struct InputLoader {
    series: Vec<(Labels, Vec<(i64, f64)>)>,
    /// How many samples of each series are already appended.
    loaded: Vec<usize>,
}

impl InputLoader {
    fn new(tg: &TestGroup) -> Result<InputLoader, TestRulesError> {
        let mut total = 0usize;
        let mut series = Vec::new();
        for s in &tg.input_series {
            let labels = parse_metric(&s.series).map_err(TestRulesError::Input)?;
            let values = expand_values(&s.values)
                .map_err(|e| TestRulesError::Input(format!("{}: {e}", s.series)))?;
            total += values.len();
            if total > INPUT_SAMPLES_MAX {
                return Err(TestRulesError::Input(format!(
                    "input series expand to more than {INPUT_SAMPLES_MAX} samples"
                )));
            }
            let samples = values
                .into_iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i as i64 * tg.interval, v)))
                .collect();
            series.push((labels, samples));
        }
        let loaded = vec![0; series.len()];
        Ok(InputLoader { series, loaded })
    }

    /// Appends every sample at or before `ts_ms` not appended yet.
    fn load_till(&mut self, storage: &MemStorage, ts_ms: i64) -> Result<(), TestRulesError> {
        let mut app = storage.appender();
        for ((labels, samples), loaded) in self.series.iter().zip(self.loaded.iter_mut()) {
            while let Some(&(t, v)) = samples.get(*loaded) {
                if t > ts_ms {
                    break;
                }
                // With a zero interval every value lands on time 0 and the first
                // one stays, as in promtool; the rest are refused duplicates.
                let _ = app.append(0, labels, t, v);
                *loaded += 1;
            }
        }
        app.commit()
            .map_err(|e| TestRulesError::Input(format!("loading input series: {e}")))
    }
}

/// Parses a series as promtool's `parser.ParseMetric` does: `name{a="b", …}`,
/// `{__name__="name", …}`, or nothing at all for no labels.
pub fn parse_metric(text: &str) -> Result<Labels, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Labels::empty());
    }
    let matchers = crate::labels::parse_selector(text).map_err(|e| e.to_string())?;
    let mut b = LabelsBuilder::new();
    for m in &matchers {
        if m.kind != MatchType::Equal {
            return Err(format!("{text:?}: only '=' is allowed in a series"));
        }
        b.set(&m.name, &m.value);
    }
    Ok(b.build())
}

/// Expands promtool's (PromQL test language's) value notation into one slot per
/// step: `a+bxn` and `a-bxn` are n+1 values from a in steps of b, `axn` is a n+1
/// times, `_` is a missing value and `_xn` n of them, `stale` a stale marker.
pub fn expand_values(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for tok in text.split_whitespace() {
        if tok == "_" {
            out.push(None);
            continue;
        }
        if tok == "stale" {
            out.push(Some(crate::storage::stale_nan()));
            continue;
        }
        if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("invalid value {tok:?}"))?;
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        let bad = || format!("invalid value {tok:?}");
        let (start, rest) = split_number(tok).ok_or_else(bad)?;
        if rest.is_empty() {
            out.push(Some(start));
            continue;
        }
        let (step, times) = if let Some(n) = rest.strip_prefix('x') {
            (0.0, n)
        } else {
            let neg = rest.starts_with('-');
            let r = rest
                .strip_prefix('+')
                .or_else(|| rest.strip_prefix('-'))
                .ok_or_else(bad)?;
            let (step, r) = split_number(r).ok_or_else(bad)?;
            let n = r.strip_prefix('x').ok_or_else(bad)?;
            (if neg { -step } else { step }, n)
        };
        let n: usize = times.parse().map_err(|_| bad())?;
        if n > INPUT_SAMPLES_MAX {
            return Err(format!(
                "{tok:?} repeats more than {INPUT_SAMPLES_MAX} times"
            ));
        }
        // A running sum, as Prometheus's parser adds the step.
        let mut v = start;
        out.push(Some(v));
        for _ in 0..n {
            v += step;
            out.push(Some(v));
        }
    }
    Ok(out)
}

/// A leading number of `s` (with sign, decimals, exponent, `Inf`, `NaN`) and the rest.
fn split_number(s: &str) -> Option<(f64, &str)> {
    let bytes = s.as_bytes();
    let mut i = 0;
    if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
        i += 1;
    }
    let lower = s[i..].to_ascii_lowercase();
    for word in ["inf", "nan"] {
        if lower.starts_with(word) {
            let end = i + word.len();
            let v: f64 = match (word, bytes.first()) {
                ("nan", _) => f64::NAN,
                (_, Some(b'-')) => f64::NEG_INFINITY,
                _ => f64::INFINITY,
            };
            return Some((v, &s[end..]));
        }
    }
    let digits_start = i;
    while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
        i += 1;
    }
    if i == digits_start {
        return None;
    }
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        let mut j = i + 1;
        if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
            j += 1;
        }
        let exp_start = j;
        while j < bytes.len() && bytes[j].is_ascii_digit() {
            j += 1;
        }
        if j > exp_start {
            i = j;
        }
    }
    s[..i].parse::<f64>().ok().map(|v| (v, &s[i..]))
}

fn map_labels(m: &BTreeMap<String, String>) -> Labels {
    let pairs: Vec<(&str, &str)> = m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Labels::from_pairs(&pairs)
}

/// The firing alerts of every alerting rule named `alertname`, sorted.
fn firing_alerts(groups: &[Group], alertname: &str) -> Vec<LabelsAndAnnotations> {
    let mut out = Vec::new();
    for g in groups {
        for r in &g.rules {
            if r.name != alertname || !matches!(r.kind, RuleKind::Alerting { .. }) {
                continue;
            }
            for a in r.active_alerts() {
                if a.state == AlertState::Firing {
                    out.push((a.labels.clone(), map_labels(&a.annotations)));
                }
            }
        }
    }
    out.sort();
    out
}

/// promtool's listing of alerts: `[]`, or numbered `Labels:…`/`Annotations:…` pairs.
fn alerts_string(alerts: &[LabelsAndAnnotations]) -> String {
    if alerts.is_empty() {
        return "[]".into();
    }
    let mut s = String::from("[\n");
    for (i, (l, a)) in alerts.iter().enumerate() {
        if i > 0 {
            s.push_str(",\n");
        }
        let one = format!("\nLabels:{l}\nAnnotations:{a}");
        s.push_str(&format!("{i}:{}", indent_lines(&one, "  ")));
    }
    s.push_str("\n]");
    s
}

/// Prefixes every line but the first with `indent`.
fn indent_lines(lines: &str, indent: &str) -> String {
    lines
        .split('\n')
        .enumerate()
        .map(|(i, l)| {
            if i > 0 {
                format!("{indent}{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs one `promql_expr_test`; its failure, if any.
fn check_expr(
    engine: &Engine,
    storage: &MemStorage,
    case: &PromqlTestCase,
) -> Option<TestRulesError> {
    let head = format!(
        "    expr: {}, time: {}",
        crate::labels::quote(&case.expr),
        model_duration(case.eval_time)
    );
    let fail = |e: String| Some(TestRulesError::Failed(format!("{head}, err: {e}")));
    let query = match crate::promql::parse(&case.expr) {
        Ok(q) => q,
        Err(e) => return fail(e.to_string()),
    };
    let res = match engine.instant_query(storage, &query, case.eval_time, None) {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    let mut got: Vec<(Labels, f64)> = match res.value {
        Value::Vector(v) => v.into_iter().map(|s| (s.metric, s.f)).collect(),
        Value::Scalar { v, .. } => vec![(Labels::empty(), v)],
        _ => return fail("rule result is not a vector or scalar".into()),
    };
    let mut exp = Vec::with_capacity(case.exp_samples.len());
    for s in &case.exp_samples {
        match parse_metric(&s.labels) {
            Ok(l) => exp.push((l, s.value)),
            Err(e) => {
                return fail(format!("labels {}: {e}", crate::labels::quote(&s.labels)));
            }
        }
    }
    exp.sort_by(|a, b| a.0.cmp(&b.0));
    got.sort_by(|a, b| a.0.cmp(&b.0));
    // Values compare exactly, so NaN never matches, as with Go's reflect.DeepEqual.
    let same =
        exp.len() == got.len() && exp.iter().zip(&got).all(|(e, g)| e.0 == g.0 && e.1 == g.1);
    if same {
        return None;
    }
    Some(TestRulesError::Failed(format!(
        "{head},\n        exp: {}\n        got: {}",
        samples_string(&exp),
        samples_string(&got)
    )))
}

fn samples_string(samples: &[(Labels, f64)]) -> String {
    if samples.is_empty() {
        return "nil".into();
    }
    samples
        .iter()
        .map(|(l, v)| format!("{l} {}", go_float_e(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Go's `strconv.FormatFloat(v, 'E', -1, 64)`: shortest digits, `E±dd` exponent.
pub fn go_float_e(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let e = format!("{v:E}");
    let (mantissa, exp) = e.split_once('E').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    format!(
        "{mantissa}E{}{:02}",
        if exp < 0 { '-' } else { '+' },
        exp.abs()
    )
}

/// Prometheus's `model.Duration` text: `0s`, `1m30s`, `2h`, `1d`, `1w`, `500ms`;
/// years and weeks only when they divide the duration exactly.
pub fn model_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut rest = ms;
    let mut out = String::new();
    if rest < 0 {
        out.push('-');
        rest = -rest;
    }
    let units: [(&str, i64, bool); 7] = [
        ("y", 365 * 86_400_000, true),
        ("w", 7 * 86_400_000, true),
        ("d", 86_400_000, false),
        ("h", 3_600_000, false),
        ("m", 60_000, false),
        ("s", 1000, false),
        ("ms", 1, false),
    ];
    for (unit, mult, exact) in units {
        if exact && rest % mult != 0 {
            continue;
        }
        let n = rest / mult;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            rest -= n * mult;
        }
    }
    out
}

/// Go's `time.Duration` text for a whole number of milliseconds: `0s`, `500ms`,
/// `1m0s`, `1h2m3.5s`.
pub fn go_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    if ms < 1000 {
        return format!("{sign}{ms}ms");
    }
    let (h, m) = (ms / 3_600_000, (ms / 60_000) % 60);
    let (s, frac) = ((ms / 1000) % 60, ms % 1000);
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:03}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    if h > 0 {
        format!("{sign}{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{sign}{m}m{secs}")
    } else {
        format!("{sign}{secs}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_expand_like_promtool() {
        let v = expand_values("1+1x3 _ stale 5 _x2 2-0.5x2 7x1 -1e2").unwrap();
        let shown: Vec<String> = v
            .iter()
            .map(|x| match x {
                None => "_".into(),
                Some(f) if crate::storage::is_stale_nan(*f) => "stale".into(),
                Some(f) => f.to_string(),
            })
            .collect();
        assert_eq!(
            shown,
            ["1", "2", "3", "4", "_", "stale", "5", "_", "_", "2", "1.5", "1", "7", "7", "-100"]
        );
        assert!(expand_values("1+x3").is_err());
        assert!(expand_values("abc").is_err());
        assert_eq!(
            expand_values("Inf -Inf").unwrap()[1],
            Some(f64::NEG_INFINITY)
        );
    }

    #[test]
    fn durations_and_floats_print_like_go() {
        assert_eq!(model_duration(0), "0s");
        assert_eq!(model_duration(90_000), "1m30s");
        assert_eq!(model_duration(2 * 3_600_000), "2h");
        assert_eq!(model_duration(8 * 86_400_000), "8d");
        assert_eq!(model_duration(14 * 86_400_000), "2w");
        assert_eq!(model_duration(1500), "1s500ms");
        assert_eq!(go_duration(60_000), "1m0s");
        assert_eq!(go_duration(3_723_500), "1h2m3.5s");
        assert_eq!(go_duration(500), "500ms");
        assert_eq!(go_float_e(1.0), "1E+00");
        assert_eq!(go_float_e(1.0 / 3.0), "3.333333333333333E-01");
        assert_eq!(go_float_e(0.1 + 0.2), "3.0000000000000004E-01");
        assert_eq!(go_float_e(-2.5e10), "-2.5E+10");
    }

    #[test]
    fn metrics_parse_to_labels() {
        assert_eq!(
            parse_metric("up{job=\"a\", instance=\"x:1\"}")
                .unwrap()
                .to_string(),
            "{__name__=\"up\", instance=\"x:1\", job=\"a\"}"
        );
        assert!(parse_metric("").unwrap().is_empty());
        assert!(parse_metric("up{job=~\"a\"}").is_err());
    }
}
