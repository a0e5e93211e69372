//! Who does which work when: the owner of a scrape target or rule group at a given
//! wall-clock time, from the committed ring plans (`state::RingPlan`). Scraping and
//! rules see it only through the `Ownership` trait, so they know nothing of Raft.
//!
//! Ownership is a function of time, not just of the latest ring: a plan takes over
//! at its `at_ms`, and every node holds the same plans, so for every scrape slot (or
//! rule evaluation time) exactly one node decides it is the owner, even though the
//! nodes learn of a new plan at slightly different moments.
//!
//! Work also needs a lease: a node owns nothing while it has not known for a
//! while that a majority of the voters is in touch with it (its meta leader
//! confirmed leadership with a majority and probed it, or it is that leader). A
//! node cut off from the majority is marked down by the leader after
//! `--cluster.failure-timeout` and its work moves to the others; its lease runs
//! out a little earlier (`lease_for`), so it stops before they start and no
//! target is scraped, and no rule evaluated, twice while a partition lasts.

use super::ring::Ring;
use super::state::{ClusterState, NodeId, RingPlan};
use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How much earlier than the leader's failure timeout a node's lease runs out:
/// one probe interval for the last probe's travel and the leader's 200 ms checks,
/// plus slack for a busy machine.
const LEASE_MARGIN: Duration = Duration::from_millis(1_500);

/// How long a node keeps its work after it last knew a majority was in touch
/// with it, for a leader that marks silent members down after `failure_timeout`.
pub fn lease_for(failure_timeout: Duration) -> Duration {
    failure_timeout
        .saturating_sub(LEASE_MARGIN)
        .max(failure_timeout / 2)
}

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
    /// Whether this node is the only member: it is then its own majority and
    /// needs no lease.
    alone: bool,
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
            alone: state.members.keys().all(|id| *id == me),
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
            && self.alone == state.members.keys().all(|id| *id == self.me)
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
/// and it must not scrape that work until it has heard the leader's log. Nor while
/// its lease has run out (see the module's documentation).
#[derive(Debug)]
pub struct AssignmentHandle {
    current: RwLock<Arc<Assignment>>,
    caught_up: AtomicBool,
    /// The clock of `contact`.
    started: Instant,
    /// When this node last knew a majority was in touch with it: milliseconds
    /// since `started`, plus one (0: never).
    contact: AtomicU64,
    /// How long a contact keeps the work, in milliseconds (`u64::MAX`: no lease
    /// is kept, as for a handle not driven by a running cluster).
    lease_ms: AtomicU64,
    /// Whether the lease was found run out the last time it was looked at (to
    /// log each change once).
    lapsed: AtomicBool,
}

impl AssignmentHandle {
    pub fn new(state: &ClusterState, me: NodeId) -> AssignmentHandle {
        AssignmentHandle {
            current: RwLock::new(Arc::new(Assignment::from_state(state, me))),
            caught_up: AtomicBool::new(false),
            started: Instant::now(),
            contact: AtomicU64::new(0),
            lease_ms: AtomicU64::new(u64::MAX),
            lapsed: AtomicBool::new(false),
        }
    }

    /// Makes work depend on a lease of `lease` after each contact.
    pub fn set_lease(&self, lease: Duration) {
        self.lease_ms.store(
            lease.as_millis().min(u64::MAX as u128 - 1) as u64,
            Ordering::Release,
        );
    }

    /// Records that at `at` a majority of the voters was in touch with this node.
    pub fn note_contact(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.started).as_millis() as u64 + 1;
        self.contact.fetch_max(ms, Ordering::AcqRel);
    }

    /// Lets the assignment own work from now on (once this node has applied the
    /// log of a leader it heard from since it started). Hearing the leader's log
    /// counts as a contact.
    pub fn set_caught_up(&self) {
        self.note_contact(Instant::now());
        self.caught_up.store(true, Ordering::Release);
    }

    /// Whether `set_caught_up` was called.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Whether the lease holds now (always for a node alone in its cluster).
    fn leased(&self, a: &Assignment) -> bool {
        let lease = self.lease_ms.load(Ordering::Acquire);
        if a.alone || lease == u64::MAX {
            return true;
        }
        let contact = self.contact.load(Ordering::Acquire);
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let held = contact != 0 && now.saturating_sub(contact) < lease;
        // Written only when it changes: every scrape loop reads it.
        if self.lapsed.load(Ordering::Acquire) == held
            && self.lapsed.swap(!held, Ordering::AcqRel) == held
        {
            if held {
                tracing::info!("in touch with a majority again: taking work from the ring");
            } else {
                tracing::warn!(
                    silent_ms = now.saturating_sub(contact),
                    lease_ms = lease,
                    "no contact with a majority of the cluster within the lease: doing no scrapes or rule evaluations until it comes back"
                );
            }
        }
        held
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
        if !self.caught_up() {
            return false;
        }
        let a = self.current.read();
        self.leased(&a) && a.owns(key, at_ms)
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

    #[test]
    fn work_needs_a_fresh_contact_with_a_majority() {
        let mut s = state(3);
        schedule(&mut s, 0);
        let h = AssignmentHandle::new(&s, 1);
        let mine = (0..100u32)
            .map(|k| format!("job\u{ff}target{k}").into_bytes())
            .find(|k| h.get().owner(k, 10) == Some(1))
            .expect("node 1 owns some of 100 keys");
        h.set_lease(Duration::from_millis(200));
        h.set_caught_up();
        assert!(h.owns(&mine, 10), "catching up is a contact");
        std::thread::sleep(Duration::from_millis(250));
        assert!(!h.owns(&mine, 10), "the lease ran out");
        h.note_contact(Instant::now() - Duration::from_millis(300));
        assert!(!h.owns(&mine, 10), "an older contact does not renew it");
        h.note_contact(Instant::now());
        assert!(h.owns(&mine, 10), "a new contact renews it");

        // Alone in its cluster, a node is its own majority.
        let mut one = state(1);
        schedule(&mut one, 0);
        let alone = AssignmentHandle::new(&one, 1);
        alone.set_lease(Duration::from_millis(1));
        alone.set_caught_up();
        std::thread::sleep(Duration::from_millis(20));
        assert!(alone.owns(b"k", 10));
    }

    #[test]
    fn the_lease_ends_before_the_leader_marks_the_node_down() {
        for secs in [1, 4, 15, 60] {
            let t = Duration::from_secs(secs);
            let lease = lease_for(t);
            assert!(lease < t && lease >= t / 2, "{t:?} -> {lease:?}");
        }
        assert_eq!(
            lease_for(Duration::from_secs(15)),
            Duration::from_millis(13_500)
        );
    }
}
