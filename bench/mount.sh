#!/usr/bin/env bash
# Mount benchmarks (issue 4), each against its baseline in the same run:
#   1. warm read (blocks local, page cache dropped) of every chunk file of a
#      >= 1 GiB dataset through the mount vs the same files through bindfs
#      over a plain directory (8 parallel readers each);
#   1b. the same, one reader (`find | xargs cat`: one file after another,
#      as cp -r, rsync and a single-threaded zarr loop read), against
#      bindfs and the plain directory read the same way (the disk's limit
#      for one reader);
#   2. cold read through the mount (blocks only on another daemon) vs
#      `shoal pin` of the same dataset;
#   3. xarray.open_zarr(mount).mean().compute() (warm) vs the same on a
#      plain directory copy;
#   4. `ls -lR` of a dataset with 100,000 chunk keys through the mount vs
#      the same tree on local disk.
# 1 and 2 are RUNS interleaved runs (a fresh cold reader and pinner each),
# medians, with the limit beside them: the same files read from the plain
# directory by 8 `cat` (the disk; bindfs is the FUSE passthrough over it).
# Needs root (FUSE, drop_caches). usage: bench/mount.sh [GIB] [KEYS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-1.1}
KEYS=${2:-100000}
RUNS=${3:-3}
W=${BENCH_DIR:-/tmp/shoal-mountbench}
command -v bindfs >/dev/null || apt-get install -y -q bindfs >/dev/null
for m in "$W"/mnt-* "$W"/bind; do umount -l "$m" 2>/dev/null || true; done
source bench/lib.sh
# SHOAL_BIN: measure another build (e.g. the previous commit's) instead.
bench_init
$PY bench/make_big.py "$W/src.zarr" "$GIB" >/dev/null
$PY bench/make_many_keys.py "$W/many.zarr" "$KEYS" >/dev/null
SIZE=$(du -sb "$W/src.zarr" | cut -f1)
cleanup() {
  for m in "$W"/mnt-* "$W"/bind; do umount -l "$m" 2>/dev/null || true; done
  bench_cleanup
}
trap cleanup EXIT
readall() { (cd "$1" && find . -type f -print0 | xargs -0 -P 8 -n 16 cat > /dev/null); }
readone() { (cd "$1" && find . -type f -print0 | xargs -0 cat > /dev/null); }

start A
ROOT=$("$BIN" --home "$W/A" add "$W/src.zarr" | tail -1)
MANY=$("$BIN" --home "$W/A" add "$W/many.zarr" | tail -1)
"$BIN" --home "$W/A" mount "$W/mnt-a" >/dev/null
mkdir -p "$W/bind"; bindfs -r "$W/src.zarr" "$W/bind"
ls -lR "$W/mnt-a/$ROOT" >/dev/null   # list the tree once (not timed)
timed() { drop; local t0 t1; t0=$(now); "$@"; t1=$(now); T=$(secs "$t0" "$t1"); }
WARMS=(); BINDS=(); DISKS=(); COLDS=(); PINS=(); ONES=(); ONEB=(); ONED=()
for i in $(seq "$RUNS"); do
  # 1b. one reader, warm.
  timed readone "$W/mnt-a/$ROOT"; ONES+=("$T")
  timed readone "$W/bind"; ONEB+=("$T")
  timed readone "$W/src.zarr"; ONED+=("$T")
  # 1. warm: A holds every block.
  timed readall "$W/mnt-a/$ROOT"; WARMS+=("$T")
  timed readall "$W/bind"; BINDS+=("$T")
  DISKS+=("$(limit_read "$W/src.zarr")")
  # 2. cold: a fresh B holds nothing and reads through its mount; a fresh
  # C pins.
  start "B$i"; "$BIN" --home "$W/B$i" connect "$(addr A)" >/dev/null
  "$BIN" --home "$W/B$i" mount "$W/mnt-b$i" >/dev/null
  timed readall "$W/mnt-b$i/$ROOT"; COLDS+=("$T")
  umount "$W/mnt-b$i"; stop "B$i"
  start "C$i"; "$BIN" --home "$W/C$i" connect "$(addr A)" >/dev/null
  timed "$BIN" --home "$W/C$i" pin "$ROOT" >/dev/null; PINS+=("$T")
  stop "C$i"
done
WARM=$(median "${WARMS[@]}"); BIND=$(median "${BINDS[@]}"); DISK=$(median "${DISKS[@]}")
COLD=$(median "${COLDS[@]}"); PIN=$(median "${PINS[@]}")
ONE=$(median "${ONES[@]}"); ONEBIND=$(median "${ONEB[@]}"); ONEDISK=$(median "${ONED[@]}")
# 3. xarray + dask mean, warm (blocks local; page cache warm for both).
XR='import sys, time, xarray as xr; ds = xr.open_zarr(sys.argv[1]); t = time.time(); v = float(ds["sst"].mean().compute(scheduler="threads")); print(time.time() - t, v)'
$PY -c "$XR" "$W/mnt-a/$ROOT" >/dev/null; $PY -c "$XR" "$W/src.zarr" >/dev/null  # warm both
read XMNT VMNT < <($PY -c "$XR" "$W/mnt-a/$ROOT")
read XDIR VDIR < <($PY -c "$XR" "$W/src.zarr")
# 4. ls -lR of 100k keys (first listing through a fresh mount loads the manifest).
"$BIN" --home "$W/A" mount "$W/mnt-a2" >/dev/null
drop; t0=$(now); ls -lR "$W/mnt-a2/$MANY" >/dev/null; t1=$(now); LSM=$(secs $t0 $t1)
drop; t0=$(now); ls -lR "$W/many.zarr" >/dev/null; t1=$(now); LSD=$(secs $t0 $t1)

printf 'dataset: %s bytes, %s chunk files; ls dataset: %s keys\n' "$SIZE" "$(find "$W/src.zarr" -type f | wc -l)" "$KEYS"
printf 'runs: warm %s  bindfs %s  disk %s  cold %s  pin %s\n' "${WARMS[*]}" "${BINDS[*]}" "${DISKS[*]}" "${COLDS[*]}" "${PINS[*]}"
printf 'warm read:  mount %.2fs (%s MiB/s)  bindfs %.2fs (%s MiB/s)  throughput ratio mount/bindfs = %.2fx (target >= 1.0x)\n' "$WARM" "$(mib "$WARM")" "$BIND" "$(mib "$BIND")" "$(echo "$BIND / $WARM" | bc -l)"
printf 'limit:      the plain directory, 8 cat %.2fs (%s MiB/s): the mount reads at %.2fx of the disk\n' "$DISK" "$(mib "$DISK")" "$(echo "$DISK / $WARM" | bc -l)"
printf 'one reader: mount %.2fs (%s MiB/s)  bindfs %.2fs (%s MiB/s)  ratio mount/bindfs = %.2fx (target >= 1.0x); runs %s / %s\n' "$ONE" "$(mib "$ONE")" "$ONEBIND" "$(mib "$ONEBIND")" "$(echo "$ONEBIND / $ONE" | bc -l)" "${ONES[*]}" "${ONEB[*]}"
printf 'limit:      the plain directory, one cat %.2fs (%s MiB/s): the mount reads at %.2fx of the disk; runs %s\n' "$ONEDISK" "$(mib "$ONEDISK")" "$(echo "$ONEDISK / $ONE" | bc -l)" "${ONED[*]}"
printf 'cold read:  mount %.2fs (%s MiB/s)  shoal pin %.2fs (%s MiB/s)  throughput ratio mount/pin = %.2fx (target >= 0.7x)\n' "$COLD" "$(mib "$COLD")" "$PIN" "$(mib "$PIN")" "$(echo "$PIN / $COLD" | bc -l)"
printf 'xarray mean (warm): mount %.2fs  plain dir %.2fs  time ratio = %.2fx (target <= 1.2x); means %s / %s\n' "$XMNT" "$XDIR" "$(echo "$XMNT / $XDIR" | bc -l)" "$VMNT" "$VDIR"
printf 'ls -lR %s keys: mount %.2fs  local disk %.2fs  time ratio = %.2fx (target <= 2x)\n' "$KEYS" "$LSM" "$LSD" "$(echo "$LSM / $LSD" | bc -l)"
