//! Cluster-wide `/api/v1/targets`, `/api/v1/rules` and `/api/v1/alerts`: a
//! middleware that answers these from every member, not only this node.
//!
//! The node serves its own answer as usual, asks every other active member's HTTP
//! API for the same path and query with the header `X-Hearth-Scope: local` (which
//! makes that member answer for itself only, so a request never fans out twice), and
//! merges the JSON: targets are concatenated with a `scrapeNode` field naming the
//! node that scrapes each one (dropped targets, identical on every node since all
//! run the same discovery, are kept once); rule groups are keyed by file and name,
//! keeping the most recently evaluated copy; alerts are kept once per label set. A
//! member that does not answer within `--cluster.query-timeout` is left out with a
//! Prometheus `warnings` entry, or fails the request with
//! `--cluster.partial-response=false`.

use super::api_error;
use crate::cluster::{FanoutOptions, Peer, PeersFn};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// The header that asks a member for its own answer only.
pub const SCOPE_HEADER: &str = "x-hearth-scope";
/// Largest answer read from a member.
const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The endpoints answered cluster-wide.
const PATHS: [&str; 3] = ["/api/v1/targets", "/api/v1/rules", "/api/v1/alerts"];

/// What the middleware needs: who the other members are and how long to wait.
#[derive(Clone)]
pub struct ClusterWide {
    /// This node's id, shown as `scrapeNode` on its own targets.
    pub node_id: u64,
    /// The other members.
    pub peers: PeersFn,
    pub options: FanoutOptions,
    /// Client for the members' HTTP APIs.
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl ClusterWide {
    pub fn new(node_id: u64, peers: PeersFn, options: FanoutOptions) -> ClusterWide {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        ClusterWide {
            node_id,
            peers,
            options,
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Fetches `path_and_query` from `peer` with the local-scope header.
    async fn fetch(&self, peer: &Peer, path_and_query: &str) -> Result<Value, String> {
        let uri = format!("http://{}{path_and_query}", peer.http_address);
        let req = axum::http::Request::get(&uri)
            .header(SCOPE_HEADER, "local")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("bad request {uri}: {e}"))?;
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), BODY_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if !status.is_success() {
                return Err(format!(
                    "answered {status}: {}",
                    String::from_utf8_lossy(&body)
                ));
            }
            serde_json::from_slice::<Value>(&body).map_err(|e| format!("answered bad JSON: {e}"))
        };
        match tokio::time::timeout(self.options.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(format!("did not answer within {:?}", self.options.timeout)),
        }
    }
}

/// The middleware: passes other requests through; for the cluster-wide endpoints
/// without the local-scope header, merges every member's answer.
pub async fn cluster_wide(
    State(cw): State<Arc<ClusterWide>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    if req.method() != axum::http::Method::GET
        || !PATHS.contains(&path.as_str())
        || req.headers().contains_key(SCOPE_HEADER)
    {
        return next.run(req).await;
    }
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let peers: Vec<Peer> = (cw.peers)();
    let up: Vec<Peer> = peers.iter().filter(|p| !p.down).cloned().collect();
    let mut asks = tokio::task::JoinSet::new();
    for (i, p) in up.iter().cloned().enumerate() {
        let cw = cw.clone();
        let pq = path_and_query.clone();
        asks.spawn(async move { (i, cw.fetch(&p, &pq).await) });
    }
    let local = next.run(req).await;
    let mut remote: Vec<Result<Value, String>> = up
        .iter()
        .map(|_| Err("did not answer".to_string()))
        .collect();
    while let Some(r) = asks.join_next().await {
        if let Ok((i, r)) = r {
            remote[i] = r;
        }
    }
    if !local.status().is_success() {
        return local;
    }
    let local = match local.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    };
    let local: Value = match serde_json::from_slice(&local) {
        Ok(v) => v,
        Err(e) => return api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    };
    let mut answers = vec![(cw.node_id, local)];
    let mut warnings = Vec::new();
    for p in peers.iter().filter(|p| p.down) {
        warnings.push(format!(
            "cluster: node {} ({}) is marked down; its part is missing from this result",
            p.node_id, p.http_address
        ));
    }
    for (p, r) in up.iter().zip(remote) {
        match r {
            Ok(v) => answers.push((p.node_id, v)),
            Err(e) => warnings.push(format!(
                "cluster: node {} ({}) {e}; its part is missing from this result",
                p.node_id, p.http_address
            )),
        }
    }
    if !warnings.is_empty() && !cw.options.partial_response {
        return api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "{} (partial responses are off: --cluster.partial-response=false)",
                warnings.join("; ")
            ),
        );
    }
    answers.sort_by_key(|(id, _)| *id);
    let data = match path.as_str() {
        "/api/v1/targets" => merge_targets(&answers),
        "/api/v1/rules" => merge_rules(&answers),
        _ => merge_alerts(&answers),
    };
    let mut body = json!({"status": "success", "data": data});
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    axum::Json(body).into_response()
}

fn array<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v["data"][key].as_array().into_iter().flatten()
}

/// Active targets of every node, each with `scrapeNode`; dropped targets once.
pub fn merge_targets(answers: &[(u64, Value)]) -> Value {
    let mut active = Vec::new();
    let mut dropped = Vec::new();
    let mut seen_dropped = HashSet::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for (node, v) in answers {
        for t in array(v, "activeTargets") {
            let mut t = t.clone();
            t["scrapeNode"] = json!(node.to_string());
            active.push(t);
        }
        for t in array(v, "droppedTargets") {
            if seen_dropped.insert(t.to_string()) {
                dropped.push(t.clone());
            }
        }
        if let Some(c) = v["data"]["droppedTargetCounts"].as_object() {
            for (job, n) in c {
                let e = counts.entry(job.clone()).or_insert(0);
                *e = (*e).max(n.as_u64().unwrap_or(0));
            }
        }
    }
    json!({
        "activeTargets": active,
        "droppedTargets": dropped,
        "droppedTargetCounts": counts,
    })
}

/// Rule groups by (file, name), the most recently evaluated copy of each, in the
/// order first seen.
pub fn merge_rules(answers: &[(u64, Value)]) -> Value {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut groups: BTreeMap<(String, String), Value> = BTreeMap::new();
    for (_, v) in answers {
        for g in array(v, "groups") {
            let key = (
                g["file"].as_str().unwrap_or_default().to_string(),
                g["name"].as_str().unwrap_or_default().to_string(),
            );
            match groups.get(&key) {
                None => {
                    order.push(key.clone());
                    groups.insert(key, g.clone());
                }
                Some(old) => {
                    let newer = g["lastEvaluation"].as_str().unwrap_or_default()
                        > old["lastEvaluation"].as_str().unwrap_or_default();
                    if newer {
                        groups.insert(key, g.clone());
                    }
                }
            }
        }
    }
    let list: Vec<Value> = order.iter().filter_map(|k| groups.remove(k)).collect();
    let mut data = Map::new();
    data.insert("groups".into(), Value::Array(list));
    Value::Object(data)
}

/// Alerts of every node, one per label set.
pub fn merge_alerts(answers: &[(u64, Value)]) -> Value {
    let mut seen = HashSet::new();
    let mut alerts = Vec::new();
    for (_, v) in answers {
        for a in array(v, "alerts") {
            if seen.insert(a["labels"].to_string()) {
                alerts.push(a.clone());
            }
        }
    }
    json!({ "alerts": alerts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_carry_their_node_and_dropped_ones_appear_once() {
        let a = json!({"data": {"activeTargets": [{"scrapeUrl": "a"}],
            "droppedTargets": [{"scrapePool": "j", "discoveredLabels": {"x": "1"}}],
            "droppedTargetCounts": {"j": 1}}});
        let b = json!({"data": {"activeTargets": [{"scrapeUrl": "b"}],
            "droppedTargets": [{"scrapePool": "j", "discoveredLabels": {"x": "1"}}],
            "droppedTargetCounts": {"j": 1}}});
        let m = merge_targets(&[(1, a), (2, b)]);
        assert_eq!(
            m["activeTargets"],
            json!([{"scrapeUrl": "a", "scrapeNode": "1"}, {"scrapeUrl": "b", "scrapeNode": "2"}])
        );
        assert_eq!(m["droppedTargets"].as_array().unwrap().len(), 1);
        assert_eq!(m["droppedTargetCounts"], json!({"j": 1}));
    }

    #[test]
    fn the_most_recently_evaluated_group_copy_wins() {
        let a = json!({"data": {"groups": [{"file": "f", "name": "g", "lastEvaluation": "2026-01-01T00:00:00Z", "n": 1}]}});
        let b = json!({"data": {"groups": [{"file": "f", "name": "g", "lastEvaluation": "2026-01-01T00:00:05Z", "n": 2},
            {"file": "f", "name": "h", "lastEvaluation": "0001-01-01T00:00:00Z"}]}});
        let m = merge_rules(&[(1, a), (2, b)]);
        let groups = m["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0]["n"], 2);
        assert_eq!(groups[1]["name"], "h");
    }

    #[test]
    fn alerts_are_kept_once_per_label_set() {
        let a = json!({"data": {"alerts": [{"labels": {"alertname": "A"}}]}});
        let b = json!({"data": {"alerts": [{"labels": {"alertname": "A"}}, {"labels": {"alertname": "B"}}]}});
        let m = merge_alerts(&[(1, a), (2, b)]);
        assert_eq!(m["alerts"].as_array().unwrap().len(), 2);
    }
}
