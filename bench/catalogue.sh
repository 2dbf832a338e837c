#!/usr/bin/env bash
# Catalogue benchmarks (issue 30), each beside its baseline and floor:
#   1. search latency with N (default 10,000) catalogue entries held by one
#      daemon (filled by examples/catalogue_fill: 20 publishers, signed
#      entries, verified on load like any heard from the swarm): GET
#      /stac/search by text, bbox, datetime, all three, and the first page,
#      over one keep-alive connection, p50/p95 per query (median of RUNS
#      interleaved rounds of REQS requests) against a static catalogue (the
#      same items in one JSON file that nginx serves and the client filters
#      itself, as intake/static STAC do); floor: a /stac/conformance round
#      trip; beside it the client-side filter alone (catalogue in memory);
#   2. daemon start-up (launch to answering `shoal id`) with N entries and
#      with none, interleaved, median of RUNS;
#   3. thumbnail cost on a ~GIB GiB zstd float32 dataset: the quick-look
#      (GET /stac/thumbnails/ROOT.png, cached file removed and page cache
#      dropped before each) vs reading it whole (`shoal query DS sst --op
#      mean --dim time`, page cache dropped), interleaved, median of RUNS.
# usage: bench/catalogue.sh [N] [GIB] [RUNS] [REQS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
GIB=${2:-1.1}
RUNS=${3:-3}
REQS=${4:-200}
W=${BENCH_DIR:-/tmp/shoal-catbench}
source bench/lib.sh
bench_init
need_nginx
cargo build --release -q -p shoal-node --example catalogue_fill
FILL=$PWD/target/release/examples/catalogue_fill
trap 'bench_cleanup; sleep 1; rm -rf "$W"' EXIT

# launch NAME: starts an initialised daemon; sets T to the seconds until
# it answers (not in a subshell: the daemon's pid is kept).
launch() {
  local t0 t1
  t0=$(now)
  "$BIN" --home "$W/$1" daemon >/dev/null 2>>"$W/$1.log" &
  PIDS+=($!); PID_OF[$1]=$!
  for _ in $(seq 600); do
    if "$BIN" --home "$W/$1" id >/dev/null 2>&1; then t1=$(now); T=$(secs "$t0" "$t1"); return; fi
    sleep 0.05
  done
  echo "daemon $1 did not start" >&2; exit 1
}
halt() { local p=${PID_OF[$1]}; kill "$p"; wait "$p" 2>/dev/null || true; }
gateway() { "$BIN" --home "$W/$1" id --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["gateway"])'; }

# 1 and 2: a daemon with N entries (F) and an empty one (E).
for d in F E; do "$BIN" --home "$W/$d" init --listen /ip4/127.0.0.1/tcp/0 --gateway 127.0.0.1:0 >/dev/null; done
"$FILL" "$W/F/store" "$N" >/dev/null
SF=(); SE=()
for _ in $(seq "$RUNS"); do
  launch F; SF+=("$T"); halt F
  launch E; SE+=("$T"); halt E
done
launch F
GW=$(gateway F)
HELD=$(curl -sf "$GW/stac/search?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["numberMatched"])')
[ "$HELD" = "$N" ] || { echo "the daemon holds $HELD entries, not $N" >&2; exit 1; }
mkdir -p "$W/static"
$PY bench/stac_latency.py --dump "$GW" "$W/static/items.json" >/dev/null
nginx_serve "$W/static" 18931
sleep 0.5
LAT=$($PY bench/stac_latency.py "$GW" "http://127.0.0.1:18931/items.json" "$RUNS" "$REQS")
RSS=$(awk '/VmRSS/ {print $2}' "/proc/${PID_OF[F]}/status")
halt F

# 3: thumbnail vs a whole read.
$PY bench/make_big.py "$W/src.zarr" "$GIB" >/dev/null
SIZE=$(du -sb "$W/src.zarr" | cut -f1)
launch E
GW=$(gateway E)
ROOT=$("$BIN" --home "$W/E" add "$W/src.zarr" --name big | tail -1)
"$BIN" --home "$W/E" publish big >/dev/null
thumb() {
  rm -f "$W/E/store/thumbnails/$ROOT.png"; drop
  local t0 t1; t0=$(now)
  curl -sf -o "$W/thumb.png" "$GW/stac/thumbnails/$ROOT.png"
  t1=$(now); secs "$t0" "$t1"
}
whole() {
  drop; local t0 t1; t0=$(now)
  "$BIN" --home "$W/E" query big sst --op mean --dim time --out "$W/mean.npy" >/dev/null
  t1=$(now); secs "$t0" "$t1"
}
thumb >/dev/null; whole >/dev/null # one-time start-up costs
TT=(); TW=(); TL=()
for _ in $(seq "$RUNS"); do TT+=("$(thumb)"); TW+=("$(whole)"); TL+=("$(limit_read "$W/src.zarr/sst")"); done
[ "$(head -c 4 "$W/thumb.png" | tail -c 3)" = PNG ] || { echo "the quick-look is not a PNG" >&2; exit 1; }
THUMB_BYTES=$(stat -c %s "$W/thumb.png")

ratio() { echo "$1 / $2" | bc -l | xargs printf '%.1f'; }
echo "catalogue: $N entries from 20 publishers; $RUNS interleaved rounds of $REQS requests each"
echo "$LAT" > "$W/latency.json"
python3 - "$W/latency.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("floor (/stac/conformance round trip): p50 %.2f ms" % r["floor50"])
print("%-12s %8s %10s %8s %11s %10s %9s" % ("query", "matched", "shoal p50", "p95", "static p50", "in-memory", "speed-up"))
for name, v in r.items():
    if not isinstance(v, dict):
        continue
    a, b = v["matched"]
    assert a == b, "%s: shoal matched %d, the static filter %d" % (name, a, b)
    print("%-12s %8d %8.2fms %6.2fms %9.1fms %8.2fms %8.0fx" % (name, a, v["shoal50"], v["shoal95"], v["static50"], v["memory50"], v["static50"] / v["shoal50"]))
PY
printf 'start-up (launch to answering): %s entries %.2fs [%s]  empty %.2fs [%s]  (RSS with %s entries: %s MiB)\n' \
  "$N" "$(median "${SF[@]}")" "${SF[*]}" "$(median "${SE[@]}")" "${SE[*]}" "$N" "$((RSS / 1024))"
T=$(median "${TT[@]}"); WH=$(median "${TW[@]}"); L=$(median "${TL[@]}")
printf 'thumbnail of a %s MiB dataset (%s-byte PNG), cold: %.2fs [%s]  whole read (mean over time) %.2fs [%s]  the quick-look costs 1/%s of a whole read; disk read limit for the whole %.2fs\n' \
  "$((SIZE / 1048576))" "$THUMB_BYTES" "$T" "${TT[*]}" "$WH" "${TW[*]}" "$(ratio "$WH" "$T")" "$L"
