#!/usr/bin/env bash
# Network benchmark (issue 3), same run, loopback: `shoal pin` of a >= 1 GiB
# dataset from one peer vs downloading the same files from a local nginx with
# 8 parallel curl, then sync. (One vs two providers: bench/providers.sh,
# which gives each provider its own shaped link; on loopback all daemons
# share the CPU and a second provider cannot add bandwidth.)
# Page cache dropped before each timed step (needs root). RUNS interleaved
# runs (a fresh pinning daemon each), medians and the ratio, with the limits
# beside them: the disk landing the same bytes (cp -r + sync) and one
# loopback TCP connection moving them.
# usage: bench/network.sh [GIB] [RUNS]   (default 1.1 3)
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-1.1}
RUNS=${2:-3}
W=${BENCH_DIR:-/tmp/shoal-netbench}
source bench/lib.sh
bench_init
need_nginx
.venv/bin/python bench/make_big.py "$W/src.zarr" "$GIB" >/dev/null
SIZE=$(du -sb "$W/src.zarr" | cut -f1)
trap bench_cleanup EXIT

start A
ROOT=$("$BIN" --home "$W/A" add "$W/src.zarr" | tail -1)

# nginx serving the same tree.
nginx_serve "$W/src.zarr" 18089
(cd "$W/src.zarr" && find . -type f | sed 's|^\./||') > "$W/files.txt"
http_run() {
  rm -rf "$W/http"; drop; local t0 t1; t0=$(now)
  sed "s|.*|http://127.0.0.1:18089/& $W/http/&|" "$W/files.txt" | \
    xargs -P 8 -n 2 sh -c 'curl -sf --create-dirs -o "$1" "$0"'
  sync; t1=$(now); secs "$t0" "$t1"
}
# pin_run I: a fresh daemon C$I pins from A (time in PIN_T), then stops.
pin_run() {
  start "C$1"; "$BIN" --home "$W/C$1" connect "$(addr A)" >/dev/null
  drop; local t0 t1; t0=$(now); "$BIN" --home "$W/C$1" pin "$ROOT" >/dev/null; t1=$(now)
  stop "C$1"
  PIN_T=$(secs "$t0" "$t1")
}
HTTPS=(); PINS=(); COPIES=(); LOOPS=()
for i in $(seq "$RUNS"); do
  HTTPS+=("$(http_run)")
  pin_run "$i"; PINS+=("$PIN_T")
  COPIES+=("$(limit_copy "$W/src.zarr")")
  LOOPS+=("$(limit_loopback)")
done
diff -r "$W/src.zarr" "$W/http" >/dev/null || { echo "http copy differs" >&2; exit 1; }
HTTP=$(median "${HTTPS[@]}"); PIN1=$(median "${PINS[@]}")
COPY=$(median "${COPIES[@]}"); LOOP=$(median "${LOOPS[@]}")

printf 'dataset: %s bytes (%s files); runs: pin %s, http %s\n' "$SIZE" "$(wc -l < "$W/files.txt")" "${PINS[*]}" "${HTTPS[*]}"
printf 'one provider:  shoal pin %.2fs (%s MiB/s)  nginx+8 curl+sync %.2fs (%s MiB/s)  throughput ratio shoal/http = %.2fx (target >= 1.0x)\n' \
  "$PIN1" "$(mib "$PIN1")" "$HTTP" "$(mib "$HTTP")" "$(echo "$HTTP / $PIN1" | bc -l)"
printf 'limits:        disk (cp -r + sync) %.2fs (%s MiB/s)  loopback TCP, one connection %.2fs (%s MiB/s)\n' \
  "$COPY" "$(mib "$COPY")" "$LOOP" "$(mib "$LOOP")"
