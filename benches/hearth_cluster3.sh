#!/usr/bin/env bash
# A three-node hearth cluster (RF=3) behind one command line, for the peers
# harness (../shared/tools/peers), which starts a server with Prometheus-style flags
# and measures its whole process tree. Node 1 gets the flags as given
# (--web.listen-address, --storage.tsdb.path, ...); nodes 2 and 3 get the same flags
# with their own data directory (<path>-node2, -node3) and web port (+100, +101).
# gRPC ports are the web port +200..+202. SIGTERM stops all three.
#
#   HEARTH_CLUSTER_BIN=target/release/hearth benches/hearth_cluster3.sh FLAGS...
#   HEARTH_CLUSTER_METRICS_OUT=FILE   node 1's /metrics is saved there on SIGTERM
set -euo pipefail
BIN=${HEARTH_CLUSTER_BIN:-target/release/hearth}
WEB="" DATA="" REST=()
for a in "$@"; do
  case "$a" in
    --web.listen-address=*) WEB=${a#*=} ;;
    --storage.tsdb.path=*) DATA=${a#*=} ;;
    *) REST+=("$a") ;;
  esac
done
[ -n "$WEB" ] && [ -n "$DATA" ] || { echo "needs --web.listen-address and --storage.tsdb.path" >&2; exit 2; }
HOST=${WEB%:*} PORT=${WEB##*:}
PEERS="$HOST:$((PORT + 200)),$HOST:$((PORT + 201)),$HOST:$((PORT + 202))"
pids=()
stop() {
  if [ -n "${HEARTH_CLUSTER_METRICS_OUT:-}" ]; then
    curl -s -m 10 "http://$WEB/metrics" >"$HEARTH_CLUSTER_METRICS_OUT" || true
  fi
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  exit 0
}
trap stop TERM INT
for i in 1 2 3; do
  if [ "$i" = 1 ]; then dir=$DATA web=$WEB; else dir=$DATA-node$i web=$HOST:$((PORT + 98 + i)); fi
  mkdir -p "$dir"
  "$BIN" --storage.tsdb.path="$dir" --web.listen-address="$web" \
    --cluster.node-id="$i" --cluster.listen-address="$HOST:$((PORT + 199 + i))" \
    --cluster.initial-peers="$PEERS" --cluster.replication-factor=3 "${REST[@]}" &
  pids+=($!)
done
wait "${pids[@]}"
