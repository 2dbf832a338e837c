#!/usr/bin/env bash
# HTTP gateway benchmark (issue 11), each against its baseline in the same
# run, median of N interleaved runs:
#   1. xr.open_zarr(URL).sst.mean("time").compute() over the gateway vs the
#      same over nginx serving a consolidated copy of the directory, and vs
#      the FUSE mount; cold (page cache dropped; the gateway's runs served
#      by a second daemon with `[gateway] hot_cache = "0"`, so it keeps
#      nothing in memory either) and warm (the gateway then answers from the
#      keys it keeps in memory); then the same for
#      a second dataset of another shape (bench/make_cf.py: Zarr v2 written
#      by xarray, CF coordinates, ~1.5 MB chunks that dask reads in its
#      tree order) with sst.mean() over everything, gateway vs nginx;
#   2. every chunk with 8 parallel curl from the gateway vs from nginx;
#   3. the limits beside them: the disk (cat of every file, cold) and
#      nginx itself (the loopback HTTP path), also without sendfile (it
#      then copies each file into the socket, as the gateway does).
# The daemon holds the dataset (blocks local). Needs root (drop_caches, FUSE).
# usage: bench/gateway.sh [GIB] [RUNS]   (default 1.0 GiB, 3 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-1.0}; RUNS=${2:-3}
W=${BENCH_DIR:-/tmp/shoal-gwbench}
umount -l "$W/mnt" 2>/dev/null || true
source bench/lib.sh
bench_init
need_nginx
$PY bench/make_big.py "$W/src.zarr" "$GIB" >/dev/null
$PY bench/make_cf.py "$W/cf.zarr" "$(echo "$GIB * 0.75" | bc -l)" >/dev/null
cp -a "$W/src.zarr" "$W/consolidated.zarr"
cp -a "$W/cf.zarr" "$W/cf-consolidated.zarr"
for d in consolidated cf-consolidated; do
  $PY -W ignore -c 'import sys, zarr; zarr.consolidate_metadata(sys.argv[1])' "$W/$d.zarr" 2>/dev/null
done
SIZE=$(du -sb "$W/src.zarr" | cut -f1)
cleanup() {
  umount -l "$W/mnt" 2>/dev/null || true
  bench_cleanup
}
trap cleanup EXIT
# No background scrub (it starts 10 minutes after the daemon, and this
# script runs longer): the figures are the read path's alone.
no_scrub() { set_conf "$1" rate '"0"'; }
CONFIGURE=no_scrub start A
# The cold gateway runs go to a second daemon holding the same datasets
# that keeps no keys in memory (`hot_cache = "0"`): dropping the page cache
# empties nginx's memory of the dataset, not A's. Otherwise alike.
no_memory() { no_scrub "$1"; set_conf "$1" hot_cache '"0"'; }
CONFIGURE=no_memory start C
ROOT=$("$BIN" --home "$W/A" add "$W/src.zarr" | tail -1)
CF_ROOT=$("$BIN" --home "$W/A" add "$W/cf.zarr" | tail -1)
"$BIN" --home "$W/C" add "$W/src.zarr" >/dev/null
"$BIN" --home "$W/C" add "$W/cf.zarr" >/dev/null
gw_url() { "$BIN" --home "$W/$1" id --json | $PY -c 'import json,sys; print(json.load(sys.stdin)["gateway"])'; }
GW=$(gw_url A); GW_C=$(gw_url C)
"$BIN" --home "$W/A" mount "$W/mnt" >/dev/null
nginx_serve "$W" 18091
NGINX_SENDFILE=off nginx_serve "$W" 18094   # the same without sendfile (copies, as we do)
(cd "$W/src.zarr" && find . -type f | sed 's|^\./||' | sort) > "$W/files.txt"
XR='import sys, time, xarray as xr
t = time.time(); ds = xr.open_zarr(sys.argv[1]); v = float(ds["sst"].mean("time").mean().compute(scheduler="threads")); print(time.time() - t, v)'
XR_ALL='import sys, time, xarray as xr
t = time.time(); ds = xr.open_zarr(sys.argv[1]); v = float(ds["sst"].mean().compute(scheduler="threads")); print(time.time() - t, v)'
xr_time() { $PY -W ignore -c "$XR" "$1" 2>/dev/null; }
xr_all() { $PY -W ignore -c "$XR_ALL" "$1" 2>/dev/null; }
curl_all() {  # BASE: every chunk file, 8 parallel curl, bodies discarded
  sed "s|.*|$1/&|" "$W/files.txt" | xargs -P 8 -n 16 curl -sf -o /dev/null
}
timed() { local t0 t1; t0=$(now); "$@" >/dev/null; t1=$(now); secs "$t0" "$t1"; }

N_URL="http://127.0.0.1:18091/consolidated.zarr"; M_URL="$W/mnt/$ROOT"
C_URL="http://127.0.0.1:18094/consolidated.zarr"
xr_time "$GW/zarr/$ROOT" >/dev/null; xr_time "$GW_C/zarr/$ROOT" >/dev/null; xr_time "$N_URL" >/dev/null; xr_time "$M_URL" >/dev/null; xr_time "$C_URL" >/dev/null   # open everything once
declare -A T; V=()
for mode in cold warm; do
  for _ in $(seq "$RUNS"); do
    for who in gateway nginx mount copying; do
      g=$GW; [ $mode = cold ] && g=$GW_C
      case $who in gateway) u=$g/zarr/$ROOT ;; nginx) u=$N_URL ;; mount) u=$M_URL ;; copying) u=$C_URL ;; esac
      [ $mode = cold ] && drop
      read -r s v < <(xr_time "$u")
      T[$mode.$who]+="$s "
      V[${#V[@]}]=$v
    done
  done
done
# Every value must agree (the same data through three paths).
[ "$(printf '%s\n' "${V[@]}" | sort -u | wc -l)" = 1 ] || { echo "results differ: ${V[*]}" >&2; exit 1; }
# The second dataset: gateway vs nginx, mean over everything.
CN_URL="http://127.0.0.1:18091/cf-consolidated.zarr"; CC_URL="http://127.0.0.1:18094/cf-consolidated.zarr"
xr_all "$GW/zarr/$CF_ROOT" >/dev/null; xr_all "$GW_C/zarr/$CF_ROOT" >/dev/null; xr_all "$CN_URL" >/dev/null; xr_all "$CC_URL" >/dev/null
V=()
for mode in cold warm; do
  for _ in $(seq "$RUNS"); do
    for who in gateway nginx copying; do
      g=$GW; [ $mode = cold ] && g=$GW_C
      case $who in gateway) u=$g/zarr/$CF_ROOT ;; nginx) u=$CN_URL ;; copying) u=$CC_URL ;; esac
      [ $mode = cold ] && drop
      read -r s v < <(xr_all "$u")
      T[cf.$mode.$who]+="$s "
      V[${#V[@]}]=$v
    done
  done
done
[ "$(printf '%s\n' "${V[@]}" | sort -u | wc -l)" = 1 ] || { echo "results differ (cf): ${V[*]}" >&2; exit 1; }
C_G=(); C_N=(); DISK=()
for _ in $(seq "$RUNS"); do
  drop; C_G+=("$(timed curl_all "$GW_C/zarr/$ROOT")")
  drop; C_N+=("$(timed curl_all "http://127.0.0.1:18091/src.zarr")")
  drop; DISK+=("$(timed sh -c "cd '$W/src.zarr' && find . -type f -print0 | xargs -0 -P 8 -n 16 cat > /dev/null")")
done
mb() { echo "$SIZE / 1000000 / $1" | bc -l | xargs printf '%.0f'; }
printf 'dataset: %s bytes (%s files); xarray sst.mean("time") (threads), median of %s interleaved runs\n' "$SIZE" "$(wc -l < "$W/files.txt")" "$RUNS"
for mode in cold warm; do
  g=$(median ${T[$mode.gateway]}); n=$(median ${T[$mode.nginx]}); m=$(median ${T[$mode.mount]}); c=$(median ${T[$mode.copying]})
  printf '%-5s xarray: gateway %.2fs  nginx %.2fs  mount %.2fs  nginx without sendfile %.2fs  -> gateway/nginx speed %.2fx, gateway/mount %.2fx, gateway/nginx without sendfile %.2fx  [gw %s] [nginx %s] [mount %s] [no sendfile %s]\n' \
    "$mode" "$g" "$n" "$m" "$c" "$(echo "$n / $g" | bc -l)" "$(echo "$m / $g" | bc -l)" "$(echo "$c / $g" | bc -l)" "${T[$mode.gateway]}" "${T[$mode.nginx]}" "${T[$mode.mount]}" "${T[$mode.copying]}"
done
printf 'second dataset: %s bytes (%s chunk files); xarray sst.mean() (threads)\n' "$(du -sb "$W/cf.zarr" | cut -f1)" "$(find "$W/cf.zarr/sst" -type f -name '[0-9]*' | wc -l)"
for mode in cold warm; do
  g=$(median ${T[cf.$mode.gateway]}); n=$(median ${T[cf.$mode.nginx]}); c=$(median ${T[cf.$mode.copying]})
  printf '%-5s xarray: gateway %.2fs  nginx %.2fs  nginx without sendfile %.2fs  -> gateway/nginx speed %.2fx, gateway/nginx without sendfile %.2fx  [gw %s] [nginx %s] [no sendfile %s]\n' \
    "$mode" "$g" "$n" "$c" "$(echo "$n / $g" | bc -l)" "$(echo "$c / $g" | bc -l)" "${T[cf.$mode.gateway]}" "${T[cf.$mode.nginx]}" "${T[cf.$mode.copying]}"
done
counters() { curl -s "$1/metrics" | grep -E '^shoal_gateway_(readahead_(hits|late|wasted)|hot_hits)_total' | tr '\n' ' '; }
printf 'read-ahead and keys kept in memory (whole script): warm daemon: %s  cold daemon: %s\n' "$(counters "$GW")" "$(counters "$GW_C")"
g=$(median "${C_G[@]}"); n=$(median "${C_N[@]}"); d=$(median "${DISK[@]}")
printf 'every chunk, 8 parallel curl, cold: gateway %.2fs (%s MB/s)  nginx %.2fs (%s MB/s)  -> %.2fx  [gw %s] [nginx %s]\n' \
  "$g" "$(mb "$g")" "$n" "$(mb "$n")" "$(echo "$n / $g" | bc -l)" "${C_G[*]}" "${C_N[*]}"
printf 'limit: disk, cat of every file (8 parallel, cold) %.2fs (%s MB/s)\n' "$d" "$(mb "$d")"
