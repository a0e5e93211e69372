//! The dispatcher and its aggregation groups, and the notification pipeline each
//! group's flush runs (inhibit, time intervals, silence, then per integration:
//! dedup by notification log, send with retries, log) — Alertmanager's
//! `dispatch/dispatch.go` and `notify/notify.go`.
//!
//! Each aggregation group is one tokio task. Its timer first fires after
//! `group_wait` (at once if an alert arrives whose start is already older than
//! that), then every `group_interval`; `repeat_interval` is enforced by the
//! notification log, not by a timer.

use super::inhibit::Inhibitor;
use super::nflog::NotificationLog;
use super::notify::{
    sort_alerts, HttpClient, Integration, NotifyContext, NotifyError, NotifyMetrics,
};
use super::route::{RouteOpts, RouteTree};
use super::silence::Silences;
use super::timeinterval::{any_contains, TimeInterval};
use super::types::{add, zero_time, Alert, Clock};
use crate::labels::Labels;
use jiff::Timestamp;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most aggregation groups; alerts that would open more are dropped and logged.
pub const AGGR_GROUPS_MAX: usize = 100_000;
/// Most alerts in one aggregation group.
pub const GROUP_ALERTS_MAX: usize = 100_000;
/// How often empty aggregation groups are stopped.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(30);

/// Everything a flush needs besides the group: receivers, time intervals, the
/// muting state and the notification log. One per loaded config.
pub struct Pipeline {
    pub receivers: HashMap<String, Vec<Integration>>,
    pub time_intervals: BTreeMap<String, Vec<TimeInterval>>,
    pub inhibitor: Arc<Inhibitor>,
    pub silences: Arc<Silences>,
    pub nflog: Arc<NotificationLog>,
    pub clock: Clock,
    pub client: HttpClient,
    pub metrics: Arc<NotifyMetrics>,
    pub external_url: String,
    /// The default templates and the config's `templates:` files.
    pub templates: crate::alertmanager::template::Templates,
}

/// What the pipeline knows about the group being flushed.
pub struct FlushContext<'a> {
    pub group_key: &'a str,
    pub group_labels: &'a Labels,
    pub opts: &'a RouteOpts,
    pub now: Timestamp,
    /// Retries stop here (the next flush).
    pub deadline: Instant,
}

impl Pipeline {
    /// Runs the pipeline; true when every integration succeeded (or nothing had
    /// to be sent), which lets the group forget the resolved alerts it sent.
    pub async fn exec(&self, ctx: &FlushContext<'_>, alerts: Vec<Alert>) -> bool {
        let now = ctx.now;
        let alerts: Vec<Alert> = alerts
            .into_iter()
            .filter(|a| self.inhibitor.inhibited_by(&a.labels, now).is_none())
            .collect();
        if alerts.is_empty() {
            return true;
        }
        if !ctx.opts.active_time_intervals.is_empty() {
            let active = ctx.opts.active_time_intervals.iter().any(|n| {
                self.time_intervals
                    .get(n)
                    .is_some_and(|tis| any_contains(tis, now))
            });
            if !active {
                return true;
            }
        }
        let muted = ctx.opts.mute_time_intervals.iter().any(|n| {
            self.time_intervals
                .get(n)
                .is_some_and(|tis| any_contains(tis, now))
        });
        if muted {
            return true;
        }
        let alerts: Vec<Alert> = alerts
            .into_iter()
            .filter(|a| self.silences.mutes(&a.labels).is_empty())
            .collect();
        if alerts.is_empty() {
            return true;
        }
        let Some(integrations) = self.receivers.get(&ctx.opts.receiver) else {
            tracing::error!(receiver = %ctx.opts.receiver, "receiver missing from the loaded config");
            return false;
        };
        let sends = integrations
            .iter()
            .map(|i| self.exec_integration(i, ctx, &alerts));
        futures_all(sends).await.into_iter().all(|ok| ok)
    }

    async fn exec_integration(
        &self,
        integ: &Integration,
        ctx: &FlushContext<'_>,
        alerts: &[Alert],
    ) -> bool {
        let mut firing = BTreeSet::new();
        let mut resolved = BTreeSet::new();
        for a in alerts {
            if a.resolved_at(ctx.now) {
                resolved.insert(a.fingerprint());
            } else {
                firing.insert(a.fingerprint());
            }
        }
        // Dedup stage.
        let entry = self.nflog.query(&integ.key, ctx.group_key);
        let needs_update = match &entry {
            None => !firing.is_empty(),
            Some(e) => {
                if !e.is_firing_subset(&firing) {
                    true
                } else if firing.is_empty() {
                    // Everything resolved: tell the receiver only if it was told
                    // something fired (irrespective of send_resolved, so that the
                    // log forgets the firing alerts).
                    !e.firing_alerts.is_empty()
                } else if integ.send_resolved && !e.is_resolved_subset(&resolved) {
                    true
                } else {
                    e.timestamp < super::types::sub(ctx.now, ctx.opts.repeat_interval)
                }
            }
        };
        if !needs_update {
            return true;
        }
        // Retry stage: without send_resolved only firing alerts go out, and a
        // notification of only resolved alerts is logged without sending.
        let sent: Vec<Alert> = if integ.send_resolved {
            alerts.to_vec()
        } else {
            alerts
                .iter()
                .filter(|a| !a.resolved_at(ctx.now))
                .cloned()
                .collect()
        };
        let res = if sent.is_empty() {
            Ok(())
        } else {
            let nctx = NotifyContext {
                receiver: &ctx.opts.receiver,
                group_key: ctx.group_key,
                group_labels: ctx.group_labels,
                external_url: &self.external_url,
                now: ctx.now,
                templates: &self.templates,
            };
            self.retry(integ, &nctx, &sent, ctx.deadline).await
        };
        self.metrics.observe_notification(integ.name(), res.is_ok());
        if let Err(e) = res {
            tracing::error!(receiver = %ctx.opts.receiver, integration = %integ.key.integration, idx = integ.key.idx, error = %e, "notify failed");
            return false;
        }
        // Set-notifies stage.
        self.nflog.log(&integ.key, ctx.group_key, firing, resolved);
        true
    }
}

impl Pipeline {
    /// Alertmanager's retry stage: attempts at once, then again after an
    /// exponential backoff, until one succeeds, one fails for good, or the
    /// flush's deadline passes. Every attempt is counted and timed.
    async fn retry(
        &self,
        integ: &Integration,
        nctx: &NotifyContext<'_>,
        sent: &[Alert],
        deadline: Instant,
    ) -> Result<(), String> {
        let name = format!(
            "{}/{}[{}]",
            integ.key.group_name, integ.key.integration, integ.key.idx
        );
        let mut attempts = 0u32;
        let mut last_err: Option<String> = None;
        let mut backoff = Backoff::default();
        let run = async {
            loop {
                attempts += 1;
                let started = Instant::now();
                let res = integ.notify(&self.client, nctx, sent).await;
                self.metrics
                    .observe_request(integ.name(), res.is_ok(), started.elapsed());
                match res {
                    Ok(()) => {
                        if attempts > 1 {
                            tracing::info!(integration = %name, attempts, "notify success");
                        }
                        return Ok(());
                    }
                    Err(NotifyError::Permanent(e)) => {
                        return Err(format!(
                            "{name}: notify retry canceled due to unrecoverable error after {attempts} attempts: {e}"
                        ))
                    }
                    Err(NotifyError::Retryable(e)) => {
                        if last_err.as_deref() != Some(e.as_str()) {
                            tracing::warn!(integration = %name, attempts, error = %e, "notify attempt failed, will retry later");
                        }
                        last_err = Some(e);
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        };
        match tokio::time::timeout_at(deadline, run).await {
            Ok(res) => res,
            Err(_) => Err(format!(
                "{name}: notify retry canceled after {attempts} attempts: {}",
                last_err.as_deref().unwrap_or("context deadline exceeded")
            )),
        }
    }
}

/// The least time a flush may spend notifying (Alertmanager's `MinTimeout`).
pub const NOTIFY_TIMEOUT_MIN: Duration = Duration::from_secs(10);

/// Exponential backoff with Alertmanager's settings (cenkalti/backoff's
/// defaults): 500 ms growing by 1.5× up to 60 s, each delay randomised by ±50%.
#[derive(Debug, Clone)]
pub struct Backoff {
    current: Duration,
}

impl Backoff {
    pub const INITIAL: Duration = Duration::from_millis(500);
    pub const MULTIPLIER: f64 = 1.5;
    pub const RANDOMIZATION: f64 = 0.5;
    pub const MAX: Duration = Duration::from_secs(60);

    /// The next delay (randomised), growing the interval for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let jitter = (ulid::Ulid::new().random() % 1_000_001) as f64 / 1_000_000.0;
        let factor = 1.0 - Self::RANDOMIZATION + 2.0 * Self::RANDOMIZATION * jitter;
        let delay = self.current.mul_f64(factor);
        self.current = self.current.mul_f64(Self::MULTIPLIER).min(Self::MAX);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            current: Self::INITIAL,
        }
    }
}

/// Runs futures concurrently on this task and collects their outputs in order.
async fn futures_all<F: std::future::Future<Output = bool>>(
    futs: impl Iterator<Item = F>,
) -> Vec<bool> {
    let futs: Vec<_> = futs.map(Box::pin).collect();
    let mut out = vec![false; futs.len()];
    let mut pending: Vec<(usize, std::pin::Pin<Box<F>>)> = futs.into_iter().enumerate().collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|(i, f)| match f.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => {
                out[*i] = v;
                false
            }
            std::task::Poll::Pending => true,
        });
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out
}

struct GroupState {
    alerts: HashMap<u64, Alert>,
    has_flushed: bool,
}

/// An aggregation group: the alerts of one route with equal group labels.
pub struct AggrGroup {
    pub route_index: usize,
    pub labels: Labels,
    /// Alertmanager's group key (`route key:group labels`).
    pub key: String,
    pub opts: RouteOpts,
    state: Mutex<GroupState>,
    /// Asks the group's task to flush now (the group wait is already over).
    wake: Notify,
    cancel: CancellationToken,
}

impl AggrGroup {
    /// The group's alerts now (copies).
    pub fn alerts(&self) -> Vec<Alert> {
        self.state.lock().alerts.values().cloned().collect()
    }

    fn insert(&self, alert: Alert, now: Timestamp) -> bool {
        let mut st = self.state.lock();
        if st.alerts.len() >= GROUP_ALERTS_MAX && !st.alerts.contains_key(&alert.fingerprint()) {
            return false;
        }
        let early = add(alert.starts_at, self.opts.group_wait) < now;
        st.alerts.insert(alert.fingerprint(), alert);
        if !st.has_flushed && early {
            self.wake.notify_one();
        }
        true
    }

    async fn run(self: Arc<Self>, pipeline: Arc<Pipeline>) {
        let mut next = Instant::now() + self.opts.group_wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    let tick = Instant::now();
                    next = tick + self.opts.group_interval;
                    self.state.lock().has_flushed = true;
                    // Notifying may take until the next flush, and at least
                    // NOTIFY_TIMEOUT_MIN (Alertmanager's context timeout).
                    let deadline = tick + self.opts.group_interval.max(NOTIFY_TIMEOUT_MIN);
                    self.flush(&pipeline, deadline).await;
                }
                _ = self.wake.notified() => {
                    if !self.state.lock().has_flushed {
                        next = Instant::now();
                    }
                }
                _ = self.cancel.cancelled() => return,
            }
        }
    }

    async fn flush(&self, pipeline: &Pipeline, deadline: Instant) {
        let now = pipeline.clock.now();
        let (alerts, resolved) = {
            let st = self.state.lock();
            if st.alerts.is_empty() {
                return;
            }
            let mut alerts = Vec::with_capacity(st.alerts.len());
            let mut resolved = Vec::new();
            for a in st.alerts.values() {
                let mut a = a.clone();
                if a.resolved_at(now) {
                    resolved.push(a.clone());
                } else {
                    // A firing alert must not turn resolved while the pipeline runs.
                    a.ends_at = zero_time();
                }
                alerts.push(a);
            }
            (alerts, resolved)
        };
        let mut alerts = alerts;
        sort_alerts(&mut alerts);
        let ctx = FlushContext {
            group_key: &self.key,
            group_labels: &self.labels,
            opts: &self.opts,
            now,
            deadline,
        };
        if pipeline.exec(&ctx, alerts).await {
            // Forget the resolved alerts just sent, unless one fired again meanwhile.
            let mut st = self.state.lock();
            for r in resolved {
                let fp = r.fingerprint();
                if st
                    .alerts
                    .get(&fp)
                    .is_some_and(|cur| cur.updated_at == r.updated_at)
                {
                    st.alerts.remove(&fp);
                }
            }
        }
    }
}

/// The dispatcher of one loaded config: routes alerts into aggregation groups.
pub struct Dispatcher {
    routes: Arc<RouteTree>,
    pipeline: Arc<Pipeline>,
    groups: Mutex<HashMap<(usize, u64), Arc<AggrGroup>>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Dispatcher {
    /// A dispatcher with no groups; `start_maintenance` stops empty groups.
    pub fn new(routes: Arc<RouteTree>, pipeline: Arc<Pipeline>) -> Arc<Dispatcher> {
        Arc::new(Dispatcher {
            routes,
            pipeline,
            groups: Mutex::new(HashMap::new()),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
        })
    }

    /// Starts the loop that stops empty aggregation groups.
    pub fn start_maintenance(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = cancel.cancelled() => return,
                }
                let Some(d) = me.upgrade() else { return };
                d.groups.lock().retain(|_, g| {
                    let empty = g.state.lock().alerts.is_empty();
                    if empty {
                        g.cancel.cancel();
                    }
                    !empty
                });
            }
        });
    }

    /// Routes an alert into the groups of every route it matches.
    pub fn process(&self, alert: &Alert) {
        let now = self.pipeline.clock.now();
        for route in self.routes.match_labels(&alert.labels) {
            let labels = route.group_labels(&alert.labels);
            let fp = super::types::fingerprint(&labels);
            let mut groups = self.groups.lock();
            let group = match groups.get(&(route.index, fp)) {
                Some(g) => g.clone(),
                None => {
                    if groups.len() >= AGGR_GROUPS_MAX {
                        tracing::warn!(
                            limit = AGGR_GROUPS_MAX,
                            "too many aggregation groups, alert dropped"
                        );
                        continue;
                    }
                    let g = Arc::new(AggrGroup {
                        route_index: route.index,
                        key: route.group_key(&labels),
                        labels,
                        opts: route.opts.clone(),
                        state: Mutex::new(GroupState {
                            alerts: HashMap::new(),
                            has_flushed: false,
                        }),
                        wake: Notify::new(),
                        cancel: self.cancel.child_token(),
                    });
                    groups.insert((route.index, fp), g.clone());
                    self.tracker.spawn(g.clone().run(self.pipeline.clone()));
                    g
                }
            };
            if !group.insert(alert.clone(), now) {
                tracing::warn!(group = %group.key, limit = GROUP_ALERTS_MAX, "aggregation group full, alert dropped");
            }
        }
    }

    /// Snapshot of the current aggregation groups.
    pub fn groups(&self) -> Vec<Arc<AggrGroup>> {
        let mut v: Vec<_> = self.groups.lock().values().cloned().collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// The routing tree this dispatcher uses.
    pub fn routes(&self) -> &RouteTree {
        &self.routes
    }

    /// Stops every group task and waits for them.
    pub async fn stop(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}
