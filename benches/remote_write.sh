#!/usr/bin/env bash
# Remote-write ingestion side by side, one run on one machine: the same load from
# ../shared/tools/peers/remote_write_load.py (default 100k series, one sample each
# every 5 s = 20k samples/s, requests of 2000 samples, 2 senders) into
#   1. a single hearth node (as Prometheus, its WAL is fsynced when a segment
#      closes), and the same with --storage.tsdb.wal-fsync=true (an fsync per
#      commit, as each replica of the cluster's WAL groups does),
#   2. a three-node hearth cluster with RF=3 (benches/hearth_cluster3.sh; the load
#      goes to node 1, CPU is that of all three processes),
#   3. Prometheus 2.42 (--web.enable-remote-write-receiver),
#   4. VictoriaMetrics 1.79,
# one after the other, through the peers harness (run_hearth.sh, run_prometheus.sh,
# run_victoriametrics.sh). Prometheus and VictoriaMetrics are the Debian packages
# `prometheus` (.ci/install-deps installs it) and `victoria-metrics` (install it
# yourself; a system that is not installed shows n/a). Prints a Markdown table: samples/s, CPU seconds per
# million samples (utime+stime of the server's process tree from /proc), request
# latency p50/p99 (the load generator's), and for the cluster append-to-commit
# p50/p99 (node 1's hearth_wal_commit_duration_seconds since start), plus the load
# average before and after.
#
#   cargo build --release && benches/remote_write.sh
#   HEARTH_BIN=... TARGETS=50 SERIES=2000 INTERVAL=5 DURATION=120 OUT=dir benches/remote_write.sh
#   SYSTEMS="cluster" INTERVAL=1 benches/remote_write.sh   # only some systems
#     (of: single single-fsync cluster prometheus victoriametrics); INTERVAL=1
#     sends 100k samples/s
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${PEERS:-../shared/tools/peers}
BIN=${HEARTH_BIN:-target/release/hearth}
TARGETS=${TARGETS:-50}
SERIES=${SERIES:-2000}
INTERVAL=${INTERVAL:-5}
DURATION=${DURATION:-120}
OUT=${OUT:-target/peerbench/remote-write-$(date +%Y%m%d-%H%M%S)}
SYSTEMS=" ${SYSTEMS:-single single-fsync cluster prometheus victoriametrics} "
export SOURCE=remote_write
mkdir -p "$OUT"
BIN=$(realpath "$BIN")
LOAD=("$TARGETS" "$SERIES" "$INTERVAL" "$DURATION")
cat /proc/loadavg >"$OUT/loadavg-before.txt"
if [[ $SYSTEMS == *" single "* ]]; then
  "$PEERS/run_hearth.sh" --server-bin "$BIN" "${LOAD[@]}" "$OUT/hearth-single" || true
fi
if [[ $SYSTEMS == *" single-fsync "* ]]; then
  SERVER_ARGS="--storage.tsdb.wal-fsync=true" \
    "$PEERS/run_hearth.sh" --server-bin "$BIN" "${LOAD[@]}" "$OUT/hearth-single-fsync" || true
fi
if [[ $SYSTEMS == *" cluster "* ]]; then
  HEARTH_CLUSTER_BIN=$BIN HEARTH_CLUSTER_METRICS_OUT=$(realpath "$OUT")/cluster-node1-metrics.txt \
    "$PEERS/run_hearth.sh" --server-bin "$PWD/benches/hearth_cluster3.sh" "${LOAD[@]}" \
    "$OUT/hearth-cluster-rf3" || true
fi
if [[ $SYSTEMS == *" prometheus "* ]]; then
  "$PEERS/run_prometheus.sh" "${LOAD[@]}" "$OUT/prometheus" || true
fi
if [[ $SYSTEMS == *" victoriametrics "* ]]; then
  "$PEERS/run_victoriametrics.sh" "${LOAD[@]}" "$OUT/victoriametrics" || true
fi
cat /proc/loadavg >"$OUT/loadavg-after.txt"

python3 - "$OUT" <<'PY' | tee "$OUT/table.md"
import json, os, sys
out = sys.argv[1]

def summary(name):
    try:
        with open(os.path.join(out, name, "summary.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}

def commit_quantiles(path):
    """p50/p99 in ms from a Prometheus histogram's cumulative buckets."""
    try:
        text = open(path).read()
    except OSError:
        return None, None
    buckets = []
    for line in text.splitlines():
        if line.startswith('hearth_wal_commit_duration_seconds_bucket{le="'):
            le = line.split('"')[1]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return None, None
    total = buckets[-1][1]

    def q(p):
        rank, prev_le, prev_c = p * total, 0.0, 0.0
        for le, c in buckets:
            if c >= rank:
                if le == float("inf"):
                    return prev_le * 1000
                return (prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-9)) * 1000
            prev_le, prev_c = le, c
        return None
    return q(0.5), q(0.99)

def fmt(v, nd=2):
    return "n/a" if v is None else f"{v:,.{nd}f}"

rows = [("hearth, single node", "hearth-single"),
        ("hearth, single node, fsync per commit", "hearth-single-fsync"),
        ("hearth, 3 nodes RF=3", "hearth-cluster-rf3"),
        ("Prometheus 2.42", "prometheus"),
        ("VictoriaMetrics 1.79", "victoriametrics")]
print("| system | samples/s | CPU s / 1M samples | request p50 ms | request p99 ms | request errors | append-to-commit p50 ms | p99 ms |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
cpu = {}
for label, d in rows:
    s = summary(d)
    lg = s.get("load_generator", {})
    rq = lg.get("request_ms", {})
    c50 = c99 = None
    if d == "hearth-cluster-rf3":
        c50, c99 = commit_quantiles(os.path.join(out, "cluster-node1-metrics.txt"))
    cpu[d] = s.get("cpu_s_per_million_samples")
    print(f"| {label} | {fmt(s.get('samples_per_s'), 0)} | {fmt(cpu[d])} | {fmt(rq.get('p50'))} "
          f"| {fmt(rq.get('p99'))} | {lg.get('errors', 'n/a')} | {fmt(c50)} | {fmt(c99)} |")
def ratio(a, b):
    return "n/a" if not cpu.get(a) or not cpu.get(b) else f"{cpu[a] / cpu[b]:.2f}"
print()
print(f"CPU per sample: single hearth ÷ VictoriaMetrics = {ratio('hearth-single', 'victoriametrics')}, "
      f"cluster ÷ single hearth = {ratio('hearth-cluster-rf3', 'hearth-single')} "
      f"(÷ single hearth with an fsync per commit = {ratio('hearth-cluster-rf3', 'hearth-single-fsync')}), "
      f"single hearth ÷ Prometheus = {ratio('hearth-single', 'prometheus')}")
print(f"load average before: {open(os.path.join(out, 'loadavg-before.txt')).read().strip()}; "
      f"after: {open(os.path.join(out, 'loadavg-after.txt')).read().strip()}")
PY
