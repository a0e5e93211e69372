#!/usr/bin/env python3
"""Meta leader failover, measured over many kills: starts a three-node cluster
(RF=3, nothing scraped), then ROUNDS times finds the meta leader, SIGKILLs it,
and times how long until both survivors' `/api/v1/status/cluster` name the same
new leader (polled every 10 ms). The killed node restarts with its data directory
and the cluster gets SETTLE seconds to take it back before the next round.
Prints each round's figure and their minimum, median, 90th percentile and
maximum. The goal (issue 7) is a new leader within 3 s with default settings.
Standard library only.

  cargo build --release
  python3 benches/failover.py --hearth-bin target/release/hearth --rounds 20
  python3 benches/failover.py ... -- --cluster.failure-timeout=5s   # extra flags
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def log(msg):
    sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))


def status(web):
    """The node's cluster status, or None when it does not answer."""
    try:
        with urllib.request.urlopen("http://%s/api/v1/status/cluster" % web, timeout=1) as r:
            return json.loads(r.read())["data"]
    except (OSError, ValueError, KeyError):
        return None


def agreed_leader(webs):
    """The leader every node in `webs` names, when they agree and all voters count."""
    seen = None
    for web in webs:
        s = status(web)
        if s is None or s.get("leaderId") is None:
            return None
        voters = sum(1 for m in s.get("members", []) if m.get("role") == "voter")
        if voters != 3:
            return None
        if seen is not None and seen != s["leaderId"]:
            return None
        seen = s["leaderId"]
    return seen


def wait_for(what, check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = check()
        if v is not None:
            return v
        time.sleep(0.01)
    raise SystemExit("timed out waiting for %s" % what)


class Node:
    def __init__(self, args, work, i, port, extra):
        self.id = i
        self.web = "127.0.0.1:%d" % (port + i)
        grpc = lambda j: "127.0.0.1:%d" % (port + 100 + j)
        self.cmd = [
            args.hearth_bin,
            "--storage.tsdb.path=%s/node%d" % (work, i),
            "--config.file=%s/empty.yml" % work,
            "--web.listen-address=%s" % self.web,
            "--cluster.node-id=%d" % i,
            "--cluster.listen-address=%s" % grpc(i),
            "--cluster.initial-peers=%s" % ",".join(grpc(j) for j in (1, 2, 3)),
            "--cluster.replication-factor=3",
        ] + extra
        self.log = open("%s/node%d.log" % (work, i), "ab")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=self.log)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hearth-bin", default="target/release/hearth")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds the whole cluster runs between rounds")
    ap.add_argument("--port", type=int, default=19800)
    ap.add_argument("extra", nargs="*", help="flags given to every node")
    args = ap.parse_args()
    args.hearth_bin = os.path.abspath(args.hearth_bin)
    with tempfile.TemporaryDirectory(prefix="hearth-failover-") as work:
        with open(os.path.join(work, "empty.yml"), "w") as f:
            f.write("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
        nodes = {i: Node(args, work, i, args.port, args.extra) for i in (1, 2, 3)}
        figures = []
        try:
            for n in nodes.values():
                n.start()
            webs = [n.web for n in nodes.values()]
            wait_for("the cluster to form", lambda: agreed_leader(webs), 60)
            for r in range(args.rounds):
                time.sleep(args.settle)
                leader = wait_for("an agreed leader", lambda: agreed_leader(webs), 60)
                killed_at = time.monotonic()
                nodes[leader].kill()
                survivors = [n.web for i, n in nodes.items() if i != leader]

                def new_leader():
                    l = agreed_leader(survivors)
                    return l if l != leader else None

                new = wait_for("a new leader", new_leader, 30)
                ms = (time.monotonic() - killed_at) * 1000
                figures.append(ms)
                log("round %d: killed node %d, node %d leads after %.0f ms"
                    % (r + 1, leader, new, ms))
                nodes[leader].start()
                wait_for("the killed node to rejoin", lambda: agreed_leader(webs), 60)
        finally:
            for n in nodes.values():
                n.stop()
    figures.sort()
    p90 = figures[min(len(figures) - 1, int(round(0.9 * (len(figures) - 1))))]
    print("| rounds | min ms | median ms | p90 ms | max ms |")
    print("|---|---|---|---|---|")
    print("| %d | %.0f | %.0f | %.0f | %.0f |" % (
        len(figures), figures[0], statistics.median(figures), p90, figures[-1]))


if __name__ == "__main__":
    main()
