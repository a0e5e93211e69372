#!/usr/bin/env python3
"""Recording-rule evaluation benchmark: hearth beside Prometheus on the same data.

Starts the shared synthetic exporter (../shared/tools/peers/synth_exporter.py,
TARGETS targets x SERIES series), writes one Prometheus config that scrapes it
every 15 s and loads RULES recording rules in GROUPS groups (evaluated every 15 s),
then runs each system in turn on that config, pinned to one core (taskset), for
DURATION seconds after every target is up. It reads each system's own
`prometheus_rule_group_last_duration_seconds` every few seconds and reports, per
system, the median and maximum evaluation time per group, the iterations missed,
the failed evaluations and the CPU seconds the process used; then the ratios
hearth / Prometheus. Standard library only.

  cargo build --release
  python3 benches/rules.py --hearth-bin target/release/hearth

The rules mix rate/sum by, avg/max by, count by and histogram_quantile over the
exporter's counters, gauges and classic histograms: each rule reads one metric
name, about 5000 series with the defaults (100k series in all).
"""
import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "tools", "peers"))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def metric_names(exporter_cmd):
    body = subprocess.run(exporter_cmd + ["--print"], check=True, capture_output=True,
                          text=True).stdout
    names = set()
    for line in body.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return sorted(names)


def rule_exprs(names, n):
    """n recording rules (record name, expr) cycling over shapes and metric names."""
    counters = [m for m in names if m.endswith("_total")]
    gauges = [m for m in names if m.startswith("synth_level")]
    hists = sorted({m[:-len("_bucket")] for m in names if m.endswith("_bucket")})
    shapes = [
        lambda i: ("sum by (zone) (rate(%s[1m]))" % counters[i % len(counters)]),
        lambda i: ("avg by (svc) (%s)" % gauges[i % len(gauges)]),
        lambda i: ("histogram_quantile(0.9, sum by (le, zone) (rate(%s_bucket[1m])))"
                   % hists[i % len(hists)]),
        lambda i: ("max by (pod) (%s)" % gauges[(i + 1) % len(gauges)]),
        lambda i: ("count by (instance) (%s)" % counters[(i + 3) % len(counters)]),
        lambda i: ("sum by (instance) (increase(%s[2m]))" % counters[(i + 5) % len(counters)]),
    ]
    out = []
    for i in range(n):
        out.append(("bench:rule_%04d" % i, shapes[i % len(shapes)](i // len(shapes))))
    return out


def write_config(d, exporter_ports, rules, groups):
    per = (len(rules) + groups - 1) // groups
    with open(os.path.join(d, "rules.yml"), "w") as f:
        f.write("groups:\n")
        for g in range(groups):
            f.write("  - name: bench_%02d\n    interval: 15s\n    rules:\n" % g)
            for record, expr in rules[g * per:(g + 1) * per]:
                f.write("      - record: %s\n        expr: %s\n" % (record, expr))
    targets = ", ".join("'127.0.0.1:%d'" % p for p in exporter_ports)
    with open(os.path.join(d, "prometheus.yml"), "w") as f:
        f.write("global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\n"
                "rule_files: ['%s']\n"
                "scrape_configs:\n  - job_name: synth\n    static_configs:\n"
                "      - targets: [%s]\n" % (os.path.join(d, "rules.yml"), targets))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def group_metrics(base):
    """{group: {metric: value}} from the server's /metrics."""
    out = {}
    for line in get(base + "/metrics").splitlines():
        m = re.match(r'(prometheus_rule_[a-z_]+)\{rule_group="[^"]*;([^"]+)"\} (\S+)', line)
        if m:
            out.setdefault(m.group(2), {})[m.group(1)] = float(m.group(3))
    return out


def run_system(name, cmd, d, port, duration, n_targets, cpu):
    data = os.path.join(d, "data-" + name)
    os.makedirs(data)
    logf = open(os.path.join(d, name + ".log"), "w")
    full = ["taskset", "-c", cpu] + cmd + [
        "--config.file=" + os.path.join(d, "prometheus.yml"),
        "--storage.tsdb.path=" + data,
        "--web.listen-address=127.0.0.1:%d" % port,
    ]
    log("starting %s" % name)
    proc = subprocess.Popen(full, stdout=logf, stderr=subprocess.STDOUT)
    base = "http://127.0.0.1:%d" % port
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError("%s exited early; see %s.log" % (name, name))
            try:
                body = get(base + "/api/v1/query?query=count(up%3D%3D1)")
                m = re.search(r'"value":\[[^,]+,"(\d+)"\]', body)
                if m and int(m.group(1)) == n_targets:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("%s: targets not up after 120 s" % name)
            time.sleep(1)
        # Two rule intervals so every group has evaluated over a full rate window.
        time.sleep(30)
        before = group_metrics(base)
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.time()
        durations = {}
        while time.time() - t0 < duration:
            time.sleep(5)
            for g, ms in group_metrics(base).items():
                v = ms.get("prometheus_rule_group_last_duration_seconds")
                if v is not None:
                    durations.setdefault(g, set()).add(v)
        cpu1 = cpu_seconds(proc.pid)
        after = group_metrics(base)
        rss = peak_rss_kb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        logf.close()

    def delta(metric):
        return sum(after[g].get(metric, 0) - before.get(g, {}).get(metric, 0) for g in after)

    per_group = {g: (statistics.median(sorted(v)), max(v)) for g, v in durations.items()}
    return {
        "groups": per_group,
        "missed": delta("prometheus_rule_group_iterations_missed_total"),
        "evaluations": delta("prometheus_rule_evaluations_total"),
        "failures": delta("prometheus_rule_evaluation_failures_total"),
        "cpu_s": cpu1 - cpu0,
        "window_s": duration,
        "peak_rss_mb": rss / 1024,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hearth-bin", required=True)
    ap.add_argument("--prometheus-bin", default="prometheus")
    ap.add_argument("--targets", type=int, default=50)
    ap.add_argument("--series", type=int, default=2000)
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--groups", type=int, default=10)
    ap.add_argument("--duration", type=int, default=90, help="measured seconds per system")
    ap.add_argument("--cpu", default="1", help="core the servers are pinned to")
    args = ap.parse_args()

    d = tempfile.mkdtemp(prefix="hearth-rules-bench-")
    exporter_cmd = [sys.executable, os.path.join(PEERS, "synth_exporter.py"),
                    "--series", str(args.series)]
    base_port = free_port()
    ports = []
    while len(ports) < args.targets:
        p = free_port()
        if p not in ports:
            ports.append(p)
    exporters = []
    try:
        names = metric_names(exporter_cmd)
        rules = rule_exprs(names, args.rules)
        write_config(d, ports, rules, args.groups)
        exporters.append(subprocess.Popen(
            exporter_cmd + ["--ports", ",".join(str(p) for p in ports)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        results = {}
        for name, cmd in (("hearth", [os.path.abspath(args.hearth_bin)]),
                          ("prometheus", [args.prometheus_bin])):
            results[name] = run_system(name, cmd, d, base_port, args.duration,
                                       args.targets, args.cpu)
        report(args, results)
    finally:
        for e in exporters:
            e.terminate()
        for e in exporters:
            e.wait()
        shutil.rmtree(d, ignore_errors=True)


def report(args, results):
    h, p = results["hearth"], results["prometheus"]
    print("%d recording rules in %d groups over %d targets x %d series, 15 s interval, "
          "each server pinned to one core, %d s measured\n"
          % (args.rules, args.groups, args.targets, args.series, args.duration))
    print("| group | hearth median s | hearth max s | Prometheus median s | Prometheus max s | ratio (median) |")
    print("|---|---:|---:|---:|---:|---:|")
    ratios = []
    for g in sorted(set(h["groups"]) | set(p["groups"])):
        hm, hx = h["groups"].get(g, (float("nan"),) * 2)
        pm, px = p["groups"].get(g, (float("nan"),) * 2)
        r = hm / pm if pm else float("nan")
        ratios.append(r)
        print("| %s | %.3f | %.3f | %.3f | %.3f | %.2f |" % (g, hm, hx, pm, px, r))
    total_h = sum(v[0] for v in h["groups"].values())
    total_p = sum(v[0] for v in p["groups"].values())
    print("| all groups (sum of medians) | %.3f | | %.3f | | %.2f |\n"
          % (total_h, total_p, total_h / total_p if total_p else float("nan")))
    print("| | hearth | Prometheus | ratio |")
    print("|---|---:|---:|---:|")
    for key, label in (("cpu_s", "CPU s in the window (scraping + rules)"),
                       ("peak_rss_mb", "peak RSS MB"),
                       ("evaluations", "rule evaluations in the window"),
                       ("failures", "failed evaluations"),
                       ("missed", "iterations missed")):
        a, b = h[key], p[key]
        print("| %s | %.1f | %.1f | %s |" % (label, a, b, "%.2f" % (a / b) if b else "-"))
    per = [r["cpu_s"] * 1000 / r["evaluations"] if r["evaluations"] else float("nan")
           for r in (h, p)]
    print("| CPU ms per rule evaluation (incl. scraping) | %.2f | %.2f | %.2f |"
          % (per[0], per[1], per[0] / per[1]))


if __name__ == "__main__":
    main()
