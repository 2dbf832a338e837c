#!/usr/bin/env bash
# Scale (issue 15): a dataset of KEYS chunk keys (tiny chunks, Zarr v2,
# 1,000 keys per directory) through a release daemon, with its memory:
#   add, `shoal ls`, `find` through the mount (vs `find` on the plain
#   directory: the limit), `shoal query --op sum` over every chunk; the
#   daemon's peak RSS during each step (VmHWM, reset before each) and its
#   RSS after; then the kernel is made to forget (drop_caches) and the RSS
#   read again; then TEN more datasets of the same key count (each a
#   different root: only .zattrs differs) are listed through the mount one
#   after another, RSS after each.
# Needs root (FUSE, drop_caches). usage: bench/scale.sh [KEYS] [TEN]
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${1:-1000000}
TEN=${2:-10}
W=${BENCH_DIR:-/tmp/shoal-scalebench}
source bench/lib.sh
umount -l "$W/mnt" 2>/dev/null || true
bench_init
trap 'umount -l "$W/mnt" 2>/dev/null || true; bench_cleanup; sleep 1; rm -rf "$W"' EXIT
t0=$(now); $PY bench/make_many_keys.py "$W/many.zarr" "$KEYS" >/dev/null; t1=$(now)
printf 'made %s keys in %.1fs\n' "$KEYS" "$(secs "$t0" "$t1")"
start A
PID=${PIDS[0]}
kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$PID/status"; }
mb() { echo "$1 / 1024" | bc; }
reset_peak() { echo 5 > "/proc/$PID/clear_refs"; }
# step NAME CMD...: runs CMD with the page cache dropped, prints its time,
# the daemon's peak RSS during it and its RSS after.
step() {
  local name=$1; shift
  drop; reset_peak
  local t0 t1; t0=$(now); "$@" >"$W/step.out"; t1=$(now)
  printf '%-34s %7.2fs  peak RSS %5s MB  after %5s MB\n' "$name" "$(secs "$t0" "$t1")" "$(mb "$(kib VmHWM)")" "$(mb "$(kib VmRSS)")"
}
printf 'idle daemon: RSS %s MB\n' "$(mb "$(kib VmRSS)")"
step "add" "$BIN" --home "$W/A" add "$W/many.zarr" --name many
ROOT=$(tail -1 "$W/step.out")
step "shoal ls (every key)" "$BIN" --home "$W/A" ls many
"$BIN" --home "$W/A" mount "$W/mnt" >/dev/null
step "find through the mount" find "$W/mnt/$ROOT"
step "find on the plain directory" find "$W/many.zarr"
# A query plans at most 4,194,304 chunks (bounded memory); past that the
# first rows are selected.
SEL=()
[ "$KEYS" -le 4194304 ] || SEL=(--isel "dim_0=0:$((4194304 / 1000))")
step "query --op sum (<= 4,194,304 chunks)" "$BIN" --home "$W/A" query many x --op sum "${SEL[@]}"
sleep 1
drop; sleep 12
printf 'after the kernel forgets:          RSS %s MB\n' "$(mb "$(kib VmRSS)")"
reset_peak
for i in $(seq "$TEN"); do
  echo "{\"copy\": $i}" > "$W/many.zarr/.zattrs"
  "$BIN" --home "$W/A" add "$W/many.zarr" --name "many$i" >/dev/null
  find "$W/mnt/many$i/" >/dev/null
  printf 'listed copy %2s through the mount:   RSS %s MB\n' "$i" "$(mb "$(kib VmRSS)")"
done
printf 'peak RSS over the %s copies: %s MB\n' "$TEN" "$(mb "$(kib VmHWM)")"
sleep 15
printf 'idle 15 s later:                   RSS %s MB\n' "$(mb "$(kib VmRSS)")"
