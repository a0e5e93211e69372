//! Scrape targets: turning discovered label sets into targets as Prometheus's
//! `PopulateLabels` does, and a target's identity, URL and scrape offset.

use std::collections::BTreeMap;
use std::hash::Hasher;

use crate::config::{DurationMs, ScrapeConfig};
use crate::discovery::{TargetGroup, ADDRESS_LABEL};
use crate::labels::{Labels, LabelsBuilder};

pub const SCHEME_LABEL: &str = "__scheme__";
pub const METRICS_PATH_LABEL: &str = "__metrics_path__";
pub const SCRAPE_INTERVAL_LABEL: &str = "__scrape_interval__";
pub const SCRAPE_TIMEOUT_LABEL: &str = "__scrape_timeout__";
pub const PARAM_LABEL_PREFIX: &str = "__param_";
pub const META_LABEL_PREFIX: &str = "__meta_";
pub const JOB_LABEL: &str = "job";
pub const INSTANCE_LABEL: &str = "instance";

/// One target of a scrape pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Labels after relabeling, including the `__`-prefixed ones that say how to
    /// scrape (`__address__`, `__scheme__`, ...). Meta labels are gone.
    pub labels: Labels,
    /// Labels as discovered, before relabeling (shown by the targets API).
    pub discovered_labels: Labels,
    /// Scrape interval and timeout from the target's labels.
    pub interval_ms: i64,
    pub timeout_ms: i64,
}

impl Target {
    /// The labels attached to every series scraped from the target: all labels
    /// not starting with `__`.
    pub fn series_labels(&self) -> Labels {
        let mut b = LabelsBuilder::new();
        for l in self.labels.iter() {
            if !l.name.starts_with("__") {
                b.set(l.name, l.value);
            }
        }
        b.build()
    }

    /// The URL scraped: scheme, address, path, and `__param_*` labels (over the
    /// config's `params`) as the query.
    pub fn url(&self, params: &BTreeMap<String, Vec<String>>) -> String {
        let mut query: BTreeMap<String, Vec<String>> = params.clone();
        for l in self.labels.iter() {
            if let Some(name) = l.name.strip_prefix(PARAM_LABEL_PREFIX) {
                let vals = query.entry(name.to_string()).or_default();
                if vals.is_empty() {
                    vals.push(l.value.to_string());
                } else {
                    vals[0] = l.value.to_string();
                }
            }
        }
        let mut url = format!(
            "{}://{}{}",
            self.labels.get(SCHEME_LABEL),
            self.labels.get(ADDRESS_LABEL),
            self.labels.get(METRICS_PATH_LABEL)
        );
        let mut first = true;
        for (k, vs) in &query {
            for v in vs {
                url.push(if first { '?' } else { '&' });
                first = false;
                url.push_str(&query_escape(k));
                url.push('=');
                url.push_str(&query_escape(v));
            }
        }
        url
    }

    /// A hash identifying the target within its pool (labels and URL), stable
    /// across processes so scrape offsets survive restarts.
    pub fn hash(&self) -> u64 {
        let mut h = Fnv64::default();
        h.write_u64(self.labels.stable_hash());
        h.write(self.labels.get(ADDRESS_LABEL).as_bytes());
        h.finish()
    }

    /// Where in each interval this target is scraped, in ms: a stable function of
    /// the target's hash and a seed, like Prometheus's `offset`, so targets are
    /// spread over the interval and a restart keeps each target's phase. In a
    /// cluster every node uses the same seed, so a target's slots are the same on
    /// every node and a handoff lands on the old owner's next slot.
    pub fn slot_offset_ms(&self, seed: u64) -> i64 {
        let interval = self.interval_ms.max(1);
        ((self.hash() ^ seed) % interval as u64) as i64
    }

    /// The first scrape slot at or after `t_ms` (wall-clock ms): slots are the
    /// times equal to `slot_offset_ms` modulo the interval.
    pub fn next_slot_ms(&self, seed: u64, t_ms: i64) -> i64 {
        let interval = self.interval_ms.max(1);
        let off = self.slot_offset_ms(seed);
        let adj = t_ms - off;
        let slot = adj - adj.rem_euclid(interval) + off;
        if slot < t_ms {
            slot + interval
        } else {
            slot
        }
    }

    /// The target's key on the cluster's ring: its job and final label set
    /// (including the `__` labels that say how to scrape it), as explicit bytes,
    /// so every node places it the same.
    pub fn ring_key(&self, job: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(64);
        key.extend_from_slice(job.as_bytes());
        for l in self.labels.iter() {
            key.push(0xff);
            key.extend_from_slice(l.name.as_bytes());
            key.push(0xfe);
            key.extend_from_slice(l.value.as_bytes());
        }
        key
    }
}

/// FNV-1a, for stable hashes.
#[derive(Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// What became of one discovered target.
#[derive(Debug, Clone, PartialEq)]
pub enum Populated {
    /// Scrape it.
    Target(Target),
    /// Relabeling dropped it; the discovered labels are kept for the API.
    Dropped(Labels),
    /// Its labels are unusable (no address, bad interval...).
    Invalid { discovered: Labels, error: String },
}

/// Builds the targets of `groups` for `cfg`, in Prometheus's order: group labels,
/// then target labels, then the job's defaults (`job`, interval, timeout, path,
/// scheme, `__param_*`) where not already set; relabeling; checks; meta labels
/// dropped; `instance` defaulting to the address.
pub fn targets_from_groups(cfg: &ScrapeConfig, groups: &[TargetGroup]) -> Vec<Populated> {
    let mut out = Vec::new();
    for g in groups {
        for t in &g.targets {
            let mut lb = g.labels.builder();
            for l in t.iter() {
                lb.set(l.name, l.value);
            }
            out.push(populate(cfg, lb));
        }
    }
    out
}

fn populate(cfg: &ScrapeConfig, mut lb: LabelsBuilder) -> Populated {
    let defaults = [
        (JOB_LABEL, cfg.job_name.clone()),
        (
            SCRAPE_INTERVAL_LABEL,
            DurationMs(cfg.scrape_interval_ms()).to_string(),
        ),
        (
            SCRAPE_TIMEOUT_LABEL,
            DurationMs(cfg.scrape_timeout_ms()).to_string(),
        ),
        (METRICS_PATH_LABEL, cfg.metrics_path().to_string()),
        (SCHEME_LABEL, cfg.scheme().to_string()),
    ];
    for (name, value) in &defaults {
        if lb.get(name).is_empty() {
            lb.set(name, value);
        }
    }
    for (k, v) in &cfg.params {
        let name = format!("{PARAM_LABEL_PREFIX}{k}");
        if let Some(first) = v.first() {
            if lb.get(&name).is_empty() {
                lb.set(&name, first);
            }
        }
    }
    let discovered = lb.build();
    if !crate::relabel::process_builder(&mut lb, &cfg.relabel_configs) {
        return Populated::Dropped(discovered);
    }
    let invalid = |error: String| Populated::Invalid {
        discovered: discovered.clone(),
        error,
    };
    let mut addr = lb.get(ADDRESS_LABEL).to_string();
    if addr.is_empty() {
        return invalid("no address".into());
    }
    // Prometheus 2 adds the scheme's default port to an address without one.
    if !has_port(&addr) {
        let port = match lb.get(SCHEME_LABEL) {
            "http" | "" => "80",
            "https" => "443",
            other => return invalid(format!("invalid scheme: {other:?}")),
        };
        addr = format!("{addr}:{port}");
        lb.set(ADDRESS_LABEL, &addr);
    }
    if let Err(e) = crate::config::check_target_address(&addr) {
        return invalid(e);
    }
    let interval_ms = match crate::config_units::parse_duration_ms(lb.get(SCRAPE_INTERVAL_LABEL)) {
        Ok(0) => return invalid("scrape interval cannot be 0".into()),
        Ok(v) => v,
        Err(e) => return invalid(format!("error parsing scrape interval: {e}")),
    };
    let timeout_ms = match crate::config_units::parse_duration_ms(lb.get(SCRAPE_TIMEOUT_LABEL)) {
        Ok(0) => return invalid("scrape timeout cannot be 0".into()),
        Ok(v) => v,
        Err(e) => return invalid(format!("error parsing scrape timeout: {e}")),
    };
    if timeout_ms > interval_ms {
        return invalid(format!(
            "scrape timeout cannot be greater than scrape interval ({:?} > {:?})",
            lb.get(SCRAPE_TIMEOUT_LABEL),
            lb.get(SCRAPE_INTERVAL_LABEL)
        ));
    }
    for (name, _) in lb.pairs() {
        if name.starts_with(META_LABEL_PREFIX) {
            lb.del(&name);
        }
    }
    if lb.get(INSTANCE_LABEL).is_empty() {
        lb.set(INSTANCE_LABEL, &addr);
    }
    Populated::Target(Target {
        labels: lb.build(),
        discovered_labels: discovered,
        interval_ms,
        timeout_ms,
    })
}

/// Whether `addr` ends in `:port` (IPv6 literals in brackets included).
fn has_port(addr: &str) -> bool {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest
            .split_once(']')
            .is_some_and(|(_, after)| after.starts_with(':'));
    }
    addr.matches(':').count() == 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn job(yaml: &str) -> ScrapeConfig {
        let c = Config::parse(yaml, "t.yml").unwrap_or_else(|e| panic!("{e}"));
        c.scrape_configs[0].clone()
    }

    fn group(targets: &[&str], labels: &[(&str, &str)]) -> TargetGroup {
        TargetGroup {
            source: "s".into(),
            targets: targets
                .iter()
                .map(|t| Labels::from_pairs(&[(ADDRESS_LABEL, *t)]))
                .collect(),
            labels: Labels::from_pairs(labels),
        }
    }

    #[test]
    fn labels_built_like_prometheus() {
        let cfg = job("scrape_configs:\n  - job_name: node\n    scrape_interval: 30s\n    params: {module: [a, b]}\n    relabel_configs:\n      - source_labels: [__meta_x]\n        target_label: from_meta\n");
        let got = targets_from_groups(&cfg, &[group(&["h1"], &[("__meta_x", "m"), ("env", "p")])]);
        let Populated::Target(t) = &got[0] else {
            panic!("not a target: {got:?}")
        };
        assert_eq!(
            t.series_labels(),
            Labels::from_pairs(&[
                ("env", "p"),
                ("from_meta", "m"),
                ("instance", "h1:80"),
                ("job", "node")
            ])
        );
        assert_eq!(t.labels.get(SCRAPE_INTERVAL_LABEL), "30s");
        assert_eq!(t.labels.get(SCRAPE_TIMEOUT_LABEL), "10s");
        assert_eq!(t.labels.get("__meta_x"), "");
        assert_eq!(t.discovered_labels.get("__meta_x"), "m");
        assert_eq!(t.interval_ms, 30_000);
        assert_eq!(t.url(&cfg.params), "http://h1:80/metrics?module=a&module=b");
        let off = t.slot_offset_ms(1);
        assert!((0..30_000).contains(&off));
        let next = t.next_slot_ms(1, 1_000_000);
        assert!((1_000_000..1_030_000).contains(&next));
        assert_eq!((next - off) % 30_000, 0);
        assert_eq!(t.next_slot_ms(1, next), next, "a slot is its own next slot");
        assert_eq!(t.next_slot_ms(1, next + 1), next + 30_000);
        assert_eq!(t.ring_key("node"), t.clone().ring_key("node"), "stable");
        assert_ne!(t.ring_key("node"), t.ring_key("other"));
    }

    #[test]
    fn relabel_can_set_address_path_and_params() {
        // The blackbox exporter pattern from Prometheus's docs.
        let cfg = job(r#"
scrape_configs:
  - job_name: blackbox
    metrics_path: /probe
    params: {module: [http_2xx]}
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: 127.0.0.1:9115
"#);
        let got = targets_from_groups(&cfg, &[group(&["example.com"], &[])]);
        let Populated::Target(t) = &got[0] else {
            panic!("not a target: {got:?}")
        };
        assert_eq!(t.series_labels().get("instance"), "example.com");
        assert_eq!(
            t.url(&cfg.params),
            "http://127.0.0.1:9115/probe?module=http_2xx&target=example.com"
        );
    }

    #[test]
    fn dropped_and_invalid_targets() {
        let cfg = job("scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - source_labels: [__address__]\n        regex: drop.*\n        action: drop\n      - source_labels: [__address__]\n        regex: 'noaddr.*'\n        target_label: __address__\n        replacement: ''\n");
        let got = targets_from_groups(&cfg, &[group(&["dropme:1", "noaddr:1", "ok:1"], &[])]);
        assert!(matches!(got[0], Populated::Dropped(_)));
        assert!(matches!(&got[1], Populated::Invalid { error, .. } if error == "no address"));
        assert!(matches!(got[2], Populated::Target(_)));
    }
}
