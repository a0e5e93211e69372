#!/usr/bin/env bash
# What an idle cluster costs: CPU of a single hearth node and of a three-node
# RF=3 cluster (benches/hearth_cluster3.sh) that scrape nothing and receive
# nothing, so all they do is their background work (Raft heartbeats and ticks of
# the meta group and every WAL group, the failure detector's probes, the group
# directory's `Held` questions). Each system gets SETTLE seconds to start and
# form, then its processes' utime+stime (from /proc) is read over SECONDS.
# Prints a Markdown table of CPU milliseconds per second, and the cluster's
# background cost per million samples at 20k samples/s (the remote-write bench's
# load), which is what it adds to that bench's figure.
#
#   cargo build --release && benches/cluster_idle.sh
#   HEARTH_BIN=... SECONDS_MEASURED=60 RUNS=3 benches/cluster_idle.sh
#   benches/cluster_idle.sh --cluster.wal-group.heartbeat-interval=10s   # extra flags
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${HEARTH_BIN:-target/release/hearth}")
SETTLE=${SETTLE:-15}
SECONDS_MEASURED=${SECONDS_MEASURED:-45}
RUNS=${RUNS:-2}
PORT=${PORT:-19590}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
printf 'global:\n  scrape_interval: 15s\nscrape_configs: []\n' >"$WORK/empty.yml"

# Sum of utime+stime in clock ticks of the given PIDs.
ticks() {
  local sum=0 p f
  for p in "$@"; do
    read -ra f <"/proc/$p/stat"
    sum=$((sum + f[13] + f[14]))
  done
  echo "$sum"
}

# CPU ms per second of the hearth processes whose data directory starts with $1.
measure() {
  local dir=$1 pids a b hz
  sleep "$SETTLE"
  mapfile -t pids < <(pgrep -f "^$BIN --storage.tsdb.path=$dir")
  [ "${#pids[@]}" -gt 0 ] || { echo "no hearth process for $dir" >&2; return 1; }
  hz=$(getconf CLK_TCK)
  a=$(ticks "${pids[@]}")
  sleep "$SECONDS_MEASURED"
  b=$(ticks "${pids[@]}")
  python3 -c "print(f'{($b - $a) * 1000 / $hz / $SECONDS_MEASURED:.2f}')"
}

single=() cluster=()
for run in $(seq "$RUNS"); do
  dir=$WORK/single-$run
  "$BIN" --storage.tsdb.path="$dir" --config.file="$WORK/empty.yml" \
    --web.listen-address="127.0.0.1:$PORT" "$@" >"$WORK/single-$run.log" 2>&1 &
  pid=$!
  single+=("$(measure "$dir")")
  kill -TERM "$pid"; wait "$pid" || true

  dir=$WORK/cluster-$run
  HEARTH_CLUSTER_BIN=$BIN benches/hearth_cluster3.sh --storage.tsdb.path="$dir" \
    --config.file="$WORK/empty.yml" --web.listen-address="127.0.0.1:$PORT" "$@" \
    >"$WORK/cluster-$run.log" 2>&1 &
  pid=$!
  cluster+=("$(measure "$dir")")
  kill -TERM "$pid"; wait "$pid" || true
done

python3 - "${single[*]}" "${cluster[*]}" <<'PY'
import statistics, sys
single = [float(x) for x in sys.argv[1].split()]
cluster = [float(x) for x in sys.argv[2].split()]
s, c = statistics.median(single), statistics.median(cluster)
print("| system | idle CPU ms/s, each run | median |")
print("| --- | --- | ---: |")
print(f"| hearth, single node | {', '.join(f'{x:.2f}' for x in single)} | {s:.2f} |")
print(f"| hearth, 3 nodes RF=3 | {', '.join(f'{x:.2f}' for x in cluster)} | {c:.2f} |")
print()
# At 20k samples/s, x ms/s of background is x / 20 CPU seconds per 1M samples.
print(f"cluster ÷ single = {c / s:.1f}; at 20k samples/s the cluster's background alone is "
      f"{c / 20:.2f} CPU s per 1M samples, the single node's {s / 20:.2f}")
PY
