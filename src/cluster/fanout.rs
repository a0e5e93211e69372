//! `FanoutQueryable`: the `storage::Queryable` a node answers queries with in a
//! cluster. It reads its own storage and asks every other member's `Query` gRPC
//! service (`query_service`) for the same selection, then merges: series with the
//! same labels from several nodes become one series merged in time, and identical
//! timestamps are kept once (`storage::merge_series_sets`).
//!
//! The `Querier` seam is synchronous while gRPC is async: the reading thread
//! drives the calls to every peer itself, on a current-thread runtime of its own
//! (a `Driver`, taken from a pool for the read and put back after) that owns its
//! connections to the peers (`grpc_client`). The requests are sent before the
//! local read starts, and the answers are read by the same thread when it waits
//! for them: no task on the server's runtime, no hand-off between threads. Such
//! hand-offs (the calling thread to a runtime worker, the worker to each
//! connection's task and back), not the reads, were most of what a fan-out added
//! to a small query. So a querier must be used from a blocking thread (the API,
//! the rule manager and `/federate` run reads on the blocking pool), never from
//! inside an async task: a runtime cannot be driven from within another.
//!
//! A peer that fails or does not answer within `--cluster.query-timeout` leaves its
//! data out with a warning (`Querier::warnings`), or fails the read when
//! `--cluster.partial-response=false`. A member marked down is not asked and counts
//! as failed the same way.
//!
//! With WAL groups, `PeersFn` may give each peer the groups to read from it
//! (`Peer::groups`, worked out by `repair::read_plan` so each group is read from one
//! replica): the requests then carry that filter and no group's samples arrive
//! twice. Without it a peer answers with every group it holds and the merge keeps
//! identical timestamps once. A peer that fails (gone before it is marked down, or
//! it no longer holds a group the plan named) has its groups asked again of the
//! other voting replicas the plan lists (`Peer::standby`), within the same
//! deadline: only what no replica gave is reported missing.

use super::grpc_client::{Connections, PeerConnection};
use super::pb;
use super::query_service::{matchers_to_pb, series_from_pb, MESSAGE_BYTES_MAX};
use super::state::NodeId;
use crate::labels::Matcher;
use crate::storage::{
    merge_series_sets, Querier, Queryable, SelectHints, Series, SeriesSet, StorageError,
};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Default of `--cluster.query-timeout`: how long a read waits for a peer. Shorter
/// than Prometheus's 2m query timeout so a hung peer costs a dashboard refresh, not
/// a whole query budget.
pub const QUERY_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Slack on top of the per-peer timeout before the waiting thread gives up on a
/// task that did not even report its own timeout.
const WAIT_SLACK: Duration = Duration::from_secs(1);

/// How many scheduling rounds a driver runs right after starting a read's calls,
/// before the local read: one hands the requests to their connections and
/// writes them; the second lets a connection that was just dialled get further.
/// The rest of the work happens while the thread waits for the answers.
const SEND_ROUNDS: usize = 2;

/// Drivers kept idle for the next reads; more are made when more reads run at
/// once, and dropped (closing their connections) when they come back to a full
/// pool.
const IDLE_DRIVERS_MAX: usize = 16;

/// Another member as the fan-out sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub node_id: NodeId,
    /// host:port of its gRPC server.
    pub grpc_address: String,
    /// host:port of its HTTP API.
    pub http_address: String,
    /// Marked down by the cluster: not asked, its data counts as missing.
    pub down: bool,
    /// The WAL groups to read from this peer (besides its pre-cluster storage);
    /// `None`: every group it holds.
    pub groups: Option<Vec<u64>>,
    /// Groups this peer holds a voting replica of that are read from another node:
    /// asked of it when that node fails (`repair::read_plan` lists them).
    pub standby: Vec<u64>,
    /// Whether the peer said its own storage (outside WAL groups: data from before
    /// cluster mode) is empty, so losing it loses nothing once its groups were read
    /// from other replicas.
    pub own_storage_empty: bool,
}

/// The members other than this node, asked at the start of every read.
pub type PeersFn = Arc<dyn Fn() -> Vec<Peer> + Send + Sync>;

/// How the fan-out treats slow and failed peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutOptions {
    /// `--cluster.query-timeout`: how long one read waits for a peer.
    pub timeout: Duration,
    /// `--cluster.partial-response`: answer without a failed peer's data (with a
    /// warning) instead of failing.
    pub partial_response: bool,
}

impl Default for FanoutOptions {
    fn default() -> FanoutOptions {
        FanoutOptions {
            timeout: QUERY_TIMEOUT_DEFAULT,
            partial_response: true,
        }
    }
}

/// Reads the local storage and every other member's, merged.
pub struct FanoutQueryable {
    /// This node's own storage.
    local: Arc<dyn Queryable>,
    /// The other members, read per querier.
    peers: PeersFn,
    options: FanoutOptions,
    /// The idle drivers the reads' peer calls run on.
    drivers: Arc<DriverPool>,
}

impl FanoutQueryable {
    pub fn new(
        local: Arc<dyn Queryable>,
        peers: PeersFn,
        options: FanoutOptions,
    ) -> FanoutQueryable {
        FanoutQueryable {
            local,
            peers,
            options,
            drivers: Arc::new(DriverPool::default()),
        }
    }
}

/// A current-thread runtime with its own HTTP/2 connection to each peer, driven
/// by the thread that reads (`Runtime::block_on`) and idle in between: used by
/// one read at a time.
struct Driver {
    /// `None` only while being dropped.
    runtime: Option<tokio::runtime::Runtime>,
    /// The connections, whose tasks run on `runtime`.
    connections: Connections,
}

impl Driver {
    fn new() -> Result<Driver, StorageError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StorageError::Other(format!("cluster: fan-out runtime: {e}")))?;
        Ok(Driver {
            runtime: Some(runtime),
            connections: Connections::default(),
        })
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .expect("a driver has its runtime until dropped")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks end, which is not allowed
        // inside another runtime (a queryable dropped at server shutdown); its
        // tasks are only connections, which can just be closed.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The idle drivers of a `FanoutQueryable`.
#[derive(Default)]
struct DriverPool {
    idle: Mutex<Vec<Driver>>,
}

impl DriverPool {
    fn take(&self) -> Result<Driver, StorageError> {
        match self.idle.lock().pop() {
            Some(d) => Ok(d),
            None => Driver::new(),
        }
    }

    fn put(&self, d: Driver) {
        let mut idle = self.idle.lock();
        if idle.len() < IDLE_DRIVERS_MAX {
            idle.push(d);
            return;
        }
        drop(idle);
        drop(d);
    }
}

impl Queryable for FanoutQueryable {
    fn querier(&self, mint: i64, maxt: i64) -> Result<Box<dyn Querier>, StorageError> {
        Ok(Box::new(FanoutQuerier {
            local: self.local.querier(mint, maxt)?,
            mint,
            maxt,
            peers: (self.peers)(),
            options: self.options,
            drivers: self.drivers.clone(),
            warnings: Mutex::new(Vec::new()),
        }))
    }
}

/// One fan-out read view over `[mint, maxt]`.
struct FanoutQuerier {
    local: Box<dyn Querier>,
    mint: i64,
    maxt: i64,
    /// The members other than this node when the querier was made.
    peers: Vec<Peer>,
    options: FanoutOptions,
    drivers: Arc<DriverPool>,
    /// Failed peers' messages, each once, in the order they happened.
    warnings: Mutex<Vec<String>>,
}

type PeerFuture<T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send>>;

type Answers<T> = Vec<Result<T, String>>;

/// What one peer's request does: a `Select`, `LabelNames` or `LabelValues` call
/// with the given group filter on a connection to it.
type CallFn<T> =
    dyn Fn(Option<pb::GroupFilter>, PeerConnection, Duration) -> PeerFuture<T> + Send + Sync;

/// One request of a read: the peer and the groups it is asked for (`None`: every
/// group it holds).
struct Ask<'a> {
    peer: &'a Peer,
    groups: Option<Vec<u64>>,
}

/// Requests in flight to the peers, in the order of `asked`.
struct Pending<'a, T> {
    asked: Vec<Ask<'a>>,
    /// The call, kept to ask other replicas for a failed peer's groups.
    call: Arc<CallFn<T>>,
    /// The driver the calls run on and the task that resolves to every asked
    /// peer's answer, in the order of `asked`; `None` when no peer was asked.
    calls: Option<(Driver, tokio::task::JoinHandle<Answers<T>>)>,
    /// Where the driver goes back when the read is done.
    drivers: &'a DriverPool,
    /// When to stop waiting even if the task never reported.
    deadline: std::time::Instant,
}

impl<T> Drop for Pending<'_, T> {
    /// A read that failed before waiting (the local read's error) cancels its
    /// calls; the driver drops them on its next use.
    fn drop(&mut self) {
        if let Some((driver, task)) = self.calls.take() {
            task.abort();
            self.drivers.put(driver);
        }
    }
}

/// Drives every peer's call in one task and resolves, in the order of `calls`,
/// once each has answered, failed or timed out (`with_client`).
async fn join_all<T>(mut calls: Vec<PeerFuture<T>>) -> Answers<T> {
    let mut answers: Vec<Option<Result<T, String>>> = calls.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (call, answer) in calls.iter_mut().zip(answers.iter_mut()) {
            if answer.is_some() {
                continue;
            }
            match call.as_mut().poll(cx) {
                std::task::Poll::Ready(r) => *answer = Some(r),
                std::task::Poll::Pending => done = false,
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    answers.into_iter().flatten().collect()
}

/// Runs `call` with a client for `address`; a failed or timed-out call drops the
/// connection, so the next one connects afresh.
async fn with_client<T>(
    connections: Connections,
    address: String,
    timeout: Duration,
    call: impl Fn(PeerConnection) -> PeerFuture<T>,
) -> Result<T, String> {
    let attempt = async {
        let (client, kept) = connections.get(&address).await?;
        match call(client).await {
            // A driver's connections are served only while a read runs on it, so
            // a peer that restarted or closed an idle connection in between is
            // noticed by the next call, which fails at once: that one is made
            // again on a new connection, within the same timeout.
            Err(_) if kept => {
                connections.forget(&address);
                let (client, _) = connections.get(&address).await?;
                call(client).await
            }
            r => r,
        }
    };
    let r = match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("did not answer within {timeout:?}")),
    };
    if r.is_err() {
        connections.forget(&address);
    }
    r
}

impl FanoutQuerier {
    /// Starts `call` against every active peer at once, on a driver taken for
    /// this read, and sends the requests; `wait` collects the answers. A peer
    /// that cannot be asked becomes a warning at once (or the error).
    fn start<T: Send + 'static>(
        &self,
        call: impl Fn(Option<pb::GroupFilter>, PeerConnection, Duration) -> PeerFuture<T>
            + Send
            + Sync
            + 'static,
    ) -> Result<Pending<'_, T>, StorageError> {
        let mut asks = Vec::new();
        for peer in &self.peers {
            // Nothing to read: no group assigned and no storage of its own (it may
            // still stand by for others' groups).
            let idle = peer.groups.as_ref().is_some_and(Vec::is_empty) && peer.own_storage_empty;
            if idle {
                continue;
            }
            if peer.down {
                self.fail(peer, "is marked down")?;
                continue;
            }
            asks.push(Ask {
                peer,
                groups: peer.groups.clone(),
            });
        }
        let deadline = std::time::Instant::now() + self.options.timeout + WAIT_SLACK;
        self.launch(Arc::new(call), asks, deadline)
    }

    /// Sends every request of `asked` at once on a driver taken for them.
    fn launch<'a, T: Send + 'static>(
        &'a self,
        call: Arc<CallFn<T>>,
        asked: Vec<Ask<'a>>,
        deadline: std::time::Instant,
    ) -> Result<Pending<'a, T>, StorageError> {
        let timeout = self.options.timeout;
        let calls = if asked.is_empty() {
            None
        } else {
            let driver = self.drivers.take()?;
            let calls: Vec<PeerFuture<T>> = asked
                .iter()
                .map(|ask| {
                    let filter = ask
                        .groups
                        .as_ref()
                        .map(|ids| pb::GroupFilter { ids: ids.clone() });
                    let call = call.clone();
                    Box::pin(with_client(
                        driver.connections.clone(),
                        ask.peer.grpc_address.clone(),
                        timeout,
                        move |client| (*call)(filter.clone(), client, timeout),
                    )) as PeerFuture<T>
                })
                .collect();
            let rt = driver.runtime();
            let task = rt.spawn(join_all(calls));
            // Get the requests written, so the peers work while the local read
            // runs.
            rt.block_on(async {
                for _ in 0..SEND_ROUNDS {
                    tokio::task::yield_now().await;
                }
            });
            Some((driver, task))
        };
        Ok(Pending {
            asked,
            call,
            calls,
            drivers: &self.drivers,
            deadline,
        })
    }

    /// Waits for the requests of `pending` and returns each with its answer, or
    /// why there is none.
    fn collect<'a, T>(&self, mut pending: Pending<'a, T>) -> Vec<(Ask<'a>, Result<T, String>)> {
        let mut answers: Vec<Option<Result<T, String>>> =
            pending.asked.iter().map(|_| None).collect();
        if let Some((driver, mut task)) = pending.calls.take() {
            let left = pending
                .deadline
                .saturating_duration_since(std::time::Instant::now());
            // The timer belongs to the driver's runtime: made inside `block_on`.
            let all = driver
                .runtime()
                .block_on(async { tokio::time::timeout(left, &mut task).await });
            if let Ok(Ok(all)) = all {
                answers = all.into_iter().map(Some).collect();
            } else {
                task.abort();
            }
            pending.drivers.put(driver);
        }
        let timeout = self.options.timeout;
        std::mem::take(&mut pending.asked)
            .into_iter()
            .zip(answers)
            .map(|(ask, a)| {
                let a = a.unwrap_or_else(|| Err(format!("did not answer within {timeout:?}")));
                (ask, a)
            })
            .collect()
    }

    /// Waits for the peers `pending` asked and returns the answers of those that
    /// gave one. A failed peer's groups are asked again of other replicas
    /// (`retry_plan`); what nobody gave becomes a warning, or the error when
    /// partial responses are off.
    fn wait<T: Send + 'static>(
        &self,
        what: &str,
        pending: Pending<'_, T>,
    ) -> Result<Vec<T>, StorageError> {
        let (call, deadline) = (pending.call.clone(), pending.deadline);
        let mut out = Vec::new();
        let mut failed = Vec::new();
        for (ask, answer) in self.collect(pending) {
            match answer {
                Ok(v) => out.push(v),
                Err(e) => failed.push((ask, e)),
            }
        }
        if failed.is_empty() {
            return Ok(out);
        }
        let time_left = deadline > std::time::Instant::now();
        let (retries, lost) = retry_plan(&self.peers, &failed, time_left);
        // Failed peers whose groups are all asked of other replicas: logged once
        // the retries answered (a retry that fails is a warning of its own).
        let mut covered = Vec::new();
        for (ask, e) in &failed {
            let p = ask.peer;
            if lost.contains(&p.node_id) {
                self.fail(p, &format!("{what} failed: {e}"))?;
            } else if !p.own_storage_empty {
                self.report(
                    p,
                    &format!(
                        "{what} failed: {e}; its WAL groups were asked of other replicas, but its own storage (data from before cluster mode) is missing from this result"
                    ),
                )?;
            } else {
                covered.push((p.node_id, e));
            }
        }
        if retries.is_empty() {
            return Ok(out);
        }
        let pending = self.launch(call, retries, deadline)?;
        let mut retries_failed = false;
        for (ask, answer) in self.collect(pending) {
            match answer {
                Ok(v) => out.push(v),
                Err(e) => {
                    retries_failed = true;
                    let groups = ask.groups.unwrap_or_default();
                    self.report(
                        ask.peer,
                        &format!("{what} of WAL groups {groups:?}, asked of it after another replica failed, failed: {e}; their data is missing from this result"),
                    )?
                }
            }
        }
        if !retries_failed {
            for (node_id, e) in covered {
                tracing::info!(node_id, reason = %e, "fan-out: a peer failed, its WAL groups were read from other replicas");
            }
        }
        Ok(out)
    }

    /// Records that `peer`'s data is missing: a warning, or an error when partial
    /// responses are off.
    fn fail(&self, peer: &Peer, why: &str) -> Result<(), StorageError> {
        self.report(
            peer,
            &format!("{why}; its data is missing from this result"),
        )
    }

    /// Records that some of `peer`'s data is missing, `what` saying which: a
    /// warning, or an error when partial responses are off.
    fn report(&self, peer: &Peer, what: &str) -> Result<(), StorageError> {
        let msg = format!(
            "cluster: node {} ({}) {what}",
            peer.node_id, peer.grpc_address
        );
        if !self.options.partial_response {
            return Err(StorageError::Other(format!(
                "{msg} (partial responses are off: --cluster.partial-response=false)"
            )));
        }
        tracing::warn!(node_id = peer.node_id, address = %peer.grpc_address, reason = what, "fan-out read incomplete");
        let mut w = self.warnings.lock();
        if !w.contains(&msg) {
            w.push(msg);
        }
        Ok(())
    }
}

/// Who to ask again after the requests of `failed` failed: each failed peer's
/// groups go to the first other live peer that did not fail and lists the group in
/// its `standby`, one request per such peer. Returns those requests and the peers
/// whose data is still lost: asked for every group (no plan), one of their groups
/// with no other replica, or no time left to ask.
fn retry_plan<'a>(
    peers: &'a [Peer],
    failed: &[(Ask<'a>, String)],
    time_left: bool,
) -> (Vec<Ask<'a>>, BTreeSet<NodeId>) {
    let failed_ids: BTreeSet<NodeId> = failed.iter().map(|(a, _)| a.peer.node_id).collect();
    let mut by_peer: BTreeMap<NodeId, Vec<u64>> = Default::default();
    let mut lost = BTreeSet::new();
    for (ask, _) in failed {
        let Some(groups) = ask.groups.as_ref().filter(|_| time_left) else {
            lost.insert(ask.peer.node_id);
            continue;
        };
        for g in groups {
            let other = peers
                .iter()
                .find(|q| !q.down && !failed_ids.contains(&q.node_id) && q.standby.contains(g));
            match other {
                Some(q) => by_peer.entry(q.node_id).or_default().push(*g),
                None => {
                    lost.insert(ask.peer.node_id);
                }
            }
        }
    }
    let retries = peers
        .iter()
        .filter_map(|q| {
            let mut groups = by_peer.remove(&q.node_id)?;
            groups.sort_unstable();
            groups.dedup();
            Some(Ask {
                peer: q,
                groups: Some(groups),
            })
        })
        .collect();
    (retries, lost)
}

/// A failed call in words: a deadline says so with the timeout; otherwise the
/// status message with its causes (`tcp connect error: Connection refused`).
fn status_text(s: &tonic::Status, timeout: Duration) -> String {
    if s.code() == tonic::Code::DeadlineExceeded || s.message() == "Timeout expired" {
        return format!("did not answer within {timeout:?}");
    }
    let mut text = s.message().to_string();
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        let m = e.to_string();
        if !text.contains(&m) {
            text.push_str(": ");
            text.push_str(&m);
        }
        source = e.source();
    }
    text
}

/// The `Query` service's methods (`proto/cluster.proto`).
const SELECT_PATH: &str = "/hearth.cluster.v1.Query/Select";
const LABEL_NAMES_PATH: &str = "/hearth.cluster.v1.Query/LabelNames";
const LABEL_VALUES_PATH: &str = "/hearth.cluster.v1.Query/LabelValues";

/// One peer's whole `Select` answer, checked and sorted by labels.
async fn fetch_select(
    client: PeerConnection,
    req: pb::SelectRequest,
    timeout: Duration,
) -> Result<Vec<Series>, String> {
    let mut out: Vec<Series> = Vec::new();
    client
        .call(
            SELECT_PATH,
            &req,
            timeout,
            MESSAGE_BYTES_MAX,
            |batch: pb::SelectResponse| {
                out.reserve(batch.series.len());
                for s in batch.series {
                    out.push(
                        series_from_pb(s).map_err(|e| tonic::Status::internal(e.to_string()))?,
                    );
                }
                Ok(())
            },
        )
        .await
        .map_err(|s| status_text(&s, timeout))?;
    // The merge needs label order; a peer's storage already gives it.
    if !out.windows(2).all(|w| w[0].labels < w[1].labels) {
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
    }
    Ok(out)
}

/// One peer's answer to a unary call (`LabelNames`, `LabelValues`).
async fn fetch_one<Req: prost::Message, Resp: prost::Message + Default>(
    client: PeerConnection,
    path: &str,
    req: Req,
    timeout: Duration,
) -> Result<Resp, String> {
    client
        .unary(path, &req, timeout, MESSAGE_BYTES_MAX)
        .await
        .map_err(|s| status_text(&s, timeout))
}

/// Merges string lists into one sorted list without duplicates. Each node's list
/// is already sorted and unique, so they are merged in one pass each rather than
/// sorted again together; a list that is not (a misbehaving peer) is sorted first.
fn merge_sorted_unique(lists: Vec<Vec<String>>) -> Vec<String> {
    lists.into_iter().fold(Vec::new(), |merged, mut list| {
        if !list.windows(2).all(|w| w[0] < w[1]) {
            list.sort_unstable();
            list.dedup();
        }
        merge_two(merged, list)
    })
}

/// Merges two sorted lists without duplicates into one.
fn merge_two(a: Vec<String>, b: Vec<String>) -> Vec<String> {
    if a.is_empty() {
        return b;
    }
    if b.is_empty() {
        return a;
    }
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match x.cmp(y) {
                std::cmp::Ordering::Less => a.next(),
                std::cmp::Ordering::Greater => b.next(),
                std::cmp::Ordering::Equal => {
                    b.next();
                    a.next()
                }
            },
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        out.extend(next);
    }
    out
}

impl Querier for FanoutQuerier {
    fn select(&self, hints: &SelectHints, matchers: &[Matcher]) -> Result<SeriesSet, StorageError> {
        let req = pb::SelectRequest {
            min_time_ms: self.mint,
            max_time_ms: self.maxt,
            matchers: matchers_to_pb(matchers),
            hint_start_ms: hints.start_ms,
            hint_end_ms: hints.end_ms,
            series_only: hints.series_only,
            newest_only: hints.newest_only,
            groups: None,
        };
        // Peers first, so they work while the local read runs.
        let pending = self.start(move |groups, client, timeout| {
            let req = pb::SelectRequest {
                groups,
                ..req.clone()
            };
            Box::pin(fetch_select(client, req, timeout))
        })?;
        let local: Vec<Series> = self
            .local
            .select(hints, matchers)?
            .collect::<Result<_, _>>()?;
        let remote = self.wait("Select", pending)?;
        let mut sets: Vec<SeriesSet> = vec![Box::new(local.into_iter().map(Ok))];
        sets.extend(
            remote
                .into_iter()
                .map(|v| Box::new(v.into_iter().map(Ok)) as SeriesSet),
        );
        Ok(merge_series_sets(sets))
    }

    fn label_values(&self, name: &str, matchers: &[Matcher]) -> Result<Vec<String>, StorageError> {
        let req = pb::LabelValuesRequest {
            min_time_ms: self.mint,
            max_time_ms: self.maxt,
            name: name.to_string(),
            matchers: matchers_to_pb(matchers),
            groups: None,
        };
        let pending = self.start(move |groups, client, timeout| {
            let req = pb::LabelValuesRequest {
                groups,
                ..req.clone()
            };
            Box::pin(async move {
                fetch_one(client, LABEL_VALUES_PATH, req, timeout)
                    .await
                    .map(|r: pb::LabelValuesResponse| r.values)
            })
        })?;
        let local = self.local.label_values(name, matchers)?;
        let mut lists = self.wait("LabelValues", pending)?;
        lists.push(local);
        Ok(merge_sorted_unique(lists))
    }

    fn label_names(&self, matchers: &[Matcher]) -> Result<Vec<String>, StorageError> {
        let req = pb::LabelNamesRequest {
            min_time_ms: self.mint,
            max_time_ms: self.maxt,
            matchers: matchers_to_pb(matchers),
            groups: None,
        };
        let pending = self.start(move |groups, client, timeout| {
            let req = pb::LabelNamesRequest {
                groups,
                ..req.clone()
            };
            Box::pin(async move {
                fetch_one(client, LABEL_NAMES_PATH, req, timeout)
                    .await
                    .map(|r: pb::LabelNamesResponse| r.names)
            })
        })?;
        let local = self.local.label_names(matchers)?;
        let mut lists = self.wait("LabelNames", pending)?;
        lists.push(local);
        Ok(merge_sorted_unique(lists))
    }

    fn warnings(&self) -> Vec<String> {
        let mut w = self.local.warnings();
        w.extend(self.warnings.lock().iter().cloned());
        w
    }
}

#[cfg(test)]
mod tests {
    use super::merge_sorted_unique;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn lists_merge_sorted_without_duplicates() {
        let got = merge_sorted_unique(vec![
            strings(&["a", "c", "e"]),
            strings(&[]),
            strings(&["b", "c", "f"]),
            strings(&["a", "f", "g"]),
        ]);
        assert_eq!(got, strings(&["a", "b", "c", "e", "f", "g"]));
    }

    #[test]
    fn an_unsorted_list_is_sorted_before_merging() {
        let got = merge_sorted_unique(vec![strings(&["b", "d"]), strings(&["c", "a", "c", "d"])]);
        assert_eq!(got, strings(&["a", "b", "c", "d"]));
    }
}
