#!/usr/bin/env bash
# Fan-out overhead: the same queries against one hearth node holding all the series
# and against a three-node cluster where each node holds a third of them (queries
# sent to node 1, which reads its own third and asks the two others over gRPC).
# The goal (issue 7) is that the cluster takes at most 1.5x the single node's time.
#
# Data: counters bench_metric_total{job, instance} sampled every INTERVAL seconds
# over the last HOURS hours, written as OpenMetrics and backfilled with
# `hearth tsdb create-blocks-from openmetrics` (all series into the single node's
# data directory; series i into node (i mod 3)+1's). No node scrapes anything.
# The cluster runs with --cluster.replication-factor=1: with the default of 3 every
# node of three holds every group's data and answers locally, with no fan-out.
#
# Needs bash, python3 (standard library only) and a release hearth binary. All
# servers listen on 127.0.0.1; processes started here are stopped by PID.
#
# Usage (from the crate root, after `cargo build --release`):
#   benches/fanout.sh [--hearth-bin PATH] [--out DIR] [--series N] [--hours H]
#                     [--interval SEC] [--repeat R]
# Output: a markdown table on stdout and in OUT/report.md (default OUT:
# target/fanout-bench).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HEARTH_BIN=$ROOT/target/release/hearth
OUT=$ROOT/target/fanout-bench
SERIES=3000
HOURS=3
INTERVAL_S=15
REPEAT=15

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --hearth-bin) HEARTH_BIN=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --series) SERIES=$2; shift 2 ;;
    --hours) HOURS=$2; shift 2 ;;
    --interval) INTERVAL_S=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done
[ -x "$HEARTH_BIN" ] || { echo "no hearth binary at $HEARTH_BIN (cargo build --release)" >&2; exit 1; }

rm -rf "$OUT"
mkdir -p "$OUT"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

NOW_S=$(date +%s)
END_S=$(( NOW_S / 60 * 60 ))
START_S=$(( END_S - HOURS * 3600 ))

echo "generating $SERIES series x $(( HOURS * 3600 / INTERVAL_S )) samples" >&2
python3 - "$OUT" "$SERIES" "$START_S" "$END_S" "$INTERVAL_S" <<'EOF'
import sys
out, n, start, end, step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
files = [open(f"{out}/{name}.om", "w") for name in ("all", "node1", "node2", "node3")]
for f in files:
    f.write("# TYPE bench_metric counter\n")
for i in range(n):
    labels = f'job="job{i % 10}",instance="host{i}"'
    rate = 1 + i % 7
    lines = []
    v = 0
    for t in range(start, end + 1, step):
        v += rate * step
        lines.append(f"bench_metric_total{{{labels}}} {v} {t}\n")
    text = "".join(lines)
    files[0].write(text)
    files[1 + i % 3].write(text)
for f in files:
    f.write("# EOF\n")
    f.close()
EOF

for name in all node1 node2 node3; do
  "$HEARTH_BIN" tsdb create-blocks-from openmetrics "$OUT/$name.om" "$OUT/$name/data" >/dev/null 2>"$OUT/$name.backfill.log"
  rm -f "$OUT/$name.om"
done
printf 'global:\n  scrape_interval: 15s\n' > "$OUT/empty.yml"

SINGLE_WEB=127.0.0.1:$(free_port)
"$HEARTH_BIN" --storage.tsdb.path="$OUT/all/data" --web.listen-address="$SINGLE_WEB" \
  --config.file="$OUT/empty.yml" 2>"$OUT/single.log" &
PIDS+=($!)

WEBS=(); GRPCS=()
for i in 1 2 3; do
  WEBS+=("127.0.0.1:$(free_port)"); GRPCS+=("127.0.0.1:$(free_port)")
done
PEERS=$(IFS=,; echo "${GRPCS[*]}")
for i in 0 1 2; do
  "$HEARTH_BIN" --storage.tsdb.path="$OUT/node$((i + 1))/data" --web.listen-address="${WEBS[$i]}" \
    --config.file="$OUT/empty.yml" --cluster.node-id=$((i + 1)) \
    --cluster.listen-address="${GRPCS[$i]}" --cluster.initial-peers="$PEERS" \
    --cluster.replication-factor=1 \
    2>"$OUT/node$((i + 1)).log" &
  PIDS+=($!)
done

python3 - "$OUT" "$SINGLE_WEB" "${WEBS[0]}" "$START_S" "$END_S" "$REPEAT" "$SERIES" <<'EOF'
import json, statistics, sys, time, urllib.parse, urllib.request
out, single, cluster, start, end, repeat, series = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])

def get(addr, path, params):
    url = f"http://{addr}{path}?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=120) as r:
        return json.loads(r.read())

def wait(addr, what, ok):
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if ok():
                return
        except Exception:
            pass
        time.sleep(0.2)
    sys.exit(f"{addr}: timed out waiting for {what}")

count = lambda a: get(a, "/api/v1/query", {"query": "count(bench_metric_total)", "time": end})
wait(single, "data", lambda: count(single)["data"]["result"][0]["value"][1] == str(series))
wait(cluster, "the cluster to form and see all data",
     lambda: count(cluster)["data"]["result"][0]["value"][1] == str(series)
     and "warnings" not in count(cluster))

queries = [
    ("instant count(bench_metric_total)", "/api/v1/query",
     {"query": "count(bench_metric_total)", "time": end}),
    ("instant sum by (job)(rate(bench_metric_total[5m]))", "/api/v1/query",
     {"query": "sum by (job)(rate(bench_metric_total[5m]))", "time": end}),
    (f"range sum by (job)(rate(..[5m])) {(end - start) // 3600}h step 60s", "/api/v1/query_range",
     {"query": "sum by (job)(rate(bench_metric_total[5m]))", "start": start, "end": end, "step": 60}),
    (f"range one series {(end - start) // 3600}h step 60s", "/api/v1/query_range",
     {"query": 'bench_metric_total{instance="host7"}', "start": start, "end": end, "step": 60}),
    ("series match[]=bench_metric_total", "/api/v1/series",
     {"match[]": "bench_metric_total", "start": start, "end": end}),
    ("label values instance", "/api/v1/label/instance/values",
     {"start": start, "end": end}),
]

def timed(addr, path, params):
    t = time.perf_counter()
    body = get(addr, path, params)
    dt = (time.perf_counter() - t) * 1000
    assert body["status"] == "success" and "warnings" not in body, body
    return dt, body

rows = []
for name, path, params in queries:
    # Same answer from both setups, then one warm-up and REPEAT timed runs each,
    # alternating so both see the same machine load.
    _, a = timed(single, path, params)
    _, b = timed(cluster, path, params)
    norm = lambda d: json.dumps(d["data"], sort_keys=True) if not isinstance(d["data"], dict) \
        else json.dumps(sorted(json.dumps(r, sort_keys=True) for r in d["data"]["result"]))
    assert norm(a) == norm(b), f"{name}: single and cluster answers differ"
    ts, tc = [], []
    for _ in range(repeat):
        ts.append(timed(single, path, params)[0])
        tc.append(timed(cluster, path, params)[0])
    ms, mc = statistics.median(ts), statistics.median(tc)
    rows.append((name, ms, mc, mc / ms))

lines = ["| query | one node, all series (ms, median) | three nodes, a third each (ms, median) | ratio |",
         "|---|---:|---:|---:|"]
for name, ms, mc, r in rows:
    lines.append(f"| {name} | {ms:.1f} | {mc:.1f} | {r:.2f} |")
report = "\n".join(lines)
print(report)
for name, ms, mc, r in rows:
    key = "".join(c if c.isalnum() else "_" for c in name).strip("_")
    print(f"FIGURE fanout_ratio_{key}={r:.2f}")
open(f"{out}/report.md", "w").write(report + "\n")
EOF
