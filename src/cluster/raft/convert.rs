//! Conversions between openraft's messages and their protobuf form
//! (`proto/cluster.proto`). The only place that knows both.

use super::{HearthConfig, Nid, Payload};
use crate::cluster::pb;
use crate::cluster::state::NodeAddr;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership, Vote,
};
use std::collections::{BTreeMap, BTreeSet};

/// A protobuf message that does not describe a valid Raft message.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("cluster rpc: message {message} lacks field {field}")]
    Missing {
        message: &'static str,
        field: &'static str,
    },
    #[error("cluster rpc: entry {index}: bad command: {reason}")]
    BadCommand { index: u64, reason: String },
}

impl From<ConvertError> for tonic::Status {
    fn from(e: ConvertError) -> tonic::Status {
        tonic::Status::invalid_argument(e.to_string())
    }
}

fn missing(message: &'static str, field: &'static str) -> ConvertError {
    ConvertError::Missing { message, field }
}

pub fn vote_to_pb(v: &Vote<Nid>) -> pb::Vote {
    pb::Vote {
        term: v.leader_id.term,
        node_id: v.leader_id.node_id,
        committed: v.committed,
    }
}

pub fn vote_from_pb(v: Option<pb::Vote>, message: &'static str) -> Result<Vote<Nid>, ConvertError> {
    let v = v.ok_or_else(|| missing(message, "vote"))?;
    Ok(if v.committed {
        Vote::new_committed(v.term, v.node_id)
    } else {
        Vote::new(v.term, v.node_id)
    })
}

pub fn log_id_to_pb(l: &LogId<Nid>) -> pb::LogId {
    pb::LogId {
        term: l.leader_id.term,
        node_id: l.leader_id.node_id,
        index: l.index,
    }
}

pub fn log_id_from_pb(l: &pb::LogId) -> LogId<Nid> {
    LogId::new(CommittedLeaderId::new(l.term, l.node_id), l.index)
}

fn opt_log_id_to_pb(l: &Option<LogId<Nid>>) -> Option<pb::LogId> {
    l.as_ref().map(log_id_to_pb)
}

fn opt_log_id_from_pb(l: &Option<pb::LogId>) -> Option<LogId<Nid>> {
    l.as_ref().map(log_id_from_pb)
}

pub fn node_to_pb(n: &NodeAddr) -> pb::Node {
    pb::Node {
        grpc_address: n.grpc_address.clone(),
        http_address: n.http_address.clone(),
    }
}

pub fn node_from_pb(n: pb::Node) -> NodeAddr {
    NodeAddr {
        grpc_address: n.grpc_address,
        http_address: n.http_address,
    }
}

pub fn membership_to_pb(m: &Membership<Nid, NodeAddr>) -> pb::Membership {
    pb::Membership {
        configs: m
            .get_joint_config()
            .iter()
            .map(|c| pb::NodeIdSet {
                ids: c.iter().copied().collect(),
            })
            .collect(),
        nodes: m.nodes().map(|(id, n)| (*id, node_to_pb(n))).collect(),
    }
}

pub fn membership_from_pb(m: pb::Membership) -> Membership<Nid, NodeAddr> {
    let configs: Vec<BTreeSet<Nid>> = m
        .configs
        .into_iter()
        .map(|c| c.ids.into_iter().collect())
        .collect();
    let nodes: BTreeMap<Nid, NodeAddr> = m
        .nodes
        .into_iter()
        .map(|(id, n)| (id, node_from_pb(n)))
        .collect();
    Membership::new(configs, nodes)
}

pub fn entry_to_pb<C: HearthConfig>(e: &Entry<C>) -> pb::Entry {
    use pb::entry::Payload as P;
    let payload = match &e.payload {
        EntryPayload::Blank => P::Blank(pb::Blank {}),
        EntryPayload::Normal(cmd) => P::Command(cmd.to_bytes()),
        EntryPayload::Membership(m) => P::Membership(membership_to_pb(m)),
    };
    pb::Entry {
        log_id: Some(log_id_to_pb(&e.log_id)),
        payload: Some(payload),
    }
}

pub fn entry_from_pb<C: HearthConfig>(e: pb::Entry) -> Result<Entry<C>, ConvertError> {
    use pb::entry::Payload as P;
    let log_id = log_id_from_pb(&e.log_id.ok_or_else(|| missing("Entry", "log_id"))?);
    let payload = match e.payload.ok_or_else(|| missing("Entry", "payload"))? {
        P::Blank(_) => EntryPayload::Blank,
        P::Command(b) => {
            let cmd = C::D::from_bytes(&b).map_err(|reason| ConvertError::BadCommand {
                index: log_id.index,
                reason,
            })?;
            EntryPayload::Normal(cmd)
        }
        P::Membership(m) => EntryPayload::Membership(membership_from_pb(m)),
    };
    Ok(Entry { log_id, payload })
}

/// `group_id` names the WAL group addressed; 0 for the meta group.
pub fn append_request_to_pb<C: HearthConfig>(
    r: &AppendEntriesRequest<C>,
    group_id: u64,
) -> pb::AppendEntriesRequest {
    pb::AppendEntriesRequest {
        vote: Some(vote_to_pb(&r.vote)),
        prev_log_id: opt_log_id_to_pb(&r.prev_log_id),
        entries: r.entries.iter().map(entry_to_pb).collect(),
        leader_commit: opt_log_id_to_pb(&r.leader_commit),
        group_id,
    }
}

pub fn append_request_from_pb<C: HearthConfig>(
    r: pb::AppendEntriesRequest,
) -> Result<AppendEntriesRequest<C>, ConvertError> {
    Ok(AppendEntriesRequest {
        vote: vote_from_pb(r.vote, "AppendEntriesRequest")?,
        prev_log_id: opt_log_id_from_pb(&r.prev_log_id),
        entries: r
            .entries
            .into_iter()
            .map(entry_from_pb)
            .collect::<Result<_, _>>()?,
        leader_commit: opt_log_id_from_pb(&r.leader_commit),
    })
}

pub fn append_response_to_pb(r: &AppendEntriesResponse<Nid>) -> pb::AppendEntriesResponse {
    use pb::append_entries_response::Result as R;
    let result = match r {
        AppendEntriesResponse::Success => R::Success(pb::Blank {}),
        AppendEntriesResponse::PartialSuccess(m) => R::PartialSuccess(pb::PartialSuccess {
            matching: opt_log_id_to_pb(m),
        }),
        AppendEntriesResponse::Conflict => R::Conflict(pb::Blank {}),
        AppendEntriesResponse::HigherVote(v) => R::HigherVote(vote_to_pb(v)),
    };
    pb::AppendEntriesResponse {
        result: Some(result),
    }
}

pub fn append_response_from_pb(
    r: pb::AppendEntriesResponse,
) -> Result<AppendEntriesResponse<Nid>, ConvertError> {
    use pb::append_entries_response::Result as R;
    Ok(
        match r
            .result
            .ok_or_else(|| missing("AppendEntriesResponse", "result"))?
        {
            R::Success(_) => AppendEntriesResponse::Success,
            R::PartialSuccess(p) => {
                AppendEntriesResponse::PartialSuccess(opt_log_id_from_pb(&p.matching))
            }
            R::Conflict(_) => AppendEntriesResponse::Conflict,
            R::HigherVote(v) => {
                AppendEntriesResponse::HigherVote(vote_from_pb(Some(v), "AppendEntriesResponse")?)
            }
        },
    )
}

pub fn vote_request_to_pb(r: &VoteRequest<Nid>, group_id: u64) -> pb::VoteRequest {
    pb::VoteRequest {
        vote: Some(vote_to_pb(&r.vote)),
        last_log_id: opt_log_id_to_pb(&r.last_log_id),
        group_id,
    }
}

pub fn vote_request_from_pb(r: pb::VoteRequest) -> Result<VoteRequest<Nid>, ConvertError> {
    Ok(VoteRequest {
        vote: vote_from_pb(r.vote, "VoteRequest")?,
        last_log_id: opt_log_id_from_pb(&r.last_log_id),
    })
}

pub fn vote_response_to_pb(r: &VoteResponse<Nid>) -> pb::VoteResponse {
    pb::VoteResponse {
        vote: Some(vote_to_pb(&r.vote)),
        vote_granted: r.vote_granted,
        last_log_id: opt_log_id_to_pb(&r.last_log_id),
    }
}

pub fn vote_response_from_pb(r: pb::VoteResponse) -> Result<VoteResponse<Nid>, ConvertError> {
    Ok(VoteResponse {
        vote: vote_from_pb(r.vote, "VoteResponse")?,
        vote_granted: r.vote_granted,
        last_log_id: opt_log_id_from_pb(&r.last_log_id),
    })
}

fn snapshot_meta_to_pb(m: &SnapshotMeta<Nid, NodeAddr>) -> pb::SnapshotMeta {
    pb::SnapshotMeta {
        last_log_id: opt_log_id_to_pb(&m.last_log_id),
        last_membership_log_id: opt_log_id_to_pb(m.last_membership.log_id()),
        last_membership: Some(membership_to_pb(m.last_membership.membership())),
        snapshot_id: m.snapshot_id.clone(),
    }
}

fn snapshot_meta_from_pb(m: pb::SnapshotMeta) -> Result<SnapshotMeta<Nid, NodeAddr>, ConvertError> {
    let membership = m
        .last_membership
        .ok_or_else(|| missing("SnapshotMeta", "last_membership"))?;
    Ok(SnapshotMeta {
        last_log_id: opt_log_id_from_pb(&m.last_log_id),
        last_membership: StoredMembership::new(
            opt_log_id_from_pb(&m.last_membership_log_id),
            membership_from_pb(membership),
        ),
        snapshot_id: m.snapshot_id,
    })
}

pub fn snapshot_request_to_pb<C: HearthConfig>(
    r: &InstallSnapshotRequest<C>,
    group_id: u64,
) -> pb::InstallSnapshotRequest {
    pb::InstallSnapshotRequest {
        vote: Some(vote_to_pb(&r.vote)),
        meta: Some(snapshot_meta_to_pb(&r.meta)),
        offset: r.offset,
        data: r.data.clone(),
        done: r.done,
        group_id,
    }
}

pub fn snapshot_request_from_pb<C: HearthConfig>(
    r: pb::InstallSnapshotRequest,
) -> Result<InstallSnapshotRequest<C>, ConvertError> {
    Ok(InstallSnapshotRequest {
        vote: vote_from_pb(r.vote, "InstallSnapshotRequest")?,
        meta: snapshot_meta_from_pb(
            r.meta
                .ok_or_else(|| missing("InstallSnapshotRequest", "meta"))?,
        )?,
        offset: r.offset,
        data: r.data,
        done: r.done,
    })
}

pub fn snapshot_response_to_pb(r: &InstallSnapshotResponse<Nid>) -> pb::InstallSnapshotResponse {
    pb::InstallSnapshotResponse {
        vote: Some(vote_to_pb(&r.vote)),
        mismatch: None,
    }
}

pub fn snapshot_response_from_pb(
    r: pb::InstallSnapshotResponse,
) -> Result<InstallSnapshotResponse<Nid>, ConvertError> {
    Ok(InstallSnapshotResponse {
        vote: vote_from_pb(r.vote, "InstallSnapshotResponse")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::raft::TypeConfig;
    use crate::cluster::state::{Command, MemberState};
    use proptest::prelude::*;

    fn addr(i: u64) -> NodeAddr {
        NodeAddr {
            grpc_address: format!("h{i}:7000"),
            http_address: format!("h{i}:9090"),
        }
    }

    fn arb_log_id() -> impl Strategy<Value = LogId<Nid>> {
        (0u64..5, 0u64..5, 0u64..1000)
            .prop_map(|(t, n, i)| LogId::new(CommittedLeaderId::new(t, n), i))
    }

    fn arb_entry() -> impl Strategy<Value = Entry<TypeConfig>> {
        let payload = prop_oneof![
            Just(EntryPayload::Blank),
            (0u64..5).prop_map(|n| EntryPayload::Normal(Command::SetMemberState {
                node_id: n,
                state: MemberState::Down
            })),
            "[a-z0-9]{0,8}"
                .prop_map(|s| EntryPayload::Normal(Command::SetClusterId { cluster_id: s })),
            (1u64..6, 0u64..3).prop_map(|(voters, learners)| {
                let ids: BTreeSet<Nid> = (1..=voters).collect();
                let nodes: BTreeMap<Nid, NodeAddr> =
                    (1..=voters + learners).map(|i| (i, addr(i))).collect();
                EntryPayload::Membership(Membership::new(vec![ids], nodes))
            }),
        ];
        (arb_log_id(), payload).prop_map(|(log_id, payload)| Entry { log_id, payload })
    }

    proptest! {
        #[test]
        fn append_entries_round_trip(
            entries in proptest::collection::vec(arb_entry(), 0..8),
            prev in proptest::option::of(arb_log_id()),
            commit in proptest::option::of(arb_log_id()),
            term in 0u64..9, node in 0u64..9, committed in any::<bool>(),
        ) {
            let vote = if committed { Vote::new_committed(term, node) } else { Vote::new(term, node) };
            let req = AppendEntriesRequest::<TypeConfig> { vote, prev_log_id: prev, entries, leader_commit: commit };
            let back = append_request_from_pb::<TypeConfig>(append_request_to_pb(&req, 0)).unwrap();
            prop_assert_eq!(format!("{req:?}"), format!("{back:?}"));
        }

        #[test]
        fn append_response_round_trip(kind in 0u8..4, l in proptest::option::of(arb_log_id()), term in 0u64..9) {
            let r = match kind {
                0 => AppendEntriesResponse::Success,
                1 => AppendEntriesResponse::PartialSuccess(l),
                2 => AppendEntriesResponse::Conflict,
                _ => AppendEntriesResponse::HigherVote(Vote::new(term, 2)),
            };
            prop_assert_eq!(append_response_from_pb(append_response_to_pb(&r)).unwrap(), r);
        }

        #[test]
        fn vote_round_trip(term in 0u64..9, node in 0u64..9, l in proptest::option::of(arb_log_id()), granted in any::<bool>()) {
            let req = VoteRequest { vote: Vote::new(term, node), last_log_id: l };
            prop_assert_eq!(vote_request_from_pb(vote_request_to_pb(&req, 0)).unwrap(), req);
            let resp = VoteResponse { vote: Vote::new_committed(term, node), vote_granted: granted, last_log_id: l };
            prop_assert_eq!(vote_response_from_pb(vote_response_to_pb(&resp)).unwrap(), resp);
        }
    }

    #[test]
    fn snapshot_request_round_trip() {
        let nodes: BTreeMap<Nid, NodeAddr> = (1..=3).map(|i| (i, addr(i))).collect();
        let m = Membership::new(vec![(1..=2).collect()], nodes);
        let req = InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(CommittedLeaderId::new(3, 1), 40)),
                last_membership: StoredMembership::new(
                    Some(LogId::new(CommittedLeaderId::new(2, 1), 12)),
                    m,
                ),
                snapshot_id: "s1".into(),
            },
            offset: 7,
            data: b"{}".to_vec(),
            done: true,
        };
        let back = snapshot_request_from_pb::<TypeConfig>(snapshot_request_to_pb(&req, 0)).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn missing_fields_are_errors_naming_them() {
        let e =
            append_request_from_pb::<TypeConfig>(pb::AppendEntriesRequest::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cluster rpc: message AppendEntriesRequest lacks field vote"
        );
        let bad = pb::Entry {
            log_id: Some(pb::LogId {
                term: 1,
                node_id: 1,
                index: 5,
            }),
            payload: Some(pb::entry::Payload::Command(b"{nope".to_vec())),
        };
        let e = entry_from_pb::<TypeConfig>(bad).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cluster rpc: entry 5: bad command"),
            "{e}"
        );
    }
}
