#!/usr/bin/env bash
# The Python package (issue 26), each against its baseline in the same run,
# interleaved, medians of RUNS:
#   1. xarray mean of a ~GIB GiB zstd float32 dataset: xr.open_zarr("shoal://big")
#      vs the same over the gateway URL (fsspec HTTP, aiohttp) vs the local
#      directory (the limit: no network, no verification), cold (page cache
#      dropped) and warm;
#   2. pushdown: ds.shoal.mean("time") vs ds.sst.mean("time").compute()
#      with dask (threaded) on the local directory, warm;
#   3. writes: ds.to_zarr("shoal://copy") of the dataset held in memory vs
#      to_zarr to a local directory followed by `shoal add` (and the local
#      to_zarr alone beside it: the disk and compression limit).
# usage: bench/python.sh [GIB] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-1.1}
RUNS=${2:-3}
W=${BENCH_DIR:-/tmp/shoal-pybench}
source bench/lib.sh
bench_init
[ -x .venv-pkg/bin/python ] || scripts/setup-python-pkg.sh
PKG=$PWD/.venv-pkg/bin/python
$PY bench/make_big.py "$W/src.zarr" "$GIB" >/dev/null
SIZE=$(du -sb "$W/src.zarr" | cut -f1)
trap 'bench_cleanup; sleep 1; rm -rf "$W"' EXIT
start A
"$BIN" --home "$W/A" add "$W/src.zarr" --name big >/dev/null
GW=$("$BIN" --home "$W/A" id --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["gateway"])')
export SHOAL_HOME=$W/A

MEAN='import sys, time, warnings, xarray as xr; warnings.filterwarnings("ignore")
t = time.time(); ds = xr.open_zarr(sys.argv[1], consolidated=False); v = float(ds["sst"].mean().compute(scheduler="threads")); print(time.time() - t)'
read_one() { $PKG -c "$MEAN" "$1"; }
PUSH='import time, warnings, shoal, xarray as xr; warnings.filterwarnings("ignore")
ds = xr.open_zarr("shoal://big", consolidated=False); t = time.time(); r = ds.shoal.mean("time"); print(time.time() - t)'
DASK='import sys, time, warnings, xarray as xr; warnings.filterwarnings("ignore")
ds = xr.open_zarr(sys.argv[1], consolidated=False); t = time.time(); r = ds["sst"].mean("time").compute(scheduler="threads"); print(time.time() - t)'
WRITE='import sys, time, warnings, xarray as xr; warnings.filterwarnings("ignore")
ds = xr.open_zarr(sys.argv[1], consolidated=False).load().drop_encoding()
t = time.time(); ds.to_zarr(sys.argv[2], mode="w", zarr_format=3, consolidated=False); print(time.time() - t)'

SC=(); GC=(); LC=(); SWm=(); GWm=(); LWm=(); PU=(); DA=(); WS=(); WL=(); WA=()
read_one shoal://big >/dev/null # the daemon's and Python's first-use costs
for i in $(seq "$RUNS"); do
  drop; SC+=("$(read_one shoal://big)"); drop; GC+=("$(read_one "$GW/zarr/big")"); drop; LC+=("$(read_one "$W/src.zarr")")
  read_one shoal://big >/dev/null; SWm+=("$(read_one shoal://big)")
  read_one "$GW/zarr/big" >/dev/null; GWm+=("$(read_one "$GW/zarr/big")")
  read_one "$W/src.zarr" >/dev/null; LWm+=("$(read_one "$W/src.zarr")")
  PU+=("$($PKG -c "$PUSH")"); DA+=("$($PKG -c "$DASK" "$W/src.zarr")")
  WS+=("$($PKG -c "$WRITE" "$W/src.zarr" "shoal://copy$i" | tail -1)")
  rm -rf "$W/local.zarr"
  wl=$($PKG -c "$WRITE" "$W/src.zarr" "$W/local.zarr" | tail -1)
  t0=$(now); "$BIN" --home "$W/A" add "$W/local.zarr" --name "added$i" >/dev/null; t1=$(now)
  WL+=("$(echo "$wl + $(secs "$t0" "$t1")" | bc -l)"); WA+=("$wl")
done
$PKG -c "
import xarray as xr
a = xr.open_zarr('shoal://copy1', consolidated=False); b = xr.open_zarr('$W/src.zarr', consolidated=False)
xr.testing.assert_identical(a.load(), b.load())
"
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.2f'; }
med() { median "$@"; }
printf 'dataset: %s bytes (zstd float32, %s chunks)\n' "$SIZE" "$(find "$W/src.zarr/sst" -type f | wc -l)"
printf 'xarray mean, cold: shoal:// %.2fs [%s]  gateway URL %.2fs [%s]  local dir %.2fs [%s]  shoal:// vs URL %sx, vs local %sx (time ratio, lower is faster)\n' \
  "$(med "${SC[@]}")" "${SC[*]}" "$(med "${GC[@]}")" "${GC[*]}" "$(med "${LC[@]}")" "${LC[*]}" \
  "$(ratio "$(med "${SC[@]}")" "$(med "${GC[@]}")")" "$(ratio "$(med "${SC[@]}")" "$(med "${LC[@]}")")"
printf 'xarray mean, warm: shoal:// %.2fs [%s]  gateway URL %.2fs [%s]  local dir %.2fs [%s]  shoal:// vs URL %sx, vs local %sx\n' \
  "$(med "${SWm[@]}")" "${SWm[*]}" "$(med "${GWm[@]}")" "${GWm[*]}" "$(med "${LWm[@]}")" "${LWm[*]}" \
  "$(ratio "$(med "${SWm[@]}")" "$(med "${GWm[@]}")")" "$(ratio "$(med "${SWm[@]}")" "$(med "${LWm[@]}")")"
printf 'mean over time, warm: ds.shoal.mean %.2fs [%s]  dask on the local dir %.2fs [%s]  speed-up %sx\n' \
  "$(med "${PU[@]}")" "${PU[*]}" "$(med "${DA[@]}")" "${DA[*]}" "$(ratio "$(med "${DA[@]}")" "$(med "${PU[@]}")")"
printf 'to_zarr: shoal:// %.2fs [%s]  local dir + shoal add %.2fs [%s]  speed-up %sx; local to_zarr alone %.2fs [%s]\n' \
  "$(med "${WS[@]}")" "${WS[*]}" "$(med "${WL[@]}")" "${WL[*]}" "$(ratio "$(med "${WL[@]}")" "$(med "${WS[@]}")")" \
  "$(med "${WA[@]}")" "${WA[*]}"
