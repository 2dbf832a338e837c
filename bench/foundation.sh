#!/usr/bin/env bash
# Foundation benchmarks (issue 2), shoal vs baselines in the same run:
#   1. ingest: `shoal add` vs `cp -r` + `sync` of the same >= 1 GiB tree
#   2. hashing inside add (re-add of stored data: read + hash + index
#      lookups, nothing written) vs `b3sum` on the same files
#   3. random verified reads of 1,000 stored chunks by CID: p50/p99
# Page cache is dropped before each timed step (needs root). Prints ratios,
# and the limits beside them: the disk reading the files (8 parallel cat,
# cold) and blake3 on all cores with the files in memory (b3sum, warm).
# usage: bench/foundation.sh [GIB]   (default 1.1)
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-1.1}
W=${BENCH_DIR:-/tmp/shoal-bench}
source bench/lib.sh
bench_init
command -v b3sum >/dev/null || apt-get install -y -q b3sum >/dev/null
cargo build --release -q -p shoal-store --example read_latency
.venv/bin/python bench/make_big.py "$W/src.zarr" "$GIB" >/dev/null
SIZE=$(du -sb "$W/src.zarr" | cut -f1)
FILES=$(find "$W/src.zarr" -type f | wc -l)
export SHOAL_HOME=$W/repo
"$BIN" init >/dev/null
"$BIN" daemon 2>"$W/daemon.log" & DPID=$!
trap 'kill $DPID 2>/dev/null || true' EXIT
for _ in $(seq 100); do "$BIN" id >/dev/null 2>&1 && break; sleep 0.1; done

drop; t0=$(now); cp -r "$W/src.zarr" "$W/cp.zarr"; sync; t1=$(now)
CP=$(echo "$t1 - $t0" | bc -l)
drop; t0=$(now); "$BIN" add "$W/src.zarr" --name big >/dev/null; t1=$(now)
ADD=$(echo "$t1 - $t0" | bc -l)
drop; t0=$(now); "$BIN" add "$W/src.zarr" >/dev/null; t1=$(now)
READD=$(echo "$t1 - $t0" | bc -l)
drop; t0=$(now); find "$W/src.zarr" -type f -print0 | xargs -0 b3sum --num-threads "$(nproc)" >/dev/null; t1=$(now)
B3=$(echo "$t1 - $t0" | bc -l)
DISK=$(limit_read "$W/src.zarr")
b3w() { find "$W/src.zarr" -type f -print0 | xargs -0 b3sum --num-threads "$(nproc)" >/dev/null; }
b3w; t0=$(now); b3w; t1=$(now); B3W=$(secs "$t0" "$t1")
kill $DPID; wait $DPID 2>/dev/null || true
drop; COLD=$(target/release/examples/read_latency "$W/repo/store" 1000)
WARM=$(target/release/examples/read_latency "$W/repo/store" 1000)

printf 'dataset: %s bytes in %s files (zarr-python, zstd)\n' "$SIZE" "$FILES"
printf 'ingest:  shoal add %.2fs (%s MiB/s)  cp -r+sync %.2fs (%s MiB/s)  ratio add/cp = %.2fx (target <= 1.3x)\n' \
  "$ADD" "$(mib "$ADD")" "$CP" "$(mib "$CP")" "$(echo "$ADD / $CP" | bc -l)"
printf 'hashing: re-add %.2fs (%s MiB/s)  b3sum %.2fs (%s MiB/s)  ratio b3sum/re-add throughput = %.2fx\n' \
  "$READD" "$(mib "$READD")" "$B3" "$(mib "$B3")" "$(echo "$B3 / $READD" | bc -l)"
printf 'limits:  disk read (8 cat, cold) %.2fs (%s MiB/s); blake3 on all cores, files in memory (b3sum) %.2fs (%s MiB/s); add at %.2fx the disk\n' \
  "$DISK" "$(mib "$DISK")" "$B3W" "$(mib "$B3W")" "$(echo "$DISK / $ADD" | bc -l)"
echo "random reads (cold cache): $COLD"
echo "random reads (warm cache): $WARM"
rm -rf "$W"
