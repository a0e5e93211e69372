#!/usr/bin/env bash
# Alertmanager throughput, notification latency and peak memory: hearth's
# `hearth alertmanager` against the real Alertmanager (Debian package
# `prometheus-alertmanager`), one after the other on this machine, with the
# same config and the same load (examples/am_load.rs): ALERTS firing alerts
# across GROUPS groups posted to POST /api/v2/alerts in batches of BATCH by
# CONCURRENCY connections. Prints a markdown table with the ratios.
#
# Usage: [PROFILE=release] benches/alertmanager.sh [ALERTS] [GROUPS] [BATCH] [CONCURRENCY] [RUNS]
set -euo pipefail

ALERTS=${1:-10000}
GROUPS_N=${2:-1000}
BATCH=${3:-100}
CONCURRENCY=${4:-4}
RUNS=${5:-3}
GROUP_WAIT_MS=1000

# PROFILE=test measures the test profile's build (opt-level 1) when there is no
# time for a release build.
PROFILE=${PROFILE:-release}

cd "$(dirname "$0")/.."
cargo build --profile "$PROFILE" --quiet --bin hearth --example am_load
case $PROFILE in release) OUT=target/release ;; *) OUT=target/debug ;; esac
HEARTH=$OUT/hearth
LOAD=$OUT/examples/am_load
command -v prometheus-alertmanager >/dev/null || {
  echo "prometheus-alertmanager not found (apt-get install prometheus-alertmanager)" >&2
  exit 1
}

WORK=$(mktemp -d)
PID=""
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_ready() {
  for _ in $(seq 1 300); do
    if curl -fsS "http://$1/-/ready" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "not ready: $1" >&2
  return 1
}

# run_one NAME: starts the named Alertmanager, loads it, prints "figures rss_kib".
run_one() {
  local name=$1 port sink dir
  port=$(free_port)
  sink=$(free_port)
  dir="$WORK/$name-$RANDOM"
  mkdir -p "$dir"
  cat >"$dir/am.yml" <<EOF
route:
  receiver: sink
  group_by: [group]
  group_wait: ${GROUP_WAIT_MS}ms
  group_interval: 5m
  repeat_interval: 4h
receivers:
  - name: sink
    webhook_configs:
      - url: http://127.0.0.1:$sink/hook
EOF
  case $name in
    hearth)
      "$HEARTH" alertmanager --config.file="$dir/am.yml" --storage.path="$dir/data" \
        --web.listen-address="127.0.0.1:$port" >"$dir/log" 2>&1 &
      ;;
    alertmanager)
      prometheus-alertmanager --config.file="$dir/am.yml" --storage.path="$dir/data" \
        --web.listen-address="127.0.0.1:$port" --cluster.listen-address= >"$dir/log" 2>&1 &
      ;;
  esac
  PID=$!
  wait_ready "127.0.0.1:$port"
  local figures
  figures=$("$LOAD" "http://127.0.0.1:$port" "127.0.0.1:$sink" "$ALERTS" "$GROUPS_N" \
    "$BATCH" "$CONCURRENCY" "$GROUP_WAIT_MS")
  local rss
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
  kill "$PID"
  wait "$PID" 2>/dev/null || true
  PID=""
  echo "$figures rss_kib=$rss"
}

field() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k {print $2}'; }

# median of the numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

declare -A RESULTS
for name in hearth alertmanager; do
  for run in $(seq 1 "$RUNS"); do
    out=$(run_one "$name")
    echo "$name run $run: $out" >&2
    RESULTS[$name]+="$out"$'\n'
  done
done

stat() { # stat NAME FIELD -> median over runs
  echo -n "${RESULTS[$1]}" | while read -r line; do field "$line" "$2"; done | median
}

echo
echo "hearth built with the $PROFILE profile; $ALERTS alerts, $GROUPS_N groups, batches of $BATCH, $CONCURRENCY connections, group_wait ${GROUP_WAIT_MS}ms; median of $RUNS runs"
echo
echo "| | hearth | Alertmanager $(prometheus-alertmanager --version 2>&1 | awk 'NR==1 {print $3}') | hearth / Alertmanager |"
echo "|---|---:|---:|---:|"
for f in alerts_per_s latency_p50_s latency_p99_s latency_max_s rss_kib notified_groups; do
  h=$(stat hearth "$f")
  a=$(stat alertmanager "$f")
  r=$(awk -v h="$h" -v a="$a" 'BEGIN { if (a > 0) printf "%.2f", h / a; else print "-" }')
  echo "| $f | $h | $a | $r |"
done
