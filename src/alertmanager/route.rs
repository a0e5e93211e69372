//! The routing tree: which routes (and so which receivers and grouping) an alert
//! takes, as Alertmanager's `dispatch/route.go` decides.

use super::config::{
    build_matchers, RouteConfig, DEFAULT_GROUP_INTERVAL, DEFAULT_GROUP_WAIT,
    DEFAULT_REPEAT_INTERVAL,
};
use super::matchers::{matchers_string, matches_all};
use super::types::labels_string;
use crate::labels::{Labels, LabelsBuilder, Matcher};
use std::time::Duration;

/// Options a route applies to the groups it forms; children inherit them.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteOpts {
    pub receiver: String,
    /// Labels to group by, sorted; ignored when `group_by_all`.
    pub group_by: Vec<String>,
    /// `group_by: ['...']`: every label groups.
    pub group_by_all: bool,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    /// Not inherited: each route names its own.
    pub mute_time_intervals: Vec<String>,
    pub active_time_intervals: Vec<String>,
}

/// One node of the routing tree.
#[derive(Debug, Clone)]
pub struct Route {
    /// Index in `RouteTree::nodes`; stable for one config.
    pub index: usize,
    pub parent: Option<usize>,
    pub matchers: Vec<Matcher>,
    pub continue_matching: bool,
    pub opts: RouteOpts,
    pub children: Vec<usize>,
    /// Alertmanager's route key: the parent's key, `/`, then this route's matchers.
    pub key: String,
    /// Alertmanager's route ID: the key plus the position among its siblings.
    pub id: String,
}

/// A routing tree built from a validated config.
#[derive(Debug, Clone)]
pub struct RouteTree {
    /// Nodes in depth-first order; index 0 is the root.
    pub nodes: Vec<Route>,
}

impl RouteTree {
    /// Builds the tree; the config must have passed `Config::validate`.
    pub fn new(root: &RouteConfig) -> Result<RouteTree, String> {
        let defaults = RouteOpts {
            receiver: String::new(),
            group_by: Vec::new(),
            group_by_all: false,
            group_wait: DEFAULT_GROUP_WAIT,
            group_interval: DEFAULT_GROUP_INTERVAL,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
            mute_time_intervals: Vec::new(),
            active_time_intervals: Vec::new(),
        };
        let mut tree = RouteTree { nodes: Vec::new() };
        tree.add(root, None, &defaults, 0)?;
        Ok(tree)
    }

    fn add(
        &mut self,
        cr: &RouteConfig,
        parent: Option<usize>,
        inherited: &RouteOpts,
        sibling_idx: usize,
    ) -> Result<usize, String> {
        let mut opts = inherited.clone();
        if !cr.receiver.is_empty() {
            opts.receiver = cr.receiver.clone();
        }
        if let Some(gb) = &cr.group_by {
            opts.group_by_all = gb.iter().any(|l| l == "...");
            let mut v: Vec<String> = gb.iter().filter(|l| *l != "...").cloned().collect();
            v.sort();
            opts.group_by = v;
        }
        if let Some(d) = cr.group_wait {
            opts.group_wait = d.0;
        }
        if let Some(d) = cr.group_interval {
            opts.group_interval = d.0;
        }
        if let Some(d) = cr.repeat_interval {
            opts.repeat_interval = d.0;
        }
        opts.mute_time_intervals = cr.mute_time_intervals.clone();
        opts.active_time_intervals = cr.active_time_intervals.clone();
        let matchers = build_matchers(&cr.match_eq, &cr.match_re, &cr.matchers)?;
        let own = matchers_string(&matchers);
        let key = match parent {
            None => own.clone(),
            Some(p) => format!("{}/{}", self.nodes[p].key, own),
        };
        let id = match parent {
            None => key.clone(),
            Some(_) => format!("{key}/{sibling_idx}"),
        };
        let index = self.nodes.len();
        self.nodes.push(Route {
            index,
            parent,
            matchers,
            continue_matching: cr.continue_matching,
            opts: opts.clone(),
            children: Vec::new(),
            key,
            id,
        });
        for (i, child) in cr.routes.iter().enumerate() {
            let c = self.add(child, Some(index), &opts, i)?;
            self.nodes[index].children.push(c);
        }
        Ok(index)
    }

    /// The root route.
    pub fn root(&self) -> &Route {
        &self.nodes[0]
    }

    /// The routes an alert with `labels` ends in, in order (Alertmanager's
    /// `Route.Match` from the root). Never empty: the root catches everything.
    pub fn match_labels(&self, labels: &Labels) -> Vec<&Route> {
        let mut out = Vec::new();
        self.match_from(0, labels, &mut out);
        if out.is_empty() {
            out.push(self.root());
        }
        out
    }

    fn match_from<'a>(&'a self, idx: usize, labels: &Labels, out: &mut Vec<&'a Route>) -> bool {
        let r = &self.nodes[idx];
        if !matches_all(&r.matchers, labels) {
            return false;
        }
        let before = out.len();
        for &c in &r.children {
            let matched = self.match_from(c, labels, out);
            if matched && !self.nodes[c].continue_matching {
                break;
            }
        }
        if out.len() == before {
            out.push(r);
        }
        true
    }

    /// Receiver names for a label set, like `amtool config routes test`.
    pub fn receivers_for(&self, labels: &Labels) -> Vec<String> {
        self.match_labels(labels)
            .iter()
            .map(|r| r.opts.receiver.clone())
            .collect()
    }
}

impl Route {
    /// The labels of `alert_labels` this route groups by.
    pub fn group_labels(&self, alert_labels: &Labels) -> Labels {
        if self.opts.group_by_all {
            return alert_labels.clone();
        }
        let mut b = LabelsBuilder::new();
        for n in &self.opts.group_by {
            let v = alert_labels.get(n);
            if !v.is_empty() {
                b.set(n, v);
            }
        }
        b.build()
    }

    /// Alertmanager's aggregation group key: `route key:group labels`.
    pub fn group_key(&self, group_labels: &Labels) -> String {
        format!("{}:{}", self.key, labels_string(group_labels))
    }
}

/// `amtool config routes test`: parses `key=value` pairs (or a matcher-style
/// list) and returns the receivers, comma-joined as amtool prints them.
pub fn routes_test(tree: &RouteTree, label_args: &[String]) -> Result<String, String> {
    let mut b = LabelsBuilder::new();
    for arg in label_args {
        for m in super::matchers::parse_matchers(arg).map_err(|e| e.to_string())? {
            if m.kind != crate::labels::MatchType::Equal {
                return Err(format!("only equality matchers are allowed: {m}"));
            }
            b.set(&m.name, &m.value);
        }
    }
    Ok(tree.receivers_for(&b.build()).join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alertmanager::config::parse;

    const CFG: &str = r#"
route:
  receiver: default
  group_by: [alertname]
  group_wait: 10s
  routes:
    - matchers: [team="db"]
      receiver: db
      continue: true
      group_by: ['...']
    - matchers: [severity=~"critical|page"]
      receiver: pager
      routes:
        - matchers: [team="web"]
          receiver: web-pager
          repeat_interval: 1h
    - match: {team: db}
      receiver: db2
    - matchers: [team="db"]
      receiver: never
receivers: [{name: default}, {name: db}, {name: pager}, {name: web-pager}, {name: db2}, {name: never}]
"#;

    fn tree() -> RouteTree {
        RouteTree::new(parse(CFG).unwrap().route.as_ref().unwrap()).unwrap()
    }

    fn recv(pairs: &[(&str, &str)]) -> Vec<String> {
        tree().receivers_for(&Labels::from_pairs(pairs))
    }

    #[test]
    fn matches_with_continue_and_nesting() {
        assert_eq!(recv(&[("alertname", "x")]), vec!["default"]);
        assert_eq!(recv(&[("team", "db")]), vec!["db", "db2"]);
        assert_eq!(recv(&[("severity", "page")]), vec!["pager"]);
        assert_eq!(
            recv(&[("severity", "critical"), ("team", "web")]),
            vec!["web-pager"]
        );
        assert_eq!(
            recv(&[("severity", "critical"), ("team", "db")]),
            vec!["db", "pager"]
        );
    }

    #[test]
    fn inherits_options_and_builds_keys() {
        let t = tree();
        let web = t
            .nodes
            .iter()
            .find(|r| r.opts.receiver == "web-pager")
            .unwrap();
        assert_eq!(web.opts.group_wait, Duration::from_secs(10));
        assert_eq!(web.opts.repeat_interval, Duration::from_secs(3600));
        assert_eq!(web.opts.group_by, vec!["alertname".to_string()]);
        assert_eq!(web.key, r#"{}/{severity=~"critical|page"}/{team="web"}"#);
        assert_eq!(web.id, r#"{}/{severity=~"critical|page"}/{team="web"}/0"#);
        let db = &t.nodes[1];
        assert!(db.opts.group_by_all);
        let l = Labels::from_pairs(&[("team", "db"), ("x", "1")]);
        assert_eq!(db.group_labels(&l), l);
        assert_eq!(
            t.root().group_key(
                &t.root()
                    .group_labels(&Labels::from_pairs(&[("alertname", "A"), ("x", "1")]))
            ),
            r#"{}:{alertname="A"}"#
        );
    }

    #[test]
    fn routes_test_prints_receivers() {
        let t = tree();
        assert_eq!(routes_test(&t, &["team=db".into()]).unwrap(), "db,db2");
        assert!(routes_test(&t, &["team=~db".into()]).is_err());
    }
}
