#!/usr/bin/env bash
# Mirroring benchmarks (issue 6), default [mirror] intervals unless noted.
#
# 1. Time from a dataset becoming popular to its first complete mirror.
#    H holds a GIB dataset; readers R1 and R2 (no mirror budget) mount it
#    and read it through; M (budget auto) is the only volunteer. Timed from
#    the end of the reads (the dataset is popular by then) until M reports
#    the mirror complete. Baseline: an operator's `shoal pin` of the same
#    dataset on a fresh daemon, i.e. the fetch alone; the ratio is the cost
#    of noticing popularity (gossip interval + policy interval) on top.
# 2. Gossip cost: ten daemons in their own network namespace (so its
#    loopback carries only their traffic), each holding a dataset others
#    fetched (so every report carries counts). Bytes on that loopback over
#    MEASURE seconds with gossip on (default 15s interval) and off; the
#    difference per peer per minute is what popularity gossip costs, next
#    to the background traffic (kad, identify, ping) it is compared with.
# Needs root (FUSE, ip netns).
# usage: bench/mirror.sh [GIB] [MEASURE_SECS] [PART]   (default 0.25, 60, all;
#        PART 1 or 2 runs one part)
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-0.25}
MEASURE=${2:-60}
PART=${3:-all}
W=${BENCH_DIR:-/tmp/shoal-mirrorbench}
source bench/lib.sh
for m in "$W"/mnt*; do umount -l "$m" 2>/dev/null || true; done
bench_init
NS=shoalgossip
cleanup() {
  for m in "$W"/mnt*; do umount -l "$m" 2>/dev/null || true; done
  bench_cleanup
  ip netns del $NS 2>/dev/null || true
}
trap cleanup EXIT
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

if [ "$PART" != 2 ]; then
echo "== time from popular to first complete mirror ($GIB GiB) =="
.venv/bin/python bench/make_big.py "$W/src.zarr" "$GIB" >/dev/null
no_budget() { set_conf "$1" budget '"0"'; }
CONFIGURE=no_budget start H
CONFIGURE=no_budget start R1
CONFIGURE=no_budget start R2
start M
ROOT=$("$BIN" --home "$W/H" add "$W/src.zarr" | tail -1)
HA=$(addr H)
for n in R1 R2 M; do "$BIN" --home "$W/$n" connect "$HA" >/dev/null; done
"$BIN" --home "$W/M" connect "$(addr R1)" >/dev/null
for n in R1 R2; do "$BIN" --home "$W/$n" mount "$W/mnt$n" >/dev/null; done
# A running swarm: every daemon has heard every other's reports (a daemon
# volunteers only after two report intervals of uptime).
sleep 32
T0=$(now)
READERS=()
for n in R1 R2; do find "$W/mnt$n/$ROOT" -type f -exec cat {} + >/dev/null & READERS+=($!); done
wait "${READERS[@]}"
T1=$(now)
for _ in $(seq 600); do
  done_=$("$BIN" --home "$W/M" mirrors --json | json "sum(1 for m in d['mirrors'] if m['complete'])")
  [ "$done_" -ge 1 ] && break
  sleep 0.5
done
T2=$(now)
[ "$done_" -ge 1 ] || { echo "no mirror after 300 s" >&2; exit 1; }
"$BIN" --home "$W/M" mirrors | head -12
start B
"$BIN" --home "$W/B" connect "$HA" >/dev/null
T3=$(now)
"$BIN" --home "$W/B" pin "$ROOT" >/dev/null
T4=$(now)
READ=$(secs "$T0" "$T1"); AUTO=$(secs "$T1" "$T2"); PIN=$(secs "$T3" "$T4")
printf 'readers took %.1f s; popular -> complete mirror %.1f s; plain `shoal pin` of the same dataset %.1f s; ratio %.2fx\n' \
  "$READ" "$AUTO" "$PIN" "$(echo "$AUTO / $PIN" | bc -l)"
SIZE=$(du -sb "$W/src.zarr" | cut -f1)
printf 'limits: one loopback TCP connection moving the dataset %.2fs, the disk landing it (cp -r + sync) %.2fs; the mirror waits on gossip_interval + policy interval on top\n' \
  "$(limit_loopback)" "$(limit_copy "$W/src.zarr")"
cleanup; PIDS=()
fi
[ "$PART" = 1 ] && exit 0

echo "== gossip cost, 10 daemons =="
swarm() { # swarm GOSSIP_INTERVAL -> bytes on the namespace's loopback over MEASURE s
  ip netns del $NS 2>/dev/null || true
  ip netns add $NS; ip netns exec $NS ip link set lo up
  gossip_conf() { set_conf "$1" gossip_interval "\"$GOSSIP\""; }
  GOSSIP=$1
  for i in $(seq 0 9); do rm -rf "$W/g$i"; CONFIGURE=gossip_conf start "g$i" /ip4/127.0.0.1/tcp/0 $NS; done
  for i in $(seq 0 9); do
    mkdir -p "$W/ds$i"; cp -r "$W/small.zarr/." "$W/ds$i/"; echo "{\"id\": $i}" > "$W/ds$i/.zattrs"
    R[$i]=$("$BIN" --home "$W/g$i" add "$W/ds$i" | tail -1)
  done
  for i in $(seq 1 9); do
    "$BIN" --home "$W/g$i" connect "$(addr g$((i - 1)))" >/dev/null
    [ $i -ge 3 ] && "$BIN" --home "$W/g$i" connect "$(addr g$((i - 3)))" >/dev/null
  done
  # Every dataset is fetched by two other daemons: each holder has counts.
  for i in $(seq 0 9); do
    for j in 1 2; do
      k=$(( (i + j) % 10 )); rm -rf "$W/out"
      "$BIN" --home "$W/g$k" get "${R[$i]}" -o "$W/out" >/dev/null
    done
  done
  sleep 20
  b0=$(ip netns exec $NS cat /sys/class/net/lo/statistics/tx_bytes)
  sleep "$MEASURE"
  b1=$(ip netns exec $NS cat /sys/class/net/lo/statistics/tx_bytes)
  kill "${PIDS[@]}" 2>/dev/null || true; wait "${PIDS[@]}" 2>/dev/null || true; PIDS=()
  echo $((b1 - b0))
}
.venv/bin/python - "$W/small.zarr" <<'PY'
import sys, numpy as np, zarr
g = zarr.open_group(sys.argv[1], mode="w", zarr_format=3)
a = g.create_array("t", shape=(64, 64), chunks=(16, 16), dtype="f4")
a[:] = np.random.default_rng(0).random((64, 64), dtype="f4")
PY
ON=$(swarm 15s)
OFF=$(swarm 0)
per() { echo "$1 * 60 / $MEASURE / 10" | bc -l | xargs printf '%.0f'; }
printf 'bytes per peer per minute: gossip on %s, gossip off %s; popularity gossip costs %s B/peer/min (%.2fx the background kad/identify/ping traffic)\n' \
  "$(per "$ON")" "$(per "$OFF")" "$(per $((ON - OFF)))" "$(echo "($ON - $OFF) / $OFF" | bc -l)"
