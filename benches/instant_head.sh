#!/usr/bin/env bash
# Instant queries over live data in the head, two hearth binaries side by side
# (e.g. before and after a change): both receive the same remote-write load
# (../shared/tools/peers/remote_write_load.py: SERIES series, ROUNDS samples
# each, timestamps = now), then each query runs REPEAT times per binary over a
# keep-alive connection, alternating, and the script prints the median latency
# per binary and the ratio B / A.
#
# Usage (from the crate root):
#   benches/instant_head.sh A_BIN B_BIN [SERIES] [ROUNDS] [REPEAT]
# Needs python3 (standard library). Listens on 127.0.0.1 only.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
A_BIN=${1:?A_BIN}
B_BIN=${2:?B_BIN}
SERIES=${3:-20000}
ROUNDS=${4:-100}
REPEAT=${5:-30}
LOAD=$ROOT/../shared/tools/peers/remote_write_load.py
[ -f "$LOAD" ] || { echo "no $LOAD" >&2; exit 1; }
OUT=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$OUT"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
printf 'global:\n  scrape_interval: 15s\n' > "$OUT/empty.yml"
ADDRS=()
for bin in "$A_BIN" "$B_BIN"; do
  addr=127.0.0.1:$(free_port)
  dir=$OUT/data${#ADDRS[@]}
  "$bin" --storage.tsdb.path="$dir" --web.listen-address="$addr" \
    --config.file="$OUT/empty.yml" --web.enable-remote-write-receiver 2>"$dir.log" &
  PIDS+=($!)
  ADDRS+=("$addr")
done
for addr in "${ADDRS[@]}"; do
  for _ in $(seq 100); do curl -sf "http://$addr/-/ready" >/dev/null && break; sleep 0.1; done
  python3 "$LOAD" --url "http://$addr/api/v1/write" --series "$SERIES" --no-pace \
    --max-rounds "$ROUNDS" --duration 600 --batch 5000 >/dev/null
done
python3 - "${ADDRS[0]}" "${ADDRS[1]}" "$REPEAT" <<'PY'
import http.client, statistics, sys, time, urllib.parse
a, b, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
queries = ['count({__name__=~"synth.+"})', 'sum by (zone) (synth_level_000)',
           'topk(5, synth_level_001)']
conns = {}
def get(addr, q, t):
    host, port = addr.rsplit(":", 1)
    c = conns.setdefault(addr, http.client.HTTPConnection(host, int(port)))
    t0 = time.perf_counter()
    c.request("GET", "/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": t}))
    r = c.getresponse(); body = r.read()
    assert r.status == 200, body
    return (time.perf_counter() - t0) * 1000, body
t = time.time()
print("| query | A (ms, median) | B (ms, median) | B / A |")
print("|---|---:|---:|---:|")
for q in queries:
    _, ba = get(a, q, t); _, bb = get(b, q, t)
    assert ba == bb, f"{q}: the binaries answer differently"
    la, lb = [], []
    for _ in range(repeat):
        la.append(get(a, q, t)[0]); lb.append(get(b, q, t)[0])
    ma, mb = statistics.median(la), statistics.median(lb)
    print(f"| `{q}` | {ma:.2f} | {mb:.2f} | {mb / ma:.2f} |")
PY
