#!/usr/bin/env bash
# Incremental add (issue "Living datasets"): re-adding a ~1 GiB tree under
# the same name after one chunk file changed, vs the first add and vs
# `--rehash` (every file read again), median of N interleaved runs, page
# cache dropped before each. Beside them the floor: stat of every file.
# usage: bench/incremental.sh [GIB] [RUNS]   (default 1.0 GiB, 3 runs; as root)
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-1.0}; RUNS=${2:-3}
W=${BENCH_DIR:-/tmp/shoal-incbench}
source bench/lib.sh
bench_init
.venv/bin/python bench/make_big.py "$W/src.zarr" "$GIB" >/dev/null
SIZE=$(du -sb "$W/src.zarr" | cut -f1)
trap bench_cleanup EXIT
timed() { local t0 t1; t0=$(now); "$@" >/dev/null; t1=$(now); secs "$t0" "$t1"; }
# change_one: rewrites one chunk file with new bytes (same size).
change_one() {
  local f; f=$(find "$W/src.zarr/sst" -type f ! -name 'zarr.json' | sort | sed -n 7p)
  head -c "$(stat -c %s "$f")" /dev/urandom > "$f.new" && mv "$f.new" "$f"
}
FIRST=(); INC=(); RE=(); STAT=()
for i in $(seq "$RUNS"); do
  start "R$i"
  drop; FIRST+=("$(timed "$BIN" --home "$W/R$i" add "$W/src.zarr" --name sst)")
  change_one
  drop; INC+=("$(timed "$BIN" --home "$W/R$i" add "$W/src.zarr" --name sst)")
  change_one
  drop; RE+=("$(timed "$BIN" --home "$W/R$i" add "$W/src.zarr" --name sst --rehash)")
  drop; STAT+=("$(timed sh -c "find '$W/src.zarr' -type f -printf '%s %T@ %i\n' > /dev/null")")
  "$BIN" --home "$W/R$i" add "$W/src.zarr" --name sst | grep -q "unchanged since the last add" \
    || { echo "the last re-add reused nothing" >&2; exit 1; }
  stop "R$i"
done
f=$(median "${FIRST[@]}"); n=$(median "${INC[@]}"); r=$(median "${RE[@]}"); s=$(median "${STAT[@]}")
printf 'dataset: %s bytes in %s files; median of %s runs, cold page cache\n' "$SIZE" "$(find "$W/src.zarr" -type f | wc -l)" "$RUNS"
printf 'first add %.2fs  re-add after one chunk changed %.2fs (%.3fx the first; target <= 0.15x)  --rehash %.2fs (%.2fx)\n' \
  "$f" "$n" "$(echo "$n / $f" | bc -l)" "$r" "$(echo "$r / $f" | bc -l)"
printf 'limit: stat of every file (an unchanged re-add can do no less) %.3fs  [first %s] [re-add %s] [rehash %s]\n' "$s" "${FIRST[*]}" "${INC[*]}" "${RE[*]}"
