#!/usr/bin/env bash
# Living datasets (issue 14): a published dataset that grows by one day at
# a time, followed by a second daemon with default settings.
#   - first follow: B takes the whole dataset;
#   - each daily append (xarray to_zarr(append_dim="time"), then
#     `shoal add --name sst` on A): the time from the start of A's add to B
#     holding the new version (B's `shoal follows` polled every 50 ms), A's
#     add alone, and the bytes B stored for it against the dataset's size.
# Beside them the limits: the dataset over one loopback TCP connection and
# landed on disk (cp -r + sync).
# usage: bench/follow.sh [DAYS] [APPENDS]   (DAYS of 720 x 1440 float32,
# 4.1 MB each; 250 days ~ 1 GB)
set -euo pipefail
cd "$(dirname "$0")/.."
DAYS=${1:-250}
RUNS=${2:-3}
W=${BENCH_DIR:-/tmp/shoal-followbench}
source bench/lib.sh
bench_init
trap 'bench_cleanup; sleep 1; rm -rf "$W"' EXIT
MAKE='
import sys, warnings, numpy as np, pandas as pd, xarray as xr
warnings.filterwarnings("ignore")
path, cmd, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
have = 0 if cmd == "create" else xr.open_zarr(path).sizes["time"]
rng = np.random.default_rng(have)
t = pd.date_range("2020-01-01", periods=have + n, freq="D")[have:]
for i in range(0, n, 25):
    k = min(25, n - i)
    ds = xr.Dataset({"sst": (("time", "lat", "lon"), rng.standard_normal((k, 720, 1440), dtype="f4"))},
                    coords={"time": t[i:i + k], "lat": np.linspace(-89.875, 89.875, 720), "lon": np.linspace(0.125, 359.875, 1440)})
    first = cmd == "create" and i == 0
    ds.chunk({"time": 1}).to_zarr(path, zarr_format=2, consolidated=True, **({"mode": "w"} if first else {"append_dim": "time"}))
'
$PY -c "$MAKE" "$W/sst.zarr" create "$DAYS"
SIZE=$(du -sb "$W/sst.zarr" | cut -f1)
start A; start B
"$BIN" --home "$W/B" connect "$(addr A)" >/dev/null
"$BIN" --home "$W/A" add "$W/sst.zarr" --name sst >/dev/null
"$BIN" --home "$W/A" publish sst >/dev/null
PEER=$("$BIN" --home "$W/A" id --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["peer_id"])')
live() { "$BIN" --home "$W/B" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["live_bytes"])'; }
held() { "$BIN" --home "$W/B" follows --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["seq"])'; }
t0=$(now); "$BIN" --home "$W/B" follow "$PEER/sst" >/dev/null; t1=$(now)
FIRST=$(secs "$t0" "$t1")
LAT=(); ADD=(); BYTES=()
for i in $(seq "$RUNS"); do
  $PY -c "$MAKE" "$W/sst.zarr" append 1
  before=$(live)
  t0=$(now); "$BIN" --home "$W/A" add "$W/sst.zarr" --name sst >/dev/null; t1=$(now)
  for _ in $(seq 1200); do [ "$(held)" = $((i + 1)) ] && break; sleep 0.05; done
  t2=$(now)
  [ "$(held)" = $((i + 1)) ] || { echo "the follower did not take version $((i + 1)) in 60 s" >&2; exit 1; }
  LAT+=("$(secs "$t0" "$t2")"); ADD+=("$(secs "$t0" "$t1")"); BYTES+=("$(( $(live) - before ))")
done
printf 'dataset: %s bytes (%s days of 720 x 1440 float32, one chunk per day)\n' "$SIZE" "$DAYS"
printf 'first follow (whole dataset): %.2fs (%s MiB/s)\n' "$FIRST" "$(mib "$FIRST")"
printf 'daily append -> follower holds it (median of %s): %.2fs [%s]  of which the publisher'"'"'s add %.2fs [%s]\n' \
  "$RUNS" "$(median "${LAT[@]}")" "${LAT[*]}" "$(median "${ADD[@]}")" "${ADD[*]}"
printf 'limits: the whole dataset over one loopback TCP connection %.2fs, landed on disk (cp -r + sync) %.2fs\n' \
  "$(limit_loopback)" "$(limit_copy "$W/sst.zarr")"
printf 'bytes the follower stored per append: median %s [%s] = %.4f of the dataset\n' \
  "$(median "${BYTES[@]}")" "${BYTES[*]}" "$(echo "$(median "${BYTES[@]}") / $SIZE" | bc -l)"
