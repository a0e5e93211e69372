//! The faults the harness injects, one at a time, each healed before the next:
//! SIGKILL of a node (then restarted on the same data directory), SIGKILL of the
//! meta-group leader, a pause (SIGSTOP, later SIGCONT: the process keeps its
//! sockets and answers nothing, like a long GC pause or a stalled VM), a node
//! isolated from the others, and a "bridge" partition (two nodes cut from each
//! other, both still seeing the third).

use crate::common::node::Node;
use crate::common::Rng;
use crate::net::{Net, NetError};

/// One fault and the node it hits (1-based ids, as the nodes' own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Kill(usize),
    KillLeader(usize),
    Pause(usize),
    Isolate(usize),
    /// Every pair is cut except those with this node in the middle.
    Bridge(usize),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Kill(n) => write!(f, "SIGKILL node {n}"),
            Fault::KillLeader(n) => write!(f, "SIGKILL the meta leader, node {n}"),
            Fault::Pause(n) => write!(f, "SIGSTOP node {n}"),
            Fault::Isolate(n) => write!(f, "isolate node {n}"),
            Fault::Bridge(n) => write!(f, "bridge partition through node {n}"),
        }
    }
}

/// Injects and heals faults on the harness's nodes.
pub struct Nemesis<'a> {
    pub nodes: &'a mut [Node],
    pub net: &'a mut Net,
    /// Flags every node is started with (restarts reuse them).
    pub args: Vec<String>,
}

impl Nemesis<'_> {
    /// A random fault; `leader` is the meta leader when the nodes agree on one.
    pub fn pick(&self, rng: &mut Rng, leader: Option<usize>) -> Fault {
        let n = self.nodes.len() as u64;
        let node = 1 + rng.below(n) as usize;
        match (rng.below(5), leader) {
            (0, _) => Fault::Kill(node),
            (1, Some(l)) => Fault::KillLeader(l),
            (1, None) => Fault::Kill(node),
            (2, _) => Fault::Pause(node),
            (3, _) => Fault::Isolate(node),
            _ => Fault::Bridge(node),
        }
    }

    fn node(&mut self, id: usize) -> &mut Node {
        &mut self.nodes[id - 1]
    }

    pub fn inject(&mut self, fault: Fault) -> Result<(), NetError> {
        match fault {
            Fault::Kill(n) | Fault::KillLeader(n) => self.node(n).kill(),
            Fault::Pause(n) => self.node(n).pause(),
            Fault::Isolate(n) => self.net.partition(&[n])?,
            Fault::Bridge(middle) => {
                let others: Vec<usize> = (1..=self.nodes.len()).filter(|&i| i != middle).collect();
                for (i, &a) in others.iter().enumerate() {
                    for &b in &others[i + 1..] {
                        self.net.cut(a, b)?;
                    }
                }
            }
        }
        Ok(())
    }

    pub fn heal(&mut self, fault: Fault) -> Result<(), NetError> {
        match fault {
            Fault::Kill(n) | Fault::KillLeader(n) => {
                let args = self.args.clone();
                self.node(n).start(&args);
            }
            Fault::Pause(n) => self.node(n).resume(),
            Fault::Isolate(_) | Fault::Bridge(_) => self.net.heal()?,
        }
        Ok(())
    }
}
