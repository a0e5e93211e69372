//! `hearth cluster status|join|leave|remove`: a client of a running node's
//! `Cluster` gRPC service. Every member accepts these requests and forwards
//! membership changes to the meta leader.

use crate::cluster::pb;
use crate::cluster::runtime::peer_status;
use std::fmt::Write as _;
use std::time::Duration;

/// How long one request may take; membership changes wait for the log to commit
/// and for a joining node to catch up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for each member's own Raft state in `status`.
const MEMBER_STATUS_TIMEOUT: Duration = Duration::from_millis(1500);

/// A cluster tool request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterToolError {
    #[error("{address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("{address}: {action} refused: {reason}")]
    Refused {
        address: String,
        action: &'static str,
        reason: String,
    },
}

fn client(
    address: &str,
) -> Result<pb::cluster_client::ClusterClient<tonic::transport::Channel>, ClusterToolError> {
    let channel =
        crate::cluster::raft::channel(address).map_err(|reason| ClusterToolError::Unreachable {
            address: address.to_string(),
            reason,
        })?;
    Ok(pb::cluster_client::ClusterClient::new(channel))
}

/// Maps a failed call to an error naming the node and what went wrong; transport
/// failures and non-hearth peers read as "unreachable".
fn call_error(address: &str, action: &'static str, s: tonic::Status) -> ClusterToolError {
    match s.code() {
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => ClusterToolError::Unreachable {
            address: address.to_string(),
            reason: format!("no answer: {}", s.message()),
        },
        // A transport failure, or a member without a leader or quorum.
        tonic::Code::Unavailable => ClusterToolError::Unreachable {
            address: address.to_string(),
            reason: format!("unavailable: {}", s.message()),
        },
        tonic::Code::Unimplemented | tonic::Code::Unknown | tonic::Code::Internal => {
            ClusterToolError::Unreachable {
                address: address.to_string(),
                reason: format!(
                    "does not look like a hearth cluster address ({})",
                    s.message()
                ),
            }
        }
        _ => ClusterToolError::Refused {
            address: address.to_string(),
            action,
            reason: s.message().to_string(),
        },
    }
}

fn status_of(address: &str, s: tonic::Status) -> ClusterToolError {
    call_error(address, "status", s)
}

/// The cluster as the node at `address` sees it, one member a line, with each
/// member's own Raft state (asked directly; "unreachable" when it does not answer).
pub async fn status(address: &str) -> Result<String, ClusterToolError> {
    let st = peer_status(address, REQUEST_TIMEOUT)
        .await
        .map_err(|s| status_of(address, s))?;
    let mut asks = tokio::task::JoinSet::new();
    for (i, m) in st.members.iter().enumerate() {
        let addr = m.node.as_ref().map(|n| n.grpc_address.clone());
        if m.node_id == st.node_id {
            continue;
        }
        if let Some(addr) = addr.filter(|a| !a.is_empty()) {
            asks.spawn(async move { (i, peer_status(&addr, MEMBER_STATUS_TIMEOUT).await) });
        }
    }
    let mut raft_states: Vec<String> = st
        .members
        .iter()
        .map(|m| {
            if m.node_id == st.node_id {
                st.raft_state.clone()
            } else {
                "unreachable".to_string()
            }
        })
        .collect();
    while let Some(Ok((i, r))) = asks.join_next().await {
        if let (Ok(s), Some(slot)) = (r, raft_states.get_mut(i)) {
            *slot = s.raft_state;
        }
    }
    let mut out = String::new();
    let cluster_id = if st.cluster_id.is_empty() {
        "(not yet committed)"
    } else {
        st.cluster_id.as_str()
    };
    let leader = st
        .leader_id
        .map(|l| l.to_string())
        .unwrap_or_else(|| "none".into());
    let _ = writeln!(
        out,
        "cluster {cluster_id}  leader {leader}  term {}  ring epoch {}  (asked node {} at {address})",
        st.term, st.ring_epoch, st.node_id
    );
    let rows: Vec<[String; 6]> = st
        .members
        .iter()
        .zip(&raft_states)
        .map(|(m, raft)| {
            let node = m.node.clone().unwrap_or_default();
            [
                m.node_id.to_string(),
                m.role.clone(),
                m.state.clone(),
                raft.clone(),
                node.grpc_address,
                node.http_address,
            ]
        })
        .collect();
    let header = ["ID", "ROLE", "STATE", "RAFT", "GRPC", "HTTP"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    Ok(out)
}

/// Removes member `node_id` through the node at `address`.
pub async fn remove(address: &str, node_id: u64) -> Result<String, ClusterToolError> {
    let mut req = tonic::Request::new(pb::RemoveRequest { node_id });
    req.set_timeout(REQUEST_TIMEOUT);
    let resp = client(address)?
        .remove(req)
        .await
        .map_err(|s| call_error(address, "remove", s))?
        .into_inner();
    let mut out = format!("removed node {node_id} (leader {})\n", resp.leader_id);
    if let Some(p) = resp.promoted {
        let _ = writeln!(out, "learner {p} is now a voter in its place");
    }
    Ok(out)
}

/// The node at `address` leaves its cluster: asks it for its id, then removes it.
pub async fn leave(address: &str) -> Result<String, ClusterToolError> {
    let st = peer_status(address, REQUEST_TIMEOUT)
        .await
        .map_err(|s| status_of(address, s))?;
    let mut out = remove(address, st.node_id).await?;
    let _ = writeln!(
        out,
        "node {} has left; stop it (its data directory cannot rejoin this cluster as another node)",
        st.node_id
    );
    Ok(out)
}

/// Asks the cluster, through its member at `address`, to add the node `node_id`
/// reachable at `grpc_address` (a learner that catches up, then a voter while there
/// are fewer than five). The node must be running with `--cluster.listen-address`
/// and must not belong to another cluster; usually a node joins by itself with
/// `--cluster.join`, and this is for adding it from the outside.
pub async fn join(
    address: &str,
    node_id: u64,
    grpc_address: &str,
) -> Result<String, ClusterToolError> {
    let node = peer_status(grpc_address, REQUEST_TIMEOUT)
        .await
        .map_err(|s| status_of(grpc_address, s))?;
    if node.node_id != node_id {
        return Err(ClusterToolError::Refused {
            address: grpc_address.to_string(),
            action: "join",
            reason: format!("the node there has id {}, not {node_id}", node.node_id),
        });
    }
    let mut req = tonic::Request::new(pb::JoinRequest {
        node_id,
        node: Some(pb::Node {
            grpc_address: grpc_address.to_string(),
            http_address: node.node.map(|n| n.http_address).unwrap_or_default(),
        }),
        cluster_id: (!node.cluster_id.is_empty()).then_some(node.cluster_id),
    });
    req.set_timeout(REQUEST_TIMEOUT);
    let resp = client(address)?
        .join(req)
        .await
        .map_err(|s| call_error(address, "join", s))?
        .into_inner();
    Ok(format!(
        "node {node_id} joined cluster {} as a {} (leader {})\n",
        resp.cluster_id,
        if resp.voter { "voter" } else { "learner" },
        resp.leader_id
    ))
}
