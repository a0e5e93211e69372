#!/bin/sh
# Starts a three-node hearth cluster on loopback, each node with its own data
# directory under ${DATA:-./cluster-data}. HTTP on 9091-9093, gRPC on 9191-9193.
# Stop with Ctrl-C. Join a fourth node with:
#   hearth --storage.tsdb.path=cluster-data/node4 --web.listen-address=127.0.0.1:9094 \
#     --cluster.node-id=4 --cluster.listen-address=127.0.0.1:9194 --cluster.join=127.0.0.1:9191
set -eu
HEARTH=${HEARTH:-hearth}
DATA=${DATA:-./cluster-data}
PEERS=127.0.0.1:9191,127.0.0.1:9192,127.0.0.1:9193
pids=""
trap 'kill $pids 2>/dev/null; wait' INT TERM EXIT
for i in 1 2 3; do
  mkdir -p "$DATA/node$i"
  "$HEARTH" --storage.tsdb.path="$DATA/node$i" \
    --web.listen-address=127.0.0.1:909$i \
    --cluster.node-id=$i \
    --cluster.listen-address=127.0.0.1:919$i \
    --cluster.initial-peers=$PEERS >"$DATA/node$i.log" 2>&1 &
  pids="$pids $!"
done
echo "three nodes started; status: curl -s http://127.0.0.1:9091/api/v1/status/cluster"
wait
