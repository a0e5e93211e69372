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
    /// Puts the ring of the current epoch into force at wall-clock time `at_ms`
    /// (proposed by the leader after every epoch change). Applied only while
    /// `epoch` is still the current epoch and `members` its active set, and only
    /// once per epoch.
    ScheduleRing {
        epoch: u64,
        members: Vec<NodeId>,
        at_ms: i64,
    },
}

/// Most ring plans the state keeps: enough that every node still finds the plan in
/// force for any time it asks about (a plan is at most a few seconds in the future).
pub const RING_PLANS_MAX: usize = 8;

/// The ring of one epoch and when it takes over the work: before `at_ms` the
/// previous plan's owners keep their targets, from `at_ms` on this plan's own them.
/// Every node holds the same plans, so a moving target's old owner scrapes every
/// slot before `at_ms` and the new owner every slot from it: no gap, no double.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingPlan {
    pub epoch: u64,
    /// The active members at `epoch`, sorted.
    pub members: Vec<NodeId>,
    /// Wall-clock time (ms since the epoch) from which the plan is in force.
    pub at_ms: i64,
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
    /// The scheduled rings, oldest first, at most `RING_PLANS_MAX`; their `at_ms`
    /// and epochs increase.
    #[serde(default)]
    pub ring_plans: Vec<RingPlan>,
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
            Command::ScheduleRing {
                epoch,
                members,
                at_ms,
            } => {
                let current: Vec<NodeId> = self.active_ids().into_iter().collect();
                let last = self.ring_plans.last();
                if *epoch != self.ring_epoch
                    || *members != current
                    || last.is_some_and(|p| p.epoch >= *epoch)
                {
                    return CommandResult::Ignored;
                }
                // Plans take over in order, whatever the proposer's clock says.
                let at_ms = last.map_or(*at_ms, |p| (*at_ms).max(p.at_ms));
                self.ring_plans.push(RingPlan {
                    epoch: *epoch,
                    members: current,
                    at_ms,
                });
                if self.ring_plans.len() > RING_PLANS_MAX {
                    let extra = self.ring_plans.len() - RING_PLANS_MAX;
                    self.ring_plans.drain(..extra);
                }
                CommandResult::Applied
            }
        }
    }

    /// Whether the current epoch still waits for its `ScheduleRing`.
    pub fn ring_unscheduled(&self) -> bool {
        self.ring_plans
            .last()
            .is_none_or(|p| p.epoch < self.ring_epoch)
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
    fn ring_plans_follow_the_current_epoch_once_and_in_order() {
        let mut s = ClusterState::default();
        let nodes: BTreeMap<_, _> = (1..=3).map(|i| (i, addr(i))).collect();
        s.apply_membership(&(1..=3).collect(), &nodes);
        assert!(s.ring_unscheduled());
        let plan = |epoch, members: Vec<u64>, at_ms| Command::ScheduleRing {
            epoch,
            members,
            at_ms,
        };
        // Wrong epoch or members: ignored.
        assert_eq!(s.apply(&plan(2, vec![1, 2, 3], 10)), CommandResult::Ignored);
        assert_eq!(s.apply(&plan(1, vec![1, 2], 10)), CommandResult::Ignored);
        assert_eq!(
            s.apply(&plan(1, vec![1, 2, 3], 1000)),
            CommandResult::Applied
        );
        assert!(!s.ring_unscheduled());
        assert_eq!(
            s.apply(&plan(1, vec![1, 2, 3], 2000)),
            CommandResult::Ignored
        );
        s.apply(&Command::SetMemberState {
            node_id: 2,
            state: MemberState::Down,
        });
        assert!(s.ring_unscheduled());
        // An earlier time from a skewed clock is moved up to the previous plan's.
        assert_eq!(s.apply(&plan(2, vec![1, 3], 500)), CommandResult::Applied);
        assert_eq!(s.ring_plans[1].at_ms, 1000);
        for e in 3..20 {
            let state = if e % 2 == 1 {
                MemberState::Active
            } else {
                MemberState::Down
            };
            s.apply(&Command::SetMemberState { node_id: 2, state });
            let members: Vec<u64> = s.active_ids().into_iter().collect();
            assert_eq!(
                s.apply(&plan(e, members, e as i64 * 1000)),
                CommandResult::Applied
            );
        }
        assert_eq!(s.ring_plans.len(), RING_PLANS_MAX);
        assert!(s
            .ring_plans
            .windows(2)
            .all(|w| w[0].epoch < w[1].epoch && w[0].at_ms <= w[1].at_ms));
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
            Command::ScheduleRing {
                epoch: 2,
                members: vec![1, 3],
                at_ms: 1_700_000_000_000,
            },
        ];
        for c in cmds {
            let json = serde_json::to_vec(&c).unwrap();
            assert_eq!(serde_json::from_slice::<Command>(&json).unwrap(), c);
        }
    }
}
