#!/usr/bin/env bash
# Query benchmarks (issue 13), each against its baseline in the same run,
# with the physical limit beside them:
#   1. local mean over time: `shoal query DS sst --op mean --dim time` on a
#      >= 1 GiB zstd Zarr held locally vs dask.array.from_zarr(...)
#      .mean(axis=0).compute() (threaded) on the same directory, cold (page
#      cache dropped before each) and warm, interleaved, median of RUNS; the
#      limit is examples/query_limit (read + blake3 + zstd + add on all
#      cores, no engine);
#   2. monthly climatology: `--groupby time.month` vs
#      xarray.open_zarr(...).sst.groupby("time.month").mean() with dask
#      (threaded), warm, median of RUNS, results compared;
#   3. remote: data on A, query from C: `shoal query` vs xarray + dask over
#      M's cold mount of the same dataset; time and bytes moved for both.
# usage: bench/query.sh [GIB] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-1.1}
RUNS=${2:-3}
W=${BENCH_DIR:-/tmp/shoal-querybench}
source bench/lib.sh
umount -l "$W/mnt" 2>/dev/null || true
bench_init
cargo build --release -q -p shoal-query --example query_limit
LIMIT=$PWD/target/release/examples/query_limit
$PY bench/make_big.py "$W/src.zarr" "$GIB" >/dev/null
SIZE=$(du -sb "$W/src.zarr" | cut -f1)
trap 'umount -l "$W/mnt" 2>/dev/null || true; bench_cleanup; sleep 1; rm -rf "$W"' EXIT
start A; start C; start M
ROOT=$("$BIN" --home "$W/A" add "$W/src.zarr" --name big | tail -1)
"$BIN" --home "$W/C" connect "$(addr A)" >/dev/null
"$BIN" --home "$W/M" connect "$(addr A)" >/dev/null

DASK='import sys, time, dask, dask.array as da; a = da.from_zarr(sys.argv[1], component="sst"); t = time.time(); r = a.mean(axis=0).compute(scheduler="threads"); print(time.time() - t)'
shoal_mean() { local t0 t1; t0=$(now); "$BIN" --home "$W/A" query big sst --op mean --dim time --out "$W/shoal.npy" >/dev/null; t1=$(now); secs "$t0" "$t1"; }
limit() { "$LIMIT" "$W/src.zarr/sst" $((512 * 512)); }
# 1. local, cold then warm, each round interleaved.
SC=(); DC=(); LC=(); SW=(); DW=(); LW=()
shoal_mean >/dev/null # the daemon's first query pays one-time start-up costs
for _ in $(seq "$RUNS"); do
  drop; SC+=("$(shoal_mean)"); drop; DC+=("$($PY -c "$DASK" "$W/src.zarr")"); drop; LC+=("$(limit)")
  # Warm: shoal reads its store, dask and the limit the source directory;
  # one untimed run each first brings their own files into the cache.
  shoal_mean >/dev/null; SW+=("$(shoal_mean)"); DW+=("$($PY -c "$DASK" "$W/src.zarr")"); LW+=("$(limit)")
done
$PY -c "
import numpy as np, zarr
want = np.asarray(zarr.open_array('$W/src.zarr', path='sst')[...], dtype='f8').mean(axis=0)
np.testing.assert_allclose(np.load('$W/shoal.npy'), want, rtol=1e-9)
"
# 2. monthly climatology, warm.
XCLIM='import sys, time, warnings, xarray as xr; warnings.filterwarnings("ignore"); t = time.time(); ds = xr.open_zarr(sys.argv[1], consolidated=False); r = ds["sst"].groupby("time.month").mean().compute(scheduler="threads"); print(time.time() - t); r.to_dataset(name="sst").to_zarr(sys.argv[2], mode="w") if len(sys.argv) > 2 else None'
GS=(); GX=()
for i in $(seq "$RUNS"); do
  rm -rf "$W/clim.zarr"; t0=$(now)
  "$BIN" --home "$W/A" query big sst --op mean --groupby time.month --out "$W/clim.zarr" >/dev/null
  t1=$(now); GS+=("$(secs "$t0" "$t1")")
  GX+=("$($PY -c "$XCLIM" "$W/src.zarr" $([ "$i" = 1 ] && echo "$W/xclim.zarr"))")
done
$PY -c "
import numpy as np, xarray as xr
a = xr.open_zarr('$W/clim.zarr'); b = xr.open_zarr('$W/xclim.zarr')
np.testing.assert_array_equal(a.month.values, b.month.values)
np.testing.assert_allclose(a.sst.values, b.sst.values, rtol=1e-5, atol=1e-6)  # xarray sums float32 in float32
"
# 3. remote: C queries A's data; M reads it through a cold mount.
drop; t0=$(now); OUT=$("$BIN" --home "$W/C" query "$ROOT" sst --op mean --dim time --json --out "$W/remote.npy"); t1=$(now); RQ=$(secs $t0 $t1)
RBYTES=$(echo "$OUT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["network_bytes"])')
"$BIN" --home "$W/M" mount "$W/mnt" >/dev/null
XR='import sys, time, xarray as xr; t = time.time(); ds = xr.open_zarr(sys.argv[1]); v = ds["sst"].mean("time").compute(scheduler="threads"); print(time.time() - t)'
drop; MQ=$($PY -c "$XR" "$W/mnt/$ROOT")
MBYTES=$("$BIN" --home "$W/M" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["live_bytes"])')
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.2f'; }
printf 'dataset: %s bytes (zstd, %s chunks)\n' "$SIZE" "$(find "$W/src.zarr/sst" -type f | wc -l)"
for mode in cold warm; do
  if [ $mode = cold ]; then S=$(median "${SC[@]}"); D=$(median "${DC[@]}"); L=$(median "${LC[@]}"); RS="${SC[*]}"; RD="${DC[*]}"
  else S=$(median "${SW[@]}"); D=$(median "${DW[@]}"); L=$(median "${LW[@]}"); RS="${SW[*]}"; RD="${DW[*]}"; fi
  printf 'local mean %s (median of %s): shoal %.2fs [%s]  dask %.2fs [%s]  speed-up %sx  limit %.2fs (shoal at %sx the limit)\n' \
    $mode "$RUNS" "$S" "$RS" "$D" "$RD" "$(ratio "$D" "$S")" "$L" "$(ratio "$S" "$L")"
done
S=$(median "${GS[@]}"); X=$(median "${GX[@]}")
printf 'monthly climatology warm (median of %s): shoal %.2fs [%s]  xarray+dask %.2fs [%s]  speed-up %sx\n' \
  "$RUNS" "$S" "${GS[*]}" "$X" "${GX[*]}" "$(ratio "$X" "$S")"
printf 'remote: shoal query from C %.2fs, %s bytes moved;  xarray+dask over a cold mount %.2fs, %s bytes moved;  time ratio = %.2fx, bytes ratio = %.4f\n' \
  "$RQ" "$RBYTES" "$MQ" "$MBYTES" "$(echo "$MQ / $RQ" | bc -l)" "$(echo "$RBYTES / $MBYTES" | bc -l)"
