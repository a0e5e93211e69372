#!/usr/bin/env bash
# Bytes per sample of hearth's blocks against Prometheus's own blocks for the same
# samples: one OpenMetrics file per data set is backfilled with
# `promtool tsdb create-blocks-from openmetrics` and with
# `hearth tsdb create-blocks-from openmetrics`, and the block directories are measured.
#
# Data sets (each a scrape history with a timestamp on every sample, 15 s apart):
#   synth  the peers harness's synthetic exporter (../shared/tools/peers/synth_exporter.py),
#          its generator called directly with fixed seeds, so the file is reproducible;
#   node   the real node_exporter (Debian's prometheus-node-exporter) on loopback,
#          scraped back to back and stamped as if 15 s apart.
#
# Only bash and the python3 standard library are needed, plus promtool and the hearth
# binary. Everything listens on 127.0.0.1; processes started here are stopped by PID.
#
# Usage (from the crate root):
#   benches/block_size.sh [--hearth-bin PATH] [--out DIR] [--hours H] [--interval SEC]
#                         [--synth-targets N] [--synth-series S] [--node-pace-ms MS]
#                         [--datasets "synth node"] [--start UNIX_SECONDS] [--reuse-inputs]
# --reuse-inputs keeps OUT/<dataset>.om from an earlier run (same data for a
# before/after comparison of two hearth binaries) instead of generating it again.
# Output: a report on stdout and in OUT/report.md (default OUT: target/block-size).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HEARTH_BIN=${HEARTH_BIN:-$ROOT/target/release/hearth}
OUT=$ROOT/target/block-size
HOURS=6
INTERVAL_S=15
SYNTH_TARGETS=2
SYNTH_SERIES=500
NODE_PACE_MS=10
DATASETS="synth node"
# 2023-11-14T22:13:20Z: not on a two-hour boundary, so the first and last blocks
# are partial, as they are in real backfills.
START_S=1700000000
REUSE_INPUTS=
PEERS=$ROOT/../shared/tools/peers

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --hearth-bin) HEARTH_BIN=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --hours) HOURS=$2; shift 2 ;;
        --interval) INTERVAL_S=$2; shift 2 ;;
        --synth-targets) SYNTH_TARGETS=$2; shift 2 ;;
        --synth-series) SYNTH_SERIES=$2; shift 2 ;;
        --node-pace-ms) NODE_PACE_MS=$2; shift 2 ;;
        --datasets) DATASETS=$2; shift 2 ;;
        --start) START_S=$2; shift 2 ;;
        --reuse-inputs) REUSE_INPUTS=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done

command -v promtool >/dev/null || { echo "promtool not found (apt-get install prometheus)" >&2; exit 1; }
[ -x "$HEARTH_BIN" ] || { echo "hearth binary not found at $HEARTH_BIN (cargo build --release)" >&2; exit 1; }
[ -f "$PEERS/synth_exporter.py" ] || { echo "synth_exporter.py not found under $PEERS" >&2; exit 1; }
SCRAPES=$(( HOURS * 3600 / INTERVAL_S ))
mkdir -p "$OUT"
NOTES=$OUT/notes.txt
: > "$NOTES"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "promtool: $(promtool --version 2>&1 | head -1)"
    echo "hearth: ${HEARTH_BIN#"$ROOT"/} ($("$HEARTH_BIN" --version 2>&1 | head -1)); source tree at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ', modified')"
    echo "input: $HOURS h at ${INTERVAL_S} s from $(date -u -d "@$START_S" +%Y-%m-%dT%H:%M:%SZ)"
} >> "$NOTES"

NODE_PID=
cleanup() {
    if [ -n "$NODE_PID" ]; then kill "$NODE_PID" 2>/dev/null || true; wait "$NODE_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The converter shared by both data sets: Prometheus text bodies in, OpenMetrics out.
# Every family is written without # TYPE/# HELP, i.e. as OpenMetrics "unknown", with
# the full sample names (`_total`, `_bucket`, ...) as series names. That sidesteps the
# OpenMetrics rules tying sample-name suffixes to declared types (a counter family
# `x` must expose `x_total`, an unknown family must not be split by suffixes), and it
# changes nothing in the stored series: a block holds only labels and samples.
CONVERTER=$(cat <<'PY'
import re

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")

def split_sample(line):
    """(name, label text without braces, value) of one text-format sample line."""
    m = NAME.match(line)
    if not m:
        raise ValueError("bad sample line: %r" % line)
    name, i = m.group(0), m.end()
    labels = ""
    if i < len(line) and line[i] == "{":
        j, quoted = i + 1, False
        while j < len(line):
            c = line[j]
            if quoted:
                if c == "\\":
                    j += 1
                elif c == '"':
                    quoted = False
            elif c == '"':
                quoted = True
            elif c == "}":
                break
            j += 1
        else:
            raise ValueError("unterminated labels: %r" % line)
        labels = line[i + 1:j].strip().rstrip(",")
        i = j + 1
    fields = line[i:].split()
    if not fields:
        raise ValueError("no value: %r" % line)
    return name, labels, fields[0]

def to_openmetrics(body, extra_labels, ts_s, out):
    """Writes every sample of a text-format body with extra labels and a timestamp."""
    n = 0
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        name, labels, value = split_sample(line)
        ls = extra_labels + ("," + labels if labels else "")
        out.write("%s{%s} %s %d\n" % (name, ls, value, ts_s))
        n += 1
    return n
PY
)

gen_synth() {
    python3 - "$PEERS/synth_exporter.py" "$1" "$SCRAPES" "$INTERVAL_S" "$START_S" \
        "$SYNTH_TARGETS" "$SYNTH_SERIES" <<PY
import importlib.util, sys
$CONVERTER
path, out_path, scrapes, interval, start, targets, series = sys.argv[1:]
scrapes, interval, start, targets, series = map(int, (scrapes, interval, start, targets, series))
spec = importlib.util.spec_from_file_location("synth_exporter", path)
se = importlib.util.module_from_spec(spec)
spec.loader.exec_module(se)
# One SeriesSet per target with its own seed, as synth_exporter --per-target does;
# its defaults otherwise (families = series/100, 3 labels, 30 % histograms, 30 % gauges).
sets = [se.SeriesSet(series, max(3, series // 100), 3, 0.3, 0.3, se.DEFAULT_BUCKETS, 1 + t)
        for t in range(targets)]
n = 0
with open(out_path, "w") as out:
    for k in range(scrapes):
        ts = start + k * interval
        for t, s in enumerate(sets):
            body = s.render().decode()
            n += to_openmetrics(body, 'job="synth",instance="synth-%d"' % t, ts, out)
    out.write("# EOF\n")
print("synth: %d targets x %d series, %d scrapes, %d samples" % (targets, sets[0].n_series, scrapes, n))
PY
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

gen_node() {
    local bin port
    bin=$(command -v prometheus-node-exporter || command -v node_exporter || true)
    if [ -z "$bin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing prometheus-node-exporter" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y prometheus-node-exporter >&2 || true
        bin=$(command -v prometheus-node-exporter || true)
    fi
    if [ -z "$bin" ]; then
        echo "node: skipped, prometheus-node-exporter is not installed and could not be installed" | tee -a "$NOTES" >&2
        return 1
    fi
    port=$(free_port)
    # systemd's collector only logs errors in a container without systemd.
    "$bin" --web.listen-address="127.0.0.1:$port" --no-collector.systemd >"$OUT/node_exporter.log" 2>&1 &
    NODE_PID=$!
    python3 - "$port" "$1" "$SCRAPES" "$INTERVAL_S" "$START_S" "$NODE_PACE_MS" "$("$bin" --version 2>&1 | head -1)" <<PY
import sys, time, urllib.request
$CONVERTER
port, out_path, scrapes, interval, start, pace_ms, version = sys.argv[1:]
port = int(port)
scrapes, interval, start, pace_ms = map(int, (scrapes, interval, start, pace_ms))
url = "http://127.0.0.1:%d/metrics" % port
for _ in range(100):  # up to 10 s for the exporter to listen
    try:
        urllib.request.urlopen(url, timeout=5).read()
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("node_exporter did not answer on " + url)
n, series = 0, 0
with open(out_path, "w") as out:
    for k in range(scrapes):
        body = urllib.request.urlopen(url, timeout=10).read().decode()
        m = to_openmetrics(body, 'job="node",instance="localhost:9100"', start + k * interval, out)
        n += m
        series = max(series, m)
        time.sleep(pace_ms / 1000)
    out.write("# EOF\n")
print("node: %s, %d series per scrape (max), %d scrapes, %d samples" % (version, series, scrapes, n))
PY
    local rc=$?
    kill "$NODE_PID" 2>/dev/null || true
    wait "$NODE_PID" 2>/dev/null || true
    NODE_PID=
    return "$rc"
}

# Seconds of wall time of a command, its output to a log.
timed() {
    local log=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >"$log" 2>&1 || { echo "failed: $* (see $log)" >&2; tail -5 "$log" >&2; return 1; }
    t1=$(date +%s.%N)
    python3 -c "print('%.1f' % ($t1 - $t0))"
}

RUN_DATASETS=
for ds in $DATASETS; do
    in=$OUT/$ds.om
    if [ -n "$REUSE_INPUTS" ] && [ -s "$in" ] && [ -s "$OUT/$ds.gen.txt" ]; then
        echo "== $ds: reusing $in" >&2
    else
        echo "== $ds: generating $in" >&2
        case "$ds" in
            synth) gen_synth "$in" > "$OUT/$ds.gen.txt" || { echo "synth: generation failed" >&2; exit 1; } ;;
            node) gen_node "$in" > "$OUT/$ds.gen.txt" || continue ;;
            *) echo "unknown data set $ds" >&2; exit 2 ;;
        esac
    fi
    tee -a "$NOTES" < "$OUT/$ds.gen.txt" >&2
    rm -rf "$OUT/$ds.prometheus" "$OUT/$ds.hearth"
    tp=$(timed "$OUT/$ds.promtool.log" promtool tsdb create-blocks-from openmetrics "$in" "$OUT/$ds.prometheus")
    th=$(timed "$OUT/$ds.hearth.log" "$HEARTH_BIN" tsdb create-blocks-from openmetrics "$in" "$OUT/$ds.hearth")
    echo "$ds: backfill wall time promtool ${tp} s, hearth ${th} s" | tee -a "$NOTES" >&2
    # Sanity: promtool reads both sets of blocks back to the same samples. promtool
    # opens the directory as a database, which needs a wal/ directory; it is made
    # after the blocks and is not part of any block's size.
    mkdir -p "$OUT/$ds.prometheus/wal" "$OUT/$ds.hearth/wal"
    promtool tsdb dump "$OUT/$ds.prometheus" > "$OUT/$ds.prometheus.dump"
    promtool tsdb dump "$OUT/$ds.hearth" > "$OUT/$ds.hearth.dump"
    if cmp -s "$OUT/$ds.prometheus.dump" "$OUT/$ds.hearth.dump"; then
        echo "$ds: promtool tsdb dump identical ($(wc -l < "$OUT/$ds.hearth.dump") lines)" | tee -a "$NOTES" >&2
    else
        echo "$ds: promtool tsdb dump DIFFERS; first difference:" | tee -a "$NOTES" >&2
        diff "$OUT/$ds.prometheus.dump" "$OUT/$ds.hearth.dump" | head -5 | tee -a "$NOTES" >&2 || true
        DUMP_DIFFERS=1
    fi
    rm -f "$OUT/$ds.prometheus.dump" "$OUT/$ds.hearth.dump"
    RUN_DATASETS="$RUN_DATASETS $ds"
done

python3 - "$OUT" "$NOTES" $RUN_DATASETS <<'PY' | tee "$OUT/report.md"
import json, os, sys

out, notes = sys.argv[1], sys.argv[2]

def block_stats(root):
    """One row per block directory (a directory with meta.json) under root."""
    rows = []
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        meta_path = os.path.join(d, "meta.json")
        if not os.path.isfile(meta_path):
            continue
        with open(meta_path) as f:
            meta = json.load(f)
        chunks = sum(os.path.getsize(os.path.join(d, "chunks", c))
                     for c in os.listdir(os.path.join(d, "chunks")))
        total = 0
        for dp, _, files in os.walk(d):
            total += sum(os.path.getsize(os.path.join(dp, f)) for f in files)
        st = meta["stats"]
        rows.append({
            "mint": meta["minTime"], "maxt": meta["maxTime"],
            "samples": st.get("numSamples", 0), "series": st.get("numSeries", 0),
            "chunks": st.get("numChunks", 0), "chunk_bytes": chunks,
            "index_bytes": os.path.getsize(os.path.join(d, "index")), "total_bytes": total,
        })
    rows.sort(key=lambda r: r["mint"])
    return rows

def hhmm(ms):
    s = ms // 1000
    return "%02d:%02d" % (s // 3600 % 24, s // 60 % 60)

def bps(num, den):
    return num / den if den else float("nan")

print("# Block size: hearth vs promtool backfill\n")
with open(notes) as f:
    for line in f:
        print("    " + line.rstrip())
print()
cols = ("block (UTC)", "system", "samples", "series", "chunks", "samples/chunk",
        "chunks/ B", "index B", "total B", "B/sample chunks", "B/sample chunks+index")
for ds in sys.argv[3:]:
    res = {s: block_stats(os.path.join(out, "%s.%s" % (ds, s))) for s in ("prometheus", "hearth")}
    print("## %s\n" % ds)
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    totals = {}
    for system in ("prometheus", "hearth"):
        t = dict.fromkeys(("samples", "series", "chunks", "chunk_bytes", "index_bytes", "total_bytes"), 0)
        for r in res[system]:
            for k in t:
                t[k] += r[k]
        totals[system] = t
    labelled = [(hhmm(r["mint"]) + "–" + hhmm(r["maxt"]), s, r)
                for s in ("prometheus", "hearth") for r in res[s]]
    labelled.sort(key=lambda x: (x[2]["mint"], x[1] != "prometheus"))
    labelled += [("**all**", s, totals[s]) for s in ("prometheus", "hearth")]
    for blk, system, r in labelled:
        print("| %s | %s | %d | %d | %d | %.1f | %d | %d | %d | %.3f | %.3f |" % (
            blk, system, r["samples"], r["series"], r["chunks"], bps(r["samples"], r["chunks"]),
            r["chunk_bytes"], r["index_bytes"], r["total_bytes"],
            bps(r["chunk_bytes"], r["samples"]),
            bps(r["chunk_bytes"] + r["index_bytes"], r["samples"])))
    p, h = totals["prometheus"], totals["hearth"]
    print()
    print("hearth ÷ prometheus: chunks/ %.4f, index %.4f, chunks+index %.4f, block dirs %.4f, chunk count %.4f\n" % (
        bps(h["chunk_bytes"], p["chunk_bytes"]), bps(h["index_bytes"], p["index_bytes"]),
        bps(h["chunk_bytes"] + h["index_bytes"], p["chunk_bytes"] + p["index_bytes"]),
        bps(h["total_bytes"], p["total_bytes"]), bps(h["chunks"], p["chunks"])))
PY
if [ -n "${DUMP_DIFFERS:-}" ]; then
    echo "promtool dumps differ: the sizes above compare different data" >&2
    exit 1
fi
