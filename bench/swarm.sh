#!/usr/bin/env bash
# A swarm of daemons on one machine (issue 29). For each size in SIZES
# (default "10 30 100"): that many daemons in their own network namespace
# (so its loopback carries only their traffic), each connected to the one
# before it and the one three before (a chain with chords: most daemons
# reach the others only through the DHT), each holding one small dataset
# that the next daemon fetched (so every popularity report carries counts).
#   1. bytes on the namespace's loopback per daemon per minute over MEASURE
#      seconds after a 20 s warm-up, with popularity gossip on (15 s) and
#      off (gossip_interval = "0"); the difference is what gossip costs;
# and at the largest size, gossip on:
#   2. find latency: a dataset added on the first daemon, until the last
#      daemon's `shoal providers` lists it (RUNS datasets, median);
#   3. replica convergence: `shoal pin --replicas 3` on the first daemon,
#      until the last daemon sees 3 reachable providers;
#   4. query fan-out: `shoal query` from the last daemon on that dataset:
#      peers asked (its providers) beside the peers it is connected to
#      (what the rule before issue 29 asked: providers and every
#      connected peer).
# Needs root (ip netns). usage: [SKIP_OFF=1] bench/swarm.sh [SIZES] [MEASURE] [RUNS]
# (SKIP_OFF: no gossip-off swarm, for the find/replica/query figures only)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${1:-"10 30 100"}
MEASURE=${2:-60}
RUNS=${3:-3}
W=${BENCH_DIR:-/tmp/shoal-swarmbench}
NS=shoalswarm
source bench/lib.sh
bench_init
cleanup() { bench_cleanup; ip netns del $NS 2>/dev/null || true; }
trap cleanup EXIT
# Distinct datasets (their chunks too: datasets sharing chunk blocks would
# make every daemon hold every chunk): ds0..ds(N-1) for the largest N and
# new1..newRUNS, each a small float32 array.
MAXN=$(printf '%s\n' $SIZES | sort -n | tail -1)
$PY - "$W" "$MAXN" "$RUNS" <<'PY'
import sys, numpy as np, zarr
w, n, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names = [f"ds{i}" for i in range(n)] + [f"new{r}" for r in range(1, runs + 1)]
for seed, name in enumerate(names):
    g = zarr.open_group(f"{w}/{name}", mode="w", zarr_format=3, attributes={"id": name})
    a = g.create_array("t", shape=(8, 64, 64), chunks=(2, 32, 32), dtype="f4", dimension_names=("time", "lat", "lon"))
    a[:] = np.random.default_rng(seed).random((8, 64, 64), dtype="f4")
PY
lo_bytes() { ip netns exec $NS cat /sys/class/net/lo/statistics/tx_bytes; }
providers() { "$BIN" --home "$W/$1" providers "$2" --json 2>/dev/null | python3 -c 'import json,sys
try: print(len(json.load(sys.stdin)["providers"]))
except Exception: print(0)'; }

# swarm N GOSSIP: starts N daemons, connects, adds and fetches; sets BYTES
# (per daemon per minute); leaves them running. Not called in $(...): the
# daemons would hold its output open.
swarm() {
  local n=$1 i
  ip netns del $NS 2>/dev/null || true
  ip netns add $NS; ip netns exec $NS ip link set lo up
  gossip_conf() { set_conf "$1" gossip_interval "\"$GOSSIP\""; }
  GOSSIP=$2
  for i in $(seq 0 $((n - 1))); do rm -rf "$W/g$i"; CONFIGURE=gossip_conf start "g$i" /ip4/127.0.0.1/tcp/0 $NS; done
  for i in $(seq 0 $((n - 1))); do
    R[$i]=$("$BIN" --home "$W/g$i" add "$W/ds$i" | tail -1)
  done
  for i in $(seq 1 $((n - 1))); do
    "$BIN" --home "$W/g$i" connect "$(addr g$((i - 1)))" >/dev/null
    if [ "$i" -ge 3 ]; then "$BIN" --home "$W/g$i" connect "$(addr g$((i - 3)))" >/dev/null; fi
  done
  for i in $(seq 0 $((n - 1))); do
    rm -rf "$W/out"; "$BIN" --home "$W/g$(( (i + 1) % n ))" get "${R[$i]}" -o "$W/out" >/dev/null
  done
  sleep 20
  local b0 b1; b0=$(lo_bytes); sleep "$MEASURE"; b1=$(lo_bytes)
  BYTES=$(( (b1 - b0) * 60 / MEASURE / n ))
}
teardown() { kill "${PIDS[@]}" 2>/dev/null || true; wait "${PIDS[@]}" 2>/dev/null || true; PIDS=(); }

declare -A ON OFF
LAST=""
for n in $SIZES; do
  if [ -n "${SKIP_OFF:-}" ]; then OFF[$n]=-; else swarm "$n" 0; OFF[$n]=$BYTES; teardown; fi
  swarm "$n" 15s; ON[$n]=$BYTES
  LAST=$n
  echo "$n daemons: ${ON[$n]} B/daemon/min with gossip, ${OFF[$n]} without" >&2
  [ "$n" = "$(echo $SIZES | awk '{print $NF}')" ] || teardown
done

n=$LAST; far=g$((n - 1))
FIND=()
for r in $(seq "$RUNS"); do
  root=$("$BIN" --home "$W/g0" add "$W/new$r" | tail -1)
  t0=$(now)
  for _ in $(seq 600); do [ "$(providers "$far" "$root")" -ge 1 ] && break; sleep 0.1; done
  FIND+=("$(secs "$t0" "$(now)")")
done
t0=$(now); "$BIN" --home "$W/g0" pin "${R[0]}" --replicas 3 >/dev/null
CONV=timeout
for _ in $(seq 900); do
  if [ "$(providers "$far" "${R[0]}")" -ge 3 ]; then CONV=$(secs "$t0" "$(now)"); break; fi
  sleep 0.2
done
# The query from the farthest daemon that holds no copy of it.
q=$far
for i in $(seq $((n - 1)) -1 1); do
  if ! "$BIN" --home "$W/g$i" pins --json | grep -q "${R[0]}"; then q=g$i; break; fi
done
connected=$("$BIN" --home "$W/$q" peers --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
holders=$(providers "$q" "${R[0]}")
"$BIN" --home "$W/$q" query "${R[0]}" t --op mean --dim time --json > "$W/query.json"
asked=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["peers_asked"])' "$W/query.json")
teardown

echo "== swarm scale: gossip and background traffic (bytes on the namespace loopback per daemon per minute, $MEASURE s after 20 s warm-up) =="
printf '%8s %14s %14s %14s\n' daemons "gossip on" "gossip off" "gossip costs"
for n in $SIZES; do
  printf '%8s %14s %14s %14s\n' "$n" "${ON[$n]}" "${OFF[$n]}" "$([ "${OFF[$n]}" = - ] && echo - || echo $(( ON[$n] - OFF[$n] )))"
done
echo "== at $LAST daemons =="
printf 'find: a new dataset on g0 listed by %s after %.2fs median (%s)\n' "$far" "$(median "${FIND[@]}")" "${FIND[*]}"
echo "replicas 3: converged (3 reachable providers seen from $far) after ${CONV}s"
echo "query from $q: $asked peers asked ($holders providers); connected to $connected peers (before issue 29 it asked providers + every connected peer)"
