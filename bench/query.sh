#!/usr/bin/env bash
# Query benchmarks (issue 5), each against its baseline in the same run:
#   1. local: `shoal query DS sst --op mean --dim time` on a >= 1 GiB zstd
#      Zarr held locally vs dask.array.from_zarr(...).mean(axis=0).compute()
#      (threaded scheduler) on the same directory;
#   2. remote: data on A, query from C: `shoal query` vs xarray + dask over
#      C's cold mount of the same dataset; time and bytes moved for both.
# Page cache dropped before each timed step (needs root).
# usage: bench/query.sh [GIB]
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-1.1}
W=${BENCH_DIR:-/tmp/shoal-querybench}
scripts/setup-venv.sh
# SHOAL_BIN: measure another build (e.g. the previous commit's) instead.
[ -n "${SHOAL_BIN:-}" ] || cargo build --release -q -p shoal
BIN=${SHOAL_BIN:-$PWD/target/release/shoal}
PY=$PWD/.venv/bin/python
umount -l "$W/mnt" 2>/dev/null || true
rm -rf "$W" && mkdir -p "$W"
source bench/lib.sh
$PY bench/make_big.py "$W/src.zarr" "$GIB" >/dev/null
SIZE=$(du -sb "$W/src.zarr" | cut -f1)
trap 'umount -l "$W/mnt" 2>/dev/null || true; kill "${PIDS[@]}" 2>/dev/null || true' EXIT
start A; start C; start M
ROOT=$("$BIN" --home "$W/A" add "$W/src.zarr" --name big | tail -1)
"$BIN" --home "$W/C" connect "$(addr A)" >/dev/null
"$BIN" --home "$W/M" connect "$(addr A)" >/dev/null

# 1. local: median of 3 cold-cache runs each (single runs on this VM vary by
# ~30%, and a daemon's first query also pays one-time start-up costs).
median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
DASK='import sys, time, dask, dask.array as da; a = da.from_zarr(sys.argv[1], component="sst"); t = time.time(); r = a.mean(axis=0).compute(scheduler="threads"); print(time.time() - t)'
S=(); D=()
for _ in 1 2 3; do
  drop; t0=$(now); "$BIN" --home "$W/A" query big sst --op mean --dim time --out "$W/shoal.npy" >/dev/null; t1=$(now); S+=("$(secs $t0 $t1)")
  drop; D+=("$($PY -c "$DASK" "$W/src.zarr")")
done
SQ=$(median "${S[@]}"); DQ=$(median "${D[@]}")
$PY -c "
import numpy as np, zarr, sys
want = np.asarray(zarr.open_array('$W/src.zarr', path='sst')[...], dtype='f8').mean(axis=0)
np.testing.assert_allclose(np.load('$W/shoal.npy'), want, rtol=1e-9)
"
# 2. remote: C queries A's data; M reads it through a cold mount.
drop; t0=$(now); OUT=$("$BIN" --home "$W/C" query "$ROOT" sst --op mean --dim time --json --out "$W/remote.npy"); t1=$(now); RQ=$(secs $t0 $t1)
RBYTES=$(echo "$OUT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["network_bytes"])')
"$BIN" --home "$W/M" mount "$W/mnt" >/dev/null
XR='import sys, time, xarray as xr; t = time.time(); ds = xr.open_zarr(sys.argv[1]); v = ds["sst"].mean("time").compute(scheduler="threads"); print(time.time() - t)'
drop; MQ=$($PY -c "$XR" "$W/mnt/$ROOT")
MBYTES=$("$BIN" --home "$W/M" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["live_bytes"])')
printf 'dataset: %s bytes (zstd, %s chunks)\n' "$SIZE" "$(find "$W/src.zarr/sst" -type f | wc -l)"
printf 'local (median of 3):  shoal query %.2fs [%s]  dask %.2fs [%s]  speed-up = %.2fx (target >= 2x)\n' "$SQ" "${S[*]}" "$DQ" "${D[*]}" "$(echo "$DQ / $SQ" | bc -l)"
printf 'remote: shoal query from C %.2fs, %s bytes moved;  xarray+dask over a cold mount %.2fs, %s bytes moved;  time ratio = %.2fx, bytes ratio = %.4f\n' \
  "$RQ" "$RBYTES" "$MQ" "$MBYTES" "$(echo "$MQ / $RQ" | bc -l)" "$(echo "$RBYTES / $MBYTES" | bc -l)"
