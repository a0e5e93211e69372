//! The inhibitor: a firing alert that matches a rule's source side mutes alerts
//! that match its target side and agree on the rule's `equal` labels. An alert
//! that matches both sides never inhibits itself or another two-sided match
//! (Alertmanager's `inhibit/inhibit.go`).

use super::config::{build_matchers, InhibitRuleConfig};
use super::matchers::matches_all;
use super::types::Alert;
use crate::labels::{Labels, Matcher};
use jiff::Timestamp;
use parking_lot::Mutex;
use std::collections::HashMap;

/// One compiled inhibition rule and its cache of source alerts.
struct Rule {
    source: Vec<Matcher>,
    target: Vec<Matcher>,
    equal: Vec<String>,
    /// Alerts that matched the source side, by fingerprint (possibly resolved
    /// since; checked when used).
    sources: Mutex<HashMap<u64, Alert>>,
}

/// The inhibitor of one config.
pub struct Inhibitor {
    rules: Vec<Rule>,
}

impl Inhibitor {
    /// Compiles the rules of a validated config.
    pub fn new(rules: &[InhibitRuleConfig]) -> Result<Inhibitor, String> {
        let mut out = Vec::with_capacity(rules.len());
        for r in rules {
            out.push(Rule {
                source: build_matchers(&r.source_match, &r.source_match_re, &r.source_matchers)?,
                target: build_matchers(&r.target_match, &r.target_match_re, &r.target_matchers)?,
                equal: r.equal.clone(),
                sources: Mutex::new(HashMap::new()),
            });
        }
        Ok(Inhibitor { rules: out })
    }

    /// Feeds a received alert (every alert the store accepts passes here).
    pub fn observe(&self, alert: &Alert) {
        for r in &self.rules {
            if matches_all(&r.source, &alert.labels) {
                r.sources.lock().insert(alert.fingerprint(), alert.clone());
            }
        }
    }

    /// Forgets source alerts resolved before `now`.
    pub fn gc(&self, now: Timestamp) {
        for r in &self.rules {
            r.sources.lock().retain(|_, a| !a.resolved_at(now));
        }
    }

    /// The fingerprint of an alert that inhibits `labels` at `now`, if any.
    pub fn inhibited_by(&self, labels: &Labels, now: Timestamp) -> Option<u64> {
        for r in &self.rules {
            if !matches_all(&r.target, labels) {
                continue;
            }
            let two_sided = matches_all(&r.source, labels);
            let sources = r.sources.lock();
            for (fp, a) in sources.iter() {
                if a.resolved_at(now) {
                    continue;
                }
                if r.equal.iter().any(|n| a.labels.get(n) != labels.get(n)) {
                    continue;
                }
                if two_sided && matches_all(&r.target, &a.labels) {
                    continue;
                }
                return Some(*fp);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alertmanager::config::parse;
    use crate::alertmanager::types::zero_time;

    fn alert(pairs: &[(&str, &str)], ends_at: Timestamp) -> Alert {
        Alert {
            labels: Labels::from_pairs(pairs),
            annotations: Default::default(),
            starts_at: Timestamp::from_second(1).unwrap(),
            ends_at,
            generator_url: "".into(),
            updated_at: Timestamp::from_second(1).unwrap(),
            timeout: false,
        }
    }

    #[test]
    fn source_mutes_target_with_equal_labels_but_never_itself() {
        let cfg = parse(
            "route: {receiver: a}\nreceivers: [{name: a}]\ninhibit_rules:\n  - source_matchers: [severity=critical]\n    target_matchers: [severity=~\"warning|critical\"]\n    equal: [cluster]\n",
        )
        .unwrap();
        let ih = Inhibitor::new(&cfg.inhibit_rules).unwrap();
        let now = Timestamp::from_second(100).unwrap();
        let src = alert(&[("severity", "critical"), ("cluster", "a")], zero_time());
        ih.observe(&src);
        let warn_a = Labels::from_pairs(&[("severity", "warning"), ("cluster", "a")]);
        let warn_b = Labels::from_pairs(&[("severity", "warning"), ("cluster", "b")]);
        assert_eq!(ih.inhibited_by(&warn_a, now), Some(src.fingerprint()));
        assert_eq!(ih.inhibited_by(&warn_b, now), None);
        // The source matches both sides: it does not inhibit itself.
        assert_eq!(ih.inhibited_by(&src.labels, now), None);
        // Once the source resolves, nothing is inhibited.
        ih.observe(&alert(
            &[("severity", "critical"), ("cluster", "a")],
            Timestamp::from_second(50).unwrap(),
        ));
        assert_eq!(ih.inhibited_by(&warn_a, now), None);
    }
}
