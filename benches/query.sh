#!/usr/bin/env bash
# PromQL query speed side by side with Prometheus (issue 4): the same data is
# backfilled into hearth (`hearth tsdb create-blocks-from openmetrics`) and into a
# real Prometheus (`promtool tsdb create-blocks-from openmetrics`), then the 24
# queries of ../shared/tools/peers/query_bench.py (rate, sum by, histogram_quantile
# over classic histograms, topk/bottomk, regex matchers, offsets, a subquery,
# count by, binary operations between vectors, ...) run against both as instant
# and as range queries. Every answer is compared (same series, values within a
# relative 1e-9) before the timing starts; then each query runs one warm-up and
# REPEAT timed runs per server, alternating, and the script prints the medians,
# the ratio hearth / Prometheus per query and the geometric means, and the same
# for the fastest run of each (on a shared, loaded machine the minimum is the
# steadier measure of what a query costs; the median is the goal's).
#
# Data: the series synth_exporter.py serves (counters synth_events_NNN_total,
# gauges synth_level_NNN, histograms synth_latency_NNN_seconds with 12 buckets;
# labels zone/svc/pod, job="synth", instance per target) for TARGETS targets,
# one sample every 30 s over the last HOURS hours. Sample times are 7 s past the
# 30 s grid and evaluation times 5 s past the 15 s grid, so no sample or subquery
# step sits on a window's edge: Prometheus 2.x's left-closed windows and
# Prometheus 3's left-open ones then select the same samples.
#
# Needs bash, python3 (standard library), promtool and prometheus (Debian
# `prometheus` package) and a release hearth binary. Everything listens on
# 127.0.0.1; processes started here are stopped by PID.
#
# Usage (from the crate root, after `cargo build --release`):
#   benches/query.sh [--hearth-bin PATH] [--prometheus-bin PATH] [--out DIR]
#                    [--targets N] [--hours H] [--range-minutes M] [--step SEC]
#                    [--repeat R] [--only NAME,NAME]
# Output: a markdown table on stdout and in OUT/report.md (default OUT:
# target/query-bench).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HEARTH_BIN=$ROOT/target/release/hearth
PROMETHEUS_BIN=$(command -v prometheus || true)
PROMTOOL_BIN=$(command -v promtool || true)
OUT=$ROOT/target/query-bench
TARGETS=15
HOURS=2
RANGE_MIN=60
STEP_S=60
REPEAT=9
ONLY=""

usage() { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --hearth-bin) HEARTH_BIN=$2; shift 2 ;;
    --prometheus-bin) PROMETHEUS_BIN=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --targets) TARGETS=$2; shift 2 ;;
    --hours) HOURS=$2; shift 2 ;;
    --range-minutes) RANGE_MIN=$2; shift 2 ;;
    --step) STEP_S=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done
[ -x "$HEARTH_BIN" ] || { echo "no hearth binary at $HEARTH_BIN (cargo build --release)" >&2; exit 1; }
[ -n "$PROMETHEUS_BIN" ] && [ -x "$PROMETHEUS_BIN" ] || { echo "no prometheus binary (apt-get install prometheus)" >&2; exit 1; }
[ -n "$PROMTOOL_BIN" ] || { echo "no promtool on PATH (apt-get install prometheus)" >&2; exit 1; }
PEERS=$(cd "$ROOT/../shared/tools/peers" 2>/dev/null && pwd) \
  || { echo "no ../shared/tools/peers next to the crate (query_bench.py)" >&2; exit 1; }

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
# The data ends a few minutes ago, on the 30 s grid plus 7 s.
END_S=$(( (NOW_S - 300) / 30 * 30 + 7 ))
START_S=$(( END_S - HOURS * 3600 ))

echo "generating $TARGETS targets over $HOURS h" >&2
python3 - "$OUT/data.om" "$TARGETS" "$START_S" "$END_S" <<'EOF'
import random, sys
path, targets, start, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
step = 30
times = list(range(start, end + 1, step))
rnd = random.Random(42)
buckets = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]
# label combinations per target and family: zone z0..z2, svc s0..s3, pod p0..p9 (some)
combos = [(z, s, p) for z in range(3) for s in range(4) for p in range(4)]  # 48
hist_combos = combos[::4]  # 12
n = 0
with open(path, "w") as f:
    w = f.write
    for fam in range(3):
        name = "synth_events_%03d" % fam
        w("# TYPE %s counter\n" % name)
        for tgt in range(targets):
            for (z, s, p) in combos:
                ls = 'job="synth",instance="host%d",zone="z%d",svc="s%d",pod="p%d"' % (tgt, z, s, p)
                v = rnd.randrange(0, 10 ** rnd.randrange(1, 6))
                rate = rnd.choice((0, 1, 2, 5, 10, 50, 200))
                lines = []
                for t in times:
                    v += rate * step + rnd.randrange(0, 3)
                    if rnd.random() < 0.001:
                        v = 0  # a counter reset now and then
                    lines.append("%s_total{%s} %d %d\n" % (name, ls, v, t))
                w("".join(lines)); n += len(lines)
    for fam in range(2):
        name = "synth_level_%03d" % fam
        w("# TYPE %s gauge\n" % name)
        for tgt in range(targets):
            for (z, s, p) in combos:
                ls = 'job="synth",instance="host%d",zone="z%d",svc="s%d",pod="p%d"' % (tgt, z, s, p)
                v = round(rnd.uniform(0, 1000), 2)
                stepv = rnd.choice((0.0, 0.5, 1.0, 5.0))
                lines = []
                for t in times:
                    v = round(v + rnd.uniform(-stepv, stepv), 2)
                    lines.append("%s{%s} %s %d\n" % (name, ls, repr(v), t))
                w("".join(lines)); n += len(lines)
    for fam in range(2):
        name = "synth_latency_%03d_seconds" % fam
        w("# TYPE %s histogram\n" % name)
        for tgt in range(targets):
            for (z, s, p) in hist_combos:
                ls = 'job="synth",instance="host%d",zone="z%d",svc="s%d",pod="p%d"' % (tgt, z, s, p)
                counts = [0] * len(buckets)
                total = 0.0
                lines = []
                for t in times:
                    obs = rnd.randrange(0, 50)
                    for _ in range(obs):
                        b = min(int(rnd.expovariate(0.6)), len(buckets) - 1)
                        for i in range(b, len(buckets)):
                            counts[i] += 1
                        total += float(buckets[b]) if b < len(buckets) - 1 else 20.0
                    for le, c in zip(buckets, counts):
                        lines.append('%s_bucket{%s,le="%s"} %d %d\n' % (name, ls, le, c, t))
                    lines.append("%s_sum{%s} %s %d\n" % (name, ls, repr(round(total, 3)), t))
                    lines.append("%s_count{%s} %d %d\n" % (name, ls, counts[-1], t))
                w("".join(lines)); n += len(lines)
    w("# EOF\n")
print("%d samples" % n, file=sys.stderr)
EOF

echo "backfilling" >&2
"$HEARTH_BIN" tsdb create-blocks-from openmetrics "$OUT/data.om" "$OUT/hearth" >"$OUT/hearth.backfill.log" 2>&1
"$PROMTOOL_BIN" tsdb create-blocks-from openmetrics "$OUT/data.om" "$OUT/prometheus" >"$OUT/prometheus.backfill.log" 2>&1
rm -f "$OUT/data.om"
printf 'global:\n  scrape_interval: 15s\n' > "$OUT/empty.yml"

HEARTH_WEB=127.0.0.1:$(free_port)
PROM_WEB=127.0.0.1:$(free_port)
"$HEARTH_BIN" --storage.tsdb.path="$OUT/hearth" --web.listen-address="$HEARTH_WEB" \
  --config.file="$OUT/empty.yml" 2>"$OUT/hearth.log" &
PIDS+=($!)
"$PROMETHEUS_BIN" --storage.tsdb.path="$OUT/prometheus" --web.listen-address="$PROM_WEB" \
  --config.file="$OUT/empty.yml" >"$OUT/prometheus.log" 2>&1 &
PIDS+=($!)

python3 - "$OUT" "$PEERS" "$HEARTH_WEB" "$PROM_WEB" "$END_S" "$RANGE_MIN" "$STEP_S" "$REPEAT" "$ONLY" <<'EOF'
import json, math, statistics, sys, time, http.client, urllib.parse
out, peers, hearth, prom = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
end_s, range_min, step_s, repeat = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
only = set(x for x in sys.argv[9].split(",") if x)
sys.path.insert(0, peers)
import query_bench  # noqa: E402  (the shared list of representative queries)

# Evaluation times 5 s past the 15 s grid (see the header).
t_eval = (end_s - 60) // 15 * 15 + 5
range_params = {"start": t_eval - range_min * 60, "end": t_eval, "step": step_s}

class Conn:
    def __init__(self, addr):
        self.host, port = addr.rsplit(":", 1)
        self.port = int(port)
        self.c = None
    def get(self, path, params):
        url = path + "?" + urllib.parse.urlencode(params)
        for attempt in (0, 1):
            if self.c is None:
                self.c = http.client.HTTPConnection(self.host, self.port, timeout=300)
            try:
                t0 = time.perf_counter()
                self.c.request("GET", url)
                r = self.c.getresponse()
                body = r.read()
                return (time.perf_counter() - t0) * 1000, r.status, body
            except (http.client.HTTPException, OSError):
                self.c.close()
                self.c = None
                if attempt:
                    raise

H, P = Conn(hearth), Conn(prom)

def ready(c):
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            _, st, body = c.get("/api/v1/query", {"query": 'count({job="synth"})', "time": t_eval})
            d = json.loads(body)
            if st == 200 and d["data"]["result"]:
                return d["data"]["result"][0]["value"][1]
        except Exception:
            pass
        time.sleep(0.3)
    sys.exit("server at %s:%d did not answer in time" % (c.host, c.port))

nh, np_ = ready(H), ready(P)
if nh != np_:
    sys.exit("series counts differ: hearth %s, prometheus %s" % (nh, np_))
print("both servers see %s series; eval time %d" % (nh, t_eval), file=sys.stderr)

def norm(body):
    d = json.loads(body)
    if d.get("status") != "success":
        raise RuntimeError(d.get("error"))
    data = d["data"]
    res = data["result"]
    if data["resultType"] in ("scalar", "string"):
        return {"": [res]}
    outm = {}
    for r in res:
        k = json.dumps(r["metric"], sort_keys=True)
        outm[k] = r.get("values") or [r["value"]]
    return outm

def close(a, b):
    if a == b:
        return True
    fa, fb = float(a), float(b)
    if math.isnan(fa) and math.isnan(fb):
        return True
    return abs(fa - fb) <= 1e-9 * max(abs(fa), abs(fb)) or abs(fa - fb) < 1e-12

def same(a, b):
    if a.keys() != b.keys():
        return "series differ: %d vs %d (only hearth: %s; only prometheus: %s)" % (
            len(a), len(b), sorted(set(a) - set(b))[:2], sorted(set(b) - set(a))[:2])
    for k in a:
        pa, pb = a[k], b[k]
        if len(pa) != len(pb):
            return "%s: %d vs %d points" % (k, len(pa), len(pb))
        for x, y in zip(pa, pb):
            if float(x[0]) != float(y[0]) or not close(x[1], y[1]):
                return "%s: %s vs %s" % (k, x, y)
    return None

rows, failures = [], []
for name, expr in query_bench.QUERIES:
    if only and name not in only:
        continue
    expr = expr.replace("JOB", "synth")
    for kind in ("instant", "range"):
        path = "/api/v1/query" if kind == "instant" else "/api/v1/query_range"
        params = {"query": expr}
        params.update({"time": t_eval} if kind == "instant" else range_params)
        _, sh, bh = H.get(path, params)
        _, sp, bp = P.get(path, params)
        try:
            a, b = norm(bh), norm(bp)
        except Exception as e:
            failures.append("%s %s: %s / %s" % (kind, name, bh[:200], bp[:200]))
            continue
        diff = same(a, b)
        if diff:
            failures.append("%s %s: %s" % (kind, name, diff))
        th, tp = [], []
        for _ in range(repeat):
            th.append(H.get(path, params)[0])
            tp.append(P.get(path, params)[0])
        mh, mp = statistics.median(th), statistics.median(tp)
        rows.append((kind, name, len(a), mh, mp, mh / mp, diff is None, min(th) / min(tp)))
        print("%-8s %-32s hearth %8.2f ms  prometheus %8.2f ms  ratio %.2f%s" % (
            kind, name, mh, mp, mh / mp, "" if diff is None else "  DIFFERENT"), file=sys.stderr)

def geo(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")

lines = ["| kind | query | series | hearth (ms, median) | Prometheus (ms, median) | hearth / Prometheus | ratio of fastest runs |",
         "|---|---|---:|---:|---:|---:|---:|"]
for kind, name, n, mh, mp, r, ok, rmin in rows:
    lines.append("| %s | %s | %d | %.2f | %.2f | %.2f%s | %.2f |" % (kind, name, n, mh, mp, r, "" if ok else " (answers differ)", rmin))
summary = []
for kind in ("instant", "range"):
    sel = [r for r in rows if r[0] == kind]
    if sel:
        summary.append("%s: geomean hearth %.2f ms, Prometheus %.2f ms, geomean ratio %.2f, slowest ratio %.2f (%s)" % (
            kind, geo([r[3] for r in sel]), geo([r[4] for r in sel]), geo([r[5] for r in sel]),
            max(r[5] for r in sel), max(sel, key=lambda r: r[5])[1]))
summary.append("all %d: geomean ratio %.2f, queries slower than Prometheus: %d" % (
    len(rows), geo([r[5] for r in rows]), sum(1 for r in rows if r[5] > 1)))
summary.append("fastest runs, all %d: geomean ratio %.2f, slowest ratio %.2f, queries slower than Prometheus: %d" % (
    len(rows), geo([r[7] for r in rows]), max([r[7] for r in rows], default=float("nan")),
    sum(1 for r in rows if r[7] > 1)))
report = "\n".join(lines + [""] + summary)
if failures:
    report += "\n\nAnswers that differ:\n" + "\n".join("- " + f for f in failures)
print(report)
for kind, name, n, mh, mp, r, ok, rmin in rows:
    print("FIGURE query_ratio_%s_%s=%.2f" % (kind, name, r))
print("FIGURE query_geomean_ratio=%.2f" % geo([r[5] for r in rows]))
open(out + "/report.md", "w").write(report + "\n")
sys.exit(1 if failures else 0)
EOF
