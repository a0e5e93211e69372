//! The rest of the Prometheus HTTP API, beside the query endpoints in `api`:
//! `/federate`, the `/api/v1/status/*` pages, `format_query`/`parse_query`,
//! `query_exemplars`, `metadata`, `targets`, `targets/metadata`, the
//! `clean_tombstones` admin call, and the `--query.max-concurrency` limit.
//!
//! It has its own state and router (`router`), merged into the main one by
//! `server.rs`, so the main `WebState` stays as it is.

use super::api_error;
use crate::labels::{Labels, MatchType, Matcher};
use crate::scrape::{MetricMetadata, TargetInfo};
use crate::storage::{is_stale_nan, Queryable, SelectHints};
use axum::body::Bytes;
use axum::extract::{RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::RwLock;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

/// Most series `/api/v1/status/tsdb` reads to compute its top-N lists; beyond
/// this the lists describe only the first series read.
const TSDB_STATUS_SERIES_MAX: usize = 10_000_000;

/// Most series one `/federate` response holds.
const FEDERATE_SERIES_MAX: usize = 10_000_000;

/// The loaded configuration as the API shows it; replaced on every reload.
#[derive(Debug, Clone, Default)]
pub struct ConfigView {
    /// The text of the configuration file (or the embedded default).
    pub yaml: String,
    /// `global.external_labels`, added by `/federate`.
    pub external_labels: BTreeMap<String, String>,
    /// Whether the last (re)load succeeded.
    pub reload_success: bool,
    /// When the configuration was last loaded successfully, ms since the epoch.
    pub last_config_time_ms: i64,
}

/// The head block's figures for `/api/v1/status/tsdb`.
#[derive(Debug, Clone, Default)]
pub struct HeadStats {
    pub num_series: u64,
    /// `None` when the head holds no sample.
    pub min_time_ms: Option<i64>,
    pub max_time_ms: Option<i64>,
    /// Chunks in the head, when the storage counts them.
    pub chunk_count: Option<u64>,
}

/// Active targets and dropped (job, discovered labels) pairs.
pub type TargetsFn = Arc<dyn Fn() -> (Vec<TargetInfo>, Vec<(String, Labels)>) + Send + Sync>;
/// Runs `Db::clean_tombstones`; the error says why it failed.
pub type CleanTombstonesFn = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;
/// The head's current figures.
pub type HeadStatsFn = Arc<dyn Fn() -> HeadStats + Send + Sync>;

/// Shared state of the extra endpoints.
#[derive(Clone)]
pub struct Extras {
    /// Every read (federation, TSDB status) goes through this.
    pub queryable: Arc<dyn Queryable>,
    /// `--query.lookback-delta`: how old the newest sample `/federate` returns may be.
    pub lookback_delta_ms: i64,
    /// The loaded configuration; the reload path replaces it.
    pub config: Arc<RwLock<ConfigView>>,
    /// Every server flag and its value as given (or its default).
    pub flags: Vec<(String, String)>,
    /// When the server started, ms since the epoch.
    pub start_time_ms: i64,
    /// `--storage.tsdb.retention.time` as given (`15d`).
    pub storage_retention: String,
    /// Serves `/api/v1/targets` when set.
    pub targets: Option<TargetsFn>,
    /// Serves the `clean_tombstones` admin call (`--web.enable-admin-api`) when set.
    pub clean_tombstones: Option<CleanTombstonesFn>,
    /// Head figures for `/api/v1/status/tsdb`, when the storage is a TSDB.
    pub head_stats: Option<HeadStatsFn>,
}

/// The router of the extra endpoints.
pub fn router(state: Arc<Extras>) -> Router {
    Router::new()
        .route("/federate", get(federate))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/api/v1/status/runtimeinfo", get(runtimeinfo))
        .route("/api/v1/status/flags", get(flags))
        .route("/api/v1/status/config", get(config))
        .route("/api/v1/status/tsdb", get(tsdb_status))
        .route("/api/v1/status/walreplay", get(walreplay))
        .route("/api/v1/format_query", get(format_query).post(format_query))
        .route("/api/v1/parse_query", get(parse_query).post(parse_query))
        .route(
            "/api/v1/query_exemplars",
            get(query_exemplars).post(query_exemplars),
        )
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/targets/metadata", get(targets_metadata))
        .route("/api/v1/targets", get(targets))
        .route(
            "/api/v1/admin/tsdb/clean_tombstones",
            post(clean_tombstones).put(clean_tombstones),
        )
        .with_state(state)
}

/// Limits how many `query` and `query_range` requests evaluate at once
/// (`--query.max-concurrency`); the others wait for a slot, as in Prometheus,
/// where the engine's active-query tracker blocks until one is free.
pub async fn limit_query_concurrency(
    State(slots): State<Arc<tokio::sync::Semaphore>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if path != "/api/v1/query" && path != "/api/v1/query_range" {
        return next.run(req).await;
    }
    match slots.acquire_owned().await {
        Ok(_permit) => next.run(req).await,
        Err(_) => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "query concurrency limiter is closed".to_string(),
        ),
    }
}

fn success(data: Value) -> Response {
    Json(json!({"status": "success", "data": data})).into_response()
}

fn params(q: Option<String>, body: &Bytes) -> Vec<(String, String)> {
    let mut p = super::form_pairs(q.as_deref().unwrap_or(""));
    p.extend(super::form_pairs(&String::from_utf8_lossy(body)));
    p
}

fn param<'a>(p: &'a [(String, String)], name: &str) -> Option<&'a str> {
    p.iter()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 with the fraction Go's `time.Time` JSON encoding writes.
fn rfc3339(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.to_string(),
        Err(_) => "0001-01-01T00:00:00Z".to_string(),
    }
}

/// A duration as Prometheus's `model.Duration` prints it: `1m`, `15s`, `1h30m`, `0s`.
pub fn format_duration_ms(ms: i64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let mut rest = ms.unsigned_abs();
    if ms < 0 {
        out.push('-');
    }
    // Years and weeks only when they divide the whole duration: `90d`, not `12w6d`.
    for (unit, size, exact) in [
        ("y", 365 * 24 * 3_600_000u64, true),
        ("w", 7 * 24 * 3_600_000, true),
        ("d", 24 * 3_600_000, false),
        ("h", 3_600_000, false),
        ("m", 60_000, false),
        ("s", 1_000, false),
        ("ms", 1, false),
    ] {
        if exact && !rest.is_multiple_of(size) {
            continue;
        }
        let n = rest / size;
        if n > 0 {
            let _ = write!(out, "{n}{unit}");
            rest -= n * size;
        }
    }
    out
}

fn labels_json(l: &Labels) -> Value {
    let mut m = Map::new();
    for lbl in l {
        m.insert(lbl.name.to_string(), Value::String(lbl.value.to_string()));
    }
    Value::Object(m)
}

// ---- /federate -------------------------------------------------------------

/// `GET /federate?match[]=…`: the newest sample within the lookback delta of each
/// matching series, in the text format, grouped under `# TYPE <name> untyped`.
async fn federate(State(x): State<Arc<Extras>>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = params(q, &body);
    let mut sets = Vec::new();
    for (k, v) in &p {
        if k != "match[]" {
            continue;
        }
        match crate::labels::parse_selector(v) {
            Ok(ms) => sets.push(ms),
            Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        }
    }
    let maxt = now_ms();
    let mint = maxt.saturating_sub(x.lookback_delta_ms);
    let external = x.config.read().external_labels.clone();
    let store = x.queryable.clone();
    let result = tokio::task::spawn_blocking(move || {
        federate_samples(store.as_ref(), &sets, mint, maxt)
            .map(|vec| render_federation(&vec, &external))
    })
    .await;
    match result {
        Ok(Ok(text)) => (
            [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// The newest non-stale sample at or before `maxt` (and not before `mint`) of every
/// series matching any of `sets`, sorted by metric name (then labels).
pub fn federate_samples(
    store: &dyn Queryable,
    sets: &[Vec<Matcher>],
    mint: i64,
    maxt: i64,
) -> Result<Vec<(Labels, i64, f64)>, crate::storage::StorageError> {
    let querier = store.querier(mint, maxt)?;
    let hints = SelectHints {
        start_ms: mint,
        end_ms: maxt,
        series_only: false,
        newest_only: true,
    };
    let mut by_labels: BTreeMap<Labels, (i64, f64)> = BTreeMap::new();
    for ms in sets {
        for s in querier.select(&hints, ms)? {
            let s = s?;
            let Some(last) = s.samples.iter().rev().find(|x| x.t <= maxt && x.t >= mint) else {
                continue;
            };
            // The text format has no stale marker; a stale series is left out.
            if is_stale_nan(last.v) {
                continue;
            }
            by_labels.insert(s.labels, (last.t, last.v));
            if by_labels.len() > FEDERATE_SERIES_MAX {
                return Err(crate::storage::StorageError::Other(format!(
                    "federation matched more than {FEDERATE_SERIES_MAX} series"
                )));
            }
        }
    }
    let mut vec: Vec<(Labels, i64, f64)> =
        by_labels.into_iter().map(|(l, (t, v))| (l, t, v)).collect();
    // Stable: series of one name keep their label order.
    vec.sort_by(|a, b| a.0.get("__name__").cmp(b.0.get("__name__")));
    Ok(vec)
}

fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Writes samples as Prometheus's federation handler does: one untyped family per
/// metric name, the series' own labels (empty ones dropped), then each external
/// label the series does not have (with `instance=""` when none is configured), and
/// the sample's timestamp.
pub fn render_federation(
    vec: &[(Labels, i64, f64)],
    external: &BTreeMap<String, String>,
) -> String {
    let mut external = external.clone();
    external.entry("instance".to_string()).or_default();
    let mut out = String::new();
    let mut last_name = String::new();
    for (l, t, v) in vec {
        let name = l.get("__name__");
        if name.is_empty() {
            tracing::warn!(metric = ?l, "ignoring nameless metric during federation");
            continue;
        }
        if name != last_name {
            let _ = writeln!(out, "# TYPE {name} untyped");
            last_name = name.to_string();
        }
        let mut pairs: Vec<(&str, &str)> = l
            .iter()
            .filter(|x| x.name != "__name__" && !x.value.is_empty())
            .map(|x| (x.name, x.value))
            .collect();
        for (k, ev) in &external {
            if !pairs.iter().any(|(n, _)| n == k) {
                pairs.push((k, ev));
            }
        }
        out.push_str(name);
        if !pairs.is_empty() {
            out.push('{');
            for (i, (k, lv)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(k);
                out.push_str("=\"");
                escape_label_value(lv, &mut out);
                out.push('"');
            }
            out.push('}');
        }
        let _ = writeln!(out, " {} {t}", crate::gofloat::g(*v));
    }
    out
}

// ---- status pages ----------------------------------------------------------

async fn buildinfo() -> Response {
    success(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": option_env!("HEARTH_GIT_REVISION").unwrap_or(""),
        "branch": option_env!("HEARTH_GIT_BRANCH").unwrap_or(""),
        "buildUser": "",
        "buildDate": "",
        // Prometheus reports its Go version here; hearth reports its language.
        "goVersion": "rust",
    }))
}

async fn runtimeinfo(State(x): State<Arc<Extras>>) -> Response {
    let cfg = x.config.read().clone();
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    success(json!({
        "startTime": rfc3339(x.start_time_ms),
        "CWD": cwd,
        "reloadConfigSuccess": cfg.reload_success,
        "lastConfigTime": rfc3339(cfg.last_config_time_ms),
        "corruptionCount": 0,
        "goroutineCount": 0,
        "GOMAXPROCS": threads,
        "GOMEMLIMIT": i64::MAX,
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": x.storage_retention,
    }))
}

async fn flags(State(x): State<Arc<Extras>>) -> Response {
    let mut m = Map::new();
    for (k, v) in &x.flags {
        m.insert(k.clone(), Value::String(v.clone()));
    }
    success(Value::Object(m))
}

async fn config(State(x): State<Arc<Extras>>) -> Response {
    success(json!({"yaml": x.config.read().yaml}))
}

/// Replaying the WAL happens before the server listens, so it is always done.
async fn walreplay() -> Response {
    success(json!({"min": 0, "max": 0, "current": 0}))
}

/// The top-`limit` entries of `counts`, by count descending then name.
fn top(counts: HashMap<String, u64>, limit: usize) -> Value {
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(limit);
    Value::Array(
        v.into_iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect(),
    )
}

/// The cardinality lists of `/api/v1/status/tsdb`, computed over the series with
/// samples in [`mint`, `maxt`] (Prometheus counts the head's postings; hearth passes
/// the head's time range): series per metric name, distinct values per label name, bytes
/// of label values per label name (value length times series), and series per
/// label pair.
pub fn cardinality_stats(
    store: &dyn Queryable,
    mint: i64,
    maxt: i64,
    limit: usize,
) -> Result<Value, crate::storage::StorageError> {
    let querier = store.querier(mint, maxt)?;
    let hints = SelectHints {
        start_ms: mint,
        end_ms: maxt,
        series_only: true,
        newest_only: false,
    };
    let all = Matcher::new(MatchType::Regexp, "__name__", ".+")
        .map_err(|e| crate::storage::StorageError::Other(e.to_string()))?;
    let mut by_metric: HashMap<String, u64> = HashMap::new();
    let mut pairs: HashMap<String, u64> = HashMap::new();
    let mut bytes: HashMap<String, u64> = HashMap::new();
    let mut values: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    for (n, s) in querier.select(&hints, &[all])?.enumerate() {
        if n >= TSDB_STATUS_SERIES_MAX {
            break;
        }
        let s = s?;
        for l in &s.labels {
            if l.name == "__name__" {
                *by_metric.entry(l.value.to_string()).or_default() += 1;
            }
            *pairs.entry(format!("{}={}", l.name, l.value)).or_default() += 1;
            *bytes.entry(l.name.to_string()).or_default() += l.value.len() as u64;
            values
                .entry(l.name.to_string())
                .or_default()
                .insert(l.value.to_string());
        }
    }
    let value_counts = values
        .into_iter()
        .map(|(k, v)| (k, v.len() as u64))
        .collect();
    Ok(json!({
        "seriesCountByMetricName": top(by_metric, limit),
        "labelValueCountByLabelName": top(value_counts, limit),
        "memoryInBytesByLabelName": top(bytes, limit),
        "seriesCountByLabelValuePair": top(pairs, limit),
    }))
}

fn cardinality_stats_empty() -> Result<Value, crate::storage::StorageError> {
    Ok(json!({
        "seriesCountByMetricName": [],
        "labelValueCountByLabelName": [],
        "memoryInBytesByLabelName": [],
        "seriesCountByLabelValuePair": [],
    }))
}

async fn tsdb_status(State(x): State<Arc<Extras>>, RawQuery(q): RawQuery) -> Response {
    let p = params(q, &Bytes::new());
    let limit = match param(&p, "limit") {
        None => 10,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "bad_data",
                    "limit must be a positive number".to_string(),
                )
            }
        },
    };
    let head = x.head_stats.as_ref().map(|f| f()).unwrap_or_default();
    let store = x.queryable.clone();
    // Only the head's range, like Prometheus's head postings; all time without a head.
    let (mint, maxt) = match (&x.head_stats, head.min_time_ms, head.max_time_ms) {
        (Some(_), Some(lo), Some(hi)) => (lo, hi),
        (Some(_), _, _) => (i64::MAX, i64::MIN),
        (None, _, _) => (i64::MIN, i64::MAX),
    };
    let stats = tokio::task::spawn_blocking(move || {
        if mint > maxt {
            // An empty head: nothing to count.
            return cardinality_stats_empty();
        }
        cardinality_stats(store.as_ref(), mint, maxt, limit)
    })
    .await;
    let mut data = match stats {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
        Err(e) => return api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    };
    let mut head_json = json!({
        "numSeries": head.num_series,
        // An empty head reports Prometheus's sentinels: min > max.
        "minTime": head.min_time_ms.unwrap_or(i64::MAX),
        "maxTime": head.max_time_ms.unwrap_or(i64::MIN),
    });
    if let Some(c) = head.chunk_count {
        head_json["chunkCount"] = json!(c);
    }
    data["headStats"] = head_json;
    success(data)
}

// ---- query text ------------------------------------------------------------

/// The `query` parameter, or `None` after which `no_query()` is the answer.
fn query_param(p: &[(String, String)]) -> Option<String> {
    param(p, "query").map(str::to_string)
}

fn no_query() -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        "bad_data",
        "invalid parameter \"query\": query must not be empty".to_string(),
    )
}

/// `format_query`: the query pretty-printed by promql-parser.
async fn format_query(RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = params(q, &body);
    let Some(text) = query_param(&p) else {
        return no_query();
    };
    match promql_parser::parser::parse(&text) {
        Ok(expr) => success(Value::String(expr.prettify())),
        Err(e) => api_error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            format!("invalid parameter \"query\": {e}"),
        ),
    }
}

/// `parse_query` returns Prometheus's JSON AST, which promql-parser cannot produce;
/// a query that parses gets a clear error saying so.
async fn parse_query(RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = params(q, &body);
    let Some(text) = query_param(&p) else {
        return no_query();
    };
    match promql_parser::parser::parse(&text) {
        Ok(_) => api_error(
            StatusCode::NOT_IMPLEMENTED,
            "unavailable",
            "parse_query is not supported by hearth: its JSON syntax tree is not implemented"
                .to_string(),
        ),
        Err(e) => api_error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            format!("invalid parameter \"query\": {e}"),
        ),
    }
}

/// hearth stores no exemplars, so every query has none.
async fn query_exemplars(RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = params(q, &body);
    let Some(text) = query_param(&p) else {
        return no_query();
    };
    if let Err(e) = crate::promql::parse(&text) {
        return api_error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            format!("invalid parameter \"query\": {e}"),
        );
    }
    success(json!([]))
}

/// Parses an optional integer parameter as Go's `strconv.Atoi` would; absent
/// means -1 (no limit). The error is Prometheus's `bad_data` answer.
fn int_param(p: &[(String, String)], name: &str) -> Result<i64, Box<Response>> {
    match param(p, name) {
        None => Ok(-1),
        Some(s) => s.parse::<i64>().map_err(|_| {
            Box::new(api_error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                format!("{name} must be a number"),
            ))
        }),
    }
}

fn metadata_json(m: &MetricMetadata) -> Map<String, Value> {
    let mut o = Map::new();
    o.insert("type".into(), json!(m.kind.as_str()));
    o.insert("help".into(), json!(m.help));
    o.insert("unit".into(), json!(m.unit));
    o
}

fn active_targets(x: &Extras) -> Vec<TargetInfo> {
    match &x.targets {
        Some(f) => f().0,
        None => Vec::new(),
    }
}

/// `GET /api/v1/metadata?metric=…&limit=…&limit_per_metric=…`: the distinct
/// metadata of each metric family over all active targets. As in Prometheus,
/// `limit` caps the number of families and `limit_per_metric` (when positive)
/// the entries per family; families are taken in name order.
async fn metadata(State(x): State<Arc<Extras>>, RawQuery(q): RawQuery) -> Response {
    let p = params(q, &Bytes::new());
    let limit = match int_param(&p, "limit") {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let per_metric = match int_param(&p, "limit_per_metric") {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let metric = param(&p, "metric");
    let mut families: BTreeMap<String, Vec<MetricMetadata>> = BTreeMap::new();
    let mut add = |name: &str, m: &MetricMetadata| {
        let entries = families.entry(name.to_string()).or_default();
        if per_metric > 0 && entries.len() as i64 >= per_metric {
            return;
        }
        if !entries.contains(m) {
            entries.push(m.clone());
        }
    };
    for t in active_targets(&x) {
        let md = t.status.metadata.clone();
        match metric {
            None => md.iter().for_each(|(name, m)| add(name, m)),
            Some(name) => {
                if let Some(m) = md.get(name) {
                    add(name, m)
                }
            }
        }
    }
    let mut data = Map::new();
    for (name, entries) in families {
        if limit >= 0 && data.len() as i64 >= limit {
            break;
        }
        let list = entries.iter().map(|m| Value::Object(metadata_json(m)));
        data.insert(name, Value::Array(list.collect()));
    }
    success(Value::Object(data))
}

/// `GET /api/v1/targets/metadata?match_target=…&metric=…&limit=…`: metadata per
/// active target. Like Prometheus, `limit` is checked between targets, so the
/// last target's entries are all listed; with `metric` the entries name no
/// metric.
async fn targets_metadata(State(x): State<Arc<Extras>>, RawQuery(q): RawQuery) -> Response {
    let p = params(q, &Bytes::new());
    let limit = match int_param(&p, "limit") {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let matchers = match param(&p, "match_target").map(crate::labels::parse_selector) {
        None => Vec::new(),
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                format!("invalid parameter \"match_target\": {e}"),
            )
        }
    };
    let metric = param(&p, "metric");
    let mut out: Vec<Value> = Vec::new();
    for t in active_targets(&x) {
        if limit >= 0 && out.len() as i64 >= limit {
            break;
        }
        if !matchers.iter().all(|m| m.matches(t.labels.get(&m.name))) {
            continue;
        }
        let md = t.status.metadata.clone();
        let mut push = |name: Option<&str>, m: &MetricMetadata| {
            let mut o = Map::new();
            o.insert("target".into(), labels_json(&t.labels));
            if let Some(n) = name {
                o.insert("metric".into(), json!(n));
            }
            o.extend(metadata_json(m));
            out.push(Value::Object(o));
        };
        match metric {
            None => md.iter().for_each(|(name, m)| push(Some(name), m)),
            Some(name) => {
                if let Some(m) = md.get(name) {
                    push(None, m)
                }
            }
        }
    }
    success(Value::Array(out))
}

// ---- targets and admin -----------------------------------------------------

fn active_target_json(t: &TargetInfo) -> Value {
    let s = &t.status;
    let last_scrape = if s.last_scrape_ms == 0 {
        "0001-01-01T00:00:00Z".to_string()
    } else {
        rfc3339(s.last_scrape_ms)
    };
    json!({
        "discoveredLabels": labels_json(&t.discovered_labels),
        "labels": labels_json(&t.labels),
        "scrapePool": t.job,
        "scrapeUrl": t.scrape_url,
        "globalUrl": t.global_url,
        "lastError": s.last_error,
        "lastScrape": last_scrape,
        "lastScrapeDuration": s.last_scrape_duration_s,
        "health": s.health.as_str(),
        "scrapeInterval": format_duration_ms(t.interval_ms),
        "scrapeTimeout": format_duration_ms(t.timeout_ms),
    })
}

/// `GET /api/v1/targets?state=active|dropped|any&scrapePool=…`.
async fn targets(State(x): State<Arc<Extras>>, RawQuery(q): RawQuery) -> Response {
    let p = params(q, &Bytes::new());
    let state = param(&p, "state").unwrap_or("any").to_lowercase();
    let pool = param(&p, "scrapePool");
    let (active, dropped) = match &x.targets {
        Some(f) => f(),
        None => (Vec::new(), Vec::new()),
    };
    let mut counts = Map::new();
    for (job, _) in &dropped {
        let c = counts.entry(job.clone()).or_insert(json!(0));
        *c = json!(c.as_u64().unwrap_or(0) + 1);
    }
    let keep = |job: &str| pool.is_none_or(|p| p == job);
    let mut data = Map::new();
    if state == "active" || state == "any" || state.is_empty() {
        let list: Vec<Value> = active
            .iter()
            .filter(|t| keep(&t.job))
            .map(active_target_json)
            .collect();
        data.insert("activeTargets".into(), Value::Array(list));
    } else {
        data.insert("activeTargets".into(), json!([]));
    }
    if state == "dropped" || state == "any" || state.is_empty() {
        let list: Vec<Value> = dropped
            .iter()
            .filter(|(job, _)| keep(job))
            .map(|(job, l)| json!({"discoveredLabels": labels_json(l), "scrapePool": job}))
            .collect();
        data.insert("droppedTargets".into(), Value::Array(list));
    } else {
        data.insert("droppedTargets".into(), json!([]));
    }
    data.insert("droppedTargetCounts".into(), Value::Object(counts));
    success(Value::Object(data))
}

async fn clean_tombstones(State(x): State<Arc<Extras>>) -> Response {
    let Some(clean) = x.clean_tombstones.clone() else {
        return api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "admin APIs disabled".to_string(),
        );
    };
    match tokio::task::spawn_blocking(move || clean()).await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(m)) => api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", m),
        Err(e) => api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemStorage;
    use crate::storage::{stale_nan, Appendable};

    #[test]
    fn durations_print_like_model_duration() {
        assert_eq!(format_duration_ms(0), "0s");
        assert_eq!(format_duration_ms(15_000), "15s");
        assert_eq!(format_duration_ms(60_000), "1m");
        assert_eq!(format_duration_ms(5_400_000), "1h30m");
        assert_eq!(format_duration_ms(1_500), "1s500ms");
        assert_eq!(format_duration_ms(15 * 86_400_000), "15d");
        assert_eq!(format_duration_ms(14 * 86_400_000), "2w");
    }

    #[test]
    fn federation_takes_newest_sample_drops_stale_and_adds_external_labels() {
        let s = MemStorage::new();
        let mut app = s.appender();
        let a = Labels::from_pairs(&[("__name__", "up"), ("job", "a")]);
        let b = Labels::from_pairs(&[("__name__", "up"), ("job", "b"), ("instance", "x:1")]);
        let gone = Labels::from_pairs(&[("__name__", "gone")]);
        let old = Labels::from_pairs(&[("__name__", "aaa_old")]);
        app.append(0, &a, 1_000, 1.0).unwrap();
        app.append(0, &a, 2_000, 2.0).unwrap();
        app.append(0, &b, 2_000, 0.5).unwrap();
        app.append(0, &gone, 1_000, 1.0).unwrap();
        app.append(0, &gone, 2_000, stale_nan()).unwrap();
        app.append(0, &old, 10, 7.0).unwrap();
        app.commit().unwrap();
        let sets = vec![
            crate::labels::parse_selector("{__name__=~\".+\"}").unwrap(),
            crate::labels::parse_selector("up").unwrap(),
        ];
        let vec = federate_samples(&s, &sets, 500, 2_500).unwrap();
        let ext = BTreeMap::from([
            ("job".to_string(), "ext".to_string()),
            ("region".to_string(), "eu".to_string()),
        ]);
        let text = render_federation(&vec, &ext);
        // Series sort by name, then by their label sets (`instance` < `job`), as
        // Prometheus's merged series set is ordered.
        assert_eq!(
            text,
            "# TYPE up untyped\n\
             up{instance=\"x:1\",job=\"b\",region=\"eu\"} 0.5 2000\n\
             up{job=\"a\",instance=\"\",region=\"eu\"} 2 2000\n"
        );
    }
}
