//! The Prometheus HTTP API's query endpoints: `/api/v1/query`, `/api/v1/query_range`,
//! `/api/v1/series`, `/api/v1/labels` and `/api/v1/label/<name>/values`, in
//! Prometheus's exact JSON shapes.
//!
//! Parameters come from the query string and, for POST, from a form body, as in
//! Prometheus. Queries run on the blocking pool; if the client goes away, the
//! handler's future is dropped and a drop guard cancels the running query.

use crate::labels::{Labels, Matcher};
use crate::promql::{self, Engine, QueryError, Value};
use crate::storage::Queryable;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::fmt::Write as _;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What the query endpoints need: where to read and how to evaluate.
#[derive(Clone)]
pub struct QueryApi {
    /// Every read goes through this.
    pub queryable: Arc<dyn Queryable>,
    /// The engine, with `--query.*` settings.
    pub engine: Engine,
}

/// The earliest and latest times the API accepts when a bound is left out,
/// Prometheus's `MinTime`/`MaxTime` in ms.
const MIN_TIME_MS: i64 = -9_223_309_901_257_974;
const MAX_TIME_MS: i64 = 9_223_309_901_257_974;

/// An API error with Prometheus's error type.
#[derive(Debug)]
pub struct ApiError {
    kind: &'static str,
    msg: String,
}

impl ApiError {
    fn bad_data(msg: impl Into<String>) -> ApiError {
        ApiError {
            kind: "bad_data",
            msg: msg.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self.kind {
            "bad_data" => StatusCode::BAD_REQUEST,
            "execution" => StatusCode::UNPROCESSABLE_ENTITY,
            "timeout" | "canceled" | "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "not_found" => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        let kind = match &e {
            QueryError::Parse(_) => "bad_data",
            QueryError::Execution(_) | QueryError::TooManySamples(_) => "execution",
            QueryError::Timeout(_) => "timeout",
            QueryError::Canceled(_) => "canceled",
            QueryError::Storage(_) => "internal",
        };
        let msg = match &e {
            QueryError::Parse(m) => format!("invalid parameter \"query\": {m}"),
            other => other.to_string(),
        };
        ApiError { kind, msg }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = format!(
            "{{\"status\":\"error\",\"errorType\":\"{}\",\"error\":{}}}",
            self.kind,
            json_string(&self.msg)
        );
        (self.status(), [("content-type", "application/json")], body).into_response()
    }
}

/// A success envelope; `warnings` and `infos` appear only when not empty, as in
/// Prometheus.
fn success_with(data: String, warnings: &[String], infos: &[String]) -> Response {
    let mut body = format!("{{\"status\":\"success\",\"data\":{data}");
    for (key, list) in [("warnings", warnings), ("infos", infos)] {
        if !list.is_empty() {
            let items: Vec<String> = list.iter().map(|m| json_string(m)).collect();
            let _ = write!(body, ",\"{key}\":[{}]", items.join(","));
        }
    }
    body.push('}');
    (StatusCode::OK, [("content-type", "application/json")], body).into_response()
}

/// Query-string and form-body parameters, in order.
struct Params(Vec<(String, String)>);

impl Params {
    fn new(query: Option<String>, body: &Bytes) -> Params {
        let mut p = super::form_pairs(query.as_deref().unwrap_or(""));
        p.extend(super::form_pairs(&String::from_utf8_lossy(body)));
        Params(p)
    }

    /// The first value of `name`, if given and not empty.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn time(&self, name: &str, default: i64) -> Result<i64, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => parse_time_ms(v).ok_or_else(|| {
                ApiError::bad_data(format!(
                    "invalid parameter \"{name}\": cannot parse \"{v}\" to a valid timestamp"
                ))
            }),
        }
    }

    fn duration(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => parse_duration_param_ms(v).map(Some).ok_or_else(|| {
                ApiError::bad_data(format!(
                    "invalid parameter \"{name}\": cannot parse \"{v}\" to a valid duration"
                ))
            }),
        }
    }

    fn matcher_sets(&self) -> Result<Vec<Vec<Matcher>>, ApiError> {
        let mut sets = Vec::new();
        for m in self.all("match[]") {
            let ms = crate::labels::parse_selector(m)
                .map_err(|e| ApiError::bad_data(format!("invalid parameter \"match[]\": {e}")))?;
            sets.push(ms);
        }
        Ok(sets)
    }
}

/// Unix seconds with an optional fraction, or RFC 3339, to ms.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() {
            return None;
        }
        return Some((secs * 1000.0).round() as i64);
    }
    parse_rfc3339_ms(s)
}

/// `2015-07-01T20:10:51.781Z` or with a `±hh:mm` offset, to ms.
fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || (b[10] != b'T' && b[10] != b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let st = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = s.get(st..i)?;
        if digits.is_empty() {
            return None;
        }
        let padded: String = digits.chars().chain("000".chars()).take(3).collect();
        frac_ms = padded.parse().ok()?;
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if b.len() == i + 6 && b[i + 3] == b':' => {
            let oh: i64 = s.get(i + 1..i + 3)?.parse().ok()?;
            let om: i64 = s.get(i + 4..i + 6)?.parse().ok()?;
            let o = oh * 3600 + om * 60;
            if *c == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    Some(secs * 1000 + frac_ms)
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

/// A duration parameter: float seconds or a Prometheus duration, to ms.
fn parse_duration_param_ms(s: &str) -> Option<i64> {
    if let Ok(secs) = s.parse::<f64>() {
        let ms = secs * 1000.0;
        if !ms.is_finite() || ms.abs() > i64::MAX as f64 {
            return None;
        }
        return Some(ms.round() as i64);
    }
    crate::config_units::parse_duration_ms(s).ok()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A timestamp in ms as Prometheus writes it: seconds with a three-digit fraction
/// when the fraction is not zero.
fn write_ts(out: &mut String, t: i64) {
    if t < 0 {
        out.push('-');
    }
    let a = t.unsigned_abs();
    out.push_str(itoa::Buffer::new().format(a / 1000));
    let frac = a % 1000;
    if frac != 0 {
        // Three digits with leading zeros: those of 1000 + frac after its "1".
        out.push('.');
        out.push_str(&itoa::Buffer::new().format(1000 + frac)[1..]);
    }
}

/// Appends `s` as a JSON string literal; most label names and values need no
/// escaping and are copied as they are.
fn write_json_string(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f)
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&json_string(s));
    }
}

fn write_labels(out: &mut String, l: &Labels) {
    out.push('{');
    for (i, lb) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(out, lb.name);
        out.push(':');
        write_json_string(out, lb.value);
    }
    out.push('}');
}

fn write_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    write_ts(out, t);
    out.push_str(",\"");
    // As `promql::format_value`, without a string per point.
    promql::push_float_plain(out, v);
    out.push_str("\"]");
}

/// The `data` object of a query response.
fn render_value(v: &Value) -> String {
    let mut out = String::new();
    let _ = write!(out, "{{\"resultType\":\"{}\",\"result\":", v.type_name());
    match v {
        Value::Scalar { t, v } => write_point(&mut out, *t, *v),
        Value::String { t, s } => {
            out.push('[');
            write_ts(&mut out, *t);
            out.push(',');
            out.push_str(&json_string(s));
            out.push(']');
        }
        Value::Vector(samples) => {
            out.push('[');
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(&mut out, &s.metric);
                out.push_str(",\"value\":");
                write_point(&mut out, s.t, s.f);
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(series) => {
            out.push('[');
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(&mut out, &s.metric);
                out.push_str(",\"values\":[");
                for (j, p) in s.floats.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    write_point(&mut out, p.t, p.f);
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    out.push('}');
    out
}

/// Runs `f` on the blocking pool with a token that is cancelled if this future is
/// dropped (the client went away) or the work is done.
async fn run_cancellable<T: Send + 'static>(
    f: impl FnOnce(CancellationToken) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let token = CancellationToken::new();
    let _guard = token.clone().drop_guard();
    tokio::task::spawn_blocking(move || f(token))
        .await
        .map_err(|e| ApiError {
            kind: "internal",
            msg: e.to_string(),
        })?
}

/// An engine whose timeout is the smaller of the server's and the request's.
fn engine_for(api: &QueryApi, p: &Params) -> Result<Engine, ApiError> {
    let mut opts = api.engine.options().clone();
    if let Some(t) = p.duration("timeout")? {
        if t > 0 && (opts.timeout_ms == 0 || (t as u64) < opts.timeout_ms) {
            opts.timeout_ms = t as u64;
        }
    }
    Ok(Engine::new(opts))
}

/// `GET|POST /api/v1/query`.
pub async fn query(
    State(api): State<Arc<QueryApi>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::new(q, &body);
    let text = p
        .get("query")
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": query must not be empty"))?
        .to_string();
    let t = p.time("time", now_ms())?;
    let engine = engine_for(&api, &p)?;
    let parsed = promql::parse(&text)?;
    let store = api.queryable.clone();
    let v = run_cancellable(move |token| {
        engine
            .instant_query(store.as_ref(), &parsed, t, Some(&token))
            .map_err(ApiError::from)
    })
    .await?;
    Ok(success_with(render_value(&v.value), &v.warnings, &v.infos))
}

/// `GET|POST /api/v1/query_range`.
pub async fn query_range(
    State(api): State<Arc<QueryApi>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::new(q, &body);
    let start = match p.get("start") {
        Some(_) => p.time("start", 0)?,
        None => return Err(ApiError::bad_data("invalid parameter \"start\": missing")),
    };
    let end = match p.get("end") {
        Some(_) => p.time("end", 0)?,
        None => return Err(ApiError::bad_data("invalid parameter \"end\": missing")),
    };
    if end < start {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = p
        .duration("step")?
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"step\": missing"))?;
    if step <= 0 {
        return Err(ApiError::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step > promql::RANGE_STEPS_MAX {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let text = p
        .get("query")
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": query must not be empty"))?
        .to_string();
    let engine = engine_for(&api, &p)?;
    let parsed = promql::parse(&text)?;
    let store = api.queryable.clone();
    let v = run_cancellable(move |token| {
        engine
            .range_query(store.as_ref(), &parsed, start, end, step, Some(&token))
            .map_err(ApiError::from)
    })
    .await?;
    Ok(success_with(render_value(&v.value), &v.warnings, &v.infos))
}

fn storage_error(e: crate::storage::StorageError) -> ApiError {
    ApiError {
        kind: "internal",
        msg: e.to_string(),
    }
}

/// `GET|POST /api/v1/series`.
pub async fn series(
    State(api): State<Arc<QueryApi>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::new(q, &body);
    let sets = p.matcher_sets()?;
    if sets.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let start = p.time("start", MIN_TIME_MS)?;
    let end = p.time("end", MAX_TIME_MS)?;
    let limit = p
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(0);
    let store = api.queryable.clone();
    let (all, warnings) = run_cancellable(move |_| {
        let querier = store.querier(start, end).map_err(storage_error)?;
        let hints = crate::storage::SelectHints {
            start_ms: start,
            end_ms: end,
            series_only: true,
            newest_only: false,
        };
        let mut all: Vec<Labels> = Vec::new();
        for ms in &sets {
            for s in querier.select(&hints, ms).map_err(storage_error)? {
                all.push(s.map_err(storage_error)?.labels);
            }
        }
        all.sort();
        all.dedup();
        Ok((all, querier.warnings()))
    })
    .await?;
    let mut out = String::from("[");
    let n = if limit > 0 {
        all.len().min(limit)
    } else {
        all.len()
    };
    for (i, l) in all[..n].iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_labels(&mut out, l);
    }
    out.push(']');
    Ok(success_with(out, &warnings, &[]))
}

fn string_list(values: &[String], limit: usize) -> String {
    let n = if limit > 0 {
        values.len().min(limit)
    } else {
        values.len()
    };
    let items: Vec<String> = values[..n].iter().map(|v| json_string(v)).collect();
    format!("[{}]", items.join(","))
}

/// Label names (`name` = None) or the values of one label, over `match[]` sets.
async fn label_query(
    api: Arc<QueryApi>,
    p: Params,
    name: Option<String>,
) -> Result<Response, ApiError> {
    let sets = p.matcher_sets()?;
    let start = p.time("start", MIN_TIME_MS)?;
    let end = p.time("end", MAX_TIME_MS)?;
    let limit = p
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(0);
    let store = api.queryable.clone();
    let (values, warnings) = run_cancellable(move |_| {
        let querier = store.querier(start, end).map_err(storage_error)?;
        let sets = if sets.is_empty() {
            vec![Vec::new()]
        } else {
            sets
        };
        let mut all = Vec::new();
        for ms in &sets {
            let v = match &name {
                Some(n) => querier.label_values(n, ms),
                None => querier.label_names(ms),
            }
            .map_err(storage_error)?;
            all.extend(v);
        }
        all.sort();
        all.dedup();
        Ok((all, querier.warnings()))
    })
    .await?;
    Ok(success_with(string_list(&values, limit), &warnings, &[]))
}

/// `GET|POST /api/v1/labels`.
pub async fn labels(
    State(api): State<Arc<QueryApi>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    label_query(api, Params::new(q, &body), None).await
}

/// `GET /api/v1/label/<name>/values`.
pub async fn label_values(
    State(api): State<Arc<QueryApi>>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    // Prometheus accepts `U__`-escaped UTF-8 names here; plain names are the norm.
    if name.is_empty() {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    label_query(api, Params::new(q, &Bytes::new()), Some(name)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_like_prometheus() {
        assert_eq!(parse_time_ms("1435781451.781"), Some(1_435_781_451_781));
        assert_eq!(
            parse_time_ms("2015-07-01T20:10:51.781Z"),
            Some(1_435_781_451_781)
        );
        assert_eq!(
            parse_time_ms("2015-07-01T22:10:51+02:00"),
            Some(1_435_781_451_000)
        );
        assert_eq!(parse_time_ms("-1.5"), Some(-1500));
        assert_eq!(parse_time_ms("yesterday"), None);
        assert_eq!(parse_time_ms("NaN"), None);
    }

    #[test]
    fn timestamps_render_like_prometheus() {
        let mut s = String::new();
        write_ts(&mut s, 1_435_781_451_781);
        s.push(' ');
        write_ts(&mut s, 1_000);
        s.push(' ');
        write_ts(&mut s, 1_050);
        s.push(' ');
        write_ts(&mut s, -1_500);
        assert_eq!(s, "1435781451.781 1 1.050 -1.500");
    }
}
