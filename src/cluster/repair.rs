//! Replica-set repair of WAL groups: the reconciler every node runs, and the read
//! plan the fan-out uses to read each group from exactly one replica.
//!
//! Each node keeps which groups every other active member holds in a
//! `GroupDirectory`. The meta leader's failure detector learns them from its
//! probes' answers each second and relays them in its next probes
//! (`StatusRequest.directory`); a node that has had no such relay for
//! `RELAY_FRESH` (no meta leader, or one cut off from it) asks every member
//! itself (`WalGroups.Held`). Every `RECONCILE_INTERVAL` (on the wall clock's
//! whole seconds, with the node's other periodic loops: `runtime::until_beat`),
//! for every group it holds:
//!
//! - as the group's leader, it compares the voters with `desired_voters` over the
//!   ring of the committed members (down members included: a node marked down is
//!   not replaced, it comes back). Missing replicas are added as learners and
//!   caught up (snapshot then log), then the voters are replaced by the desired set
//!   in one membership change and other nodes leave the group. The change waits
//!   while a node it needs is down or the new set would not have a live quorum.
//! - as a replica the ring no longer wants, it drops its copy (log and TSDB) once
//!   the group's leader says this node left the membership.
//! - as the last voter of a group whose other voters were all removed from the
//!   cluster for good (no quorum can form again), it re-forms the group with itself
//!   as the only voter (`WalGroups::reform`), after which it leads and repairs it.
//!
//! Pure parts (`desired_voters`, `read_plan`, `repair_step`) are unit-tested
//! below; the whole is shown by `tests/replication_repair.rs`.

use super::fanout::Peer;
use super::raft::group::{fetch_held, holdings, GroupView, Holdings, WalGroup, WalGroups};
use super::replication::{group_key, group_voters};
use super::ring::Ring;
use super::runtime::{until_beat, Cluster};
use super::state::{ClusterState, MemberState, NodeId};
use crate::cluster::pb;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a node refreshes its directory and checks the groups it holds.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a directory relayed by the meta leader's probe serves before this
/// node asks the members itself: the leader probes every second.
pub const RELAY_FRESH: Duration = Duration::from_millis(2500);
/// How long a `Held` question may take.
const HELD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a replica that is not its group's owner sees no live leader of the
/// group (none leads here, and no member that answered at the last directory
/// refresh says it leads) before it lets itself campaign. Covers a leader's restart, or
/// an owner that keeps losing its elections, without a second candidate.
pub const LEADERLESS_GRACE: Duration = Duration::from_secs(4);
/// How long a new replica may take to catch up before the step is retried.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a membership change may take to commit before it is retried.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The voters group `group` should have: for a group whose owner is a member,
/// `group_voters` (the owner and its next distinct ring successors); for an
/// orphaned group (its owner was removed), the `rf` distinct ring successors of the
/// group's key among the members. Capped by the number of members.
pub fn desired_voters(ring: &Ring, group: u64, rf: usize) -> BTreeSet<NodeId> {
    if ring.members().contains(&group) {
        return group_voters(ring, group, rf).into_iter().collect();
    }
    ring.successors(group_key(group).as_bytes(), rf.max(1))
        .into_iter()
        .collect()
}

/// What every other member said it holds, by member. Cheap to clone.
#[derive(Clone, Default)]
pub struct GroupDirectory {
    inner: Arc<RwLock<Known>>,
    /// When the meta leader's probe last relayed the directory.
    relayed_at: Arc<Mutex<Option<std::time::Instant>>>,
}

/// The directory's contents, replaced whole at each refresh.
#[derive(Default)]
struct Known {
    /// The answer of every member that answered the last time it was asked.
    answered: BTreeMap<NodeId, Vec<GroupView>>,
    /// Active members that answered before but not the last time: their last
    /// answer, kept until they answer again or are marked down. Reads then go to
    /// other replicas first rather than to "unknown holdings" (every peer answers
    /// for everything, and a dead one's groups are just missing).
    silent: BTreeMap<NodeId, Vec<GroupView>>,
    /// The members of either whose own storage (outside WAL groups) is empty.
    own_storage_empty: BTreeSet<NodeId>,
}

impl GroupDirectory {
    /// Replaces the directory with `answers` (by member, this node left out);
    /// members in `unanswered` keep their last answer as silent ones.
    pub fn install(&self, answers: BTreeMap<NodeId, Holdings>, unanswered: &[NodeId]) {
        let mut fresh = Known::default();
        for (id, (views, own_storage_empty)) in answers {
            fresh.answered.insert(id, views);
            if own_storage_empty {
                fresh.own_storage_empty.insert(id);
            }
        }
        let mut known = self.inner.write();
        for id in unanswered {
            let last = known
                .answered
                .remove(id)
                .or_else(|| known.silent.remove(id));
            if let Some(views) = last {
                fresh.silent.insert(*id, views);
                if known.own_storage_empty.contains(id) {
                    fresh.own_storage_empty.insert(*id);
                }
            }
        }
        *known = fresh;
    }

    /// Takes the directory the meta leader relayed (`StatusRequest.directory`):
    /// every member in it but `me` answered, the other `active` members did not.
    pub fn install_relayed(&self, me: NodeId, relayed: pb::GroupDirectory, active: &[NodeId]) {
        let answers: BTreeMap<NodeId, Holdings> = relayed
            .members
            .into_iter()
            .filter(|m| m.node_id != me)
            .map(|m| (m.node_id, holdings(m.held.unwrap_or_default())))
            .collect();
        let unanswered: Vec<NodeId> = active
            .iter()
            .filter(|id| **id != me && !answers.contains_key(id))
            .copied()
            .collect();
        self.install(answers, &unanswered);
        *self.relayed_at.lock() = Some(std::time::Instant::now());
    }

    /// Whether a relayed directory arrived within `RELAY_FRESH`.
    fn relay_is_fresh(&self) -> bool {
        self.relayed_at
            .lock()
            .is_some_and(|at| at.elapsed() < RELAY_FRESH)
    }

    /// Whether a member that answered at the last refresh says it leads `group`.
    pub fn led_by_answering(&self, group: u64) -> bool {
        self.inner.read().answered.iter().any(|(id, views)| {
            views
                .iter()
                .any(|v| v.group_id == group && v.leader == Some(*id))
        })
    }

    /// Which peers a read asks for which groups: the groups of `held` (this
    /// node's voting replicas with what each applied) that are `fresh_local` are
    /// read here, the rest by `read_plan` over the members' answers and the silent
    /// members' last ones; each peer says whether its own storage is empty.
    pub fn plan_read(
        &self,
        peers: Vec<Peer>,
        held: &BTreeMap<u64, u64>,
        members: &BTreeSet<NodeId>,
    ) -> Vec<Peer> {
        let k = self.inner.read();
        let fresh = fresh_local(held, &k.answered);
        let silent: BTreeSet<NodeId> = k.silent.keys().copied().collect();
        let with_silent;
        let view = if silent.is_empty() {
            &k.answered
        } else {
            let mut v = k.answered.clone();
            for (id, views) in &k.silent {
                v.entry(*id).or_insert_with(|| views.clone());
            }
            with_silent = v;
            &with_silent
        };
        let mut plan = read_plan(peers, &fresh, members, view, &silent);
        for p in &mut plan {
            p.own_storage_empty = k.own_storage_empty.contains(&p.node_id);
        }
        plan
    }
}

/// Which groups to read from which peer so that every group is read from exactly
/// one replica, and the local one when this node holds it (`local`). A group
/// goes to the live peer that leads it, else the live holder that applied the
/// most, else the lowest id; with no live holder known, to its owner, which the
/// fan-out then reports as missing when it is down. Peers with nothing to read
/// are left out when down. The group's other live voting replicas list it in
/// their `standby`, so the fan-out can ask one of them when the chosen one fails.
/// Members in `silent` (they did not answer the last `Held` question; `directory`
/// has their earlier answer) are chosen last and never stand by: most likely they
/// are gone, not yet marked down.
/// Returns `peers` unchanged (every peer reads every group it holds, and the merge
/// drops identical timestamps) while some live peer's holdings are unknown, and no
/// peer at all when this node holds every group.
pub fn read_plan(
    peers: Vec<Peer>,
    local: &BTreeSet<u64>,
    members: &BTreeSet<NodeId>,
    directory: &BTreeMap<NodeId, Vec<GroupView>>,
    silent: &BTreeSet<NodeId>,
) -> Vec<Peer> {
    if peers
        .iter()
        .any(|p| !p.down && !directory.contains_key(&p.node_id))
    {
        return peers;
    }
    let held_by = |id: NodeId| directory.get(&id).map(Vec::as_slice).unwrap_or(&[]);
    let mut all: BTreeSet<u64> = members.clone();
    all.extend(directory.values().flatten().map(|g| g.group_id));
    let mut assigned: BTreeMap<NodeId, Vec<u64>> = BTreeMap::new();
    let mut standby: BTreeMap<NodeId, Vec<u64>> = BTreeMap::new();
    for group in all.difference(local) {
        let rank = |p: &Peer| {
            // A learner (still catching up) or a replica left out of the group is
            // never read from.
            let view = held_by(p.node_id)
                .iter()
                .find(|g| g.group_id == *group && g.voters.contains(&p.node_id))?;
            let leads = view.leader == Some(p.node_id);
            // Highest first: live, answering, leads, applied most; then the lowest id.
            Some((
                !p.down,
                !silent.contains(&p.node_id),
                leads,
                view.applied_index,
                std::cmp::Reverse(p.node_id),
            ))
        };
        let mut holders: Vec<_> = peers
            .iter()
            .filter_map(|p| rank(p).map(|r| (r, p.node_id)))
            .collect();
        holders.sort_unstable();
        let best = holders.pop();
        // The other live voting replicas stand by, should the one asked fail.
        for (rank, id) in holders {
            if rank.0 && rank.1 {
                standby.entry(id).or_default().push(*group);
            }
        }
        // No known holder: the owner, when it is a peer, so that a down owner is
        // reported as missing data rather than the group silently left out.
        let owner = peers.iter().any(|p| p.node_id == *group).then_some(*group);
        if let Some(id) = best.map(|(_, id)| id).or(owner) {
            assigned.entry(id).or_default().push(*group);
        }
    }
    if assigned.is_empty() {
        return Vec::new();
    }
    peers
        .into_iter()
        .filter_map(|mut p| {
            let groups = assigned.remove(&p.node_id).unwrap_or_default();
            if p.down && groups.is_empty() {
                return None;
            }
            p.groups = Some(groups);
            p.standby = standby.remove(&p.node_id).unwrap_or_default();
            Some(p)
        })
        .collect()
}

/// The groups of `held` (this node's voting replicas, with the log index each
/// applied) that are fresh enough to read locally: all but those whose leader, a
/// member that answered at the last directory refresh, had applied more than
/// this replica has now. Such a replica is catching up (after a restart, or after
/// its damaged copy was dropped) and lacks entries the group committed a second
/// or two ago; `read_plan` then reads the group from a peer. In steady state a
/// follower's applied index is past what its leader reported at the last refresh
/// (a second or two ago), so every held group stays local.
pub fn fresh_local(
    held: &BTreeMap<u64, u64>,
    directory: &BTreeMap<NodeId, Vec<GroupView>>,
) -> BTreeSet<u64> {
    let mut behind = BTreeSet::new();
    for (node, views) in directory {
        for v in views {
            if v.leader != Some(*node) {
                continue;
            }
            if held
                .get(&v.group_id)
                .is_some_and(|mine| *mine < v.applied_index)
            {
                behind.insert(v.group_id);
            }
        }
    }
    held.keys()
        .filter(|g| !behind.contains(g))
        .copied()
        .collect()
}

/// What the leader of a group does next to reach `desired`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairStep {
    /// The group has the desired voters and no other nodes.
    Done,
    /// Add this node as a learner and wait until it has caught up.
    AddLearner(NodeId),
    /// Replace the voters with the desired set and drop every other node.
    SetVoters(BTreeSet<NodeId>),
    /// Nothing can be done now (a needed node is down, or the new set would lack
    /// a live quorum); the reason, for the log.
    Wait(String),
}

/// The next step for a group with `voters` and `learners` towards `desired`;
/// `live` are the members not marked down.
pub fn repair_step(
    voters: &BTreeSet<NodeId>,
    learners: &BTreeSet<NodeId>,
    desired: &BTreeSet<NodeId>,
    live: &BTreeSet<NodeId>,
) -> RepairStep {
    if voters == desired && learners.is_empty() {
        return RepairStep::Done;
    }
    for id in desired.difference(voters) {
        if learners.contains(id) {
            continue;
        }
        if !live.contains(id) {
            return RepairStep::Wait(format!("node {id}, a desired replica, is down"));
        }
        return RepairStep::AddLearner(*id);
    }
    let live_new = desired.intersection(live).count();
    if live_new < desired.len() / 2 + 1 {
        return RepairStep::Wait(format!(
            "only {live_new} of the desired voters {desired:?} are live: no quorum"
        ));
    }
    RepairStep::SetVoters(desired.clone())
}

/// Whether this node (`me`) must re-form `voters`' group alone: every other voter
/// was removed from the cluster (`members`), so no quorum can ever form again.
/// With other voters still members, Raft elects among them and nothing is forced;
/// with fewer than a quorum of them the group waits (and says so in the log).
pub fn must_reform(me: NodeId, voters: &BTreeSet<NodeId>, members: &BTreeSet<NodeId>) -> bool {
    let survivors: BTreeSet<NodeId> = voters.intersection(members).copied().collect();
    voters.len() > 1 && survivors.len() == 1 && survivors.contains(&me)
}

/// What one replica sees of its WAL group, for `group_timers`.
#[derive(Debug, Clone, Copy)]
pub struct GroupSight {
    /// The group is this node's own (group id = node id).
    pub owner: bool,
    /// This replica leads the group.
    pub leads: bool,
    /// This replica is the group's only voter.
    pub sole_voter: bool,
    /// Someone alive leads the group: this replica, or a member that answered
    /// at the last directory refresh and says it leads.
    pub live_leader: bool,
    /// How long this replica has seen no live leader.
    pub leaderless_for: Duration,
}

/// Which of a WAL group's Raft timers a replica runs: (heartbeats, elections).
///
/// A group led by its owner runs without timer heartbeats: its followers hear
/// its writes, and a nudge when writes pause (`set_group_timers`); they do not
/// campaign while its leader answers, and start to once it has not for
/// `LEADERLESS_GRACE`. The owner may always campaign, so it takes its group back
/// after a restart. A leader that is not the owner sends timer heartbeats, which
/// keep the owner from campaigning against it, as in plain Raft.
pub fn group_timers(s: &GroupSight) -> (bool, bool) {
    let heartbeat = s.leads && !s.owner;
    let elect = s.owner || s.sole_voter || (!s.live_leader && s.leaderless_for >= LEADERLESS_GRACE);
    (heartbeat, elect)
}

/// The reconciler's memory of one WAL group between rounds, for its timers.
#[derive(Default)]
struct TimerMemory {
    /// Since when this replica has seen no live leader.
    leaderless_since: Option<std::time::Instant>,
    /// As leader: the last log index at the previous round, and at the last nudge.
    seen_index: u64,
    nudged_index: u64,
}

/// Sets `g`'s timers from what this node sees of it (`group_timers`). As a
/// leader without timer heartbeats, nudges the followers once writes paused (the
/// last log index did not move for a round) if it has not since those writes, and
/// every paused round while a replica lags.
async fn set_group_timers(
    me: NodeId,
    g: &WalGroup,
    directory: &GroupDirectory,
    memory: &mut TimerMemory,
) {
    let voters = g.voters();
    let leads = g.is_leader();
    let live_leader = leads || directory.led_by_answering(g.id());
    let now = std::time::Instant::now();
    let since = if live_leader {
        memory.leaderless_since = None;
        now
    } else {
        *memory.leaderless_since.get_or_insert(now)
    };
    let sight = GroupSight {
        owner: g.id() == me,
        leads,
        sole_voter: voters.len() == 1 && voters.contains(&me),
        live_leader,
        leaderless_for: now - since,
    };
    let (heartbeat, elect) = group_timers(&sight);
    g.set_timers(heartbeat, elect);
    g.set_defer_commit_notices(leads && !heartbeat);
    let Some((last, behind)) = g.leader_progress() else {
        memory.seen_index = 0;
        memory.nudged_index = 0;
        return;
    };
    let paused = last == memory.seen_index;
    memory.seen_index = last;
    if !heartbeat && paused && (behind || memory.nudged_index != last) {
        memory.nudged_index = last;
        g.nudge().await;
    }
}

/// Runs the reconciler until `shutdown`.
pub async fn run_reconciler(
    cluster: Cluster,
    groups: WalGroups,
    directory: GroupDirectory,
    rf: usize,
    shutdown: CancellationToken,
) {
    // Groups whose leader-side repair runs now: one change at a time per group.
    let busy: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let mut timers: BTreeMap<u64, TimerMemory> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(until_beat(RECONCILE_INTERVAL)) => {}
            _ = shutdown.cancelled() => return,
        }
        let state = cluster.state();
        refresh_directory(&cluster, &groups, &state, &directory).await;
        let me = cluster.node_id();
        let all = groups.all();
        timers.retain(|id, _| all.iter().any(|g| g.id() == *id));
        for g in &all {
            set_group_timers(me, g, &directory, timers.entry(g.id()).or_default()).await;
        }
        let members: BTreeSet<NodeId> = state.members.keys().copied().collect();
        let Ok(ring) = Ring::new(members.iter().copied(), state.ring_epoch) else {
            continue;
        };
        for g in all {
            let desired = desired_voters(&ring, g.id(), rf);
            // Before anything else: a leader left without its quorum (openraft's
            // leader does not step down by itself) can change nothing either.
            if must_reform(me, &g.voters(), &members)
                && no_other_holder(me, &state, g.id(), &directory)
            {
                if let Err(e) = groups.reform(g.id(), cluster.node_addr()).await {
                    tracing::warn!(group = g.id(), error = %e, "re-forming the WAL group");
                }
                continue;
            }
            if g.is_leader() {
                if busy.lock().insert(g.id()) {
                    let (busy, state) = (busy.clone(), state.clone());
                    tokio::spawn(async move {
                        lead_repair(&g, &desired, &state).await;
                        busy.lock().remove(&g.id());
                    });
                }
                continue;
            }
            if !desired.contains(&me) && removed_by_leader(me, g.id(), &directory) {
                if let Err(e) = groups.remove(g.id()).await {
                    tracing::warn!(group = g.id(), error = %e, "dropping this node's replica");
                }
            }
        }
    }
}

/// Asks every other active member what it holds, unless the meta leader relayed
/// it lately; members that do not answer are left out of the directory until
/// they do.
async fn refresh_directory(
    cluster: &Cluster,
    groups: &WalGroups,
    state: &ClusterState,
    directory: &GroupDirectory,
) {
    if directory.relay_is_fresh() {
        return;
    }
    let me = cluster.node_id();
    let asked: Vec<(NodeId, String)> = state
        .members
        .values()
        .filter(|m| m.node_id != me && m.state == MemberState::Active)
        .filter(|m| !m.addr.grpc_address.is_empty())
        .map(|m| (m.node_id, m.addr.grpc_address.clone()))
        .collect();
    let mut asking = tokio::task::JoinSet::new();
    for (id, addr) in asked {
        let channels = groups.peer_channels().clone();
        asking.spawn(async move { (id, fetch_held(&channels, &addr, HELD_TIMEOUT).await) });
    }
    let mut answers = BTreeMap::new();
    let mut unanswered = Vec::new();
    while let Some(done) = asking.join_next().await {
        match done {
            Ok((id, Ok(holdings))) => {
                answers.insert(id, holdings);
            }
            Ok((id, Err(e))) => {
                tracing::debug!(node_id = id, error = %e, "asking which WAL groups a member holds");
                unanswered.push(id);
            }
            Err(e) => tracing::warn!(error = %e, "asking which WAL groups a member holds"),
        }
    }
    // A relay that arrived meanwhile is newer than these answers.
    if !directory.relay_is_fresh() {
        directory.install(answers, &unanswered);
    }
}

/// Whether every other active member answered and none holds `group` as a voter
/// or under another leader: only then may the last voter re-form it. A replica with a stale view (left out of the
/// group by a leader it never heard from again) must not re-form a group that
/// lives on elsewhere.
fn no_other_holder(
    me: NodeId,
    state: &ClusterState,
    group: u64,
    directory: &GroupDirectory,
) -> bool {
    let known = directory.inner.read();
    let dir = &known.answered;
    let all_answered = state
        .members
        .values()
        .filter(|m| m.node_id != me && m.state == MemberState::Active)
        .all(|m| dir.contains_key(&m.node_id));
    // A learner this node added (no voter in its own view, following this node)
    // is no sign of a group living on elsewhere.
    let elsewhere = dir.iter().any(|(id, views)| {
        views.iter().any(|v| {
            v.group_id == group && (v.voters.contains(id) || v.leader.is_some_and(|l| l != me))
        })
    });
    all_answered && !elsewhere
}

/// Whether the group's leader, as the directory knows it, has this node neither as
/// voter nor as learner.
fn removed_by_leader(me: NodeId, group: u64, directory: &GroupDirectory) -> bool {
    directory.inner.read().answered.iter().any(|(id, views)| {
        views.iter().any(|v| {
            v.group_id == group
                && v.leader == Some(*id)
                && !v.voters.contains(&me)
                && !v.learners.contains(&me)
        })
    })
}

/// The leader's side: one step towards `desired`, repeated while steps succeed.
async fn lead_repair(g: &WalGroup, desired: &BTreeSet<NodeId>, state: &ClusterState) {
    let live: BTreeSet<NodeId> = state
        .members
        .values()
        .filter(|m| m.state == MemberState::Active)
        .map(|m| m.node_id)
        .collect();
    loop {
        if !g.is_leader() {
            return;
        }
        let step = repair_step(&g.voters(), &g.learners(), desired, &live);
        let result = match &step {
            RepairStep::Done => return,
            RepairStep::Wait(why) => {
                tracing::info!(group = g.id(), desired = ?desired, reason = %why, "WAL group repair waits");
                return;
            }
            RepairStep::AddLearner(id) => {
                let Some(m) = state.members.get(id) else {
                    return;
                };
                tracing::info!(group = g.id(), node_id = id, "adding a WAL group replica");
                g.add_learner(*id, m.addr.clone(), CATCH_UP_TIMEOUT).await
            }
            RepairStep::SetVoters(voters) => {
                let before = g.voters();
                let r = g.set_voters(voters.clone(), CHANGE_TIMEOUT).await;
                if r.is_ok() {
                    tracing::info!(group = g.id(), before = ?before, after = ?voters, "WAL group voters changed");
                }
                r
            }
        };
        if let Err(e) = result {
            tracing::warn!(group = g.id(), step = ?step, error = %e, "WAL group repair step failed");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn peer(id: NodeId, down: bool) -> Peer {
        Peer {
            node_id: id,
            grpc_address: format!("127.0.0.1:{id}"),
            http_address: String::new(),
            down,
            groups: None,
            standby: vec![],
            own_storage_empty: false,
        }
    }

    fn view(group: u64, voters: &[NodeId], leader: Option<NodeId>, applied: u64) -> GroupView {
        GroupView {
            group_id: group,
            voters: set(voters),
            learners: BTreeSet::new(),
            leader,
            applied_index: applied,
        }
    }

    #[test]
    fn desired_voters_of_members_and_orphans() {
        let ring = Ring::new([1, 2, 3, 4], 1).unwrap();
        for g in 1..=4 {
            let d = desired_voters(&ring, g, 2);
            assert_eq!(d.len(), 2);
            assert!(d.contains(&g), "an owner keeps a replica of its group");
        }
        // Group 5's owner is gone: two of the remaining members, the same on every
        // node.
        let d = desired_voters(&ring, 5, 2);
        assert_eq!(d.len(), 2);
        assert!(!d.contains(&5));
        assert_eq!(
            d,
            desired_voters(&Ring::new([4, 3, 2, 1], 9).unwrap(), 5, 2)
        );
        // Capped by the cluster size.
        assert_eq!(desired_voters(&ring, 5, 9), set(&[1, 2, 3, 4]));
    }

    #[test]
    fn repair_adds_learners_first_then_changes_voters_once() {
        let live = set(&[2, 3, 4]);
        let desired = set(&[2, 4]);
        assert_eq!(
            repair_step(&set(&[1, 2]), &set(&[]), &desired, &live),
            RepairStep::AddLearner(4)
        );
        assert_eq!(
            repair_step(&set(&[1, 2]), &set(&[4]), &desired, &live),
            RepairStep::SetVoters(desired.clone())
        );
        assert_eq!(
            repair_step(&desired, &set(&[]), &desired, &live),
            RepairStep::Done
        );
        // A leftover learner is removed by the same change.
        assert_eq!(
            repair_step(&desired, &set(&[3]), &desired, &live),
            RepairStep::SetVoters(desired.clone())
        );
    }

    #[test]
    fn repair_waits_for_down_nodes_and_never_loses_quorum() {
        // Node 4 is down: it is not added (and not replaced either: it is still a
        // member, so the ring still wants it).
        let live = set(&[1, 2, 3]);
        assert!(matches!(
            repair_step(&set(&[1, 2]), &set(&[]), &set(&[1, 4]), &live),
            RepairStep::Wait(_)
        ));
        // A new set with a down majority is not switched to.
        assert!(matches!(
            repair_step(
                &set(&[1, 2, 3]),
                &set(&[4, 5]),
                &set(&[1, 4, 5]),
                &set(&[1, 2, 3])
            ),
            RepairStep::Wait(_)
        ));
    }

    #[test]
    fn reform_only_when_every_other_voter_was_removed() {
        let members = set(&[2, 3, 4]);
        assert!(must_reform(2, &set(&[1, 2]), &members));
        assert!(!must_reform(3, &set(&[1, 2]), &members), "not a voter");
        assert!(
            !must_reform(2, &set(&[2, 3]), &members),
            "quorum still possible"
        );
        assert!(!must_reform(2, &set(&[2]), &members), "already alone");
        assert!(
            !must_reform(2, &set(&[1, 2, 3]), &members),
            "two survivors elect normally"
        );
        assert!(must_reform(2, &set(&[1, 2, 5]), &members));
    }

    #[test]
    fn read_plan_reads_each_group_once() {
        let members = set(&[1, 2, 3, 4]);
        let local = set(&[1, 4]);
        let dir: BTreeMap<NodeId, Vec<GroupView>> = [
            (
                2,
                vec![view(2, &[2, 3], Some(2), 10), view(3, &[3, 2], Some(3), 5)],
            ),
            (
                3,
                vec![view(3, &[3, 2], Some(3), 7), view(2, &[2, 3], Some(2), 10)],
            ),
            (4, vec![]),
        ]
        .into();
        let peers = vec![peer(2, false), peer(3, false), peer(4, true)];
        let plan = read_plan(peers, &local, &members, &dir, &set(&[]));
        let got: Vec<(NodeId, Option<Vec<u64>>)> =
            plan.iter().map(|p| (p.node_id, p.groups.clone())).collect();
        // Each group from its leader; the down node 4 holds nothing needed.
        assert_eq!(got, vec![(2, Some(vec![2])), (3, Some(vec![3]))]);
        // Each stands by for the group the other is asked for.
        let standby: Vec<(NodeId, Vec<u64>)> = plan
            .iter()
            .map(|p| (p.node_id, p.standby.clone()))
            .collect();
        assert_eq!(standby, vec![(2, vec![3]), (3, vec![2])]);
    }

    #[test]
    fn read_plan_prefers_live_replicas_and_knows_orphans() {
        let members = set(&[2, 3, 4]);
        // Group 1's owner was removed; 2 (down) and 3 hold it.
        let dir: BTreeMap<NodeId, Vec<GroupView>> = [
            (
                3,
                vec![view(1, &[2, 3], Some(2), 9), view(3, &[3, 4], Some(3), 1)],
            ),
            (
                4,
                vec![view(4, &[4, 2], None, 1), view(3, &[3, 4], Some(3), 1)],
            ),
        ]
        .into();
        let peers = vec![peer(2, true), peer(3, false), peer(4, false)];
        let plan = read_plan(peers, &set(&[]), &members, &dir, &set(&[]));
        let got: Vec<(NodeId, Option<Vec<u64>>)> =
            plan.iter().map(|p| (p.node_id, p.groups.clone())).collect();
        // Group 2 has no known live holder: its down owner is asked (and reported
        // missing by the fan-out) rather than the group left out silently.
        assert_eq!(
            got,
            vec![
                (2, Some(vec![2])),
                (3, Some(vec![1, 3])),
                (4, Some(vec![4]))
            ]
        );
        // Node 4's replica of group 3 stands by; group 1 has no other live replica.
        let standby: Vec<(NodeId, Vec<u64>)> = plan
            .iter()
            .map(|p| (p.node_id, p.standby.clone()))
            .collect();
        assert_eq!(standby, vec![(2, vec![]), (3, vec![]), (4, vec![3])]);
    }

    #[test]
    fn read_plan_reads_from_answering_replicas_before_silent_ones() {
        let members = set(&[1, 2, 3]);
        // Node 2 leads group 2 but did not answer the last question (its earlier
        // answer is kept): group 2 goes to node 3, and node 2 stands by for nothing.
        let dir: BTreeMap<NodeId, Vec<GroupView>> = [
            (
                2,
                vec![view(2, &[2, 3], Some(2), 10), view(3, &[3, 2], Some(3), 5)],
            ),
            (
                3,
                vec![view(3, &[3, 2], Some(3), 7), view(2, &[2, 3], Some(2), 9)],
            ),
        ]
        .into();
        let peers = vec![peer(2, false), peer(3, false)];
        let plan = read_plan(peers, &set(&[1]), &members, &dir, &set(&[2]));
        let got: Vec<(NodeId, Option<Vec<u64>>, Vec<u64>)> = plan
            .iter()
            .map(|p| (p.node_id, p.groups.clone(), p.standby.clone()))
            .collect();
        assert_eq!(
            got,
            vec![(2, Some(vec![]), vec![]), (3, Some(vec![2, 3]), vec![])]
        );
    }

    #[test]
    fn read_plan_falls_back_while_holdings_are_unknown() {
        let peers = vec![peer(2, false), peer(3, false)];
        let dir: BTreeMap<NodeId, Vec<GroupView>> = [(2, vec![])].into();
        let plan = read_plan(peers.clone(), &set(&[1]), &set(&[1, 2, 3]), &dir, &set(&[]));
        assert_eq!(plan, peers);
    }

    #[test]
    fn a_replica_behind_what_its_leader_applied_is_not_read_locally() {
        let held: BTreeMap<u64, u64> = [(1, 40), (2, 100), (3, 7)].into();
        let dir: BTreeMap<NodeId, Vec<GroupView>> = [
            (
                2,
                // Node 2 leads group 1 and applied more than this replica: behind.
                // It also still says it leads group 3 with more applied, but the
                // group's view on node 3 (its leader) is what counts.
                vec![
                    view(1, &[1, 2, 3], Some(2), 90),
                    view(3, &[1, 2, 3], Some(3), 50),
                ],
            ),
            (
                3,
                // Node 3 leads group 2, a second ago at an index this replica has
                // passed since; and group 3, level with this replica.
                vec![
                    view(2, &[1, 2, 3], Some(3), 95),
                    view(3, &[1, 2, 3], Some(3), 7),
                ],
            ),
        ]
        .into();
        assert_eq!(fresh_local(&held, &dir), set(&[2, 3]));
        // Nobody answered: every held group is read locally.
        assert_eq!(fresh_local(&held, &BTreeMap::new()), set(&[1, 2, 3]));
    }

    #[test]
    fn read_plan_is_local_when_every_group_is_held() {
        let dir: BTreeMap<NodeId, Vec<GroupView>> =
            [(2, vec![view(2, &[1, 2], Some(2), 3)])].into();
        let plan = read_plan(
            vec![peer(2, false)],
            &set(&[1, 2]),
            &set(&[1, 2]),
            &dir,
            &set(&[]),
        );
        assert!(plan.is_empty());
    }

    #[test]
    fn only_the_owner_campaigns_while_a_live_leader_is_known() {
        let sight = |owner, leads, live_leader, leaderless_s| GroupSight {
            owner,
            leads,
            sole_voter: false,
            live_leader,
            leaderless_for: Duration::from_secs(leaderless_s),
        };
        let grace = LEADERLESS_GRACE.as_secs();
        // The owner leads: no timer heartbeats; it may campaign (it leads anyway).
        assert_eq!(group_timers(&sight(true, true, true, 0)), (false, true));
        // Its followers stay quiet while it answers, however long that lasts.
        assert_eq!(group_timers(&sight(false, false, true, 0)), (false, false));
        // No live leader: a follower waits out the grace, then campaigns.
        assert_eq!(group_timers(&sight(false, false, false, 0)), (false, false));
        assert_eq!(
            group_timers(&sight(false, false, false, grace - 1)),
            (false, false)
        );
        assert_eq!(
            group_timers(&sight(false, false, false, grace)),
            (false, true)
        );
        // A leader that is not the owner sends timer heartbeats, which keep the
        // owner, always allowed to campaign, from taking the group back.
        assert_eq!(group_timers(&sight(false, true, true, 0)), (true, false));
        assert_eq!(group_timers(&sight(true, false, true, 0)), (false, true));
        // A re-formed group's only voter elects itself.
        let alone = GroupSight {
            sole_voter: true,
            ..sight(false, false, false, 0)
        };
        assert_eq!(group_timers(&alone), (false, true));
    }

    #[test]
    fn a_relayed_directory_replaces_the_answers_and_keeps_silent_members_last_ones() {
        let held = |g: u64| pb::HeldResponse {
            groups: vec![pb::HeldGroup {
                group_id: g,
                voters: vec![1, 2, 3],
                learners: vec![],
                leader_id: Some(g),
                applied_index: 5,
            }],
            own_storage_empty: false,
        };
        let relay = |ids: &[u64]| pb::GroupDirectory {
            members: ids
                .iter()
                .map(|id| pb::MemberHoldings {
                    node_id: *id,
                    held: Some(held(*id)),
                })
                .collect(),
        };
        let d = GroupDirectory::default();
        assert!(!d.relay_is_fresh());
        d.install_relayed(1, relay(&[1, 2, 3]), &[1, 2, 3]);
        assert!(d.relay_is_fresh());
        assert!(d.led_by_answering(2) && d.led_by_answering(3));
        // This node's own entry is left out: it knows its groups itself.
        assert!(!d.led_by_answering(1));
        // Node 3 did not answer the leader's last probe: its groups have no
        // answering leader, and its last answer stays, marked silent.
        d.install_relayed(1, relay(&[1, 2]), &[1, 2, 3]);
        assert!(d.led_by_answering(2) && !d.led_by_answering(3));
        assert!(d.inner.read().silent.contains_key(&3));
        // Marked down (no longer active): forgotten.
        d.install_relayed(1, relay(&[1, 2]), &[1, 2]);
        assert!(!d.inner.read().silent.contains_key(&3));
        // Back: answering again.
        d.install_relayed(1, relay(&[1, 2, 3]), &[1, 2, 3]);
        assert!(d.led_by_answering(3));
    }
}
