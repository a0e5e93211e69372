//! The evaluator: walks a parsed expression at each step and produces values.
//!
//! Instant vectors carry a "drop the name later" flag per sample, because Prometheus
//! 3 removes `__name__` only at the very end of evaluation (so `label_replace` can
//! still read the name of `rate(x[5m])`). `finish` applies the flag and checks that
//! no two series end up with the same labels.

use super::functions;
use super::rewrite::{is_marker, MODIFIER_LABEL};
use super::value::{FPoint, Sample, Series, Value};
use super::{EngineOptions, QueryError, QueryResult};
use crate::fxhash::{HashMap, HashSet};
use crate::labels::{Labels, LabelsBuilder, MatchType, Matcher, METRIC_NAME};
use crate::storage::{self, is_stale_nan, Queryable, SelectHints};
use promql_parser::label::MatchOp;
use promql_parser::parser::token::*;
use promql_parser::parser::{
    AggregateExpr, AtModifier, BinaryExpr, Expr, LabelModifier, Offset, SubqueryExpr,
    VectorMatchCardinality, VectorSelector,
};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// One element of an instant vector during evaluation.
#[derive(Debug, Clone)]
pub(super) struct VSample {
    pub metric: Labels,
    /// The sample's own timestamp for raw selections (what `timestamp()` returns),
    /// the evaluation time for computed values.
    pub ts: i64,
    pub f: f64,
    /// `__name__` is to be removed at the end of evaluation.
    pub drop_name: bool,
}

/// One series of a range vector during evaluation.
#[derive(Debug, Clone)]
pub(super) struct MSeries {
    pub metric: Labels,
    pub drop_name: bool,
    pub points: Points,
}

/// The points of a range-vector series: a window into a selector's points, which
/// are read once per query and shared by every step (no copy per step), or points
/// of their own (subqueries, `anchored`/`smoothed` windows).
///
/// A shared window refers to the selector's data as a whole and a series in it:
/// every series of a step then shares one reference count, which stays in cache,
/// instead of touching one per series.
#[derive(Clone)]
pub(super) enum Points {
    Shared {
        data: Rc<Vec<MatrixData>>,
        series: usize,
        range: std::ops::Range<usize>,
    },
    Owned(Vec<FPoint>),
}

impl std::fmt::Debug for Points {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl std::ops::Deref for Points {
    type Target = [FPoint];
    fn deref(&self) -> &[FPoint] {
        match self {
            Points::Shared {
                data,
                series,
                range,
            } => &data[*series].points[range.clone()],
            Points::Owned(v) => v,
        }
    }
}

impl Points {
    fn into_vec(self) -> Vec<FPoint> {
        match self {
            Points::Shared {
                data,
                series,
                range,
            } => data[series].points[range].to_vec(),
            Points::Owned(v) => v,
        }
    }

    /// The start times of the points (0 = unknown), or an empty slice when there
    /// are none: storage had none, or the points were computed (subqueries,
    /// `anchored`/`smoothed` windows), which, as in Prometheus, do not carry them.
    pub fn start_times(&self) -> &[i64] {
        match self {
            Points::Shared {
                data,
                series,
                range,
            } if !data[*series].start_times.is_empty() => &data[*series].start_times[range.clone()],
            _ => &[],
        }
    }
}

/// A range selector's series as read from storage, stale markers left out: the
/// points every step's window is cut from.
pub(super) struct MatrixData {
    metric: Labels,
    points: Box<[FPoint]>,
    /// Start times aligned with `points`, or empty.
    start_times: Box<[i64]>,
}

/// The window a range vector was taken over: `(end - range_ms, end]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub end: i64,
    pub range_ms: i64,
    /// `anchored` or `smoothed`: the points then also hold the last sample at or
    /// before the window's start (and, smoothed, the first one after its end).
    pub mode: RangeMod,
}

/// The `anchored`/`smoothed` modifier of a selector (Prometheus 3.7+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RangeMod {
    None,
    Anchored,
    Smoothed,
}

impl RangeMod {
    pub fn name(self) -> &'static str {
        match self {
            RangeMod::None => "",
            RangeMod::Anchored => "anchored",
            RangeMod::Smoothed => "smoothed",
        }
    }
}

/// The modifier the text pre-pass recorded on `vs` as a marker matcher.
pub(super) fn range_mod(vs: &VectorSelector) -> RangeMod {
    for m in &vs.matchers.matchers {
        if m.name == MODIFIER_LABEL {
            return match m.value.as_str() {
                "anchored" => RangeMod::Anchored,
                "smoothed" => RangeMod::Smoothed,
                _ => RangeMod::None,
            };
        }
    }
    RangeMod::None
}

/// A value during evaluation at one step.
#[derive(Debug, Clone)]
pub(super) enum Val {
    Scalar(f64),
    Str(String),
    Vector(Vec<VSample>),
    Matrix(Vec<MSeries>, Window),
}

impl Val {
    fn type_name(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::Str(_) => "string",
            Val::Vector(_) => "instant vector",
            Val::Matrix(..) => "range vector",
        }
    }
}

/// Evaluation state of one query.
pub(super) struct Evaluator<'a> {
    pub opts: &'a EngineOptions,
    storage: &'a dyn Queryable,
    /// The query's start and end (ms): what `@ start()` and `@ end()` mean.
    pub start: i64,
    pub end: i64,
    /// The query's step (0 for instant queries): what `step()` returns.
    pub step: i64,
    cancel: Option<&'a CancellationToken>,
    deadline: Option<Instant>,
    /// Data range (inclusive ms) each selector needs, keyed by the selector's address.
    ranges: HashMap<usize, (i64, i64)>,
    /// Per selector, `Some(t)` while every use plans it as an instant vector
    /// evaluated only at `t`: it then reads only each series' newest sample at or
    /// before `t` (`SelectHints::newest_only`).
    instant_at: HashMap<usize, Option<i64>>,
    /// Series read for each selector, once per query.
    data: HashMap<usize, Rc<Vec<storage::Series>>>,
    /// The same for range selectors without `anchored`/`smoothed`, without stale
    /// markers, so every step's window is a slice of them.
    matrix_data: HashMap<usize, Rc<Vec<MatrixData>>>,
    /// Per selector, where the previous step's search ended in each series' samples
    /// (for range selectors: start and end of the window, two per series). Steps
    /// move forward, so the next step's search starts there and usually moves a
    /// sample or two instead of searching the whole series again.
    cursors: HashMap<usize, Vec<usize>>,
    /// Vector-matching work per binary expression (keyed by its address), kept
    /// across steps.
    match_caches: HashMap<usize, MatchCache>,
    /// Grouping work per aggregation (keyed by its address), kept across steps.
    group_caches: HashMap<usize, GroupCache>,
    /// Inner results of subqueries by (subquery address, inner evaluation time).
    subquery_steps: HashMap<(usize, i64), Rc<Vec<VSample>>>,
    /// Samples held by the current step.
    step_samples: usize,
    /// Samples held by the result so far.
    result_samples: usize,
    /// Raw samples read from storage by all selectors so far.
    loaded_samples: usize,
    /// Warnings and infos, each message once, in the order first raised.
    warnings: Vec<String>,
    infos: Vec<String>,
    /// String literals of the query whose escapes spell invalid UTF-8: never
    /// valid label names.
    invalid_utf8: Vec<super::rewrite::InvalidUtf8>,
    /// Text positions of calls and aggregations, keyed by node address.
    positions: std::collections::HashMap<usize, super::positions::CallPos>,
}

/// An annotation message with Prometheus's ` (line:col)` suffix.
fn with_pos(msg: String, pos: Option<String>) -> String {
    match pos {
        Some(p) => format!("{msg} ({p})"),
        None => msg,
    }
}

fn key<T>(x: &T) -> usize {
    x as *const T as usize
}

/// Evaluates `expr` over `[start, end]` with `step` (an instant query when `instant`).
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    opts: &EngineOptions,
    storage: &dyn Queryable,
    expr: &Expr,
    text: &str,
    start: i64,
    end: i64,
    step: i64,
    cancel: Option<&CancellationToken>,
    instant: bool,
) -> Result<QueryResult, QueryError> {
    let mut ev = Evaluator {
        opts,
        storage,
        start,
        end,
        step,
        cancel,
        deadline: (opts.timeout_ms > 0)
            .then(|| Instant::now() + Duration::from_millis(opts.timeout_ms)),
        ranges: HashMap::default(),
        instant_at: HashMap::default(),
        data: HashMap::default(),
        matrix_data: HashMap::default(),
        cursors: HashMap::default(),
        match_caches: HashMap::default(),
        group_caches: HashMap::default(),
        subquery_steps: HashMap::default(),
        step_samples: 0,
        result_samples: 0,
        loaded_samples: 0,
        warnings: Vec::new(),
        infos: Vec::new(),
        positions: super::positions::positions(text, expr),
        invalid_utf8: super::rewrite::invalid_utf8_literals(text),
    };
    ev.plan(expr, start, end);
    let value = eval_all(&mut ev, expr, start, end, step, instant)?;
    Ok(QueryResult {
        value,
        warnings: ev.warnings,
        infos: ev.infos,
    })
}

fn eval_all(
    ev: &mut Evaluator,
    expr: &Expr,
    start: i64,
    end: i64,
    step: i64,
    instant: bool,
) -> Result<Value, QueryError> {
    if instant {
        ev.check_limits()?;
        return match ev.eval(expr, start)? {
            Val::Scalar(v) => Ok(Value::Scalar { t: start, v }),
            Val::Str(s) => Ok(Value::String { t: start, s }),
            Val::Vector(vs) => {
                let samples = finish_vector(vs)?;
                Ok(Value::Vector(
                    samples
                        .into_iter()
                        .map(|(metric, f)| Sample {
                            metric,
                            t: start,
                            f,
                        })
                        .collect(),
                ))
            }
            Val::Matrix(ms, _) => {
                let series = ms
                    .into_iter()
                    .filter(|s| !s.points.is_empty())
                    .map(|s| (s.metric, s.drop_name, s.points.into_vec()))
                    .collect();
                Ok(Value::Matrix(finish_matrix(series)?))
            }
        };
    }
    // A range query: one series per label set across steps, in first-seen order.
    let mut index: HashMap<Labels, usize> = HashMap::default();
    let mut series: Vec<(Labels, bool, Vec<FPoint>)> = Vec::new();
    let mut t = start;
    while t <= end {
        ev.check_limits()?;
        ev.step_samples = 0;
        let mut push = |metric: Labels, drop_name: bool, f: f64| {
            let i = match index.get(&metric) {
                Some(&i) => i,
                None => {
                    index.insert(metric.clone(), series.len());
                    series.push((metric, false, Vec::new()));
                    series.len() - 1
                }
            };
            series[i].1 |= drop_name;
            series[i].2.push(FPoint { t, f });
        };
        match ev.eval(expr, t)? {
            Val::Scalar(v) => {
                push(Labels::empty(), false, v);
                ev.result_samples += 1;
            }
            Val::Vector(vs) => {
                ev.result_samples += vs.len();
                for s in vs {
                    push(s.metric, s.drop_name, s.f);
                }
            }
            other => {
                return Err(QueryError::Execution(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                other.type_name()
            )))
            }
        }
        ev.step_samples = 0;
        ev.add_samples(0)?;
        t = match t.checked_add(step) {
            Some(next) => next,
            None => break,
        };
    }
    Ok(Value::Matrix(finish_matrix(series)?))
}

/// Applies delayed name removal to a vector and checks labels stay unique.
fn finish_vector(vs: Vec<VSample>) -> Result<Vec<(Labels, f64)>, QueryError> {
    let mut out = Vec::with_capacity(vs.len());
    let mut seen = HashSet::default();
    let any_dropped = vs.iter().any(|s| s.drop_name);
    for s in vs {
        let metric = if s.drop_name {
            drop_name(&s.metric)
        } else {
            s.metric
        };
        if any_dropped && !seen.insert(metric.clone()) {
            return Err(same_labelset());
        }
        out.push((metric, s.f));
    }
    Ok(out)
}

/// Applies delayed name removal to a matrix and sorts it. Series whose labels
/// coincide once names are gone are merged, as long as they have no timestamp in
/// common (that is an error, as in Prometheus).
fn finish_matrix(series: Vec<(Labels, bool, Vec<FPoint>)>) -> Result<Vec<Series>, QueryError> {
    let mut out: Vec<Series> = series
        .into_iter()
        .map(|(metric, drop, floats)| Series {
            metric: if drop { drop_name(&metric) } else { metric },
            floats,
        })
        .collect();
    out.sort_by(|a, b| a.metric.cmp(&b.metric));
    let mut merged: Vec<Series> = Vec::with_capacity(out.len());
    for s in out {
        match merged.last_mut() {
            Some(last) if last.metric == s.metric => {
                let mut points = std::mem::take(&mut last.floats);
                points.extend(s.floats);
                points.sort_by_key(|p| p.t);
                if points.windows(2).any(|w| w[0].t == w[1].t) {
                    return Err(same_labelset());
                }
                last.floats = points;
            }
            _ => merged.push(s),
        }
    }
    Ok(merged)
}

pub(super) fn same_labelset() -> QueryError {
    QueryError::Execution("vector cannot contain metrics with the same labelset".into())
}

/// `labels` without `__name__` (and without `__type__` and `__unit__`, which
/// describe the metric the name refers to).
pub(super) fn drop_name(labels: &Labels) -> Labels {
    if !labels.has(METRIC_NAME) && !labels.has("__type__") && !labels.has("__unit__") {
        return labels.clone();
    }
    let mut b = labels.builder();
    b.del(METRIC_NAME);
    b.del("__type__");
    b.del("__unit__");
    b.build()
}

fn duration_ms(d: &Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => duration_ms(d),
        Some(Offset::Neg(d)) => -duration_ms(d),
    }
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => duration_ms(&d),
        Err(e) => -duration_ms(&e.duration()),
    }
}

/// Converts a selector's matchers (and its metric name) into storage matchers. Each
/// inner list is one `or`-alternative; plain selectors have exactly one.
pub(super) fn selector_matchers(vs: &VectorSelector) -> Result<Vec<Vec<Matcher>>, QueryError> {
    let convert = |list: &[promql_parser::label::Matcher]| -> Result<Vec<Matcher>, QueryError> {
        let mut out = Vec::with_capacity(list.len() + 1);
        if let Some(name) = &vs.name {
            out.push(Matcher::equal(METRIC_NAME, name));
        }
        for m in list {
            if is_marker(&m.name) {
                continue;
            }
            let kind = match m.op {
                MatchOp::Equal => MatchType::Equal,
                MatchOp::NotEqual => MatchType::NotEqual,
                MatchOp::Re(_) => MatchType::Regexp,
                MatchOp::NotRe(_) => MatchType::NotRegexp,
            };
            out.push(
                Matcher::new(kind, &m.name, &m.value)
                    .map_err(|e| QueryError::Parse(e.to_string()))?,
            );
        }
        Ok(out)
    };
    let mut sets = Vec::new();
    if vs.matchers.or_matchers.is_empty() {
        sets.push(convert(&vs.matchers.matchers)?);
    } else {
        for list in &vs.matchers.or_matchers {
            sets.push(convert(list)?);
        }
    }
    Ok(sets)
}

impl<'a> Evaluator<'a> {
    /// The time a selector or subquery evaluated at `t` refers to, after `@` and
    /// `offset`.
    pub fn ref_time(&self, at: &Option<AtModifier>, offset: &Option<Offset>, t: i64) -> i64 {
        let base = match at {
            None => t,
            Some(AtModifier::Start) => self.start,
            Some(AtModifier::End) => self.end,
            Some(AtModifier::At(st)) => system_time_ms(st),
        };
        base.saturating_sub(offset_ms(offset))
    }

    /// Records, for every selector under `e` evaluated at times in `[lo, hi]`, the
    /// data range it needs.
    fn plan(&mut self, e: &Expr, lo: i64, hi: i64) {
        match e {
            Expr::VectorSelector(vs) => {
                let (l, h) = (
                    self.ref_time(&vs.at, &vs.offset, lo),
                    self.ref_time(&vs.at, &vs.offset, hi),
                );
                let mode = range_mod(vs);
                let after = match mode {
                    RangeMod::Smoothed => self.opts.lookback_delta_ms,
                    _ => 0,
                };
                let at = (l == h && matches!(mode, RangeMod::None)).then_some(h);
                self.instant_at
                    .entry(key(vs))
                    .and_modify(|t| *t = t.filter(|&t| Some(t) == at))
                    .or_insert(at);
                self.extend(
                    key(vs),
                    l.saturating_sub(self.opts.lookback_delta_ms - 1),
                    h.saturating_add(after),
                );
            }
            Expr::MatrixSelector(ms) => {
                let vs = &ms.vs;
                let (l, h) = (
                    self.ref_time(&vs.at, &vs.offset, lo),
                    self.ref_time(&vs.at, &vs.offset, hi),
                );
                let lookback = self.opts.lookback_delta_ms;
                let (before, after) = match range_mod(vs) {
                    RangeMod::None => (0, 0),
                    RangeMod::Anchored => (lookback, 0),
                    RangeMod::Smoothed => (lookback, lookback),
                };
                self.extend(
                    key(vs),
                    l.saturating_sub(duration_ms(&ms.range) - 1 + before),
                    h.saturating_add(after),
                );
            }
            Expr::Subquery(sq) => {
                let (l, h) = (
                    self.ref_time(&sq.at, &sq.offset, lo),
                    self.ref_time(&sq.at, &sq.offset, hi),
                );
                self.plan(&sq.expr, l.saturating_sub(duration_ms(&sq.range)), h);
            }
            Expr::Paren(p) => self.plan(&p.expr, lo, hi),
            Expr::Unary(u) => self.plan(&u.expr, lo, hi),
            Expr::Binary(b) => {
                self.plan(&b.lhs, lo, hi);
                self.plan(&b.rhs, lo, hi);
            }
            Expr::Aggregate(a) => {
                if let Some(p) = &a.param {
                    self.plan(p, lo, hi);
                }
                self.plan(&a.expr, lo, hi);
            }
            Expr::Call(c) => {
                for a in &c.args.args {
                    self.plan(a, lo, hi);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }

    fn extend(&mut self, k: usize, mint: i64, maxt: i64) {
        let r = self.ranges.entry(k).or_insert((mint, maxt));
        r.0 = r.0.min(mint);
        r.1 = r.1.max(maxt);
    }

    /// Where call `c` starts in the query (`line:col`).
    /// Whether `name`, a string from the query, is a valid label name: not empty
    /// and, as Prometheus requires, UTF-8 in the query text.
    pub fn label_name_ok(&self, name: &str) -> bool {
        valid_label_name(name) && !self.invalid_utf8.iter().any(|x| x.decoded == name)
    }

    /// `s`, a string from the query, quoted as Go's `%q` prints the original.
    pub fn quote_query_string(&self, s: &str) -> String {
        match self.invalid_utf8.iter().find(|x| x.decoded == s) {
            Some(x) => x.quoted.clone(),
            None => go_quote(s),
        }
    }

    pub fn call_pos(&self, c: &promql_parser::parser::Call) -> Option<String> {
        self.positions.get(&key(c)).map(|p| p.start.clone())
    }

    /// Where argument `i` of call `c` starts in the query.
    pub fn arg_pos(&self, c: &promql_parser::parser::Call, i: usize) -> Option<String> {
        self.positions
            .get(&key(c))
            .and_then(|p| p.args.get(i).cloned())
    }

    /// Where the parameter of aggregation `a` starts in the query.
    pub fn param_pos(&self, a: &AggregateExpr) -> Option<String> {
        self.positions
            .get(&key(a))
            .and_then(|p| p.args.first().cloned())
    }

    /// Records a warning about the expression at `pos`.
    pub fn warn_at(&mut self, msg: String, pos: Option<String>) {
        self.warn(with_pos(msg, pos));
    }

    /// Records an info about the expression at `pos`.
    pub fn info_at(&mut self, msg: String, pos: Option<String>) {
        self.info(with_pos(msg, pos));
    }

    /// Records a warning annotation (`PromQL warning: …`).
    pub fn warn(&mut self, msg: String) {
        let m = format!("PromQL warning: {msg}");
        if !self.warnings.contains(&m) {
            self.warnings.push(m);
        }
    }

    /// Records the storage's warnings (a cluster peer's data missing) as they are.
    fn storage_warnings(&mut self, msgs: Vec<String>) {
        for m in msgs {
            if !self.warnings.contains(&m) {
                self.warnings.push(m);
            }
        }
    }

    /// Records an info annotation (`PromQL info: …`).
    pub fn info(&mut self, msg: String) {
        let m = format!("PromQL info: {msg}");
        if !self.infos.contains(&m) {
            self.infos.push(m);
        }
    }

    /// Fails when the query ran out of time or was cancelled.
    pub fn check_limits(&self) -> Result<(), QueryError> {
        if self.cancel.is_some_and(|c| c.is_cancelled()) {
            return Err(QueryError::Canceled("expression evaluation".into()));
        }
        if self.deadline.is_some_and(|d| Instant::now() > d) {
            return Err(QueryError::Timeout("expression evaluation".into()));
        }
        Ok(())
    }

    /// Counts `n` more samples held by this step, failing past `max_samples`.
    pub fn add_samples(&mut self, n: usize) -> Result<(), QueryError> {
        self.step_samples += n;
        if self.step_samples + self.result_samples > self.opts.max_samples {
            return Err(QueryError::TooManySamples("query execution".into()));
        }
        Ok(())
    }

    /// The series a selector reads, fetched from storage on first use.
    fn series_for(&mut self, vs: &VectorSelector) -> Result<Rc<Vec<storage::Series>>, QueryError> {
        let k = key(vs);
        if let Some(d) = self.data.get(&k) {
            return Ok(d.clone());
        }
        let (mint, maxt) = self.ranges.get(&k).copied().unwrap_or((i64::MIN, i64::MAX));
        let sets = selector_matchers(vs)?;
        let querier = self
            .storage
            .querier(mint, maxt)
            .map_err(|e| QueryError::Storage(e.to_string()))?;
        let hints = SelectHints {
            start_ms: mint,
            end_ms: maxt,
            series_only: false,
            newest_only: self.instant_at.get(&k) == Some(&Some(maxt)),
        };
        let mut all: Vec<storage::Series> = Vec::new();
        for ms in &sets {
            for s in querier
                .select(&hints, ms)
                .map_err(|e| QueryError::Storage(e.to_string()))?
            {
                let mut s = s.map_err(|e| QueryError::Storage(e.to_string()))?;
                // Storage may return samples outside the range; the TSDB does
                // not, and then the samples need no second pass.
                let inside = |p: &storage::Sample| p.t >= mint && p.t <= maxt;
                if !(s.samples.first().is_none_or(inside) && s.samples.last().is_none_or(inside)) {
                    s.retain_samples(inside);
                }
                // Raw samples stay in memory for the whole query, so they count
                // towards `max_samples` too: a selector over too much data fails
                // with Prometheus's error instead of exhausting memory.
                self.loaded_samples += s.samples.len();
                if self.loaded_samples > self.opts.max_samples {
                    return Err(QueryError::TooManySamples("query execution".into()));
                }
                all.push(s);
            }
        }
        if sets.len() > 1 {
            all.sort_by(|a, b| a.labels.cmp(&b.labels));
            all.dedup_by(|a, b| a.labels == b.labels);
        }
        self.storage_warnings(querier.warnings());
        let d = Rc::new(all);
        self.data.insert(k, d.clone());
        Ok(d)
    }

    /// The series a range selector without `anchored`/`smoothed` reads, stale
    /// markers left out, made on first use.
    fn matrix_series_for(
        &mut self,
        vs: &VectorSelector,
    ) -> Result<Rc<Vec<MatrixData>>, QueryError> {
        let k = key(vs);
        if let Some(d) = self.matrix_data.get(&k) {
            return Ok(d.clone());
        }
        let raw = self.series_for(vs)?;
        let d: Vec<MatrixData> = raw
            .iter()
            .map(|s| {
                let live = || {
                    s.samples
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| !is_stale_nan(p.v))
                };
                MatrixData {
                    metric: s.labels.clone(),
                    points: live().map(|(_, p)| FPoint { t: p.t, f: p.v }).collect(),
                    start_times: if s.start_times.is_empty() {
                        Box::default()
                    } else {
                        live().map(|(i, _)| s.start_time(i)).collect()
                    },
                }
            })
            .collect();
        // The raw samples are not needed again: a selector is either a vector
        // selector or a range selector.
        self.data.remove(&k);
        let d = Rc::new(d);
        self.matrix_data.insert(k, d.clone());
        Ok(d)
    }

    /// Evaluates `e` at time `t` (ms).
    pub fn eval(&mut self, e: &Expr, t: i64) -> Result<Val, QueryError> {
        match e {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Val::Scalar(v) => Ok(Val::Scalar(-v)),
                Val::Vector(mut vs) => {
                    for s in &mut vs {
                        s.f = -s.f;
                        s.drop_name = true;
                        s.ts = t;
                    }
                    Ok(Val::Vector(vs))
                }
                other => Err(QueryError::Execution(format!(
                    "unary expression only allowed on expressions of type scalar or instant vector, got {}",
                    other.type_name()
                ))),
            },
            Expr::VectorSelector(vs) => self.eval_vector_selector(vs, t, false),
            Expr::MatrixSelector(ms) => {
                let vs = &ms.vs;
                let end = self.ref_time(&vs.at, &vs.offset, t);
                let range_ms = duration_ms(&ms.range);
                let mode = range_mod(vs);
                let start = end.saturating_sub(range_ms);
                let window = Window {
                    end,
                    range_ms,
                    mode,
                };
                if mode == RangeMod::None {
                    let data = self.matrix_series_for(vs)?;
                    let cursors = self
                        .cursors
                        .entry(key(vs))
                        .or_insert_with(|| vec![0; 2 * data.len()]);
                    let mut out = Vec::with_capacity(data.len());
                    let mut n = 0;
                    for (i, s) in data.iter().enumerate() {
                        let lo = seek(&s.points, |p| p.t, start, cursors[2 * i]);
                        let hi = seek(&s.points, |p| p.t, end, cursors[2 * i + 1].max(lo));
                        cursors[2 * i] = lo;
                        cursors[2 * i + 1] = hi;
                        if lo == hi {
                            continue;
                        }
                        n += hi - lo;
                        out.push(MSeries {
                            metric: s.metric.clone(),
                            drop_name: false,
                            points: Points::Shared {
                                data: data.clone(),
                                series: i,
                                range: lo..hi,
                            },
                        });
                    }
                    self.add_samples(n)?;
                    return Ok(Val::Matrix(out, window));
                }
                let data = self.series_for(vs)?;
                let lookback = self.opts.lookback_delta_ms;
                let mut out = Vec::new();
                let mut n = 0;
                for s in data.iter() {
                    let lo = s.samples.partition_point(|p| p.t <= start);
                    let hi = s.samples.partition_point(|p| p.t <= end);
                    let mut points: Vec<FPoint> = Vec::new();
                    if mode != RangeMod::None {
                        // The last sample at or before the start, within the lookback.
                        if let Some(p) = s.samples[..lo].iter().rev().find(|p| !is_stale_nan(p.v)) {
                            if p.t > start.saturating_sub(lookback) {
                                points.push(FPoint { t: p.t, f: p.v });
                            }
                        }
                    }
                    points.extend(
                        s.samples[lo..hi]
                            .iter()
                            .filter(|p| !is_stale_nan(p.v))
                            .map(|p| FPoint { t: p.t, f: p.v }),
                    );
                    if mode == RangeMod::Smoothed {
                        if let Some(p) = s.samples[hi..].iter().find(|p| !is_stale_nan(p.v)) {
                            if p.t <= end.saturating_add(lookback) {
                                points.push(FPoint { t: p.t, f: p.v });
                            }
                        }
                    }
                    if points.is_empty() {
                        continue;
                    }
                    n += points.len();
                    out.push(MSeries {
                        metric: s.labels.clone(),
                        drop_name: false,
                        points: Points::Owned(points),
                    });
                }
                self.add_samples(n)?;
                Ok(Val::Matrix(out, window))
            }
            Expr::Subquery(sq) => self.eval_subquery(sq, t),
            Expr::Aggregate(a) => self.eval_aggregate(a, t),
            Expr::Binary(b) => self.eval_binary(b, t),
            Expr::Call(c) => functions::call(self, c, t),
            Expr::Extension(_) => Err(QueryError::Execution(
                "extension expressions are not supported".into(),
            )),
        }
    }

    /// The instant vector `vs` selects at `t`; with `start_times`, each sample's
    /// value is replaced by its start time in seconds (0 when unknown), which is
    /// what `start_timestamp(vs)` returns.
    pub fn eval_vector_selector(
        &mut self,
        vs: &VectorSelector,
        t: i64,
        start_times: bool,
    ) -> Result<Val, QueryError> {
        let rt = self.ref_time(&vs.at, &vs.offset, t);
        let data = self.series_for(vs)?;
        let lookback = self.opts.lookback_delta_ms;
        let smoothed = range_mod(vs) == RangeMod::Smoothed;
        let cursors = self
            .cursors
            .entry(key(vs))
            .or_insert_with(|| vec![0; data.len()]);
        let mut out = Vec::new();
        for (si, s) in data.iter().enumerate() {
            let i = seek(&s.samples, |p| p.t, rt, cursors[si]);
            cursors[si] = i;
            if i == 0 {
                continue;
            }
            let p = s.samples[i - 1];
            // The lookback window is open on the left: (rt - lookback, rt].
            if p.t <= rt.saturating_sub(lookback) || is_stale_nan(p.v) {
                continue;
            }
            if start_times {
                out.push(VSample {
                    metric: s.labels.clone(),
                    ts: t,
                    f: s.start_time(i - 1) as f64 / 1000.0,
                    drop_name: true,
                });
                continue;
            }
            if smoothed && p.t < rt {
                // Interpolated between the samples around `rt` when there is a next one.
                let next = s.samples[i..]
                    .first()
                    .filter(|n| n.t <= rt.saturating_add(lookback) && !is_stale_nan(n.v));
                let f = match next {
                    Some(n) => p.v + (n.v - p.v) * (rt - p.t) as f64 / (n.t - p.t) as f64,
                    None => p.v,
                };
                out.push(VSample {
                    metric: s.labels.clone(),
                    ts: rt,
                    f,
                    drop_name: false,
                });
                continue;
            }
            out.push(VSample {
                metric: s.labels.clone(),
                ts: p.t,
                f: p.v,
                drop_name: false,
            });
        }
        self.add_samples(out.len())?;
        Ok(Val::Vector(out))
    }

    fn eval_subquery(&mut self, sq: &SubqueryExpr, t: i64) -> Result<Val, QueryError> {
        let end = self.ref_time(&sq.at, &sq.offset, t);
        let range_ms = duration_ms(&sq.range);
        let step = match &sq.step {
            Some(s) if !s.is_zero() => duration_ms(s),
            _ => self.opts.no_step_subquery_interval_ms,
        }
        .max(1);
        // Inner steps are the multiples of `step` in (end - range, end].
        let lo = end.saturating_sub(range_ms);
        let mut ts = step * (lo / step);
        if ts <= lo {
            ts += step;
        }
        let k = key(sq);
        let mut index: HashMap<Labels, usize> = HashMap::default();
        let mut out: Vec<(Labels, bool, Vec<FPoint>)> = Vec::new();
        let mut n = 0;
        while ts <= end {
            self.check_limits()?;
            let inner = match self.subquery_steps.get(&(k, ts)) {
                Some(v) => v.clone(),
                None => {
                    let v = match self.eval(&sq.expr, ts)? {
                        Val::Vector(v) => v,
                        Val::Scalar(f) => vec![VSample {
                            metric: Labels::empty(),
                            ts,
                            f,
                            drop_name: false,
                        }],
                        other => {
                            return Err(QueryError::Execution(format!(
                                "subquery is only allowed on instant vector, got {}",
                                other.type_name()
                            )))
                        }
                    };
                    let v = Rc::new(v);
                    self.subquery_steps.insert((k, ts), v.clone());
                    v
                }
            };
            for s in inner.iter() {
                let i = *index.entry(s.metric.clone()).or_insert_with(|| {
                    out.push((s.metric.clone(), false, Vec::new()));
                    out.len() - 1
                });
                out[i].1 |= s.drop_name;
                out[i].2.push(FPoint { t: ts, f: s.f });
                n += 1;
            }
            ts = match ts.checked_add(step) {
                Some(next) => next,
                None => break,
            };
        }
        self.add_samples(n)?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        let out = out
            .into_iter()
            .map(|(metric, drop_name, points)| MSeries {
                metric,
                drop_name,
                points: Points::Owned(points),
            })
            .collect();
        Ok(Val::Matrix(
            out,
            Window {
                end,
                range_ms,
                mode: RangeMod::None,
            },
        ))
    }

    /// Label sets (and newest sample times) of the series matching `matchers` that
    /// have a sample (not a stale marker) in the lookback window at `t`. Read directly, not cached: `info()`
    /// uses it with matchers that depend on the data.
    pub fn select_present(
        &mut self,
        matchers: &[Matcher],
        t: i64,
    ) -> Result<Vec<(Labels, i64)>, QueryError> {
        let mint = t - self.opts.lookback_delta_ms + 1;
        let querier = self
            .storage
            .querier(mint, t)
            .map_err(|e| QueryError::Storage(e.to_string()))?;
        let hints = SelectHints {
            start_ms: mint,
            end_ms: t,
            series_only: false,
            newest_only: true,
        };
        let mut out = Vec::new();
        for s in querier
            .select(&hints, matchers)
            .map_err(|e| QueryError::Storage(e.to_string()))?
        {
            let s = s.map_err(|e| QueryError::Storage(e.to_string()))?;
            let last = s.samples.iter().rev().find(|p| p.t <= t);
            if let Some(p) = last.filter(|p| p.t >= mint && !is_stale_nan(p.v)) {
                out.push((s.labels, p.t));
            }
        }
        self.storage_warnings(querier.warnings());
        self.add_samples(out.len())?;
        Ok(out)
    }

    /// Evaluates `e` and requires an instant vector.
    pub fn eval_vector(&mut self, e: &Expr, t: i64) -> Result<Vec<VSample>, QueryError> {
        match self.eval(e, t)? {
            Val::Vector(v) => Ok(v),
            other => Err(QueryError::Execution(format!(
                "expected instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates `e` and requires a scalar.
    pub fn eval_scalar(&mut self, e: &Expr, t: i64) -> Result<f64, QueryError> {
        match self.eval(e, t)? {
            Val::Scalar(v) => Ok(v),
            other => Err(QueryError::Execution(format!(
                "expected scalar, got {}",
                other.type_name()
            ))),
        }
    }

    fn eval_binary(&mut self, b: &BinaryExpr, t: i64) -> Result<Val, QueryError> {
        let op = b.op.id();
        let lhs = self.eval(&b.lhs, t)?;
        let rhs = self.eval(&b.rhs, t)?;
        let return_bool = b.return_bool();
        let comparison = b.op.is_comparison_operator();
        match (lhs, rhs) {
            (Val::Scalar(l), Val::Scalar(r)) => {
                let (v, keep) = elem_binop(op, l, r);
                Ok(Val::Scalar(if comparison {
                    if keep {
                        1.0
                    } else {
                        0.0
                    }
                } else {
                    v
                }))
            }
            (Val::Vector(l), Val::Scalar(r)) => {
                Ok(Val::Vector(vector_scalar(op, l, r, false, return_bool, t)))
            }
            (Val::Scalar(l), Val::Vector(r)) => {
                Ok(Val::Vector(vector_scalar(op, r, l, true, return_bool, t)))
            }
            (Val::Vector(l), Val::Vector(r)) => {
                let modifier = b.modifier.as_ref();
                let (on, names): (bool, Vec<String>) =
                    match modifier.and_then(|m| m.matching.as_ref()) {
                        Some(LabelModifier::Include(ls)) => (true, ls.labels.clone()),
                        Some(LabelModifier::Exclude(ls)) => (false, ls.labels.clone()),
                        None => (false, Vec::new()),
                    };
                let sig = Signature::new(on, names);
                let cache = self.match_caches.entry(key(b)).or_default();
                cache.trim(l.len() + r.len());
                let lsig = cache.signatures(&sig, &l);
                let rsig = cache.signatures(&sig, &r);
                match op {
                    T_LAND => {
                        let rs: HashSet<u64> = rsig.into_iter().collect();
                        Ok(Val::Vector(
                            l.into_iter()
                                .zip(lsig)
                                .filter(|(_, k)| rs.contains(k))
                                .map(|(s, _)| s)
                                .collect(),
                        ))
                    }
                    T_LUNLESS => {
                        let rs: HashSet<u64> = rsig.into_iter().collect();
                        Ok(Val::Vector(
                            l.into_iter()
                                .zip(lsig)
                                .filter(|(_, k)| !rs.contains(k))
                                .map(|(s, _)| s)
                                .collect(),
                        ))
                    }
                    T_LOR => {
                        let ls: HashSet<u64> = lsig.into_iter().collect();
                        let mut out = l;
                        out.extend(
                            r.into_iter()
                                .zip(rsig)
                                .filter(|(_, k)| !ls.contains(k))
                                .map(|(s, _)| s),
                        );
                        Ok(Val::Vector(out))
                    }
                    _ => {
                        let card = modifier
                            .map(|m| m.card.clone())
                            .unwrap_or(VectorMatchCardinality::OneToOne);
                        let fill = modifier.map(|m| (m.fill_values.lhs, m.fill_values.rhs));
                        let m = Matching {
                            op,
                            sig: &sig,
                            card: &card,
                            return_bool,
                            fill,
                            t,
                        };
                        vector_vector(&m, (l, lsig), (r, rsig), cache).map(Val::Vector)
                    }
                }
            }
            (l, r) => Err(QueryError::Execution(format!(
                "binary operation between {} and {} is not supported",
                l.type_name(),
                r.type_name()
            ))),
        }
    }

    fn eval_aggregate(&mut self, a: &AggregateExpr, t: i64) -> Result<Val, QueryError> {
        let op = a.op.id();
        let param = match &a.param {
            Some(p) => Some(self.eval(p, t)?),
            None => None,
        };
        let input = self.eval_vector(&a.expr, t)?;
        let (without, mut grouping): (bool, Vec<String>) = match &a.modifier {
            Some(LabelModifier::Include(ls)) => (false, ls.labels.clone()),
            Some(LabelModifier::Exclude(ls)) => (true, ls.labels.clone()),
            None => (false, Vec::new()),
        };
        grouping.sort();
        grouping.dedup();
        if op == T_LIMIT_RATIO {
            if let Some(Val::Scalar(r)) = &param {
                if *r < -1.0 || *r > 1.0 {
                    let pos = self.param_pos(a);
                    self.warn_at(
                        format!(
                            "ratio value should be between -1 and 1, got {}, capping to {}",
                            crate::gofloat::g(*r),
                            if *r < 0.0 { -1 } else { 1 }
                        ),
                        pos,
                    );
                }
            }
        }
        if op == T_QUANTILE {
            if let Some(Val::Scalar(q)) = &param {
                if q.is_nan() || *q < 0.0 || *q > 1.0 {
                    let pos = self.param_pos(a);
                    self.warn_at(quantile_warning(*q), pos);
                }
            }
        }
        if let (T_COUNT_VALUES, Some(Val::Str(label))) = (op, &param) {
            if !self.label_name_ok(label) {
                return Err(QueryError::Execution(format!(
                    "invalid label name {}",
                    self.quote_query_string(label)
                )));
            }
        }
        let cache = self.group_caches.entry(key(a)).or_default();
        let out = aggregate(op, param, input, without, &grouping, t, cache)?;
        Ok(Val::Vector(out))
    }
}

/// The number of items of `s` with a time at or before `t` (what
/// `s.partition_point(|x| time(x) <= t)` gives), found by starting at `hint`, the
/// answer for an earlier `t`: a few steps forward, or a binary search when the
/// answer is far away or behind the hint.
pub(super) fn seek<T>(s: &[T], time: impl Fn(&T) -> i64, t: i64, hint: usize) -> usize {
    let mut i = hint.min(s.len());
    if i > 0 && time(&s[i - 1]) > t {
        return s[..i].partition_point(|x| time(x) <= t);
    }
    for _ in 0..8 {
        if i >= s.len() || time(&s[i]) > t {
            return i;
        }
        i += 1;
    }
    i + s[i..].partition_point(|x| time(x) <= t)
}

/// Prometheus's `labels.Hash`: XXH64 (seed 0) over `name 0xff value 0xff …`.
pub fn labels_hash(l: &Labels) -> u64 {
    let mut b = Vec::with_capacity(256);
    for lb in l.iter() {
        b.extend_from_slice(lb.name.as_bytes());
        b.push(0xff);
        b.extend_from_slice(lb.value.as_bytes());
        b.push(0xff);
    }
    xxh64(&b)
}

/// XXH64 with seed 0 (the hash Go's `cespare/xxhash` computes).
pub(super) fn xxh64(input: &[u8]) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const P3: u64 = 0x1656_67B1_9E37_79F9;
    const P4: u64 = 0x85EB_CA77_C2B2_AE63;
    const P5: u64 = 0x27D4_EB2F_1656_67C5;
    fn round(acc: u64, x: u64) -> u64 {
        acc.wrapping_add(x.wrapping_mul(P2))
            .rotate_left(31)
            .wrapping_mul(P1)
    }
    fn merge(acc: u64, v: u64) -> u64 {
        (acc ^ round(0, v)).wrapping_mul(P1).wrapping_add(P4)
    }
    let read64 = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        u64::from_le_bytes(a)
    };
    let len = input.len();
    let mut rest = input;
    let mut h = if len >= 32 {
        let (mut v1, mut v2, mut v3, mut v4) =
            (P1.wrapping_add(P2), P2, 0u64, 0u64.wrapping_sub(P1));
        while rest.len() >= 32 {
            v1 = round(v1, read64(&rest[0..]));
            v2 = round(v2, read64(&rest[8..]));
            v3 = round(v3, read64(&rest[16..]));
            v4 = round(v4, read64(&rest[24..]));
            rest = &rest[32..];
        }
        let mut h = v1
            .rotate_left(1)
            .wrapping_add(v2.rotate_left(7))
            .wrapping_add(v3.rotate_left(12))
            .wrapping_add(v4.rotate_left(18));
        h = merge(h, v1);
        h = merge(h, v2);
        h = merge(h, v3);
        merge(h, v4)
    } else {
        P5
    };
    h = h.wrapping_add(len as u64);
    while rest.len() >= 8 {
        h ^= round(0, read64(rest));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        rest = &rest[8..];
    }
    if rest.len() >= 4 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&rest[..4]);
        h ^= (u32::from_le_bytes(a) as u64).wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = &rest[4..];
    }
    for &byte in rest {
        h ^= (byte as u64).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^= h >> 32;
    h
}

/// The match key of a series for vector matching: the `on` labels, or every label
/// but the `ignoring` ones and `__name__`.
pub(super) struct Signature {
    on: bool,
    names: Vec<String>,
}

impl Signature {
    pub fn new(on: bool, mut names: Vec<String>) -> Signature {
        names.sort();
        names.dedup();
        Signature { on, names }
    }

    pub fn of(&self, l: &Labels) -> Vec<u8> {
        let mut out = Vec::new();
        if self.on {
            for n in &self.names {
                out.extend_from_slice(n.as_bytes());
                out.push(0xfe);
                out.extend_from_slice(l.get(n).as_bytes());
                out.push(0xff);
            }
        } else {
            for (name, value) in l.iter_bytes() {
                if name == METRIC_NAME.as_bytes() || self.names.iter().any(|n| n.as_bytes() == name)
                {
                    continue;
                }
                out.extend_from_slice(name);
                out.push(0xfe);
                out.extend_from_slice(value);
                out.push(0xff);
            }
        }
        out
    }

    /// A 64-bit hash of `of(l)`, the match key the engine compares (as
    /// Prometheus, which matches series by a 64-bit hash of their labels too).
    pub fn hash(&self, l: &Labels) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&self.of(l))
    }

    /// The labels the match group is identified by, for error messages.
    fn labels_of(&self, l: &Labels) -> Labels {
        let mut b = LabelsBuilder::new();
        for lb in l.iter() {
            let listed = self.names.iter().any(|n| n == lb.name);
            if (self.on && listed) || (!self.on && !listed && lb.name != METRIC_NAME) {
                b.set(lb.name, lb.value);
            }
        }
        b.build()
    }
}

/// Applies a binary operator to two floats: the value and, for comparisons,
/// whether the comparison holds (arithmetic always "holds").
pub(super) fn elem_binop(op: u16, l: f64, r: f64) -> (f64, bool) {
    match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_POW => (l.powf(r), true),
        T_MOD => (l % r, true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

fn is_comparison(op: u16) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

fn vector_scalar(
    op: u16,
    vec: Vec<VSample>,
    scalar: f64,
    swap: bool,
    return_bool: bool,
    t: i64,
) -> Vec<VSample> {
    let mut out = Vec::with_capacity(vec.len());
    for s in vec {
        let (lv, rv) = if swap { (scalar, s.f) } else { (s.f, scalar) };
        let (mut value, mut keep) = elem_binop(op, lv, rv);
        // A comparison keeps the vector's value even when the scalar is on the left.
        if is_comparison(op) && swap {
            value = rv;
        }
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if keep {
            out.push(VSample {
                drop_name: s.drop_name || return_bool || !is_comparison(op),
                metric: s.metric,
                ts: t,
                f: value,
            });
        }
    }
    out
}

/// What one binary operation between two vectors matches on and computes.
struct Matching<'a> {
    op: u16,
    sig: &'a Signature,
    card: &'a VectorMatchCardinality,
    return_bool: bool,
    fill: Option<(Option<f64>, Option<f64>)>,
    t: i64,
}

/// Vector matching work that stays the same from step to step as long as the
/// input series do: each series' match key and the labels of the result it
/// produces, keyed by the identity of its label set (`Labels::buffer_id`). The
/// label sets are kept alive here, so an identity cannot be reused by another
/// label set while it is cached.
#[derive(Default)]
pub(super) struct MatchCache {
    entries: HashMap<usize, MatchEntry>,
}

struct MatchEntry {
    _alive: Labels,
    sig: u64,
    /// The labels of a one-to-one or `group_x ()` result with this series on the
    /// "many" side (they depend on it alone), once computed.
    result: Option<Labels>,
}

impl MatchCache {
    /// Empties the cache when it holds far more label sets than a step has: the
    /// inputs are then built anew at every step and caching them does not pay.
    fn trim(&mut self, step_series: usize) {
        if self.entries.len() > 2 * step_series + 64 {
            self.entries.clear();
        }
    }

    fn entry(&mut self, sig: &Signature, l: &Labels) -> &mut MatchEntry {
        self.entries
            .entry(l.buffer_id())
            .or_insert_with(|| MatchEntry {
                _alive: l.clone(),
                sig: sig.hash(l),
                result: None,
            })
    }

    /// The match keys of `v`'s series, in order.
    fn signatures(&mut self, sig: &Signature, v: &[VSample]) -> Vec<u64> {
        v.iter().map(|s| self.entry(sig, &s.metric).sig).collect()
    }
}

fn vector_vector(
    m: &Matching,
    lhs: (Vec<VSample>, Vec<u64>),
    rhs: (Vec<VSample>, Vec<u64>),
    cache: &mut MatchCache,
) -> Result<Vec<VSample>, QueryError> {
    let (op, sig, card, return_bool, t) = (m.op, m.sig, m.card, m.return_bool, m.t);
    let (include, one_to_many) = match card {
        VectorMatchCardinality::ManyToOne(ls) => (ls.labels.clone(), false),
        VectorMatchCardinality::OneToMany(ls) => (ls.labels.clone(), true),
        _ => (Vec::new(), false),
    };
    let (fill_lhs, fill_rhs) = m.fill.unwrap_or((None, None));
    // The "one" side is hashed; for group_right that is the left side.
    let ((many, many_sigs), (one, one_keys)) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
    // As in Prometheus's tests, `fill_right` applies when a "many" series has no
    // partner and `fill_left` when a "one" series has none, also for group_right.
    let (many_fill, one_fill) = (fill_lhs, fill_rhs);
    let mut one_sigs: HashMap<u64, usize> = HashMap::default();
    one_sigs.reserve(one.len());
    for (i, s) in one.iter().enumerate() {
        let k = one_keys[i];
        if let Some(&j) = one_sigs.get(&k) {
            let side = if one_to_many { "left" } else { "right" };
            let (a, b) = if one[j].metric <= s.metric {
                (&one[j].metric, &s.metric)
            } else {
                (&s.metric, &one[j].metric)
            };
            return Err(QueryError::Execution(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: [{a}, {b}];many-to-many matching not allowed: matching labels must be unique on one side",
                sig.labels_of(&s.metric)
            )));
        }
        one_sigs.insert(k, i);
    }
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let mut out = Vec::with_capacity(many.len());
    let mut matched_one = vec![false; one.len()];
    // For one-to-one matching: the match groups already used on the many side.
    let mut used_sigs: HashSet<u64> = HashSet::default();
    let mut output_labels: HashSet<Labels> = HashSet::default();
    let dropn = !is_comparison(op) || return_bool;
    let mut emit = |ms: &VSample,
                    os: Option<&VSample>,
                    mv: f64,
                    ov: f64,
                    k: u64,
                    filled_one_side: bool,
                    out: &mut Vec<VSample>|
     -> Result<(), QueryError> {
        // One-to-one matching allows one series per match group on each side,
        // whether or not a comparison filters it out.
        if one_to_one && !used_sigs.insert(k) {
            return Err(QueryError::Execution(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
            ));
        }
        let (vl, vr) = if one_to_many { (ov, mv) } else { (mv, ov) };
        let (mut value, mut keep) = elem_binop(op, vl, vr);
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if !keep {
            return Ok(());
        }
        let metric = if filled_one_side {
            sig.labels_of(&ms.metric)
        } else if include.is_empty() {
            // The result's labels depend on the "many" series alone: worked out
            // once per series, not at every step.
            let e = cache.entry(sig, &ms.metric);
            e.result
                .get_or_insert_with(|| result_metric(&ms.metric, None, sig, one_to_one, &[]))
                .clone()
        } else {
            result_metric(&ms.metric, os.map(|o| &o.metric), sig, one_to_one, &include)
        };
        if !one_to_one && !output_labels.insert(metric.clone()) {
            return Err(QueryError::Execution(
                "multiple matches for labels: grouping labels must ensure unique matches".into(),
            ));
        }
        out.push(VSample {
            metric,
            ts: t,
            f: value,
            drop_name: dropn || ms.drop_name,
        });
        Ok(())
    };
    for (ms, &k) in many.iter().zip(&many_sigs) {
        match one_sigs.get(&k) {
            Some(&j) => {
                matched_one[j] = true;
                emit(ms, Some(&one[j]), ms.f, one[j].f, k, false, &mut out)?;
            }
            None => {
                if let Some(fv) = one_fill {
                    emit(ms, None, ms.f, fv, k, false, &mut out)?;
                }
            }
        }
    }
    if let Some(fv) = many_fill {
        for (j, os) in one.iter().enumerate() {
            if !matched_one[j] {
                emit(os, None, fv, os.f, one_keys[j], true, &mut out)?;
            }
        }
    }
    Ok(out)
}

/// The labels of a vector-matching result: the "many" side's, reduced to the
/// matching labels for one-to-one `on`, without the `ignoring` labels for one-to-one
/// `ignoring`, plus the `group_x` labels copied from the "one" side.
fn result_metric(
    many: &Labels,
    one: Option<&Labels>,
    sig: &Signature,
    one_to_one: bool,
    include: &[String],
) -> Labels {
    // Most operations keep the "many" side's labels as they are (the name is
    // dropped later): no need to take them apart and build them again.
    let unchanged = !one_to_one || (!sig.on && !sig.names.iter().any(|n| many.has(n)));
    if include.is_empty() && unchanged {
        return many.clone();
    }
    let mut b = many.builder();
    if one_to_one {
        if sig.on {
            let mut keep = LabelsBuilder::new();
            for n in &sig.names {
                keep.set(n, many.get(n));
            }
            b = keep;
        } else {
            for n in &sig.names {
                b.del(n);
            }
        }
    }
    if let Some(one) = one {
        for n in include {
            b.set(n, one.get(n));
        }
    }
    b.build()
}

/// Prometheus's warning for a quantile outside [0, 1].
pub(super) fn quantile_warning(q: f64) -> String {
    format!(
        "quantile value should be between 0 and 1, got {}",
        crate::gofloat::g(q)
    )
}

/// Neumaier's compensated summation step, as Prometheus's `kahanSumInc`.
pub(super) fn kahan_sum_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    // Both compensations are computed and one is selected, rather than
    // branching on the magnitudes: the branch is unpredictable on real data,
    // and this is the inner loop of sums, averages and regressions. The
    // arithmetic is the same as Prometheus's `kahanSumInc`.
    let big_sum = (sum - t) + inc;
    let big_inc = (inc - t) + sum;
    let d = if sum.abs() >= inc.abs() {
        big_sum
    } else {
        big_inc
    };
    let c = if t.is_infinite() { 0.0 } else { c + d };
    (t, c)
}

/// The φ-quantile of `values` with linear interpolation (Prometheus's `quantile`).
pub(super) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// One aggregation group while it is being built.
struct Group {
    labels: Labels,
    count: f64,
    value: f64,
    kahan_c: f64,
    mean: f64,
    incremental_mean: bool,
    members: Vec<VSample>,
    values: Vec<f64>,
    /// Any member's name is still to be dropped (matters for `by (__name__)`).
    drop_name: bool,
}

/// Writes the grouping key of `l` into `out` (cleared first), so the caller can
/// reuse one buffer for every sample.
fn group_key(out: &mut Vec<u8>, l: &Labels, without: bool, grouping: &[String]) {
    out.clear();
    for (name, value) in l.iter_bytes() {
        let listed = grouping.iter().any(|g| g.as_bytes() == name);
        let keep = if without {
            !listed && name != METRIC_NAME.as_bytes()
        } else {
            listed
        };
        if keep {
            out.extend_from_slice(name);
            out.push(0xfe);
            out.extend_from_slice(value);
            out.push(0xff);
        }
    }
}

fn group_labels(l: &Labels, without: bool, grouping: &[String]) -> Labels {
    let mut b = LabelsBuilder::new();
    for lb in l.iter() {
        let listed = grouping.iter().any(|g| g == lb.name);
        let keep = if without {
            !listed && lb.name != METRIC_NAME
        } else {
            listed
        };
        if keep {
            b.set(lb.name, lb.value);
        }
    }
    b.build()
}

fn param_scalar(param: &Option<Val>, op: &str) -> Result<f64, QueryError> {
    match param {
        Some(Val::Scalar(v)) => Ok(*v),
        _ => Err(QueryError::Execution(format!(
            "{op} expects a scalar parameter"
        ))),
    }
}

/// The groups of an aggregation's input series, kept across steps: each series'
/// group (by the identity of its label set, `Labels::buffer_id`, kept alive
/// here) and each group's labels, so a step neither builds grouping keys nor
/// label sets for series seen at an earlier step.
#[derive(Default)]
pub(super) struct GroupCache {
    by_series: HashMap<usize, (Labels, usize)>,
    by_key: HashMap<Vec<u8>, usize>,
    /// The labels of each group id.
    labels: Vec<Labels>,
    key: Vec<u8>,
}

impl GroupCache {
    /// Empties the cache when it holds far more than a step has: the inputs are
    /// then built anew at every step and caching them does not pay.
    fn trim(&mut self, step_series: usize) {
        if self.by_series.len() > 2 * step_series + 64 || self.labels.len() > 2 * step_series + 64 {
            *self = GroupCache::default();
        }
    }

    /// The group id of a series with labels `l`.
    fn group_of(&mut self, l: &Labels, without: bool, grouping: &[String]) -> usize {
        if let Some((_, id)) = self.by_series.get(&l.buffer_id()) {
            return *id;
        }
        group_key(&mut self.key, l, without, grouping);
        let id = match self.by_key.get(self.key.as_slice()) {
            Some(&id) => id,
            None => {
                let id = self.labels.len();
                self.labels.push(group_labels(l, without, grouping));
                self.by_key.insert(self.key.clone(), id);
                id
            }
        };
        self.by_series.insert(l.buffer_id(), (l.clone(), id));
        id
    }
}

#[allow(clippy::too_many_arguments)]
fn aggregate(
    op: u16,
    param: Option<Val>,
    input: Vec<VSample>,
    without: bool,
    grouping: &[String],
    t: i64,
    cache: &mut GroupCache,
) -> Result<Vec<VSample>, QueryError> {
    let mut grouping = grouping.to_vec();
    let mut input = input;
    if op == T_COUNT_VALUES {
        let label = match &param {
            Some(Val::Str(s)) => s.clone(),
            _ => {
                return Err(QueryError::Execution(
                    "count_values expects a string parameter".into(),
                ))
            }
        };
        if !valid_label_name(&label) {
            return Err(QueryError::Execution(format!(
                "invalid label name {}",
                go_quote(&label)
            )));
        }
        for s in &mut input {
            let mut b = s.metric.builder();
            b.set(&label, &crate::gofloat::format(s.f, 'f', None));
            s.metric = b.build();
        }
        if without {
            grouping.retain(|g| g != &label);
        } else {
            grouping.push(label);
            grouping.sort();
            grouping.dedup();
        }
    }
    // count_values changed the label sets: nothing to reuse from other steps.
    let mut own_cache = GroupCache::default();
    let cache = if op == T_COUNT_VALUES {
        &mut own_cache
    } else {
        cache
    };
    cache.trim(input.len());
    // This step's group (index into `groups`) of each of the cache's group ids.
    let mut slot: Vec<usize> = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    // `sum(x)` and friends: one group for everything, no key to look up.
    let one_group = !without && grouping.is_empty();
    for s in input {
        let (found, id) = if one_group && !groups.is_empty() {
            (Some(0), 0)
        } else {
            let id = cache.group_of(&s.metric, without, &grouping);
            if id >= slot.len() {
                slot.resize(id + 1, usize::MAX);
            }
            ((slot[id] != usize::MAX).then_some(slot[id]), id)
        };
        let gi = match found {
            Some(i) => i,
            None => {
                groups.push(Group {
                    labels: if one_group {
                        Labels::empty()
                    } else {
                        cache.labels[id].clone()
                    },
                    count: 0.0,
                    value: 0.0,
                    kahan_c: 0.0,
                    mean: 0.0,
                    incremental_mean: false,
                    members: Vec::new(),
                    values: Vec::new(),
                    drop_name: false,
                });
                if !one_group {
                    slot[id] = groups.len() - 1;
                }
                groups.len() - 1
            }
        };
        let g = &mut groups[gi];
        let first = g.count == 0.0;
        g.count += 1.0;
        g.drop_name |= s.drop_name;
        let f = s.f;
        match op {
            T_SUM => {
                let (v, c) = kahan_sum_inc(f, g.value, g.kahan_c);
                g.value = v;
                g.kahan_c = c;
            }
            T_AVG => {
                if first {
                    g.value = f;
                    g.mean = f;
                } else {
                    let mut done = false;
                    if !g.incremental_mean {
                        let (v, c) = kahan_sum_inc(f, g.value, g.kahan_c);
                        if v.is_finite() || f.is_infinite() || g.value.is_infinite() {
                            g.value = v;
                            g.kahan_c = c;
                            done = true;
                        } else {
                            g.incremental_mean = true;
                            g.mean = g.value / (g.count - 1.0);
                            g.kahan_c /= g.count - 1.0;
                        }
                    }
                    if !done {
                        let q = (g.count - 1.0) / g.count;
                        let (m, c) = kahan_sum_inc(f / g.count, q * g.mean, q * g.kahan_c);
                        g.mean = m;
                        g.kahan_c = c;
                    }
                }
            }
            T_MAX if first || g.value < f || g.value.is_nan() => g.value = f,
            T_MIN if first || g.value > f || g.value.is_nan() => g.value = f,
            T_STDDEV | T_STDVAR => {
                if first {
                    g.mean = f;
                    g.value = if f.is_finite() { 0.0 } else { f64::NAN };
                } else {
                    let delta = f - g.mean;
                    g.mean += delta / g.count;
                    g.value += delta * (f - g.mean);
                }
            }
            T_QUANTILE => g.values.push(f),
            T_TOPK | T_BOTTOMK | T_LIMITK | T_LIMIT_RATIO => g.members.push(s),
            _ => {}
        }
    }
    let mut out = Vec::new();
    match op {
        T_TOPK | T_BOTTOMK | T_LIMITK => {
            let name = match op {
                T_TOPK => "topk",
                T_BOTTOMK => "bottomk",
                _ => "limitk",
            };
            let kf = param_scalar(&param, name)?;
            if kf.is_nan() {
                return Err(QueryError::Execution("Parameter value is NaN".into()));
            }
            if kf >= 9.223_372_036_854_776e18 || kf <= -9.223_372_036_854_776e18 {
                return Err(QueryError::Execution(format!(
                    "Scalar value {} overflows int64",
                    crate::gofloat::g(kf)
                )));
            }
            let k = kf as i64;
            if k < 1 {
                return Ok(Vec::new());
            }
            for g in groups {
                let mut members = g.members;
                match op {
                    T_TOPK => members.sort_by(|a, b| cmp_desc_nan_last(a.f, b.f)),
                    T_BOTTOMK => members.sort_by(|a, b| cmp_asc_nan_last(a.f, b.f)),
                    _ => {}
                }
                members.truncate(k.min(members.len() as i64) as usize);
                out.extend(members);
            }
            return Ok(out);
        }
        T_LIMIT_RATIO => {
            let r = param_scalar(&param, "limit_ratio")?;
            if r.is_nan() {
                return Err(QueryError::Execution("Ratio value is NaN".into()));
            }
            let r = r.clamp(-1.0, 1.0);
            // Prometheus's hash-ratio sampler: each series has a fixed offset in
            // [0, 1] from its labels' hash; a positive ratio keeps the offsets below
            // it, a negative one the complement.
            for g in groups {
                for s in g.members {
                    let offset = labels_hash(&s.metric) as f64 / u64::MAX as f64;
                    if (r >= 0.0 && offset < r) || (r < 0.0 && offset >= 1.0 + r) {
                        out.push(s);
                    }
                }
            }
            return Ok(out);
        }
        _ => {}
    }
    let q = if op == T_QUANTILE {
        param_scalar(&param, "quantile")?
    } else {
        0.0
    };
    for mut g in groups {
        let f = match op {
            T_SUM => g.value + g.kahan_c,
            T_AVG => {
                if g.incremental_mean {
                    g.mean + g.kahan_c
                } else {
                    (g.value + g.kahan_c) / g.count
                }
            }
            T_COUNT | T_COUNT_VALUES => g.count,
            T_GROUP => 1.0,
            T_MAX | T_MIN => g.value,
            T_STDVAR => g.value / g.count,
            T_STDDEV => (g.value / g.count).sqrt(),
            T_QUANTILE => quantile(q, &mut g.values),
            _ => {
                return Err(QueryError::Execution(
                    "unsupported aggregation operator".into(),
                ))
            }
        };
        out.push(VSample {
            metric: g.labels,
            ts: t,
            f,
            drop_name: g.drop_name,
        });
    }
    Ok(out)
}

fn cmp_desc_nan_last(a: f64, b: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Equal,
        (true, false) => Greater,
        (false, true) => Less,
        _ => b.partial_cmp(&a).unwrap_or(Equal),
    }
}

fn cmp_asc_nan_last(a: f64, b: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Equal,
        (true, false) => Greater,
        (false, true) => Less,
        _ => a.partial_cmp(&b).unwrap_or(Equal),
    }
}

/// Whether `s` is a valid label name. Prometheus 3 accepts any UTF-8 name.
pub(super) fn valid_label_name(s: &str) -> bool {
    !s.is_empty()
}

/// Quotes like Go's `%q`, for error messages.
pub(super) fn go_quote(s: &str) -> String {
    crate::labels::quote(s)
}
