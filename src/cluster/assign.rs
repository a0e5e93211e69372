//! Who does which work when: the owner of a scrape target or rule group at a given
//! wall-clock time, from the committed ring plans (`state::RingPlan`). Scraping and
//! rules see it only through the `Ownership` trait, so they know nothing of Raft.
//!
//! Ownership is a function of time, not just of the latest ring: a plan takes over
//! at its `at_ms`, and every node holds the same plans, so for every scrape slot (or
//! rule evaluation time) exactly one node decides it is the owner, even though the
//! nodes learn of a new plan at slightly different moments.

use super::ring::Ring;
use super::state::{ClusterState, NodeId, RingPlan};
use parking_lot::RwLock;
use std::sync::Arc;

/// Which work this node does. Implemented by the cluster's `AssignmentHandle` and,
/// for a manager used on its own, by `OwnAll`.
pub trait Ownership: Send + Sync {
    /// Whether this node does the work keyed by `key` (a target's job and labels,
    /// a rule group's file and name) at wall-clock time `at_ms`.
    fn owns(&self, key: &[u8], at_ms: i64) -> bool;
    /// The seed of scrape offsets, the same on every node so that a target's
    /// scrape slots are the same whoever scrapes it; None while unknown (nothing is
    /// owned then).
    fn scrape_seed(&self) -> Option<u64>;
}

/// Owns everything, with a fixed scrape seed: a scrape or rule manager that is not
/// part of a cluster (tests, tools).
#[derive(Debug, Clone, Copy)]
pub struct OwnAll {
    pub seed: u64,
}

impl Ownership for OwnAll {
    fn owns(&self, _key: &[u8], _at_ms: i64) -> bool {
        true
    }
    fn scrape_seed(&self) -> Option<u64> {
        Some(self.seed)
    }
}

/// The scrape seed of a cluster: every node derives the same one from the id.
pub fn seed_for_cluster(cluster_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(cluster_id.as_bytes())
}

/// The committed plans as rings, for one node.
#[derive(Debug)]
pub struct Assignment {
    me: NodeId,
    seed: Option<u64>,
    /// The plans (their `at_ms` and rings), oldest first; `None` for a plan without
    /// active members (no owner).
    plans: Vec<(RingPlan, Option<Ring>)>,
}

impl Assignment {
    /// The assignment of `state` as seen by node `me`.
    pub fn from_state(state: &ClusterState, me: NodeId) -> Assignment {
        Assignment {
            me,
            seed: state.cluster_id.as_deref().map(seed_for_cluster),
            plans: state
                .ring_plans
                .iter()
                .map(|p| {
                    (
                        p.clone(),
                        Ring::new(p.members.iter().copied(), p.epoch).ok(),
                    )
                })
                .collect(),
        }
    }

    /// The plan in force at `at_ms`: the newest that started at or before it.
    fn plan_at(&self, at_ms: i64) -> Option<&(RingPlan, Option<Ring>)> {
        self.plans.iter().rev().find(|(p, _)| p.at_ms <= at_ms)
    }

    /// The ring epoch in force at `at_ms` (None before the first plan).
    pub fn epoch_at(&self, at_ms: i64) -> Option<u64> {
        self.plan_at(at_ms).map(|(p, _)| p.epoch)
    }

    /// The node that does the work keyed by `key` at `at_ms`; None before the first
    /// plan or when no member is active.
    pub fn owner(&self, key: &[u8], at_ms: i64) -> Option<NodeId> {
        self.plan_at(at_ms)
            .and_then(|(_, r)| r.as_ref())
            .map(|r| r.owner(key))
    }

    fn same_source(&self, state: &ClusterState) -> bool {
        self.seed == state.cluster_id.as_deref().map(seed_for_cluster)
            && self.plans.len() == state.ring_plans.len()
            && self
                .plans
                .iter()
                .zip(&state.ring_plans)
                .all(|((a, _), b)| a == b)
    }
}

impl Ownership for Assignment {
    fn owns(&self, key: &[u8], at_ms: i64) -> bool {
        self.seed.is_some() && self.owner(key, at_ms) == Some(self.me)
    }
    fn scrape_seed(&self) -> Option<u64> {
        self.seed
    }
}

/// The current `Assignment` of this node, replaced when the committed plans
/// change (`Cluster` refreshes it). Cheap to read from every scrape loop.
///
/// It owns nothing until it is marked caught up (`set_caught_up`): a restarted
/// node's replayed plans may still give it work that moved away while it was down,
/// and it must not scrape that work until it has heard the leader's log.
#[derive(Debug)]
pub struct AssignmentHandle {
    current: RwLock<Arc<Assignment>>,
    caught_up: std::sync::atomic::AtomicBool,
}

impl AssignmentHandle {
    pub fn new(state: &ClusterState, me: NodeId) -> AssignmentHandle {
        AssignmentHandle {
            current: RwLock::new(Arc::new(Assignment::from_state(state, me))),
            caught_up: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Lets the assignment own work from now on (once this node has applied the
    /// log of a leader it heard from since it started).
    pub fn set_caught_up(&self) {
        self.caught_up
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether `set_caught_up` was called.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The assignment right now.
    pub fn get(&self) -> Arc<Assignment> {
        self.current.read().clone()
    }

    /// Rebuilds the assignment when `state`'s plans or cluster id differ from it.
    /// Returns whether it changed.
    pub fn refresh(&self, state: &ClusterState) -> bool {
        let cur = self.get();
        if cur.same_source(state) {
            return false;
        }
        *self.current.write() = Arc::new(Assignment::from_state(state, cur.me));
        true
    }
}

impl Ownership for AssignmentHandle {
    fn owns(&self, key: &[u8], at_ms: i64) -> bool {
        self.caught_up() && self.current.read().owns(key, at_ms)
    }
    fn scrape_seed(&self) -> Option<u64> {
        self.current.read().seed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::{Command, MemberState, NodeAddr};
    use std::collections::{BTreeMap, BTreeSet};

    fn state(n: u64) -> ClusterState {
        let mut s = ClusterState::default();
        let nodes: BTreeMap<_, _> = (1..=n).map(|i| (i, NodeAddr::default())).collect();
        let voters: BTreeSet<_> = (1..=n).collect();
        s.apply_membership(&voters, &nodes);
        s.apply(&Command::SetClusterId {
            cluster_id: "c".into(),
        });
        s
    }

    fn schedule(s: &mut ClusterState, at_ms: i64) {
        let members = s.active_ids().into_iter().collect();
        let cmd = Command::ScheduleRing {
            epoch: s.ring_epoch,
            members,
            at_ms,
        };
        assert_eq!(s.apply(&cmd), crate::cluster::state::CommandResult::Applied);
    }

    #[test]
    fn exactly_one_owner_per_key_and_time_across_a_handoff() {
        let mut s = state(3);
        schedule(&mut s, 1_000);
        s.apply(&Command::SetMemberState {
            node_id: 2,
            state: MemberState::Down,
        });
        schedule(&mut s, 5_000);
        let views: Vec<Assignment> = (1..=3).map(|me| Assignment::from_state(&s, me)).collect();
        let mut moved = 0;
        for k in 0..300u32 {
            let key = format!("job\u{ff}target{k}").into_bytes();
            for t in [0, 999, 1_000, 4_999, 5_000, 9_000] {
                let owners = views.iter().filter(|a| a.owns(&key, t)).count();
                let want = if t < 1_000 { 0 } else { 1 };
                assert_eq!(owners, want, "key {k} at {t}");
            }
            let before = views[0].owner(&key, 4_999);
            let after = views[0].owner(&key, 5_000);
            assert_ne!(after, Some(2), "a down node owns nothing");
            if before != after {
                assert_eq!(before, Some(2), "only the down node's targets move");
                moved += 1;
            }
        }
        assert!(moved > 50, "node 2 owned about a third: {moved}");
    }

    #[test]
    fn nothing_is_owned_without_a_cluster_id() {
        let mut s = ClusterState::default();
        let nodes = BTreeMap::from([(1, NodeAddr::default())]);
        s.apply_membership(&BTreeSet::from([1]), &nodes);
        schedule(&mut s, 0);
        let h = AssignmentHandle::new(&s, 1);
        h.set_caught_up();
        assert!(!h.owns(b"k", 10));
        assert_eq!(h.scrape_seed(), None);
        s.apply(&Command::SetClusterId {
            cluster_id: "c".into(),
        });
        assert!(h.refresh(&s));
        assert!(!h.refresh(&s));
        assert!(h.owns(b"k", 10));
        assert_eq!(h.scrape_seed(), Some(seed_for_cluster("c")));
        let fresh = AssignmentHandle::new(&s, 1);
        assert!(!fresh.owns(b"k", 10), "nothing before catching up");
    }
}
