//! The history of the harness's writes and the check over what the nodes return
//! afterwards.
//!
//! Every write is one remote-write request carrying one sample for each of a
//! writer's series, at a timestamp and with values that identify the request, so
//! any sample read back names the request it came from. A write is *acknowledged*
//! (2xx), *refused* (4xx: it must not have happened) or *indeterminate* (5xx, a
//! timeout or a broken connection: the entry may still commit later, so it may or
//! may not be there). The check, per node, after the faults are healed:
//! - lost: an acknowledged sample is missing or has another value;
//! - phantom: a sample that no request wrote, or from a refused request;
//! - divergence: two nodes return different data (the replicas disagree).

use std::collections::BTreeMap;

/// Series each write touches (one sample each).
pub const SERIES_PER_WRITER: usize = 4;
/// Milliseconds between a writer's consecutive requests' timestamps.
pub const STEP_MS: i64 = 10;

/// The sample timestamp of writer `w`'s request `k`.
pub fn timestamp(base_ms: i64, k: u64) -> i64 {
    base_ms + k as i64 * STEP_MS
}

/// The value writer `w`'s request `k` writes to its series `s`: unique per sample.
pub fn value(w: usize, k: u64, s: usize) -> f64 {
    (k as f64) * 1000.0 + (w * 10 + s) as f64 + 0.25
}

/// How a request ended, from the client's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Acked,
    Refused(u16),
    Indeterminate(String),
}

/// One write in the history.
#[derive(Debug, Clone)]
pub struct Op {
    pub writer: usize,
    pub k: u64,
    pub node: u64,
    pub outcome: Outcome,
}

/// What one node returned: (writer, series) -> timestamp -> value.
pub type Read = BTreeMap<(usize, usize), BTreeMap<i64, f64>>;

/// The findings of `check`.
#[derive(Debug, Default)]
pub struct Report {
    pub acked: usize,
    pub refused: usize,
    pub indeterminate: usize,
    /// Indeterminate writes whose samples are there after all.
    pub indeterminate_present: usize,
    pub lost: Vec<String>,
    pub phantom: Vec<String>,
    pub divergent: Vec<String>,
}

impl Report {
    /// How many lost samples each node's read misses, by its "node N:" prefix.
    pub fn lost_by_node(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for l in &self.lost {
            let node = l.split(':').next().unwrap_or("").to_string();
            *m.entry(node).or_default() += 1;
        }
        m
    }

    pub fn ok(&self) -> bool {
        self.lost.is_empty() && self.phantom.is_empty() && self.divergent.is_empty()
    }
}

/// Problems with one node's read; empty when it holds every acknowledged sample
/// and nothing else than what was written.
pub fn problems(ops: &[Op], base_ms: i64, read: &Read) -> (Vec<String>, Vec<String>) {
    let mut lost = Vec::new();
    let mut phantom = Vec::new();
    let by_key: BTreeMap<(usize, u64), &Op> = ops.iter().map(|o| ((o.writer, o.k), o)).collect();
    for op in ops.iter().filter(|o| o.outcome == Outcome::Acked) {
        let t = timestamp(base_ms, op.k);
        for s in 0..SERIES_PER_WRITER {
            let got = read.get(&(op.writer, s)).and_then(|m| m.get(&t));
            if got != Some(&value(op.writer, op.k, s)) {
                lost.push(format!(
                    "writer {} request {} (to node {}) series {s} at {t}: got {got:?}",
                    op.writer, op.k, op.node
                ));
            }
        }
    }
    for (&(w, s), samples) in read {
        for (&t, &v) in samples {
            let off = t - base_ms;
            let k = (off / STEP_MS) as u64;
            let op = (off >= 0 && off % STEP_MS == 0)
                .then(|| by_key.get(&(w, k)))
                .flatten();
            let why = match op {
                None => Some("no request wrote this timestamp".to_string()),
                Some(op) if matches!(op.outcome, Outcome::Refused(_)) => {
                    Some(format!("request {k} was refused ({:?})", op.outcome))
                }
                Some(_) if v != value(w, k, s) => {
                    Some(format!("value {v} is not {}", value(w, k, s)))
                }
                Some(_) => None,
            };
            if let Some(why) = why {
                phantom.push(format!("writer {w} series {s} at {t}: {why}"));
            }
        }
    }
    (lost, phantom)
}

/// The whole check over every node's final read.
pub fn check(ops: &[Op], base_ms: i64, reads: &[(u64, Read)]) -> Report {
    let mut r = Report::default();
    for op in ops {
        match op.outcome {
            Outcome::Acked => r.acked += 1,
            Outcome::Refused(_) => r.refused += 1,
            Outcome::Indeterminate(_) => r.indeterminate += 1,
        }
    }
    for (node, read) in reads {
        let (lost, phantom) = problems(ops, base_ms, read);
        r.lost
            .extend(lost.into_iter().map(|p| format!("node {node}: {p}")));
        r.phantom
            .extend(phantom.into_iter().map(|p| format!("node {node}: {p}")));
    }
    if let Some((first, first_read)) = reads.first() {
        for (node, read) in &reads[1..] {
            if read != first_read {
                r.divergent.push(format!(
                    "node {node} returns {} samples, node {first} {}",
                    count(read),
                    count(first_read)
                ));
            }
        }
        r.indeterminate_present = ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Indeterminate(_)))
            .filter(|o| {
                first_read
                    .get(&(o.writer, 0))
                    .is_some_and(|m| m.contains_key(&timestamp(base_ms, o.k)))
            })
            .count();
    }
    r
}

fn count(read: &Read) -> usize {
    read.values().map(|m| m.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(k: u64, outcome: Outcome) -> Op {
        Op {
            writer: 1,
            k,
            node: 2,
            outcome,
        }
    }

    fn read_of(entries: &[(u64, f64)]) -> Read {
        let mut r = Read::new();
        for s in 0..SERIES_PER_WRITER {
            let m = r.entry((1, s)).or_default();
            for &(k, delta) in entries {
                m.insert(timestamp(1000, k), value(1, k, s) + delta);
            }
        }
        r
    }

    #[test]
    fn the_checker_finds_lost_phantom_and_divergent_data() {
        let ops = vec![
            op(0, Outcome::Acked),
            op(1, Outcome::Indeterminate("timeout".into())),
            op(2, Outcome::Refused(400)),
        ];
        // Acked present, indeterminate absent: fine.
        let good = read_of(&[(0, 0.0)]);
        assert!(check(&ops, 1000, &[(1, good.clone()), (2, good.clone())]).ok());
        // Indeterminate present on every node: fine, and counted.
        let with_1 = read_of(&[(0, 0.0), (1, 0.0)]);
        let r = check(&ops, 1000, &[(1, with_1.clone()), (2, with_1)]);
        assert!(r.ok() && r.indeterminate_present == 1, "{r:?}");
        // The acked sample missing: lost.
        let r = check(&ops, 1000, &[(1, read_of(&[]))]);
        assert_eq!(r.lost.len(), SERIES_PER_WRITER, "{r:?}");
        // A wrong value, a refused request's sample, an unwritten timestamp: phantom.
        for bad in [
            read_of(&[(0, 0.0), (1, 5.0)]),
            read_of(&[(0, 0.0), (2, 0.0)]),
            read_of(&[(0, 0.0), (7, 0.0)]),
        ] {
            let r = check(&ops, 1000, &[(1, bad)]);
            assert_eq!(r.phantom.len(), SERIES_PER_WRITER, "{r:?}");
        }
        // Two nodes that disagree: divergent.
        let r = check(
            &ops,
            1000,
            &[(1, good), (2, read_of(&[(0, 0.0), (1, 0.0)]))],
        );
        assert_eq!(r.divergent.len(), 1, "{r:?}");
    }
}
