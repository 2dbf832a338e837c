#!/usr/bin/env bash
# Network benchmark (issue 3), same run, loopback: `shoal pin` of a >= 1 GiB
# dataset from one peer vs downloading the same files from a local nginx with
# 8 parallel curl, then sync. (One vs two providers: bench/providers.sh,
# which gives each provider its own shaped link; on loopback all daemons
# share the CPU and a second provider cannot add bandwidth.)
# Page cache dropped before each timed step (needs root). Prints ratios.
# usage: bench/network.sh [GIB]   (default 1.1)
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-1.1}
W=${BENCH_DIR:-/tmp/shoal-netbench}
scripts/setup-venv.sh
# SHOAL_BIN: measure another build (e.g. the previous commit's) instead.
[ -n "${SHOAL_BIN:-}" ] || cargo build --release -q -p shoal
BIN=${SHOAL_BIN:-$PWD/target/release/shoal}
pkill -f "nginx -c $W/nginx.conf" || true  # a previous run's, if any
rm -rf "$W" && mkdir -p "$W"
source bench/lib.sh
need_nginx
.venv/bin/python bench/make_big.py "$W/src.zarr" "$GIB" >/dev/null
SIZE=$(du -sb "$W/src.zarr" | cut -f1)
trap 'kill ${PIDS[@]} 2>/dev/null || true; pkill -f "nginx -c $W/nginx.conf" || true' EXIT

start A; start C1
ROOT=$("$BIN" --home "$W/A" add "$W/src.zarr" | tail -1)
"$BIN" --home "$W/C1" connect "$(addr A)" >/dev/null

# nginx serving the same tree.
nginx_serve "$W/src.zarr" 18089
(cd "$W/src.zarr" && find . -type f | sed 's|^\./||') > "$W/files.txt"
drop; t0=$(now)
sed "s|.*|http://127.0.0.1:18089/& $W/http/&|" "$W/files.txt" | \
  xargs -P 8 -n 2 sh -c 'curl -sf --create-dirs -o "$1" "$0"'
sync; t1=$(now)
HTTP=$(echo "$t1 - $t0" | bc -l)

drop; t0=$(now); "$BIN" --home "$W/C1" pin "$ROOT" >/dev/null; t1=$(now)
PIN1=$(echo "$t1 - $t0" | bc -l)
diff -r "$W/src.zarr" "$W/http" >/dev/null || { echo "http copy differs" >&2; exit 1; }

printf 'dataset: %s bytes (%s files)\n' "$SIZE" "$(wc -l < "$W/files.txt")"
printf 'one provider:  shoal pin %.2fs (%s MiB/s)  nginx+8 curl+sync %.2fs (%s MiB/s)  throughput ratio shoal/http = %.2fx (target >= 0.8x)\n' \
  "$PIN1" "$(mib "$PIN1")" "$HTTP" "$(mib "$HTTP")" "$(echo "$HTTP / $PIN1" | bc -l)"
