//! The meta group's replicated state: the cluster id, the members with their
//! addresses and state, and the ring epoch. Pure data and a deterministic `apply`,
//! so every replica that applies the same commands holds the same state.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A node's id, given with `--cluster.node-id`; unique within a cluster.
pub type NodeId = u64;

/// How to reach a member. Stored in the Raft membership and in the state.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeAddr {
    /// host:port of the node's gRPC server (empty for a node without one).
    pub grpc_address: String,
    /// host:port of the node's HTTP API.
    pub http_address: String,
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "grpc={} http={}", self.grpc_address, self.http_address)
    }
}

/// A member's Raft role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Voter,
    Learner,
}

/// Whether a member takes work (owns targets on the ring).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Part of the ring.
    Active,
    /// Marked down after missing heartbeats; its work moves to the others.
    Down,
}

/// One member of the cluster as the committed state knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node_id: NodeId,
    pub addr: NodeAddr,
    pub role: Role,
    pub state: MemberState,
}

/// A command in the meta group's log. Encoded as JSON (`docs/format/cluster.md`);
/// add variants only at the end and never change the meaning of an old one, since
/// old logs are replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Fixes the cluster id. Only the first one applied takes effect, so any leader
    /// may propose it when it finds the state without one.
    SetClusterId { cluster_id: String },
    /// Marks a member active or down (failure detection).
    SetMemberState { node_id: NodeId, state: MemberState },
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// The command changed the state.
    Applied,
    /// The command was valid but changed nothing (a second cluster id, an unknown member).
    Ignored,
}

/// The replicated state of the meta group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Set once, by the first `SetClusterId` applied.
    pub cluster_id: Option<String>,
    /// Every voter and learner, by id.
    pub members: BTreeMap<NodeId, Member>,
    /// Incremented whenever the set of active members changes; the ring is built
    /// from the active members at an epoch, so equal epochs mean equal rings.
    pub ring_epoch: u64,
}

impl ClusterState {
    /// Applies a command from the log.
    pub fn apply(&mut self, cmd: &Command) -> CommandResult {
        match cmd {
            Command::SetClusterId { cluster_id } => {
                if self.cluster_id.is_some() {
                    return CommandResult::Ignored;
                }
                self.cluster_id = Some(cluster_id.clone());
                CommandResult::Applied
            }
            Command::SetMemberState { node_id, state } => {
                let before = self.active_ids();
                let Some(m) = self.members.get_mut(node_id) else {
                    return CommandResult::Ignored;
                };
                if m.state == *state {
                    return CommandResult::Ignored;
                }
                m.state = *state;
                self.bump_epoch_if_changed(&before);
                CommandResult::Applied
            }
        }
    }

    /// Applies a committed Raft membership: `voters` and every node with its address.
    /// New members start active; members that left are dropped; a known member keeps
    /// its state.
    pub fn apply_membership(
        &mut self,
        voters: &BTreeSet<NodeId>,
        nodes: &BTreeMap<NodeId, NodeAddr>,
    ) {
        let before = self.active_ids();
        self.members.retain(|id, _| nodes.contains_key(id));
        for (id, addr) in nodes {
            let role = if voters.contains(id) {
                Role::Voter
            } else {
                Role::Learner
            };
            let m = self.members.entry(*id).or_insert_with(|| Member {
                node_id: *id,
                addr: addr.clone(),
                role,
                state: MemberState::Active,
            });
            m.addr = addr.clone();
            m.role = role;
        }
        self.bump_epoch_if_changed(&before);
    }

    /// Ids of the members that own work on the ring.
    pub fn active_ids(&self) -> BTreeSet<NodeId> {
        self.members
            .values()
            .filter(|m| m.state == MemberState::Active)
            .map(|m| m.node_id)
            .collect()
    }

    fn bump_epoch_if_changed(&mut self, before: &BTreeSet<NodeId>) {
        if self.active_ids() != *before {
            self.ring_epoch += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u64) -> NodeAddr {
        NodeAddr {
            grpc_address: format!("127.0.0.1:{}", 7000 + n),
            http_address: format!("127.0.0.1:{}", 9000 + n),
        }
    }

    #[test]
    fn cluster_id_is_set_once() {
        let mut s = ClusterState::default();
        let first = Command::SetClusterId {
            cluster_id: "a".into(),
        };
        let second = Command::SetClusterId {
            cluster_id: "b".into(),
        };
        assert_eq!(s.apply(&first), CommandResult::Applied);
        assert_eq!(s.apply(&second), CommandResult::Ignored);
        assert_eq!(s.cluster_id.as_deref(), Some("a"));
    }

    #[test]
    fn membership_changes_bump_the_ring_epoch_only_when_active_set_changes() {
        let mut s = ClusterState::default();
        let nodes: BTreeMap<_, _> = (1..=3).map(|i| (i, addr(i))).collect();
        let voters: BTreeSet<_> = (1..=3).collect();
        s.apply_membership(&voters, &nodes);
        assert_eq!(s.ring_epoch, 1);
        assert_eq!(s.members[&2].role, Role::Voter);
        // The same membership again (e.g. a learner promoted) keeps the epoch.
        s.apply_membership(&voters, &nodes);
        assert_eq!(s.ring_epoch, 1);

        let mut more = nodes.clone();
        more.insert(4, addr(4));
        s.apply_membership(&voters, &more);
        assert_eq!(s.ring_epoch, 2);
        assert_eq!(s.members[&4].role, Role::Learner);
        let all: BTreeSet<_> = (1..=4).collect();
        s.apply_membership(&all, &more);
        assert_eq!(s.ring_epoch, 2);
        assert_eq!(s.members[&4].role, Role::Voter);

        assert_eq!(
            s.apply(&Command::SetMemberState {
                node_id: 4,
                state: MemberState::Down
            }),
            CommandResult::Applied
        );
        assert_eq!(s.ring_epoch, 3);
        assert_eq!(s.active_ids(), (1..=3).collect());
        // A down member that comes back in a membership keeps its state.
        s.apply_membership(&all, &more);
        assert_eq!(s.members[&4].state, MemberState::Down);

        s.apply_membership(&voters, &nodes);
        assert!(!s.members.contains_key(&4));
        assert_eq!(
            s.ring_epoch, 3,
            "removing a down member leaves the ring as is"
        );
    }

    #[test]
    fn unknown_member_state_change_is_ignored() {
        let mut s = ClusterState::default();
        let r = s.apply(&Command::SetMemberState {
            node_id: 9,
            state: MemberState::Down,
        });
        assert_eq!(r, CommandResult::Ignored);
        assert_eq!(s.ring_epoch, 0);
    }

    #[test]
    fn commands_round_trip_through_json() {
        let cmds = [
            Command::SetClusterId {
                cluster_id: "01J".into(),
            },
            Command::SetMemberState {
                node_id: 3,
                state: MemberState::Down,
            },
        ];
        for c in cmds {
            let json = serde_json::to_vec(&c).unwrap();
            assert_eq!(serde_json::from_slice::<Command>(&json).unwrap(), c);
        }
    }
}
