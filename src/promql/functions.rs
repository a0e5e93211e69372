//! PromQL functions for float samples, with Prometheus 3's semantics (extrapolated
//! `rate`, Kahan-compensated sums, classic-bucket `histogram_quantile`, …).

use super::eval::{
    go_quote, kahan_sum_inc, quantile, quantile_warning, range_mod, same_labelset, Evaluator,
    MSeries, RangeMod, VSample, Val, Window,
};
use super::value::FPoint;
use super::QueryError;
use crate::fxhash::{HashMap, HashSet};
use crate::labels::{Labels, LabelsBuilder, MatchType, METRIC_NAME};
use promql_parser::label::MatchOp;
use promql_parser::parser::{Call, Expr};

fn exec(msg: impl Into<String>) -> QueryError {
    QueryError::Execution(msg.into())
}

/// Evaluates argument `i` as a range vector.
fn matrix_arg(
    ev: &mut Evaluator,
    c: &Call,
    i: usize,
    t: i64,
) -> Result<(Vec<MSeries>, Window), QueryError> {
    let a = arg(c, i)?;
    match ev.eval(a, t)? {
        Val::Matrix(m, w) => Ok((m, w)),
        _ => Err(exec(format!(
            "expected range vector as argument {} of {}",
            i + 1,
            c.func.name
        ))),
    }
}

fn arg(c: &Call, i: usize) -> Result<&Expr, QueryError> {
    c.args
        .args
        .get(i)
        .map(|b| b.as_ref())
        .ok_or_else(|| exec(format!("missing argument {} of {}", i + 1, c.func.name)))
}

fn string_arg(c: &Call, i: usize) -> Result<String, QueryError> {
    let mut e = arg(c, i)?;
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    match e {
        Expr::StringLiteral(s) => Ok(s.val.clone()),
        _ => Err(exec(format!(
            "expected string literal as argument {} of {}",
            i + 1,
            c.func.name
        ))),
    }
}

/// Applies `f` to every window of the range-vector argument `i`.
fn over_time(
    ev: &mut Evaluator,
    c: &Call,
    t: i64,
    i: usize,
    keep_name: bool,
    mut f: impl FnMut(&[FPoint], Window) -> Result<Option<f64>, QueryError>,
) -> Result<Val, QueryError> {
    over_series(ev, c, t, i, keep_name, |s, w| f(&s.points, w))
}

/// `over_time` for functions that need more of the series than its points (its
/// start times, its name).
fn over_series(
    ev: &mut Evaluator,
    c: &Call,
    t: i64,
    i: usize,
    keep_name: bool,
    mut f: impl FnMut(&MSeries, Window) -> Result<Option<f64>, QueryError>,
) -> Result<Val, QueryError> {
    let (series, w) = matrix_arg(ev, c, i, t)?;
    let mut out = Vec::with_capacity(series.len());
    for s in series {
        if let Some(v) = f(&s, w)? {
            out.push(VSample {
                metric: s.metric,
                ts: t,
                f: v,
                drop_name: s.drop_name || !keep_name,
            });
        }
    }
    Ok(Val::Vector(out))
}

/// Applies `f` to every element of the instant-vector argument 0.
fn per_sample(
    ev: &mut Evaluator,
    c: &Call,
    t: i64,
    f: impl Fn(f64) -> f64,
) -> Result<Val, QueryError> {
    let v = ev.eval_vector(arg(c, 0)?, t)?;
    Ok(Val::Vector(
        v.into_iter()
            .map(|s| VSample {
                f: f(s.f),
                ts: t,
                drop_name: true,
                metric: s.metric,
            })
            .collect(),
    ))
}

/// Go's `math.Max`: +Inf wins, then NaN.
fn go_max(x: f64, y: f64) -> f64 {
    if x == f64::INFINITY || y == f64::INFINITY {
        f64::INFINITY
    } else if x.is_nan() || y.is_nan() {
        f64::NAN
    } else if x == 0.0 && y == 0.0 {
        if x.is_sign_negative() {
            y
        } else {
            x
        }
    } else if x > y {
        x
    } else {
        y
    }
}

/// Go's `math.Min`: -Inf wins, then NaN.
fn go_min(x: f64, y: f64) -> f64 {
    if x == f64::NEG_INFINITY || y == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if x.is_nan() || y.is_nan() {
        f64::NAN
    } else if x == 0.0 && y == 0.0 {
        if x.is_sign_negative() {
            x
        } else {
            y
        }
    } else if x < y {
        x
    } else {
        y
    }
}

/// The mean of values that include an infinity or NaN: NaN when there is a NaN or
/// infinities of both signs, else the infinity. `None` when all are finite.
pub(super) fn non_finite_mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut pos, mut neg, mut nan) = (false, false, false);
    for v in values {
        nan |= v.is_nan();
        pos |= v == f64::INFINITY;
        neg |= v == f64::NEG_INFINITY;
    }
    if nan || (pos && neg) {
        Some(f64::NAN)
    } else if pos {
        Some(f64::INFINITY)
    } else if neg {
        Some(f64::NEG_INFINITY)
    } else {
        None
    }
}

/// Dispatches a function call at time `t`.
pub(super) fn call(ev: &mut Evaluator, c: &Call, t: i64) -> Result<Val, QueryError> {
    let name = c.func.name;
    check_range_modifier(c)?;
    match name {
        "time" => Ok(Val::Scalar(t as f64 / 1000.0)),
        "pi" => Ok(Val::Scalar(std::f64::consts::PI)),
        "step" => Ok(Val::Scalar(ev.step as f64 / 1000.0)),
        "range" => Ok(Val::Scalar((ev.end - ev.start) as f64 / 1000.0)),
        "start" => Ok(Val::Scalar(ev.start as f64 / 1000.0)),
        "end" => Ok(Val::Scalar(ev.end as f64 / 1000.0)),
        "min_of" | "max_of" => {
            let a = ev.eval_scalar(arg(c, 0)?, t)?;
            let b = ev.eval_scalar(arg(c, 1)?, t)?;
            Ok(Val::Scalar(if name == "min_of" {
                go_min(a, b)
            } else {
                go_max(a, b)
            }))
        }
        "histogram_quantiles" => histogram_quantiles(ev, c, t),
        "vector" => {
            let v = ev.eval_scalar(arg(c, 0)?, t)?;
            Ok(Val::Vector(vec![VSample {
                metric: Labels::empty(),
                ts: t,
                f: v,
                drop_name: false,
            }]))
        }
        "scalar" => {
            let v = ev.eval_vector(arg(c, 0)?, t)?;
            Ok(Val::Scalar(if v.len() == 1 { v[0].f } else { f64::NAN }))
        }
        "abs" => per_sample(ev, c, t, f64::abs),
        "ceil" => per_sample(ev, c, t, f64::ceil),
        "floor" => per_sample(ev, c, t, f64::floor),
        "exp" => per_sample(ev, c, t, f64::exp),
        "sqrt" => per_sample(ev, c, t, f64::sqrt),
        "ln" => per_sample(ev, c, t, f64::ln),
        "log2" => per_sample(ev, c, t, f64::log2),
        "log10" => per_sample(ev, c, t, f64::log10),
        "sin" => per_sample(ev, c, t, f64::sin),
        "cos" => per_sample(ev, c, t, f64::cos),
        "tan" => per_sample(ev, c, t, f64::tan),
        "asin" => per_sample(ev, c, t, f64::asin),
        "acos" => per_sample(ev, c, t, f64::acos),
        "atan" => per_sample(ev, c, t, f64::atan),
        "sinh" => per_sample(ev, c, t, f64::sinh),
        "cosh" => per_sample(ev, c, t, f64::cosh),
        "tanh" => per_sample(ev, c, t, f64::tanh),
        "asinh" => per_sample(ev, c, t, f64::asinh),
        "acosh" => per_sample(ev, c, t, f64::acosh),
        "atanh" => per_sample(ev, c, t, f64::atanh),
        "deg" => per_sample(ev, c, t, |v| v * 180.0 / std::f64::consts::PI),
        "rad" => per_sample(ev, c, t, |v| v * std::f64::consts::PI / 180.0),
        "sgn" => per_sample(ev, c, t, |v| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        }),
        "round" => {
            let to_nearest = match c.args.args.get(1) {
                Some(a) => ev.eval_scalar(a, t)?,
                None => 1.0,
            };
            let inv = 1.0 / to_nearest;
            per_sample(ev, c, t, move |v| (v * inv + 0.5).floor() / inv)
        }
        "clamp" => {
            let min = ev.eval_scalar(arg(c, 1)?, t)?;
            let max = ev.eval_scalar(arg(c, 2)?, t)?;
            if max < min {
                return Ok(Val::Vector(Vec::new()));
            }
            per_sample(ev, c, t, move |v| go_max(min, go_min(max, v)))
        }
        "clamp_min" => {
            let min = ev.eval_scalar(arg(c, 1)?, t)?;
            per_sample(ev, c, t, move |v| go_max(min, v))
        }
        "clamp_max" => {
            let max = ev.eval_scalar(arg(c, 1)?, t)?;
            per_sample(ev, c, t, move |v| go_min(max, v))
        }
        // Start times travel only with selected samples: on any other expression
        // the result is empty, as in Prometheus.
        "start_timestamp" => match arg(c, 0)? {
            Expr::VectorSelector(vs) => ev.eval_vector_selector(vs, t, true),
            other => {
                ev.eval_vector(other, t)?;
                Ok(Val::Vector(Vec::new()))
            }
        },
        "timestamp" => {
            let v = ev.eval_vector(arg(c, 0)?, t)?;
            Ok(Val::Vector(
                v.into_iter()
                    .map(|s| VSample {
                        f: s.ts as f64 / 1000.0,
                        ts: t,
                        drop_name: true,
                        metric: s.metric,
                    })
                    .collect(),
            ))
        }
        "minute" | "hour" | "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month"
        | "month" | "year" => date_function(ev, c, t),
        "label_replace" => label_replace(ev, c, t),
        "label_join" => label_join(ev, c, t),
        "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc" if ev.step != 0 => {
            let pos = ev.call_pos(c);
            ev.warn_at(
                "sort is ineffective for range queries since results are always ordered by labels"
                    .into(),
                pos,
            );
            ev.eval_vector(arg(c, 0)?, t).map(Val::Vector)
        }
        "sort" | "sort_desc" => {
            let mut v = ev.eval_vector(arg(c, 0)?, t)?;
            let desc = name == "sort_desc";
            v.sort_by(|a, b| {
                use std::cmp::Ordering::*;
                match (a.f.is_nan(), b.f.is_nan()) {
                    (true, true) => Equal,
                    (true, false) => Greater,
                    (false, true) => Less,
                    _ if desc => b.f.partial_cmp(&a.f).unwrap_or(Equal),
                    _ => a.f.partial_cmp(&b.f).unwrap_or(Equal),
                }
            });
            Ok(Val::Vector(v))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut v = ev.eval_vector(arg(c, 0)?, t)?;
            let mut names = Vec::new();
            for i in 1..c.args.args.len() {
                names.push(string_arg(c, i)?);
            }
            let desc = name == "sort_by_label_desc";
            v.sort_by(|a, b| {
                let mut ord = std::cmp::Ordering::Equal;
                for n in &names {
                    ord = natural_cmp(a.metric.get(n), b.metric.get(n));
                    if ord.is_ne() {
                        break;
                    }
                }
                if ord.is_eq() {
                    ord = a.metric.cmp(&b.metric);
                }
                if desc {
                    ord.reverse()
                } else {
                    ord
                }
            });
            Ok(Val::Vector(v))
        }
        "absent" => {
            let v = ev.eval_vector(arg(c, 0)?, t)?;
            if !v.is_empty() {
                return Ok(Val::Vector(Vec::new()));
            }
            Ok(Val::Vector(vec![VSample {
                metric: absent_labels(arg(c, 0)?),
                ts: t,
                f: 1.0,
                drop_name: false,
            }]))
        }
        "absent_over_time" => {
            let (m, _) = matrix_arg(ev, c, 0, t)?;
            if !m.is_empty() {
                return Ok(Val::Vector(Vec::new()));
            }
            Ok(Val::Vector(vec![VSample {
                metric: absent_labels(arg(c, 0)?),
                ts: t,
                f: 1.0,
                drop_name: false,
            }]))
        }
        "present_over_time" => over_time(ev, c, t, 0, false, |_, _| Ok(Some(1.0))),
        "rate" => rate_function(ev, c, t, true, true),
        "increase" => rate_function(ev, c, t, true, false),
        "delta" => rate_function(ev, c, t, false, false),
        "irate" => over_series(ev, c, t, 0, false, |s, _| {
            Ok(instant_value(&s.points, s.points.start_times(), true))
        }),
        "idelta" => over_series(ev, c, t, 0, false, |s, _| {
            Ok(instant_value(&s.points, s.points.start_times(), false))
        }),
        "deriv" => over_time(ev, c, t, 0, false, |p, _| {
            if p.len() < 2 {
                return Ok(None);
            }
            Ok(Some(linear_regression(p, p[0].t).0))
        }),
        "predict_linear" => {
            let d = ev.eval_scalar(arg(c, 1)?, t)?;
            over_time(ev, c, t, 0, false, |p, _| {
                if p.len() < 2 {
                    return Ok(None);
                }
                let (slope, intercept) = linear_regression(p, t);
                Ok(Some(slope * d + intercept))
            })
        }
        "changes" => over_time(ev, c, t, 0, false, |p, w| {
            if !anchored_has_data(p, w) {
                return Ok(None);
            }
            let mut n = 0.0;
            for w in p.windows(2) {
                if w[1].f != w[0].f && !(w[1].f.is_nan() && w[0].f.is_nan()) {
                    n += 1.0;
                }
            }
            Ok(Some(n))
        }),
        "resets" => over_series(ev, c, t, 0, false, |s, w| {
            let p = &s.points;
            if !anchored_has_data(p, w) {
                return Ok(None);
            }
            let sts = s.points.start_times();
            let st = |i: usize| sts.get(i).copied().unwrap_or(0);
            let n = (1..p.len())
                .filter(|&i| {
                    p[i].f < p[i - 1].f || start_time_reset(st(i - 1), p[i - 1].t, st(i), p[i].t)
                })
                .count();
            Ok(Some(n as f64))
        }),
        "avg_over_time" => over_time(ev, c, t, 0, false, |p, _| Ok(Some(avg(p)))),
        "sum_over_time" => over_time(ev, c, t, 0, false, |p, _| {
            let (mut s, mut c) = (0.0, 0.0);
            for x in p {
                (s, c) = kahan_sum_inc(x.f, s, c);
            }
            Ok(Some(if s.is_infinite() { s } else { s + c }))
        }),
        "count_over_time" => over_time(ev, c, t, 0, false, |p, _| Ok(Some(p.len() as f64))),
        "last_over_time" => over_time(ev, c, t, 0, true, |p, _| Ok(p.last().map(|x| x.f))),
        "first_over_time" => over_time(ev, c, t, 0, true, |p, _| Ok(p.first().map(|x| x.f))),
        "ts_of_last_over_time" => over_time(ev, c, t, 0, false, |p, _| {
            Ok(p.last().map(|x| x.t as f64 / 1000.0))
        }),
        "ts_of_first_over_time" => over_time(ev, c, t, 0, false, |p, _| {
            Ok(p.first().map(|x| x.t as f64 / 1000.0))
        }),
        "max_over_time" | "ts_of_max_over_time" => {
            let ts = name.starts_with("ts_of");
            over_time(ev, c, t, 0, false, move |p, _| {
                Ok(extreme(p, |cur, best| cur > best || best.is_nan(), ts))
            })
        }
        "min_over_time" | "ts_of_min_over_time" => {
            let ts = name.starts_with("ts_of");
            over_time(ev, c, t, 0, false, move |p, _| {
                Ok(extreme(p, |cur, best| cur < best || best.is_nan(), ts))
            })
        }
        "stddev_over_time" | "stdvar_over_time" => {
            let dev = name == "stddev_over_time";
            over_time(ev, c, t, 0, false, move |p, _| {
                let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) =
                    (0.0, 0.0, 0.0, 0.0, 0.0);
                for x in p {
                    count += 1.0;
                    let delta = x.f - (mean + c_mean);
                    (mean, c_mean) = kahan_sum_inc(delta / count, mean, c_mean);
                    (aux, c_aux) = kahan_sum_inc(delta * (x.f - (mean + c_mean)), aux, c_aux);
                }
                let var = (aux + c_aux) / count;
                Ok(Some(if dev { var.sqrt() } else { var }))
            })
        }
        "quantile_over_time" => {
            let q = ev.eval_scalar(arg(c, 0)?, t)?;
            if q.is_nan() || !(0.0..=1.0).contains(&q) {
                let pos = ev.arg_pos(c, 0);
                ev.warn_at(quantile_warning(q), pos);
            }
            over_time(ev, c, t, 1, false, move |p, _| {
                let mut vals: Vec<f64> = p.iter().map(|x| x.f).collect();
                Ok(Some(quantile(q, &mut vals)))
            })
        }
        "mad_over_time" => over_time(ev, c, t, 0, false, |p, _| {
            if p.iter().any(|x| x.f.is_nan()) {
                return Ok(Some(f64::NAN));
            }
            let mut vals: Vec<f64> = p.iter().map(|x| x.f).collect();
            let median = quantile(0.5, &mut vals);
            let mut dev: Vec<f64> = p.iter().map(|x| (x.f - median).abs()).collect();
            Ok(Some(quantile(0.5, &mut dev)))
        }),
        "double_exponential_smoothing" | "holt_winters" => {
            let sf = ev.eval_scalar(arg(c, 1)?, t)?;
            let tf = ev.eval_scalar(arg(c, 2)?, t)?;
            if sf <= 0.0 || sf >= 1.0 {
                return Err(exec(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
                )));
            }
            if tf <= 0.0 || tf >= 1.0 {
                return Err(exec(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
                )));
            }
            over_time(ev, c, t, 0, false, move |p, _| Ok(smoothing(p, sf, tf)))
        }
        "histogram_quantile" => histogram_quantile(ev, c, t),
        "info" => info(ev, c, t),
        "histogram_fraction" => histogram_fraction(ev, c, t),
        _ => Err(exec(format!("function {name:?} is not supported yet"))),
    }
}

/// Labels that tie a series to its info series (`target_info` by default).
const INFO_IDENTIFYING_LABELS: [&str; 2] = ["instance", "job"];

/// `info(v, selector)`: adds the data labels of matching info series (same
/// `instance` and `job`) to each series of `v`. Series that are themselves info
/// series of the selector are left as they are. When no info series matches, a
/// series is kept unchanged only if every data matcher accepts the empty string.
fn info(ev: &mut Evaluator, c: &Call, t: i64) -> Result<Val, QueryError> {
    use crate::labels::Matcher;
    let base = ev.eval_vector(arg(c, 0)?, t)?;
    let (mut name_ms, mut data_ms): (Vec<Matcher>, Vec<Matcher>) = (Vec::new(), Vec::new());
    if let Some(sel) = c.args.args.get(1) {
        let mut e: &Expr = sel;
        while let Expr::Paren(p) = e {
            e = &p.expr;
        }
        let Expr::VectorSelector(vs) = e else {
            return Err(exec("info(): the second argument must be a label selector"));
        };
        let sets = super::eval::selector_matchers(vs)?;
        for m in sets.into_iter().flatten() {
            if m.name == METRIC_NAME {
                name_ms.push(m);
            } else {
                data_ms.push(m);
            }
        }
    }
    let positive = name_ms
        .iter()
        .any(|m| matches!(m.kind, MatchType::Equal | MatchType::Regexp));
    // The info series to look at: `target_info` by default; with only negative name
    // matchers, the other `*_info` series.
    let mut select_ms = name_ms.clone();
    if name_ms.is_empty() {
        select_ms.push(Matcher::equal(METRIC_NAME, "target_info"));
    } else if !positive {
        select_ms.push(
            Matcher::new(MatchType::Regexp, METRIC_NAME, ".+_info")
                .map_err(|e| exec(e.to_string()))?,
        );
    }
    select_ms.extend(data_ms.iter().cloned());
    // Info series are read as of the time the first argument's data refers to
    // (after its `@` and `offset`, through subqueries).
    let info_t = info_time(ev, arg(c, 0)?, t).unwrap_or(t);
    let infos = ev.select_present(&select_ms, info_t)?;
    // Per info metric and identifying labels, the series with the newest sample.
    let mut latest: HashMap<(String, Vec<String>), (Labels, i64)> = HashMap::default();
    for (l, ts) in infos {
        let id: Vec<String> = INFO_IDENTIFYING_LABELS
            .iter()
            .map(|n| l.get(n).to_string())
            .collect();
        let k = (l.get(METRIC_NAME).to_string(), id);
        match latest.get(&k) {
            Some((other, ots)) if *ots == ts => {
                return Err(exec(format!(
                    "found duplicate series for info metric: existing {other} @ {ots}, new {l} @ {ts}"
                )));
            }
            Some((_, ots)) if *ots > ts => {}
            _ => {
                latest.insert(k, (l, ts));
            }
        }
    }
    let mut by_id: HashMap<Vec<String>, Vec<Labels>> = HashMap::default();
    let mut sorted: Vec<_> = latest.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for ((_, id), (l, _)) in sorted {
        by_id.entry(id).or_default().push(l);
    }
    let empty_ok = data_ms.iter().all(|m| m.matches_empty());
    let mut out = Vec::with_capacity(base.len());
    for mut s in base {
        // A series the selector itself names as an info series (every name matcher
        // holds, at least one of them positive) is not enriched.
        if positive && name_ms.iter().all(|m| m.matches(s.metric.get(METRIC_NAME))) {
            out.push(s);
            continue;
        }
        let id: Vec<String> = INFO_IDENTIFYING_LABELS
            .iter()
            .map(|n| s.metric.get(n).to_string())
            .collect();
        let mut added: HashMap<String, String> = HashMap::default();
        let mut matched = false;
        for info in by_id.get(&id).map(|v| v.as_slice()).unwrap_or(&[]) {
            matched = true;
            for lb in info.iter() {
                if lb.name == METRIC_NAME
                    || INFO_IDENTIFYING_LABELS.contains(&lb.name)
                    || (!data_ms.is_empty() && !data_ms.iter().any(|m| m.name == lb.name))
                {
                    continue;
                }
                if let Some(v) = added.get(lb.name) {
                    if v != lb.value {
                        return Err(exec(format!("conflicting label: {}", lb.name)));
                    }
                }
                if s.metric.has(lb.name) {
                    continue;
                }
                added.insert(lb.name.to_string(), lb.value.to_string());
            }
        }
        if !matched {
            if empty_ok {
                out.push(s);
            }
            continue;
        }
        let mut b = s.metric.builder();
        for (n, v) in &added {
            b.set(n, v);
        }
        s.metric = b.build();
        s.ts = t;
        out.push(s);
    }
    Ok(Val::Vector(out))
}

/// The time the data of `e` evaluated at `t` refers to: its first selector's, after
/// the `@` and `offset` of that selector and of the subqueries around it.
fn info_time(ev: &Evaluator, e: &Expr, t: i64) -> Option<i64> {
    match e {
        Expr::VectorSelector(vs) => Some(ev.ref_time(&vs.at, &vs.offset, t)),
        Expr::MatrixSelector(ms) => Some(ev.ref_time(&ms.vs.at, &ms.vs.offset, t)),
        Expr::Subquery(sq) => info_time(ev, &sq.expr, ev.ref_time(&sq.at, &sq.offset, t)),
        Expr::Paren(p) => info_time(ev, &p.expr, t),
        Expr::Unary(u) => info_time(ev, &u.expr, t),
        Expr::Aggregate(a) => info_time(ev, &a.expr, t),
        Expr::Binary(b) => info_time(ev, &b.lhs, t).or_else(|| info_time(ev, &b.rhs, t)),
        Expr::Call(c) => c.args.args.iter().find_map(|a| info_time(ev, a, t)),
        _ => None,
    }
}

/// The newest (for ties: first) extreme value of a window, or its timestamp.
fn extreme(p: &[FPoint], better: impl Fn(f64, f64) -> bool, want_ts: bool) -> Option<f64> {
    let first = p.first()?;
    let mut best = *first;
    for x in &p[1..] {
        if better(x.f, best.f) {
            best = *x;
        }
    }
    Some(if want_ts {
        best.t as f64 / 1000.0
    } else {
        best.f
    })
}

fn avg(p: &[FPoint]) -> f64 {
    if let Some(v) = non_finite_mean(p.iter().map(|x| x.f)) {
        return v;
    }
    let (mut sum, mut mean, mut count, mut c) = (0.0, 0.0, 0.0, 0.0);
    let mut incremental = false;
    for x in p {
        count += 1.0;
        if !incremental {
            let (ns, nc) = kahan_sum_inc(x.f, sum, c);
            if !ns.is_infinite() {
                sum = ns;
                c = nc;
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_sum_inc(x.f / count, q * mean, q * c);
    }
    if incremental {
        mean + c
    } else {
        (sum + c) / count
    }
}

fn smoothing(p: &[FPoint], sf: f64, tf: f64) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let mut s0 = 0.0;
    let mut s1 = p[0].f;
    let mut b = p[1].f - p[0].f;
    for (i, x) in p.iter().enumerate().skip(1) {
        let scaled = sf * x.f;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = scaled + y;
    }
    Some(s1)
}

/// Functions that may take an `anchored` / `smoothed` range (sorted, as
/// Prometheus lists them in its error).
const ANCHORED_SAFE: &[&str] = &["changes", "delta", "increase", "rate", "resets"];
const SMOOTHED_SAFE: &[&str] = &["delta", "increase", "rate"];

/// Prometheus's error for `anchored`/`smoothed` ranges given to other functions.
fn check_range_modifier(c: &Call) -> Result<(), QueryError> {
    for a in &c.args.args {
        let Expr::MatrixSelector(ms) = a.as_ref() else {
            continue;
        };
        let mode = range_mod(&ms.vs);
        let safe = match mode {
            RangeMod::None => continue,
            RangeMod::Anchored => ANCHORED_SAFE,
            RangeMod::Smoothed => SMOOTHED_SAFE,
        };
        if !safe.contains(&c.func.name) {
            return Err(exec(format!(
                "{} modifier can only be used with: {} - not with {}",
                mode.name(),
                safe.join(", "),
                c.func.name
            )));
        }
    }
    Ok(())
}

/// An anchored window has something to measure only with a sample after its start.
fn anchored_has_data(p: &[FPoint], w: Window) -> bool {
    w.mode != RangeMod::Anchored || p.last().is_some_and(|x| x.t > w.end - w.range_ms)
}

/// `rate`, `increase` and `delta`, with Prometheus's warning for start times that
/// overlap the previous sample.
fn rate_function(
    ev: &mut Evaluator,
    c: &Call,
    t: i64,
    is_counter: bool,
    is_rate: bool,
) -> Result<Val, QueryError> {
    let mut overlaps: Vec<String> = Vec::new();
    let out = over_series(ev, c, t, 0, false, |s, w| {
        if w.mode != RangeMod::None {
            return Ok(extended_rate(&s.points, w, is_counter, is_rate));
        }
        let sts = s.points.start_times();
        if is_counter && start_times_overlap(&s.points, sts) {
            let name = s.metric.metric_name().to_string();
            if !overlaps.contains(&name) {
                overlaps.push(name);
            }
        }
        Ok(extrapolated_rate(&s.points, sts, w, is_counter, is_rate))
    })?;
    if !overlaps.is_empty() {
        let pos = ev.arg_pos(c, 0);
        for name in overlaps {
            ev.warn_at(
                format!(
                    "sample has start time that overlaps with previous sample timestamp for metric {}",
                    go_quote(&name)
                ),
                pos.clone(),
            );
        }
    }
    Ok(out)
}

/// Whether a sample's start time says the counter restarted since the previous
/// sample (Prometheus's rules): a start time after the previous sample, or equal
/// to it when the previous sample's own start time is known (a delta series) —
/// but not an unknown (0), impossible (after the sample) or OTel-"unknown" (equal
/// to the sample) start time.
fn start_time_reset(prev_st: i64, prev_t: i64, st: i64, t: i64) -> bool {
    if st == 0 || st >= t || st < prev_t {
        return false;
    }
    if st > prev_t {
        return true;
    }
    prev_st <= prev_t && prev_st != 0 && prev_st != prev_t
}

/// Whether some sample's start time lies before the previous sample and differs
/// from that sample's start time (data that contradicts itself).
fn start_times_overlap(p: &[FPoint], sts: &[i64]) -> bool {
    (1..sts.len().min(p.len())).any(|i| sts[i] != 0 && sts[i] < p[i - 1].t && sts[i] != sts[i - 1])
}

/// `rate`, `increase` and `delta` over an `anchored` or `smoothed` window: the
/// difference between the values at the window's edges (the sample at or before the
/// start, and the last sample; smoothed: both interpolated to the exact edges),
/// with counter resets inside the window added back. No extrapolation.
fn extended_rate(p: &[FPoint], w: Window, is_counter: bool, is_rate: bool) -> Option<f64> {
    let start = w.end - w.range_ms;
    let end = w.end;
    let smoothed = w.mode == RangeMod::Smoothed;
    if p.is_empty() {
        return None;
    }
    // The points already begin with the last sample at or before the start (if any).
    let first = 0;
    let mut last = p.len() - 1;
    if smoothed {
        // The first sample at or after the end (the last one is a candidate only
        // when nothing earlier is).
        last = p[..last].partition_point(|x| x.t < end);
    }
    // Nothing inside the window: all samples before it, or (smoothed) all after it.
    if p[last].t <= start || (smoothed && p[first].t > end) {
        return None;
    }
    // Across a counter reset the counter is taken to restart from zero.
    let interpolate = |a: FPoint, b: FPoint, t: i64| {
        let y1 = if is_counter && b.f < a.f { 0.0 } else { a.f };
        y1 + (b.f - y1) * (t - a.t) as f64 / (b.t - a.t) as f64
    };
    let left = if smoothed && p[first].t < start && first + 1 < p.len() {
        interpolate(p[first], p[first + 1], start)
    } else {
        p[first].f
    };
    let right = if smoothed && last > 0 && p[last].t > end {
        interpolate(p[last - 1], p[last], end)
    } else {
        p[last].f
    };
    let mut result = right - left;
    if is_counter {
        // Resets strictly inside the window; the edges are handled above.
        let mut lo = first;
        if p[lo].t <= start {
            lo += 1;
        }
        let mut hi = last as isize;
        if p[last].t >= end {
            hi -= 1;
        }
        let mut prev = left;
        if hi >= lo as isize {
            for x in &p[lo..=hi as usize] {
                if x.f < prev {
                    result += prev;
                }
                prev = x.f;
            }
        }
        if right < prev {
            result += prev;
        }
    }
    if is_rate {
        result /= w.range_ms as f64 / 1000.0;
    }
    Some(result)
}

/// `rate`, `increase` and `delta`: the change over the window, extrapolated towards
/// the window's edges as Prometheus does.
///
/// With start times (`sts`, aligned with `p`, or empty), a counter also resets
/// where a start time says so, and when the first sample's start time lies inside
/// the window the counter is taken to have been 0 then: no extrapolation to the
/// left, and one sample is enough.
fn extrapolated_rate(
    p: &[FPoint],
    sts: &[i64],
    w: Window,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if p.is_empty() {
        return None;
    }
    let range_start = w.end - w.range_ms;
    let range_end = w.end;
    let first = p[0];
    let last = p[p.len() - 1];
    let st = |i: usize| sts.get(i).copied().unwrap_or(0);
    let mut result = last.f - first.f;
    if is_counter {
        for i in 1..p.len() {
            if p[i].f < p[i - 1].f || start_time_reset(st(i - 1), p[i - 1].t, st(i), p[i].t) {
                result += p[i - 1].f;
            }
        }
    }
    let mut duration_to_start = (first.t - range_start) as f64 / 1000.0;
    let mut duration_to_end = (range_end - last.t) as f64 / 1000.0;
    let mut sampled_interval = (last.t - first.t) as f64 / 1000.0;
    let average_between = if p.len() > 1 {
        sampled_interval / (p.len() - 1) as f64
    } else {
        0.0
    };
    let threshold = average_between * 1.1;
    let first_st = st(0);
    if is_counter && first_st != 0 && first_st > range_start && first_st < first.t {
        // The counter started inside the window, from 0.
        duration_to_start = 0.0;
        sampled_interval = (last.t - first_st) as f64 / 1000.0;
        result += first.f;
    } else if p.len() < 2 {
        return None;
    } else {
        if duration_to_start >= threshold {
            duration_to_start = average_between / 2.0;
        }
        if is_counter && result > 0.0 && first.f >= 0.0 {
            let duration_to_zero = sampled_interval * (first.f / result);
            if duration_to_zero < duration_to_start {
                duration_to_start = duration_to_zero;
            }
        }
    }
    if duration_to_end >= threshold {
        duration_to_end = average_between / 2.0;
    }
    let mut factor = if sampled_interval != 0.0 {
        (sampled_interval + duration_to_start + duration_to_end) / sampled_interval
    } else {
        1.0
    };
    if is_rate {
        factor /= w.range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `irate` and `idelta`: from the last two samples (and their start times, if
/// any, for resets).
fn instant_value(p: &[FPoint], sts: &[i64], is_rate: bool) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let n = p.len();
    let last = p[n - 1];
    let prev = p[n - 2];
    let st = |i: usize| sts.get(i).copied().unwrap_or(0);
    let reset = last.f < prev.f || start_time_reset(st(n - 2), prev.t, st(n - 1), last.t);
    let mut v = if is_rate && reset {
        last.f
    } else {
        last.f - prev.f
    };
    let interval = last.t - prev.t;
    if interval == 0 {
        return None;
    }
    if is_rate {
        v /= interval as f64 / 1000.0;
    }
    Some(v)
}

/// Least-squares slope and intercept (at `intercept_t`) of the points.
fn linear_regression(p: &[FPoint], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sum_x, mut c_x, mut sum_y, mut c_y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut c_xy, mut sum_x2, mut c_x2) = (0.0, 0.0, 0.0, 0.0);
    let init_y = p[0].f;
    let mut const_y = true;
    for (i, s) in p.iter().enumerate() {
        if const_y && i > 0 && s.f != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (s.t - intercept_t) as f64 / 1e3;
        (sum_x, c_x) = kahan_sum_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_sum_inc(s.f, sum_y, c_y);
        (sum_xy, c_xy) = kahan_sum_inc(x * s.f, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_sum_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sum_x += c_x;
    sum_y += c_y;
    sum_xy += c_xy;
    sum_x2 += c_x2;
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

/// The labels `absent(sel)` returns: the selector's equality matchers (a label
/// matched twice is left out).
fn absent_labels(e: &Expr) -> Labels {
    let mut e = e;
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    let vs = match e {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::empty(),
    };
    let mut b = LabelsBuilder::new();
    let mut seen = HashSet::default();
    let mut dup = HashSet::default();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME || super::rewrite::is_marker(&m.name) {
            continue;
        }
        if !seen.insert(m.name.clone()) {
            dup.insert(m.name.clone());
        }
        if matches!(m.op, MatchOp::Equal) {
            b.set(&m.name, &m.value);
        }
    }
    for d in dup {
        b.del(&d);
    }
    b.build()
}

fn date_function(ev: &mut Evaluator, c: &Call, t: i64) -> Result<Val, QueryError> {
    let input = match c.args.args.first() {
        Some(a) => ev.eval_vector(a, t)?,
        None => vec![VSample {
            metric: Labels::empty(),
            ts: t,
            f: t as f64 / 1000.0,
            drop_name: false,
        }],
    };
    let name = c.func.name;
    let out = input
        .into_iter()
        .map(|s| {
            let secs = s.f as i64;
            let days = secs.div_euclid(86_400);
            let (y, m, d) = civil_from_days(days);
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let f = match name {
                "minute" => (secs.rem_euclid(3600) / 60) as f64,
                "hour" => (secs.rem_euclid(86_400) / 3600) as f64,
                "day_of_month" => d as f64,
                "day_of_week" => (days + 4).rem_euclid(7) as f64,
                "day_of_year" => (days - days_from_civil(y, 1, 1) + 1) as f64,
                "days_in_month" => match m {
                    2 if leap => 29.0,
                    2 => 28.0,
                    4 | 6 | 9 | 11 => 30.0,
                    _ => 31.0,
                },
                "month" => m as f64,
                _ => y as f64,
            };
            VSample {
                f: if s.f.is_nan() { f64::NAN } else { f },
                ts: t,
                drop_name: true,
                metric: s.metric,
            }
        })
        .collect();
    Ok(Val::Vector(out))
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Fails when two samples of a function's output share a label set.
fn check_unique(v: &[VSample]) -> Result<(), QueryError> {
    let mut seen = HashSet::default();
    for s in v {
        if !seen.insert(&s.metric) {
            return Err(same_labelset());
        }
    }
    Ok(())
}

fn label_replace(ev: &mut Evaluator, c: &Call, t: i64) -> Result<Val, QueryError> {
    let dst = string_arg(c, 1)?;
    let repl = string_arg(c, 2)?;
    let src = string_arg(c, 3)?;
    let re_src = string_arg(c, 4)?;
    let re = regex::Regex::new(&format!("^(?s:{re_src})$")).map_err(|e| {
        exec(format!(
            "invalid regular expression in label_replace(): {re_src}: {e}"
        ))
    })?;
    if !ev.label_name_ok(&dst) {
        return Err(exec(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    let v = ev.eval_vector(arg(c, 0)?, t)?;
    let mut out = Vec::with_capacity(v.len());
    for mut s in v {
        if let Some(caps) = re.captures(s.metric.get(&src)) {
            let mut value = String::new();
            caps.expand(&repl, &mut value);
            let mut b = s.metric.builder();
            b.set(&dst, &value);
            s.metric = b.build();
            if dst == METRIC_NAME {
                s.drop_name = false;
            }
        }
        out.push(s);
    }
    check_unique(&out)?;
    Ok(Val::Vector(out))
}

fn label_join(ev: &mut Evaluator, c: &Call, t: i64) -> Result<Val, QueryError> {
    let dst = string_arg(c, 1)?;
    let sep = string_arg(c, 2)?;
    let mut srcs = Vec::new();
    for i in 3..c.args.args.len() {
        srcs.push(string_arg(c, i)?);
    }
    if let Some(src) = srcs.iter().find(|s| !s.is_empty() && !ev.label_name_ok(s)) {
        return Err(exec(format!(
            "invalid source label name in label_join(): {src}"
        )));
    }
    if !ev.label_name_ok(&dst) {
        return Err(exec(format!(
            "invalid destination label name in label_join(): {dst}"
        )));
    }
    let v = ev.eval_vector(arg(c, 0)?, t)?;
    let mut out = Vec::with_capacity(v.len());
    for mut s in v {
        let joined: Vec<&str> = srcs.iter().map(|n| s.metric.get(n)).collect();
        let value = joined.join(&sep);
        let mut b = s.metric.builder();
        b.set(&dst, &value);
        s.metric = b.build();
        if dst == METRIC_NAME {
            s.drop_name = false;
        }
        out.push(s);
    }
    check_unique(&out)?;
    Ok(Val::Vector(out))
}

/// Compares strings with runs of digits compared as numbers.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        if ab[i].is_ascii_digit() && bb[j].is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let na = a[si..i].trim_start_matches('0');
            let nb = b[sj..j].trim_start_matches('0');
            let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if ord != Ordering::Equal {
                return ord;
            }
        } else {
            if ab[i] != bb[j] {
                return ab[i].cmp(&bb[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j))
}

/// A classic histogram bucket: upper bound and cumulative count.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    upper: f64,
    count: f64,
}

/// Groups `_bucket` series by their labels without `le`, in first-seen order. A
/// series without a usable `le` is left out with Prometheus's warning (at argument
/// `arg_i` of `c`).
fn bucket_groups(
    ev: &mut Evaluator,
    c: &Call,
    arg_i: usize,
    v: Vec<VSample>,
) -> Vec<(Labels, Vec<Bucket>)> {
    let mut index: HashMap<Labels, usize> = HashMap::default();
    let mut groups: Vec<(Labels, Vec<Bucket>)> = Vec::new();
    for s in v {
        let le = s.metric.get("le");
        let upper = match parse_le(le) {
            Some(u) => u,
            None => {
                let pos = ev.arg_pos(c, arg_i);
                ev.warn_at(
                    format!(
                        "bucket label \"le\" is missing or has a malformed value of {} for metric name {}",
                        crate::labels::quote(le),
                        crate::labels::quote(s.metric.metric_name())
                    ),
                    pos,
                );
                continue;
            }
        };
        let mut b = s.metric.builder();
        b.del("le");
        let key = b.build();
        let i = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(Bucket { upper, count: s.f });
    }
    groups
}

fn parse_le(s: &str) -> Option<f64> {
    if s.is_empty() {
        return None;
    }
    match s.to_ascii_lowercase().as_str() {
        "+inf" | "inf" => return Some(f64::INFINITY),
        "-inf" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    s.parse::<f64>().ok()
}

fn histogram_quantile(ev: &mut Evaluator, c: &Call, t: i64) -> Result<Val, QueryError> {
    let q = ev.eval_scalar(arg(c, 0)?, t)?;
    if q.is_nan() || !(0.0..=1.0).contains(&q) {
        let pos = ev.arg_pos(c, 0);
        ev.warn_at(quantile_warning(q), pos);
    }
    let v = ev.eval_vector(arg(c, 1)?, t)?;
    let mut out = Vec::new();
    for (labels, mut buckets) in bucket_groups(ev, c, 1, v) {
        let (f, forced) = bucket_quantile(q, &mut buckets);
        if forced {
            let pos = ev.arg_pos(c, 1);
            ev.info_at(monotonicity_info(&labels), pos);
        }
        out.push(VSample {
            metric: labels,
            ts: t,
            f,
            drop_name: true,
        });
    }
    Ok(Val::Vector(out))
}

fn monotonicity_info(labels: &Labels) -> String {
    format!(
        "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {}",
        crate::labels::quote(labels.metric_name())
    )
}

fn sort_and_coalesce(buckets: &mut Vec<Bucket>) {
    buckets.sort_by(|a, b| {
        a.upper
            .partial_cmp(&b.upper)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut merged: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.upper == b.upper => last.count += b.count,
            _ => merged.push(*b),
        }
    }
    *buckets = merged;
}

fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < epsilon * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

/// Makes cumulative counts monotonic; true when a real decrease had to be removed
/// (differences within floating-point noise are fixed silently).
fn ensure_monotonic(buckets: &mut [Bucket]) -> bool {
    let mut forced = false;
    let mut prev = buckets[0].count;
    for b in buckets.iter_mut().skip(1) {
        let cur = b.count;
        if cur == prev {
            continue;
        }
        if almost_equal(prev, cur, 1e-12) {
            b.count = prev;
            continue;
        }
        if cur < prev {
            b.count = prev;
            forced = true;
            continue;
        }
        prev = cur;
    }
    forced
}

/// Prometheus's `BucketQuantile` over classic buckets, and whether the counts had
/// to be forced monotonic.
fn bucket_quantile(q: f64, buckets: &mut Vec<Bucket>) -> (f64, bool) {
    let mut forced = false;
    let v = bucket_quantile_inner(q, buckets, &mut forced);
    (v, forced)
}

fn bucket_quantile_inner(q: f64, buckets: &mut Vec<Bucket>, forced: &mut bool) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| {
        a.upper
            .partial_cmp(&b.upper)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    match buckets.last() {
        Some(b) if b.upper == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    sort_and_coalesce(buckets);
    *forced = ensure_monotonic(buckets);
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].count;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = buckets[..buckets.len() - 1].partition_point(|x| x.count < rank);
    if b == buckets.len() - 1 {
        return buckets[buckets.len() - 2].upper;
    }
    if b == 0 && buckets[0].upper <= 0.0 {
        return buckets[0].upper;
    }
    let mut start = 0.0;
    let end = buckets[b].upper;
    let mut count = buckets[b].count;
    if b > 0 {
        start = buckets[b - 1].upper;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    start + (end - start) * (rank / count)
}

fn histogram_fraction(ev: &mut Evaluator, c: &Call, t: i64) -> Result<Val, QueryError> {
    let lower = ev.eval_scalar(arg(c, 0)?, t)?;
    let upper = ev.eval_scalar(arg(c, 1)?, t)?;
    let v = ev.eval_vector(arg(c, 2)?, t)?;
    let mut out = Vec::new();
    for (labels, mut buckets) in bucket_groups(ev, c, 2, v) {
        out.push(VSample {
            metric: labels,
            ts: t,
            f: bucket_fraction(lower, upper, &mut buckets),
            drop_name: true,
        });
    }
    Ok(Val::Vector(out))
}

/// The estimated fraction of observations between `lower` and `upper`
/// (Prometheus's `BucketFraction`): buckets wholly inside count fully, buckets
/// partly inside count in proportion to the overlap, except buckets of infinite
/// width (the first one when its bound is not positive, and the `+Inf` one), which
/// count only when wholly inside.
fn bucket_fraction(lower: f64, upper: f64, buckets: &mut Vec<Bucket>) -> f64 {
    buckets.sort_by(|a, b| {
        a.upper
            .partial_cmp(&b.upper)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    match buckets.last() {
        Some(b) if b.upper == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    sort_and_coalesce(buckets);
    let _ = ensure_monotonic(buckets);
    if lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    let total = buckets[buckets.len() - 1].count;
    if total == 0.0 {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    (bucket_rank(upper, buckets, total) - bucket_rank(lower, buckets, total)) / total
}

/// The estimated number of observations at or below `x`. Inside a bucket the count
/// is interpolated linearly, except in buckets of infinite width: inside the first
/// bucket, when its bound is not positive, `x` counts the whole bucket; inside the
/// `+Inf` bucket it counts none of it.
fn bucket_rank(x: f64, buckets: &[Bucket], total: f64) -> f64 {
    if x == f64::NEG_INFINITY {
        return 0.0;
    }
    if x == f64::INFINITY {
        return total;
    }
    let mut prev_upper = 0.0;
    let mut prev_count = 0.0;
    for (i, b) in buckets.iter().enumerate() {
        if x <= b.upper {
            if x == b.upper {
                return b.count;
            }
            let lo = if i == 0 {
                if b.upper <= 0.0 {
                    return b.count;
                }
                if x <= 0.0 {
                    return 0.0;
                }
                0.0
            } else {
                prev_upper
            };
            if b.upper == f64::INFINITY {
                return prev_count;
            }
            return prev_count + (b.count - prev_count) * (x - lo) / (b.upper - lo);
        }
        prev_upper = b.upper;
        prev_count = b.count;
    }
    total
}

fn histogram_quantiles(ev: &mut Evaluator, c: &Call, t: i64) -> Result<Val, QueryError> {
    let v = ev.eval_vector(arg(c, 0)?, t)?;
    let label = string_arg(c, 1)?;
    let mut qs = Vec::new();
    for i in 2..c.args.args.len() {
        let q = ev.eval_scalar(arg(c, i)?, t)?;
        if q.is_nan() || !(0.0..=1.0).contains(&q) {
            let pos = ev.arg_pos(c, i);
            ev.warn_at(quantile_warning(q), pos);
        }
        qs.push(q);
    }
    let mut out = Vec::new();
    for (labels, buckets) in bucket_groups(ev, c, 0, v) {
        for &q in &qs {
            let mut b = labels.builder();
            b.set(&label, &quantile_label(q));
            let (f, forced) = bucket_quantile(q, &mut buckets.clone());
            if forced {
                let pos = ev.arg_pos(c, 0);
                ev.info_at(monotonicity_info(&labels), pos);
            }
            out.push(VSample {
                metric: b.build(),
                ts: t,
                f,
                drop_name: true,
            });
        }
    }
    Ok(Val::Vector(out))
}

/// A quantile as a label value: like Go's `%g`-ish formatting with at least one
/// decimal (`0.0`, `0.25`, `1.0`).
fn quantile_label(q: f64) -> String {
    let s = crate::gofloat::g(q);
    if s.contains('.') || s.contains('e') || s.contains("Inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}
