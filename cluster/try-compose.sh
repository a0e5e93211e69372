#!/bin/sh
# Smoke test of the container setup: builds the image, starts the three-node
# compose cluster, joins the fourth node, and checks that every node reports four
# voters with one leader and answers `up`. Tears everything down at the end.
#   cluster/try-compose.sh        (needs Docker and docker-compose)
set -eu
cd "$(dirname "$0")"
PROJECT=hearth-try
compose() { docker-compose -p "$PROJECT" -f docker-compose.yml --profile join "$@"; }
./build-image.sh hearth:dev
trap 'compose down -v >/dev/null 2>&1 || true' EXIT
compose up -d node1 node2 node3
voters() {
  curl -sf "http://127.0.0.1:$1/api/v1/status/cluster" | python3 -c '
import json, sys
d = json.load(sys.stdin)["data"]
print(sum(m["role"] == "voter" for m in d["members"]), d.get("leaderId"))' 2>/dev/null || echo "0 none"
}
wait_voters() {
  want=$1; shift
  for _ in $(seq 1 120); do
    ok=1
    for port in "$@"; do
      set -- $(voters "$port") "$@"; v=$1; leader=$2; shift 2
      [ "$v" = "$want" ] && [ "$leader" != "None" ] && [ "$leader" != "none" ] || ok=0
    done
    [ $ok = 1 ] && return 0
    sleep 1
  done
  echo "timed out waiting for $want voters" >&2
  return 1
}
wait_voters 3 9091 9092 9093
echo "three nodes formed a cluster"
compose up -d node4
wait_voters 4 9091 9092 9093 9094
echo "node 4 joined"
for port in 9091 9092 9093 9094; do
  curl -sf "http://127.0.0.1:$port/api/v1/query?query=up" | grep -q '"status":"success"'
done
echo "every node answers queries"
