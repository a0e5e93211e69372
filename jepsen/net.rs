//! The harness's network: one Linux network namespace per node, joined by a bridge
//! that lives in a namespace of its own (so the host's firewall, e.g. Docker's
//! FORWARD policy, never sees the traffic), plus a link from the host namespace so
//! the test's clients reach every node. Partitions are nftables rules inside the
//! nodes' namespaces that silently drop packets to and from the nodes on the other
//! side, as a real network partition does (no resets, no "unreachable").
//!
//! Every name carries the test process's pid so concurrent runs do not collide;
//! dropping the `Net` deletes the namespaces and with them every link and rule.

use std::collections::BTreeSet;
use std::process::Command;

/// Why the network could not be set up or changed.
#[derive(Debug)]
pub struct NetError(pub String);

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs `ip`/`nft` with `args`, failing with the command line and its stderr.
fn run(program: &str, args: &[&str]) -> Result<(), NetError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| NetError(format!("running {program}: {e} (is it installed?)")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(NetError(format!(
        "{program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim(),
        if not_root() {
            " (network namespaces need root)"
        } else {
            ""
        }
    )))
}

fn not_root() -> bool {
    // SAFETY: geteuid has no preconditions and touches no memory.
    unsafe { libc::geteuid() != 0 }
}

/// The nodes' namespaces and the switch between them.
pub struct Net {
    prefix: String,
    /// First three octets of the /24 the nodes live in, e.g. "10.213.7".
    subnet: String,
    nodes: usize,
    /// Currently cut pairs (a < b), for `heal` and the log.
    cut: BTreeSet<(usize, usize)>,
    /// Held while the namespaces exist: the tests of this binary run one `Net`
    /// at a time (their names and subnet come from the process id, and two
    /// clusters on two cores would disturb each other's timing).
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// Taken by each `Net` for its lifetime.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Net {
    /// Creates `nodes` namespaces (`<prefix>-n1` …) on one /24, node i at `.i`,
    /// the host at `.254`.
    pub fn new(nodes: usize) -> Result<Net, NetError> {
        // A test that failed while holding it leaves nothing behind (`Drop`).
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let pid = std::process::id();
        let net = Net {
            prefix: format!("hj{pid}"),
            subnet: format!("10.{}.{}", 200 + pid % 50, (pid / 50) % 250),
            nodes,
            cut: BTreeSet::new(),
            _serial: serial,
        };
        net.create()?;
        Ok(net)
    }

    fn ns(&self, node: usize) -> String {
        format!("{}-n{node}", self.prefix)
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    /// The address node `node` (1-based) listens on.
    pub fn ip(&self, node: usize) -> String {
        format!("{}.{node}", self.subnet)
    }

    /// The host's address on the nodes' network: servers the test runs (e.g. a
    /// scrape target) listen on it and every node reaches them.
    pub fn host_ip(&self) -> String {
        format!("{}.254", self.subnet)
    }

    /// The namespace to run node `node` in.
    pub fn namespace(&self, node: usize) -> String {
        self.ns(node)
    }

    fn create(&self) -> Result<(), NetError> {
        let sw = self.switch();
        run("ip", &["netns", "add", &sw])?;
        run("ip", &["-n", &sw, "link", "set", "lo", "up"])?;
        run("ip", &["-n", &sw, "link", "add", "sw0", "type", "bridge"])?;
        run("ip", &["-n", &sw, "link", "set", "sw0", "up"])?;
        // The host's leg: the test's clients talk to the nodes through it.
        let host_if = format!("{}h", self.prefix);
        run(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", "host", "netns", &sw,
            ],
        )?;
        run(
            "ip",
            &["-n", &sw, "link", "set", "host", "master", "sw0", "up"],
        )?;
        let host_ip = format!("{}.254/24", self.subnet);
        run("ip", &["addr", "add", &host_ip, "dev", &host_if])?;
        run("ip", &["link", "set", &host_if, "up"])?;
        for i in 1..=self.nodes {
            let ns = self.ns(i);
            let leg = format!("v{i}");
            run("ip", &["netns", "add", &ns])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            run(
                "ip",
                &[
                    "-n", &sw, "link", "add", &leg, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
            )?;
            run(
                "ip",
                &["-n", &sw, "link", "set", &leg, "master", "sw0", "up"],
            )?;
            let addr = format!("{}/24", self.ip(i));
            run("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            // A table for partitions, empty until `cut`.
            run(
                "ip",
                &[
                    "netns", "exec", &ns, "nft", "add", "table", "inet", "jepsen",
                ],
            )?;
            for (chain, hook) in [("in", "input"), ("out", "output")] {
                let spec = format!("{{ type filter hook {hook} priority 0; }}");
                run(
                    "ip",
                    &[
                        "netns", "exec", &ns, "nft", "add", "chain", "inet", "jepsen", chain, &spec,
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Cuts the link between nodes `a` and `b` both ways: packets are dropped.
    pub fn cut(&mut self, a: usize, b: usize) -> Result<(), NetError> {
        let key = (a.min(b), a.max(b));
        if !self.cut.insert(key) {
            return Ok(());
        }
        for (me, other) in [(a, b), (b, a)] {
            let ns = self.ns(me);
            let other_ip = self.ip(other);
            run(
                "ip",
                &[
                    "netns", "exec", &ns, "nft", "add", "rule", "inet", "jepsen", "in", "ip",
                    "saddr", &other_ip, "drop",
                ],
            )?;
            run(
                "ip",
                &[
                    "netns", "exec", &ns, "nft", "add", "rule", "inet", "jepsen", "out", "ip",
                    "daddr", &other_ip, "drop",
                ],
            )?;
        }
        Ok(())
    }

    /// Splits the nodes into `side` and the rest: every link across is cut.
    pub fn partition(&mut self, side: &[usize]) -> Result<(), NetError> {
        for a in side.iter().copied() {
            for b in (1..=self.nodes).filter(|b| !side.contains(b)) {
                self.cut(a, b)?;
            }
        }
        Ok(())
    }

    /// Restores every link.
    pub fn heal(&mut self) -> Result<(), NetError> {
        for i in 1..=self.nodes {
            let ns = self.ns(i);
            for chain in ["in", "out"] {
                run(
                    "ip",
                    &[
                        "netns", "exec", &ns, "nft", "flush", "chain", "inet", "jepsen", chain,
                    ],
                )?;
            }
        }
        self.cut.clear();
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of every veth pair, and so the pair.
        for i in 1..=self.nodes {
            let _ = run("ip", &["netns", "del", &self.ns(i)]);
        }
        let _ = run("ip", &["netns", "del", &self.switch()]);
        let _ = run("ip", &["link", "del", &format!("{}h", self.prefix)]);
    }
}
