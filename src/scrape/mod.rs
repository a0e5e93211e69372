//! Scraping: the scrape manager runs one scrape pool per job, each pool one loop
//! per target, appending through `storage::Appendable`.
//!
//! The manager is given whole configurations (`apply_config`); a pool whose job
//! config did not change keeps its loops running across a reload. A pool receives
//! target groups from its discovery providers (`crate::discovery`) and starts and
//! stops loops as targets come and go; a target that goes away has its series
//! marked stale, as in Prometheus.
//!
//! In a cluster every node runs every pool and a loop for every target, but a loop
//! scrapes only the slots its node owns (`cluster::Ownership`, keyed by
//! `Target::ring_key`), so each target is scraped by one node at a time and moves
//! between nodes at a slot boundary.

pub mod http;
pub mod scrape_loop;
mod series_cache;
pub mod target;
pub mod tls;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cluster::{OwnAll, Ownership};
use crate::config::{Config, ScrapeConfig};
use crate::discovery::{self, TargetGroup, Update};
use crate::labels::Labels;
use crate::storage::Appendable;

pub use http::HttpClient;
pub use scrape_loop::{Health, LoopControl, MetricMetadata, TargetMetadata, TargetStatus};
pub use target::{Populated, Target};

/// Most targets one pool runs, whatever `target_limit` says: a limit on memory
/// and tasks.
pub const POOL_TARGETS_MAX: usize = 100_000;

/// A target as the targets API shows it.
#[derive(Debug, Clone)]
pub struct TargetInfo {
    pub job: String,
    pub discovered_labels: Labels,
    /// Labels after relabeling, without `__`-prefixed ones.
    pub labels: Labels,
    pub scrape_url: String,
    pub global_url: String,
    pub interval_ms: i64,
    pub timeout_ms: i64,
    pub status: TargetStatus,
}

/// What a pool exposes to the API.
#[derive(Default)]
struct PoolView {
    active: Vec<(Target, String, Arc<Mutex<TargetStatus>>)>,
    dropped: Vec<Labels>,
}

struct PoolHandle {
    cfg: Arc<ScrapeConfig>,
    control: LoopControl,
    view: Arc<Mutex<PoolView>>,
}

/// Runs scrape pools for the jobs of the current configuration.
pub struct ScrapeManager {
    appendable: Arc<dyn Appendable>,
    client: HttpClient,
    /// Which targets this node scrapes when, and the seed of scrape slots.
    ownership: Arc<dyn Ownership>,
    pools: Mutex<HashMap<String, PoolHandle>>,
}

impl ScrapeManager {
    /// A manager that scrapes every target, appending into `appendable`; `seed`
    /// decides scrape offsets (Prometheus seeds with external labels and hostname,
    /// so that two servers with the same targets spread them differently).
    pub fn new(appendable: Arc<dyn Appendable>, seed: u64) -> ScrapeManager {
        ScrapeManager::with_ownership(appendable, Arc::new(OwnAll { seed }))
    }

    /// A manager that scrapes the targets `ownership` gives this node.
    pub fn with_ownership(
        appendable: Arc<dyn Appendable>,
        ownership: Arc<dyn Ownership>,
    ) -> ScrapeManager {
        ScrapeManager {
            appendable,
            client: HttpClient::new(),
            ownership,
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// Makes the running pools match `cfg`: unchanged jobs keep running, changed
    /// jobs are restarted (without staleness markers, since their targets
    /// continue), removed jobs stop and mark their series stale. Must be called
    /// inside a tokio runtime.
    pub fn apply_config(&self, cfg: &Config) {
        let mut pools = self.pools.lock();
        let wanted: HashMap<&str, &ScrapeConfig> = cfg
            .scrape_configs
            .iter()
            .map(|s| (s.job_name.as_str(), s))
            .collect();
        pools.retain(|job, p| {
            if wanted.contains_key(job.as_str()) {
                return true;
            }
            tracing::info!(job, "stopping scrape pool");
            p.control.stop.cancel();
            false
        });
        for sc in &cfg.scrape_configs {
            if let Some(p) = pools.get(&sc.job_name) {
                if p.cfg.same_as(sc) {
                    continue;
                }
                tracing::info!(job = %sc.job_name, "restarting scrape pool with its new config");
                p.control.kill.cancel();
            }
            let handle = self.start_pool(Arc::new(sc.clone()));
            pools.insert(sc.job_name.clone(), handle);
        }
    }

    /// Stops every pool at once, without staleness markers (server shutdown).
    pub fn stop(&self) {
        for (_, p) in self.pools.lock().drain() {
            p.control.kill.cancel();
        }
    }

    /// The ring key (`Target::ring_key`) of every active target, whoever owns it.
    pub fn target_keys(&self) -> Vec<Vec<u8>> {
        let pools = self.pools.lock();
        let mut out = Vec::new();
        for (job, p) in pools.iter() {
            for (t, _, _) in &p.view.lock().active {
                out.push(t.ring_key(job));
            }
        }
        out
    }

    /// Every active target this node scrapes now, by job.
    pub fn active_targets(&self) -> Vec<TargetInfo> {
        let pools = self.pools.lock();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut out = Vec::new();
        for (job, p) in pools.iter() {
            let view = p.view.lock();
            for (t, url, status) in &view.active {
                if !self.ownership.owns(&t.ring_key(job), now) {
                    continue;
                }
                out.push(TargetInfo {
                    job: job.clone(),
                    discovered_labels: t.discovered_labels.clone(),
                    labels: t.series_labels(),
                    scrape_url: url.clone(),
                    global_url: url.clone(),
                    interval_ms: t.interval_ms,
                    timeout_ms: t.timeout_ms,
                    status: status.lock().clone(),
                });
            }
        }
        out.sort_by(|a, b| (&a.job, &a.scrape_url).cmp(&(&b.job, &b.scrape_url)));
        out
    }

    /// Discovered label sets relabeling dropped, by job.
    pub fn dropped_targets(&self) -> Vec<(String, Labels)> {
        let pools = self.pools.lock();
        let mut out = Vec::new();
        for (job, p) in pools.iter() {
            for l in &p.view.lock().dropped {
                out.push((job.clone(), l.clone()));
            }
        }
        out
    }

    fn start_pool(&self, cfg: Arc<ScrapeConfig>) -> PoolHandle {
        let control = LoopControl::default();
        let view = Arc::new(Mutex::new(PoolView::default()));
        let (tx, rx) = mpsc::channel(discovery::UPDATES_CHANNEL_CAPACITY);
        // Providers end when the pool's task ends, however it ends.
        let providers_done = CancellationToken::new();
        let providers = discovery::spawn_providers(&cfg, tx, providers_done.clone());
        let pool = Pool {
            providers_done,
            cfg: cfg.clone(),
            appendable: self.appendable.clone(),
            client: self.client.clone(),
            ownership: self.ownership.clone(),
            view: view.clone(),
            loops: HashMap::new(),
            groups: vec![Vec::new(); providers],
        };
        tracing::info!(job = %cfg.job_name, providers, "starting scrape pool");
        tokio::spawn(pool.run(rx, control.clone()));
        PoolHandle { cfg, control, view }
    }
}

struct RunningLoop {
    control: LoopControl,
}

/// One job's targets and their loops.
struct Pool {
    /// Cancelled when the pool's task returns, ending its discovery providers.
    providers_done: CancellationToken,
    cfg: Arc<ScrapeConfig>,
    appendable: Arc<dyn Appendable>,
    client: HttpClient,
    ownership: Arc<dyn Ownership>,
    view: Arc<Mutex<PoolView>>,
    /// Running loops by target hash.
    loops: HashMap<u64, RunningLoop>,
    /// Latest groups of each provider.
    groups: Vec<Vec<TargetGroup>>,
}

impl Pool {
    async fn run(mut self, mut rx: mpsc::Receiver<Update>, control: LoopControl) {
        let _providers_guard = self.providers_done.clone().drop_guard();
        loop {
            tokio::select! {
                _ = control.kill.cancelled() => {
                    for l in self.loops.values() { l.control.kill.cancel(); }
                    return;
                }
                _ = control.stop.cancelled() => {
                    for l in self.loops.values() { l.control.stop.cancel(); }
                    return;
                }
                upd = rx.recv() => match upd {
                    Some(u) => {
                        if let Some(slot) = self.groups.get_mut(u.provider) {
                            *slot = u.groups;
                        }
                        self.sync();
                    }
                    // Every provider has finished (static targets only): keep the
                    // loops until told to stop.
                    None => {
                        tokio::select! {
                            _ = control.kill.cancelled() => {
                                for l in self.loops.values() { l.control.kill.cancel(); }
                            }
                            _ = control.stop.cancelled() => {
                                for l in self.loops.values() { l.control.stop.cancel(); }
                            }
                        }
                        return;
                    }
                }
            }
        }
    }

    /// Starts loops for new targets and stops those of vanished ones.
    fn sync(&mut self) {
        let all: Vec<TargetGroup> = self.groups.iter().flatten().cloned().collect();
        let mut active = Vec::new();
        let mut dropped = Vec::new();
        for p in target::targets_from_groups(&self.cfg, &all) {
            match p {
                Populated::Target(t) => active.push(t),
                Populated::Dropped(l) => dropped.push(l),
                Populated::Invalid { discovered, error } => {
                    tracing::warn!(job = %self.cfg.job_name, labels = %discovered, %error, "dropping invalid target");
                }
            }
        }
        // Deduplicate: the same target found twice is scraped once.
        let mut by_hash: HashMap<u64, Target> = HashMap::new();
        for t in active {
            by_hash.entry(t.hash()).or_insert(t);
        }
        let limit = self.cfg.target_limit.unwrap_or(0);
        let limit_error = (limit > 0 && by_hash.len() as u64 > limit).then(|| {
            format!(
                "target_limit exceeded (number of targets: {}, limit: {limit})",
                by_hash.len()
            )
        });
        if by_hash.len() > POOL_TARGETS_MAX {
            tracing::error!(job = %self.cfg.job_name, targets = by_hash.len(), max = POOL_TARGETS_MAX, "too many targets; keeping the first");
            let mut keys: Vec<u64> = by_hash.keys().copied().collect();
            keys.sort_unstable();
            for k in keys.into_iter().skip(POOL_TARGETS_MAX) {
                by_hash.remove(&k);
            }
        }
        self.loops.retain(|h, l| {
            let keep = by_hash.contains_key(h) && limit_error.is_none();
            if !keep {
                l.control.stop.cancel();
            }
            keep
        });
        let mut view = PoolView {
            active: Vec::new(),
            dropped,
        };
        for (h, t) in by_hash {
            let url = t.url(&self.cfg.params);
            let status = Arc::new(Mutex::new(TargetStatus::default()));
            if let Some(e) = &limit_error {
                let mut s = status.lock();
                s.health = Health::Down;
                s.last_error = e.clone();
            } else if !self.loops.contains_key(&h) {
                let control = LoopControl::default();
                let ctx = Arc::new(scrape_loop::LoopContext {
                    target: t.clone(),
                    cfg: self.cfg.clone(),
                    url: url.clone(),
                    appendable: self.appendable.clone(),
                    client: self.client.clone(),
                    ownership: self.ownership.clone(),
                    key: t.ring_key(&self.cfg.job_name),
                    status: status.clone(),
                });
                tokio::spawn(scrape_loop::run(ctx, control.clone()));
                self.loops.insert(h, RunningLoop { control });
            } else if let Some(old) = self
                .view
                .lock()
                .active
                .iter()
                .find(|(ot, _, _)| ot.hash() == h)
            {
                // Keep showing the running loop's status.
                view.active.push((t, url, old.2.clone()));
                continue;
            }
            view.active.push((t, url, status));
        }
        *self.view.lock() = view;
    }
}
