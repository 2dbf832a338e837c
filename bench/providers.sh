#!/usr/bin/env bash
# Multi-provider benchmark (issue 3): each provider sits in its own network
# namespace behind a veth link shaped to RATE (tbf), as providers at
# different institutions are behind different links. The fetching daemon
# pins the same dataset from one provider, then (fresh repo) from two.
# On loopback all daemons share this machine's cores, so without shaping
# the CPU, not the network, is the bottleneck and extra providers add
# nothing; shaping models the real constraint. Needs root (ip netns, tc).
# The limit beside them: the shaped links themselves (SIZE at RATE on one
# link, at twice RATE on two) and the disk landing the bytes (cp -r + sync).
# usage: bench/providers.sh [GIB] [RATE]   (default 0.25, 400mbit)
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-0.25}
RATE=${2:-400mbit}
W=${BENCH_DIR:-/tmp/shoal-provbench}
scripts/setup-venv.sh
# SHOAL_BIN: measure another build (e.g. the previous commit's) instead.
[ -n "${SHOAL_BIN:-}" ] || cargo build --release -q -p shoal
BIN=${SHOAL_BIN:-$PWD/target/release/shoal}
rm -rf "$W" && mkdir -p "$W"
source bench/lib.sh
.venv/bin/python bench/make_big.py "$W/src.zarr" "$GIB" >/dev/null
SIZE=$(du -sb "$W/src.zarr" | cut -f1)
cleanup() {
  kill "${PIDS[@]}" 2>/dev/null || true
  for n in 1 2; do ip netns del shoalp$n 2>/dev/null || true; ip link del shoalv$n 2>/dev/null || true; done
}
trap cleanup EXIT
for n in 1 2; do
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
start C1 /ip4/10.77.1.1/tcp/4901
ROOT=$("$BIN" --home "$W/P1" add "$W/src.zarr" | tail -1)
"$BIN" --home "$W/P2" add "$W/src.zarr" >/dev/null
P1=/ip4/10.77.1.2/tcp/4801/p2p/$("$BIN" --home "$W/P1" id --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["peer_id"])')
P2=/ip4/10.77.2.2/tcp/4801/p2p/$("$BIN" --home "$W/P2" id --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["peer_id"])')
# One provider: P2 has no connection yet, so nobody can discover it.
"$BIN" --home "$W/C1" connect "$P1" >/dev/null
t0=$(now); OUT=$("$BIN" --home "$W/C1" pin "$ROOT" --json); t1=$(now)
ONE=$(echo "$t1 - $t0" | bc -l)
USED1=$(echo "$OUT" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["fetched"]["peers_used"]))')
# C1 now provides too; stop it so C2 sees exactly two providers.
kill "${PIDS[2]}"; wait "${PIDS[2]}" 2>/dev/null || true
start C2 /ip4/10.77.2.1/tcp/4902
"$BIN" --home "$W/C2" connect "$P1" >/dev/null
"$BIN" --home "$W/C2" connect "$P2" >/dev/null
t0=$(now); OUT=$("$BIN" --home "$W/C2" pin "$ROOT" --json); t1=$(now)
TWO=$(echo "$t1 - $t0" | bc -l)
USED=$(echo "$OUT" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["fetched"]["peers_used"]))')
for n in 1 2; do echo "provider $n link: $(ip netns exec shoalp$n tc -s qdisc show dev eth0 | grep -o "Sent [0-9]* bytes")"; done
printf 'dataset: %s bytes; each provider link shaped to %s\n' "$SIZE" "$RATE"
printf 'one provider:  %.2fs (%s MiB/s, %s peers used)\ntwo providers: %.2fs (%s MiB/s, %s peers used)  speed-up = %.2fx\n' \
  "$ONE" "$(mib "$ONE")" "$USED1" "$TWO" "$(mib "$TWO")" "$USED" "$(echo "$ONE / $TWO" | bc -l)"
MBIT=${RATE%mbit}
L1=$(echo "$SIZE * 8 / ($MBIT * 1000000)" | bc -l); L2=$(echo "$L1 / 2" | bc -l)
CP=$(limit_copy "$W/src.zarr")
printf 'limits: the links, one at %s %.2fs (pin at %.2fx), two %.2fs (pin at %.2fx); disk cp -r + sync %.2fs\n' \
  "$RATE" "$L1" "$(echo "$L1 / $ONE" | bc -l)" "$L2" "$(echo "$L2 / $TWO" | bc -l)" "$CP"
