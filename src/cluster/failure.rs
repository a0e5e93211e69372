//! Failure detection and ring scheduling, run by the meta leader: it probes every
//! member (the `Status` RPC) every second, marks a member down once it has not
//! answered for `--cluster.failure-timeout` and active again when it answers, and
//! after every ring epoch change commits the plan saying from when the new ring is
//! in force (`Command::ScheduleRing`).
//!
//! The probes' answers say which WAL groups each member holds; the leader relays
//! what the members that answered said, and its own, in its next probes, so
//! every node has the group directory without asking every member itself
//! (`repair::GroupDirectory`).
//!
//! Each probe interval the leader also confirms with a majority of the voters
//! that it still leads (a heartbeat round). While that holds within the work
//! lease, it renews its own lease and its probes carry one to the members
//! (`assign`'s "work leases"); a leader cut off from the majority stops renewing
//! them, and its members' and its own work stop before the majority's new leader
//! hands that work to others.

use super::runtime::{clock_offset_ms, clock_skewed, now_ms, status_request, until_beat, Cluster};
use super::state::{ClusterState, Command, MemberState, NodeId};
use super::RaftRole;
use crate::cluster::pb;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the leader probes each member: on the wall clock's whole seconds
/// (`until_beat`), with the node's other periodic loops.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long one probe may take; shorter than the interval so probes do not pile up.
const PROBE_TIMEOUT: Duration = Duration::from_millis(900);
/// How often the leader looks again at a member whose timeout ran out while it
/// could not mark it down (its proposal failed).
const RETRY_INTERVAL: Duration = Duration::from_millis(200);
/// How long one proposal may take before the leader tries again later.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a member whose clock stays off is warned about again.
const SKEW_WARN_EVERY: Duration = Duration::from_secs(300);
/// How far in the future a new ring takes over when a live member loses work (a
/// node joined or came back): long enough for every node to have applied the plan
/// before it is in force, so the old owner scrapes exactly up to it and the new
/// owner exactly from it.
pub const HANDOFF_DELAY_MS: i64 = 2_000;

/// When a ring of `members` should take over after the plans in `state`: at once
/// when it only drops members (their work has no live owner to hand it over) or
/// when there was no ring, else after `HANDOFF_DELAY_MS`.
pub fn takeover_time_ms(state: &ClusterState, members: &BTreeSet<NodeId>, now_ms: i64) -> i64 {
    match state.ring_plans.last() {
        Some(last) if !members.iter().all(|m| last.members.contains(m)) => {
            now_ms + HANDOFF_DELAY_MS
        }
        _ => now_ms,
    }
}

/// A probe's member, whether it answered, when, its clock offset with the
/// estimate's uncertainty (`clock_offset_ms`), and the WAL groups it holds.
type ProbeResult = (
    NodeId,
    bool,
    Instant,
    Option<(i64, i64)>,
    Option<pb::HeldResponse>,
);

/// The leader's view of its members' health.
struct Detector {
    timeout: Duration,
    /// When each member last answered a probe. A member marked down has no entry
    /// until it answers again.
    last_ok: HashMap<NodeId, Instant>,
    /// When the next probes go out; None: at once.
    next_probe: Option<Instant>,
    probes: tokio::task::JoinSet<ProbeResult>,
    leading: bool,
    /// How long a majority's confirmation keeps work leased.
    lease: Duration,
    /// When a majority last confirmed this node's leadership (the time the
    /// confirmation was asked for).
    confirmed: Option<Instant>,
    /// The confirmation in flight; it answers when it was asked for, if a majority
    /// confirmed.
    confirming: Option<tokio::task::JoinHandle<Option<Instant>>>,
    /// When the clock of each member whose clock disagrees was last warned about.
    skew_warned: HashMap<NodeId, Instant>,
    /// What each member that answered its last probe holds.
    holdings: HashMap<NodeId, pb::HeldResponse>,
}

/// Runs the leader's duties until `shutdown`; does nothing on other nodes.
pub(super) async fn run(cluster: Cluster, timeout: Duration, shutdown: CancellationToken) {
    let mut d = Detector {
        timeout,
        last_ok: HashMap::new(),
        next_probe: None,
        probes: tokio::task::JoinSet::new(),
        leading: false,
        lease: super::assign::lease_for(timeout),
        confirmed: None,
        confirming: None,
        skew_warned: HashMap::new(),
        holdings: HashMap::new(),
    };
    let mut watch = cluster.raft().watch();
    loop {
        // Every node wakes when its view changes (a heartbeat does not wake
        // it): any other node only needs to notice when it becomes the leader,
        // and a leader to schedule the ring after a membership change. A leader
        // also wakes for its probes and when a member's timeout runs out; any
        // other node looks at least once a probe interval.
        let wait = if cluster.raft().role() == RaftRole::Leader {
            d.wait()
        } else {
            until_beat(PROBE_INTERVAL)
        };
        tokio::select! {
            _ = watch.changed(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        let step = d.step(&cluster);
        tokio::select! {
            _ = step => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

impl Detector {
    /// How long a leader may sleep: until its next probes, or until a member's
    /// timeout runs out (not sooner than `RETRY_INTERVAL` for one that ran out
    /// already).
    fn wait(&self) -> Duration {
        let now = Instant::now();
        let probe = self
            .next_probe
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        self.last_ok
            .values()
            .map(|t| {
                (*t + self.timeout)
                    .saturating_duration_since(now)
                    .max(RETRY_INTERVAL)
            })
            .fold(probe, Duration::min)
    }

    /// Warns (at most once per `SKEW_WARN_EVERY` and member) when a member's
    /// clock disagrees with this node's by more than a handoff tolerates.
    fn check_clock(&mut self, id: NodeId, offset_ms: i64, uncertainty_ms: i64, at: Instant) {
        if !clock_skewed(offset_ms, uncertainty_ms) {
            self.skew_warned.remove(&id);
            return;
        }
        if self
            .skew_warned
            .get(&id)
            .is_some_and(|t| at.duration_since(*t) < SKEW_WARN_EVERY)
        {
            return;
        }
        self.skew_warned.insert(id, at);
        tracing::warn!(
            node_id = id,
            offset_ms,
            uncertainty_ms,
            "member's wall clock disagrees with the leader's: targets and rule groups that \
             move between nodes may be scraped or evaluated twice, or skipped, around a \
             handoff; synchronise the clocks (NTP)"
        );
    }

    /// The group directory the next probes relay: what the members that
    /// answered the last probes hold, and this node's own groups. Taken here
    /// too. None on a node without WAL groups.
    fn directory(&self, cluster: &Cluster, state: &ClusterState) -> Option<pb::GroupDirectory> {
        let me = cluster.node_id();
        let own = cluster.held()?;
        let mut members: Vec<pb::MemberHoldings> = self
            .holdings
            .iter()
            .filter(|(id, _)| state.members.contains_key(id))
            .map(|(id, held)| pb::MemberHoldings {
                node_id: *id,
                held: Some(held.clone()),
            })
            .collect();
        members.push(pb::MemberHoldings {
            node_id: me,
            held: Some(own),
        });
        members.sort_by_key(|m| m.node_id);
        let directory = pb::GroupDirectory { members };
        cluster.take_directory(directory.clone());
        Some(directory)
    }

    async fn step(&mut self, cluster: &Cluster) {
        if cluster.raft().role() != RaftRole::Leader {
            if self.leading {
                self.leading = false;
                self.last_ok.clear();
                self.probes.abort_all();
                self.next_probe = None;
                self.confirmed = None;
                self.holdings.clear();
                if let Some(c) = self.confirming.take() {
                    c.abort();
                }
            }
            return;
        }
        let state = cluster.state();
        let me = cluster.node_id();
        let now = Instant::now();
        if !self.leading {
            // A new leader gives every active member a full timeout.
            self.leading = true;
            for m in state.members.values() {
                if m.state == MemberState::Active {
                    self.last_ok.insert(m.node_id, now);
                }
            }
        }
        while let Some(r) = self.probes.try_join_next() {
            match r {
                Ok((id, true, at, offset, held)) => {
                    self.last_ok.insert(id, at);
                    if let Some((offset_ms, uncertainty_ms)) = offset {
                        self.check_clock(id, offset_ms, uncertainty_ms, at);
                    }
                    match held {
                        Some(h) => self.holdings.insert(id, h),
                        None => self.holdings.remove(&id),
                    };
                }
                Ok((id, false, ..)) => {
                    self.holdings.remove(&id);
                }
                Err(_) => {}
            }
        }
        if let Some(c) = self.confirming.take_if(|c| c.is_finished()) {
            // Finished: awaiting it does not wait.
            if let Ok(Some(at)) = c.await {
                self.confirmed = Some(self.confirmed.map_or(at, |c| c.max(at)));
            }
        }
        let leased = self
            .confirmed
            .is_some_and(|at| now.duration_since(at) < self.lease);
        if self.next_probe.is_none_or(|t| now >= t) {
            self.next_probe = Some(now + until_beat(PROBE_INTERVAL));
            let applied_index = cluster.raft().view().last_applied_index.unwrap_or(0);
            if self.confirming.is_none() {
                let cluster = cluster.clone();
                self.confirming = Some(tokio::spawn(async move {
                    let asked = Instant::now();
                    let confirm = cluster.raft().confirm_leadership();
                    match tokio::time::timeout(PROBE_TIMEOUT, confirm).await {
                        Ok(Ok(())) => {
                            // Renewed at once: the detector looks at the answer
                            // only at its next probes, a second on, while this
                            // node's own lease may be shorter than two seconds.
                            cluster.assignment().note_contact(asked.into_std());
                            Some(asked)
                        }
                        _ => None,
                    }
                }));
            }
            let directory = self.directory(cluster, &state);
            for m in state.members.values() {
                if m.node_id == me || m.addr.grpc_address.is_empty() {
                    continue;
                }
                let (id, addr) = (m.node_id, m.addr.grpc_address.clone());
                let channels = cluster.peer_channels().clone();
                let directory = directory.clone();
                self.probes.spawn(async move {
                    let req = pb::StatusRequest {
                        lease: leased,
                        applied_index,
                        directory,
                    };
                    let sent = now_ms();
                    let answer = status_request(&channels, &addr, req, PROBE_TIMEOUT).await;
                    let offset = answer
                        .as_ref()
                        .ok()
                        .and_then(|a| clock_offset_ms(sent, a.wall_clock_ms, now_ms()));
                    let ok = answer.is_ok();
                    let held = answer.ok().and_then(|a| a.held);
                    (id, ok, Instant::now(), offset, held)
                });
            }
        }
        for m in state.members.values() {
            if m.node_id == me {
                continue;
            }
            let last = self.last_ok.get(&m.node_id).copied();
            let change = match (m.state, last) {
                (MemberState::Active, Some(t)) if now.duration_since(t) >= self.timeout => {
                    Some(MemberState::Down)
                }
                // Never seen answering since this node leads: start its timeout now.
                (MemberState::Active, None) => {
                    self.last_ok.insert(m.node_id, now);
                    None
                }
                (MemberState::Down, Some(_)) => Some(MemberState::Active),
                _ => None,
            };
            if let Some(s) = change {
                tracing::warn!(node_id = m.node_id, state = ?s, silent_for = ?last.map(|t| now.duration_since(t)), "marking member");
                let cmd = Command::SetMemberState {
                    node_id: m.node_id,
                    state: s,
                };
                if propose(cluster, cmd).await && s == MemberState::Down {
                    self.last_ok.remove(&m.node_id);
                }
            }
        }
        let state = cluster.state();
        if state.ring_unscheduled() {
            let members = state.active_ids();
            let at_ms = takeover_time_ms(&state, &members, now_ms());
            tracing::info!(epoch = state.ring_epoch, members = ?members, at_ms, "scheduling the ring");
            propose(
                cluster,
                Command::ScheduleRing {
                    epoch: state.ring_epoch,
                    members: members.into_iter().collect(),
                    at_ms,
                },
            )
            .await;
        }
    }
}

/// Proposes `cmd`, logging failures; whether it was committed.
async fn propose(cluster: &Cluster, cmd: Command) -> bool {
    match tokio::time::timeout(PROPOSE_TIMEOUT, cluster.raft().propose(cmd.clone())).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, command = ?cmd, "proposal failed");
            false
        }
        Err(_) => {
            tracing::warn!(command = ?cmd, "proposal not committed within {PROPOSE_TIMEOUT:?}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::{NodeAddr, RingPlan};
    use std::collections::BTreeMap;

    #[test]
    fn clock_offsets_are_estimated_from_the_round_trip_and_judged_with_its_uncertainty() {
        // Asked at 1000, answered (peer's clock) 5040, received at 1100: the
        // answer is taken as made at 1050, so the peer runs 3990 ms ahead, ±50.
        assert_eq!(clock_offset_ms(1000, 5040, 1100), Some((3990, 50)));
        assert_eq!(clock_offset_ms(1000, 900, 1000), Some((-100, 0)));
        // A peer that sends no clock gives no estimate.
        assert_eq!(clock_offset_ms(1000, 0, 1100), None);
        // Warned about only when surely beyond a quarter of the handoff delay.
        let limit = HANDOFF_DELAY_MS / 4;
        assert!(clock_skewed(3990, 50));
        assert!(clock_skewed(-(limit + 51), 50));
        assert!(!clock_skewed(limit + 50, 50), "within the uncertainty");
        assert!(!clock_skewed(-100, 0));
    }

    #[test]
    fn new_rings_take_over_later_only_when_a_live_member_hands_work_over() {
        let mut s = ClusterState::default();
        let nodes: BTreeMap<_, _> = (1..=3).map(|i| (i, NodeAddr::default())).collect();
        s.apply_membership(&(1..=3).collect(), &nodes);
        assert_eq!(
            takeover_time_ms(&s, &s.active_ids(), 100),
            100,
            "first ring"
        );
        s.ring_plans.push(RingPlan {
            epoch: 1,
            members: vec![1, 2, 3],
            at_ms: 100,
        });
        assert_eq!(
            takeover_time_ms(&s, &[1, 3].into(), 200),
            200,
            "a member left"
        );
        assert_eq!(
            takeover_time_ms(&s, &[1, 2, 3, 4].into(), 200),
            200 + HANDOFF_DELAY_MS,
            "a member joined"
        );
    }
}
