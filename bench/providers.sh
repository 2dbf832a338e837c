#!/usr/bin/env bash
# Multi-provider benchmark (issues 3 and 15): each provider sits in its own
# network namespace behind a veth link shaped to RATE (tbf), as providers
# at different institutions are behind different links. Per run, fresh
# pinning daemons pin the same dataset from one provider, then from two;
# the baseline is HTTP from the same two hosts: nginx in each namespace,
# 8 parallel curl taking the files alternately from each, then sync.
# On loopback all daemons share this machine's cores, so without shaping
# the CPU, not the network, is the bottleneck and extra providers add
# nothing; shaping models the real constraint. RUNS interleaved runs,
# medians, with the limit beside them: the shaped links themselves (SIZE at
# RATE on one link, at twice RATE on two). Needs root (ip netns, tc).
# TRACE=1: afterwards, one more two-provider pin and one more HTTP run
# with both links' send rate printed every 50 ms (MB/s, link 1 / link 2),
# to see where a transfer leaves a link idle.
# usage: bench/providers.sh [GIB] [RATE] [RUNS]   (default 0.25, 400mbit, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-0.25}
RATE=${2:-400mbit}
RUNS=${3:-3}
W=${BENCH_DIR:-/tmp/shoal-provbench}
source bench/lib.sh
bench_init
need_nginx
.venv/bin/python bench/make_big.py "$W/src.zarr" "$GIB" >/dev/null
SIZE=$(du -sb "$W/src.zarr" | cut -f1)
cleanup() {
  bench_cleanup
  nginx_stop
  for n in 1 2; do ip netns del shoalp$n 2>/dev/null || true; ip link del shoalv$n 2>/dev/null || true; done
}
trap cleanup EXIT
for n in 1 2; do
  ip netns del shoalp$n 2>/dev/null || true; ip link del shoalv$n 2>/dev/null || true
  ip netns add shoalp$n
  ip link add shoalv$n type veth peer name eth0 netns shoalp$n
  ip addr add 10.77.$n.1/24 dev shoalv$n; ip link set shoalv$n up
  ip netns exec shoalp$n ip addr add 10.77.$n.2/24 dev eth0
  ip netns exec shoalp$n ip link set eth0 up
  ip netns exec shoalp$n ip link set lo up
  # Shape what the provider sends.
  ip netns exec shoalp$n tc qdisc add dev eth0 root tbf rate "$RATE" burst 256kb latency 100ms
done
start P1 /ip4/10.77.1.2/tcp/4801 shoalp1
start P2 /ip4/10.77.2.2/tcp/4801 shoalp2
ROOT=$("$BIN" --home "$W/P1" add "$W/src.zarr" | tail -1)
"$BIN" --home "$W/P2" add "$W/src.zarr" >/dev/null
peer() { "$BIN" --home "$W/$1" id --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["peer_id"])'; }
P1=/ip4/10.77.1.2/tcp/4801/p2p/$(peer P1)
P2=/ip4/10.77.2.2/tcp/4801/p2p/$(peer P2)
for n in 1 2; do nginx_serve "$W/src.zarr" 18092 10.77.$n.2 shoalp$n; done
(cd "$W/src.zarr" && find . -type f | sed 's|^\./||') > "$W/files.txt"

# pin NAME PROVIDERS...: a fresh daemon connects to the given providers and
# pins; prints seconds and the peers its report used; then it stops (it
# provides the dataset once it holds it, and later runs must not find it).
pin() {
  local c=$1; shift
  start "$c"
  for p in "$@"; do "$BIN" --home "$W/$c" connect "$p" >/dev/null; done
  drop; local t0 t1 out; t0=$(now); out=$("$BIN" --home "$W/$c" pin "$ROOT" --json); t1=$(now)
  stop "$c"
  echo "$out" > "$W/$c.json"   # the pin report (per-provider links), kept for reading
  echo "$(secs "$t0" "$t1") $(echo "$out" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["fetched"]["peers_used"]))')"
}
# http_two: every file over HTTP, alternately from the two providers' nginx.
http_two() {
  rm -rf "$W/http"; drop; local t0 t1; t0=$(now)
  awk -v w="$W/http" '{ printf "http://10.77.%d.2:18092/%s %s/%s\n", NR % 2 + 1, $0, w, $0 }' "$W/files.txt" | \
    xargs -P 8 -n 2 sh -c 'curl -sf --create-dirs -o "$1" "$0"'
  sync; t1=$(now); secs "$t0" "$t1"
}
ONE=(); TWO=(); HTTP=(); USED1=(); USED2=()
for i in $(seq "$RUNS"); do
  read -r t u < <(pin "C$i" "$P1"); ONE+=("$t"); USED1+=("$u")
  read -r t u < <(pin "D$i" "$P1" "$P2"); TWO+=("$t"); USED2+=("$u")
  HTTP+=("$(http_two)")
done
diff -r "$W/src.zarr" "$W/http" >/dev/null || { echo "http copy differs" >&2; exit 1; }
for n in 1 2; do echo "provider $n link: $(ip netns exec shoalp$n tc -s qdisc show dev eth0 | grep -o "Sent [0-9]* bytes")"; done
one=$(median "${ONE[@]}"); two=$(median "${TWO[@]}"); http=$(median "${HTTP[@]}")
MBIT=${RATE%mbit}
L1=$(echo "$SIZE * 8 / ($MBIT * 1000000)" | bc -l); L2=$(echo "$L1 / 2" | bc -l)
printf 'dataset: %s bytes; each provider link shaped to %s; median of %s runs\n' "$SIZE" "$RATE" "$RUNS"
printf 'one provider:  %.2fs (%s MiB/s, peers used %s)  [%s]\n' "$one" "$(mib "$one")" "${USED1[*]}" "${ONE[*]}"
printf 'two providers: %.2fs (%s MiB/s, peers used %s)  speed-up over one = %.2fx  [%s]\n' \
  "$two" "$(mib "$two")" "${USED2[*]}" "$(echo "$one / $two" | bc -l)" "${TWO[*]}"
printf 'HTTP, nginx on both + 8 curl alternating + sync: %.2fs (%s MiB/s)  shoal/http speed = %.2fx  [%s]\n' \
  "$http" "$(mib "$http")" "$(echo "$http / $two" | bc -l)" "${HTTP[*]}"
printf 'limits: the links, one at %s %.2fs (one provider at %.2fx of it), two %.2fs (two providers at %.2fx)\n' \
  "$RATE" "$L1" "$(echo "$L1 / $one" | bc -l)" "$L2" "$(echo "$L2 / $two" | bc -l)"

[ "${TRACE:-}" = 1 ] || exit 0
# sample T0: every 50 ms, ms since T0 and both links' sent bytes (until killed).
sample() {
  while true; do
    echo "$(echo "($(now) - $1) * 1000" | bc -l | cut -d. -f1) $(ip netns exec shoalp1 cat /sys/class/net/eth0/statistics/tx_bytes) $(ip netns exec shoalp2 cat /sys/class/net/eth0/statistics/tx_bytes)"
    sleep 0.05
  done
}
for who in pin http; do
  start T; for p in "$P1" "$P2"; do "$BIN" --home "$W/T" connect "$p" >/dev/null; done
  drop; t0=$(now); sample "$t0" > "$W/trace-$who.txt" & S=$!
  if [ $who = pin ]; then "$BIN" --home "$W/T" pin "$ROOT" >/dev/null; else http_two >/dev/null; fi
  t1=$(now); sleep 0.1; kill $S; stop T
  printf 'trace, %s (%.2fs), ms: MB/s link 1 / link 2\n' "$who" "$(secs "$t0" "$t1")"
  python3 - "$W/trace-$who.txt" <<'PY'
import sys
rows = [list(map(int, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 3]
print(" ".join("%d:%d/%d" % (b[0], (b[1] - a[1]) / max(b[0] - a[0], 1) / 1e3, (b[2] - a[2]) / max(b[0] - a[0], 1) / 1e3)
               for a, b in zip(rows, rows[1:])))
PY
done
