//! Alertmanager's HTTP API v2 (`api/v2/openapi.yaml`): alerts, alert groups,
//! silences, status and receivers, with the same JSON shapes, filters and status
//! codes, so `amtool` and Grafana work against hearth.

use super::matchers::{matches_all, parse_matcher};
use super::silence::{sort_for_api, Silence, SilenceError, SilenceMatcher};
use super::types::{format_rfc3339_millis, is_zero, parse_rfc3339, zero_time, Alert};
use super::Alertmanager;
use crate::labels::{Labels, Matcher};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most alerts accepted in one `POST /api/v2/alerts`.
pub const POST_ALERTS_MAX: usize = 100_000;
/// Largest request body accepted, in bytes.
pub const BODY_LEN_MAX: usize = 32 << 20;

/// The API v2 router; mount it at the root of the Alertmanager's listener.
pub fn router(am: Arc<Alertmanager>) -> Router {
    Router::new()
        .route("/api/v2/alerts", get(get_alerts).post(post_alerts))
        .route("/api/v2/alerts/groups", get(get_alert_groups))
        .route("/api/v2/silences", get(get_silences).post(post_silences))
        .route(
            "/api/v2/silence/{id}",
            get(get_silence).delete(delete_silence),
        )
        .route("/api/v2/status", get(get_status))
        .route("/api/v2/receivers", get(get_receivers))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LEN_MAX))
        .with_state(am)
}

/// An API error response: a status and a JSON body.
struct ApiError {
    status: StatusCode,
    body: Value,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

fn swagger_err(status: StatusCode, code: u16, message: String) -> ApiError {
    ApiError {
        status,
        body: json!({ "code": code, "message": message }),
    }
}

fn string_err(status: StatusCode, message: String) -> ApiError {
    ApiError {
        status,
        body: Value::String(message),
    }
}

/// A go-swagger style error: `{"code":…, "message":…}`.
fn swagger_error(status: StatusCode, code: u16, message: String) -> Response {
    (status, Json(json!({ "code": code, "message": message }))).into_response()
}

/// An error whose payload is a bare JSON string, as Alertmanager's handlers send.
fn string_error(status: StatusCode, message: String) -> Response {
    (status, Json(Value::String(message))).into_response()
}

/// Query parameters, repeated ones kept.
fn query_params(raw: Option<String>) -> Vec<(String, String)> {
    raw.map(|r| crate::web::form_pairs(&r)).unwrap_or_default()
}

/// The filters the alert endpoints take.
struct AlertFilter {
    matchers: Vec<Matcher>,
    active: bool,
    silenced: bool,
    inhibited: bool,
    unprocessed: bool,
    receiver: Option<regex::Regex>,
}

fn parse_bool(k: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(swagger_err(
            StatusCode::BAD_REQUEST,
            400,
            format!("{k} in query must be of type boolean: {v:?}"),
        )),
    }
}

fn parse_filter(raw: Option<String>) -> Result<AlertFilter, ApiError> {
    let mut f = AlertFilter {
        matchers: Vec::new(),
        active: true,
        silenced: true,
        inhibited: true,
        unprocessed: true,
        receiver: None,
    };
    for (k, v) in query_params(raw) {
        match k.as_str() {
            "filter" => f.matchers.push(
                parse_matcher(&v)
                    .map_err(|e| string_err(StatusCode::BAD_REQUEST, e.to_string()))?,
            ),
            "active" => f.active = parse_bool(&k, &v)?,
            "silenced" => f.silenced = parse_bool(&k, &v)?,
            "inhibited" => f.inhibited = parse_bool(&k, &v)?,
            "unprocessed" => f.unprocessed = parse_bool(&k, &v)?,
            "receiver" if !v.is_empty() => {
                f.receiver = Some(regex::Regex::new(&format!("^(?:{v})$")).map_err(|e| {
                    string_err(
                        StatusCode::BAD_REQUEST,
                        format!("failed to parse receiver param: {e}"),
                    )
                })?)
            }
            _ => {}
        }
    }
    Ok(f)
}

/// An alert as the API returns it, with its status computed now.
#[derive(Serialize)]
struct GettableAlert {
    annotations: BTreeMap<String, String>,
    #[serde(rename = "endsAt")]
    ends_at: String,
    fingerprint: String,
    receivers: Vec<Value>,
    #[serde(rename = "startsAt")]
    starts_at: String,
    status: Value,
    #[serde(rename = "updatedAt")]
    updated_at: String,
    #[serde(rename = "generatorURL", skip_serializing_if = "String::is_empty")]
    generator_url: String,
    labels: BTreeMap<String, String>,
}

fn labels_map(l: &Labels) -> BTreeMap<String, String> {
    l.iter()
        .map(|l| (l.name.to_string(), l.value.to_string()))
        .collect()
}

/// The alert in API form if it passes the filter.
fn gettable(
    am: &Alertmanager,
    a: &Alert,
    f: &AlertFilter,
    now: jiff::Timestamp,
) -> Option<GettableAlert> {
    if !is_zero(a.ends_at) && a.ends_at < now {
        return None;
    }
    let loaded = am.loaded();
    let receivers = loaded.routes.receivers_for(&a.labels);
    if let Some(re) = &f.receiver {
        if !receivers.iter().any(|r| re.is_match(r)) {
            return None;
        }
    }
    let silenced_by = am.silences.mutes(&a.labels);
    let inhibited_by: Vec<String> = loaded
        .inhibitor
        .inhibited_by(&a.labels, now)
        .map(|fp| format!("{fp:016x}"))
        .into_iter()
        .collect();
    let suppressed = !silenced_by.is_empty() || !inhibited_by.is_empty();
    if !f.active && !suppressed {
        return None;
    }
    if !f.silenced && !silenced_by.is_empty() {
        return None;
    }
    if !f.inhibited && !inhibited_by.is_empty() {
        return None;
    }
    if !matches_all(&f.matchers, &a.labels) {
        return None;
    }
    let mut seen = std::collections::BTreeSet::new();
    Some(GettableAlert {
        annotations: (*a.annotations).clone(),
        ends_at: format_rfc3339_millis(a.ends_at),
        fingerprint: format!("{:016x}", a.fingerprint()),
        receivers: receivers
            .into_iter()
            .filter(|r| seen.insert(r.clone()))
            .map(|r| json!({ "name": r }))
            .collect(),
        starts_at: format_rfc3339_millis(a.starts_at),
        status: json!({
            "inhibitedBy": inhibited_by,
            "silencedBy": silenced_by,
            "state": if suppressed { "suppressed" } else { "active" },
        }),
        updated_at: format_rfc3339_millis(a.updated_at),
        generator_url: a.generator_url.to_string(),
        labels: labels_map(&a.labels),
    })
}

async fn get_alerts(State(am): State<Arc<Alertmanager>>, RawQuery(q): RawQuery) -> Response {
    let f = match parse_filter(q) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let now = am.clock.now();
    let mut out: Vec<GettableAlert> = am
        .alerts
        .list()
        .iter()
        .filter_map(|a| gettable(&am, a, &f, now))
        .collect();
    out.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    Json(out).into_response()
}

async fn get_alert_groups(State(am): State<Arc<Alertmanager>>, RawQuery(q): RawQuery) -> Response {
    let f = match parse_filter(q) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let now = am.clock.now();
    let mut out = Vec::new();
    for g in am.loaded().dispatcher.groups() {
        if let Some(re) = &f.receiver {
            if !re.is_match(&g.opts.receiver) {
                continue;
            }
        }
        let mut alerts: Vec<GettableAlert> = g
            .alerts()
            .iter()
            .filter_map(|a| gettable(&am, a, &f, now))
            .collect();
        if alerts.is_empty() {
            continue;
        }
        alerts.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        out.push(json!({
            "labels": labels_map(&g.labels),
            "receiver": { "name": g.opts.receiver },
            "alerts": alerts,
        }));
    }
    Json(out).into_response()
}

/// `postableAlert`; `labels` is required.
#[derive(Deserialize)]
struct PostableAlert {
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    starts_at: Option<String>,
    #[serde(rename = "endsAt")]
    ends_at: Option<String>,
    #[serde(rename = "generatorURL", default)]
    generator_url: String,
}

fn opt_time(field: &str, i: usize, v: &Option<String>) -> Result<jiff::Timestamp, ApiError> {
    match v.as_deref() {
        None | Some("") => Ok(zero_time()),
        Some(s) => parse_rfc3339(s).map_err(|e| {
            swagger_err(
                StatusCode::UNPROCESSABLE_ENTITY,
                601,
                format!("{i}.{field} in body must be of type date-time: {e}"),
            )
        }),
    }
}

async fn post_alerts(State(am): State<Arc<Alertmanager>>, body: Bytes) -> Response {
    let posted: Vec<PostableAlert> = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return swagger_error(
                StatusCode::BAD_REQUEST,
                400,
                format!("parsing alerts body from \"\" failed, because {e}"),
            )
        }
    };
    if posted.len() > POST_ALERTS_MAX {
        return string_error(
            StatusCode::BAD_REQUEST,
            format!("too many alerts in one request (at most {POST_ALERTS_MAX})"),
        );
    }
    let mut alerts = Vec::with_capacity(posted.len());
    for (i, p) in posted.iter().enumerate() {
        let Some(labels) = &p.labels else {
            return swagger_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                602,
                format!("{i}.labels in body is required"),
            );
        };
        let starts_at = match opt_time("startsAt", i, &p.starts_at) {
            Ok(t) => t,
            Err(r) => return r.into_response(),
        };
        let ends_at = match opt_time("endsAt", i, &p.ends_at) {
            Ok(t) => t,
            Err(r) => return r.into_response(),
        };
        let pairs: Vec<(&String, &String)> = labels.iter().collect();
        alerts.push(Alert {
            labels: Labels::from_pairs(&pairs),
            annotations: p
                .annotations
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<BTreeMap<_, _>>()
                .into(),
            starts_at,
            ends_at,
            generator_url: p.generator_url.as_str().into(),
            updated_at: zero_time(),
            timeout: false,
        });
    }
    let res = am.put_alerts(alerts);
    if !res.errors.is_empty() {
        return string_error(StatusCode::BAD_REQUEST, res.errors.join("; "));
    }
    StatusCode::OK.into_response()
}

fn gettable_silence(s: &Silence, now: jiff::Timestamp) -> Value {
    json!({
        "id": s.id,
        "status": { "state": s.state(now).as_str() },
        "updatedAt": format_rfc3339_millis(s.updated_at),
        "matchers": s.matchers,
        "startsAt": format_rfc3339_millis(s.starts_at),
        "endsAt": format_rfc3339_millis(s.ends_at),
        "createdBy": s.created_by,
        "comment": s.comment,
    })
}

async fn get_silences(State(am): State<Arc<Alertmanager>>, RawQuery(q): RawQuery) -> Response {
    let mut filters = Vec::new();
    for (k, v) in query_params(q) {
        if k == "filter" {
            match parse_matcher(&v) {
                Ok(m) => filters.push(m),
                Err(e) => return string_error(StatusCode::BAD_REQUEST, e.to_string()),
            }
        }
    }
    let now = am.clock.now();
    let mut sils: Vec<Silence> = am
        .silences
        .list()
        .into_iter()
        .filter(|s| {
            // A filter matcher must accept the value of the silence's matcher
            // with the same name (Alertmanager's CheckSilenceMatchesFilterLabels).
            filters.iter().all(|f| {
                s.matchers
                    .iter()
                    .rev()
                    .find(|m| m.name == f.name)
                    .is_some_and(|m| f.matches(&m.value))
            })
        })
        .collect();
    sort_for_api(&mut sils, now);
    Json(
        sils.iter()
            .map(|s| gettable_silence(s, now))
            .collect::<Vec<_>>(),
    )
    .into_response()
}

/// `postableSilence`: every field but `id` is required.
#[derive(Deserialize)]
struct PostableSilence {
    #[serde(default)]
    id: String,
    matchers: Option<Vec<PostableMatcher>>,
    #[serde(rename = "startsAt")]
    starts_at: Option<String>,
    #[serde(rename = "endsAt")]
    ends_at: Option<String>,
    #[serde(rename = "createdBy")]
    created_by: Option<String>,
    comment: Option<String>,
}

#[derive(Deserialize)]
struct PostableMatcher {
    name: Option<String>,
    value: Option<String>,
    #[serde(rename = "isRegex")]
    is_regex: Option<bool>,
    #[serde(rename = "isEqual", default = "yes")]
    is_equal: bool,
}

fn yes() -> bool {
    true
}

async fn post_silences(State(am): State<Arc<Alertmanager>>, body: Bytes) -> Response {
    let p: PostableSilence = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return swagger_error(
                StatusCode::BAD_REQUEST,
                400,
                format!("parsing silence body from \"\" failed, because {e}"),
            )
        }
    };
    let required = |ok: bool, field: &str| {
        if ok {
            Ok(())
        } else {
            Err(swagger_err(
                StatusCode::UNPROCESSABLE_ENTITY,
                602,
                format!("silence.{field} in body is required"),
            ))
        }
    };
    let checks = [
        required(p.matchers.is_some(), "matchers"),
        required(p.starts_at.is_some(), "startsAt"),
        required(p.ends_at.is_some(), "endsAt"),
        required(p.created_by.is_some(), "createdBy"),
        required(p.comment.is_some(), "comment"),
    ];
    for c in checks {
        if let Err(r) = c {
            return r.into_response();
        }
    }
    let posted_matchers = p.matchers.unwrap_or_default();
    if posted_matchers.is_empty() {
        return swagger_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            604,
            "silence.matchers in body should have at least 1 items".into(),
        );
    }
    let mut matchers = Vec::new();
    for (i, m) in posted_matchers.into_iter().enumerate() {
        let (Some(name), Some(value), Some(is_regex)) = (m.name, m.value, m.is_regex) else {
            return swagger_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                602,
                format!("silence.matchers.{i}: name, value and isRegex are required"),
            );
        };
        matchers.push(SilenceMatcher {
            name,
            value,
            is_regex,
            is_equal: m.is_equal,
        });
    }
    let parse = |f: &str, v: &str| {
        parse_rfc3339(v).map_err(|e| {
            swagger_err(
                StatusCode::UNPROCESSABLE_ENTITY,
                601,
                format!("silence.{f} in body must be of type date-time: {e}"),
            )
        })
    };
    let starts_at = match parse("startsAt", p.starts_at.as_deref().unwrap_or("")) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let ends_at = match parse("endsAt", p.ends_at.as_deref().unwrap_or("")) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    if starts_at >= ends_at {
        return string_error(
            StatusCode::BAD_REQUEST,
            "Failed to create silence: start time must be before end time".into(),
        );
    }
    if ends_at < am.clock.now() {
        return string_error(
            StatusCode::BAD_REQUEST,
            "Failed to create silence: end time can't be in the past".into(),
        );
    }
    let sil = Silence {
        id: p.id,
        matchers,
        starts_at,
        ends_at,
        updated_at: zero_time(),
        created_by: p.created_by.unwrap_or_default(),
        comment: p.comment.unwrap_or_default(),
    };
    match am.silences.set(sil) {
        Ok(id) => Json(json!({ "silenceID": id })).into_response(),
        Err(SilenceError::NotFound) => {
            string_error(StatusCode::NOT_FOUND, SilenceError::NotFound.to_string())
        }
        Err(e) => string_error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn get_silence(State(am): State<Arc<Alertmanager>>, Path(id): Path<String>) -> Response {
    match am.silences.get(&id) {
        Some(s) => Json(gettable_silence(&s, am.clock.now())).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn delete_silence(State(am): State<Arc<Alertmanager>>, Path(id): Path<String>) -> Response {
    match am.silences.expire(&id) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(SilenceError::NotFound) => {
            string_error(StatusCode::NOT_FOUND, SilenceError::NotFound.to_string())
        }
        Err(e) => string_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn get_status(State(am): State<Arc<Alertmanager>>) -> Response {
    Json(json!({
        "cluster": { "name": "", "peers": [], "status": "disabled" },
        "config": { "original": am.loaded().config.original },
        "uptime": format_rfc3339_millis(am.started),
        "versionInfo": {
            "branch": "",
            "buildDate": "",
            "buildUser": "",
            "goVersion": "",
            "revision": "",
            "version": env!("CARGO_PKG_VERSION"),
        },
    }))
    .into_response()
}

async fn get_receivers(State(am): State<Arc<Alertmanager>>) -> Response {
    let names: Vec<Value> = am
        .loaded()
        .config
        .receivers
        .iter()
        .map(|r| json!({ "name": r.name }))
        .collect();
    Json(names).into_response()
}
