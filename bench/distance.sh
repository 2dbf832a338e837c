#!/usr/bin/env bash
# Distance benchmark (issue 18): `shoal pin` through a delay proxy at 0, 20,
# 50 and 100 ms round trip vs nginx + 8 parallel curl (+ sync) through the
# same kind of proxy, median of N interleaved runs; then a cold `cat` of
# every chunk file through a mount at 50 ms vs the pin at 50 ms; then two
# providers behind 20 ms and 100 ms sharing one pin.
# The proxy (crates/shoal-net/examples/delay_proxy.rs) delays each
# direction by half the RTT: this kernel has no sch_netem. Beside each RTT,
# the limit: one TCP connection moving the same bytes through the same
# kind of proxy (bench/loopback.py), and the disk landing them (cp -r +
# sync).
# usage: bench/distance.sh [GIB] [RUNS]   (default 0.22 GiB, 3 runs; as root)
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-0.22}; RUNS=${2:-3}
W=${BENCH_DIR:-/tmp/shoal-distbench}
source bench/lib.sh
umount -l "$W/mnt" 2>/dev/null || true
bench_init
cargo build --release -q -p shoal-net --example delay_proxy
PROXY=$PWD/target/release/examples/delay_proxy
need_nginx
.venv/bin/python bench/make_big.py "$W/src.zarr" "$GIB" >/dev/null
SIZE=$(du -sb "$W/src.zarr" | cut -f1)
cleanup() {
  umount -l "$W/mnt" 2>/dev/null || true
  [ -f "$W/proxies.pid" ] && xargs kill < "$W/proxies.pid" 2>/dev/null
  bench_cleanup
}
trap cleanup EXIT
# proxy TARGET_PORT ONE_WAY_MS [RATE_MBIT] -> prints the proxy's port
# (killed at exit).
proxy() {
  local f="$W/proxy.$RANDOM$RANDOM"
  "$PROXY" 127.0.0.1:0 "127.0.0.1:$1" "$2" ${3:-} > "$f" &
  echo $! >> "$W/proxies.pid"  # a subshell's: cleanup ends them by pid
  for _ in $(seq 100); do [ -s "$f" ] && break; sleep 0.05; done
  local a; a=$(cat "$f"); rm -f "$f"; echo "${a##*:}"
}
port_of() { addr "$1" | cut -d/ -f5; }
peer_of() { addr "$1" | cut -d/ -f7; }

start A; start B
ROOT=$("$BIN" --home "$W/A" add "$W/src.zarr" | tail -1)
"$BIN" --home "$W/B" add "$W/src.zarr" >/dev/null
nginx_serve "$W/src.zarr" 18090
(cd "$W/src.zarr" && find . -type f | sed 's|^\./||') > "$W/files.txt"

N=0
# pin_via PORTS...: a fresh daemon connects to A (and B) through the given
# proxy ports and pins; prints seconds; leaves its pin report in $W/pin.json.
pin_via() {
  N=$((N + 1)); local c="C$N"
  start "$c"
  local i=0
  for p in "$@"; do
    local who=A; [ $i -eq 1 ] && who=B
    "$BIN" --home "$W/$c" connect "/ip4/127.0.0.1/tcp/$p/p2p/$(peer_of $who)" >/dev/null
    i=$((i + 1))
  done
  drop; local t0; t0=$(now)
  "$BIN" --home "$W/$c" pin "$ROOT" --json > "$W/pin.json"
  local t1; t1=$(now)
  SECS=$(secs "$t0" "$t1")
  stop "$c"
}
http_via() {
  rm -rf "$W/http"; drop; local t0; t0=$(now)
  sed "s|.*|http://127.0.0.1:$1/& $W/http/&|" "$W/files.txt" | xargs -P 8 -n 2 sh -c 'curl -sf --create-dirs -o "$1" "$0"'
  sync; local t1; t1=$(now)
  SECS=$(secs "$t0" "$t1")
}

printf 'dataset: %s bytes in %s files; %s interleaved runs per RTT\n' "$SIZE" "$(wc -l < "$W/files.txt")" "$RUNS"
printf '%-6s %-28s %-28s %-16s %s\n' RTT "shoal pin (median, MB/s)" "nginx+8 curl (median, MB/s)" "shoal/http speed" "limit: one TCP connection (MB/s)"
for rtt in 0 20 50 100; do
  pa=$(proxy "$(port_of A)" $((rtt / 2))); ph=$(proxy 18090 $((rtt / 2)))
  S=(); H=(); L=()
  for _ in $(seq "$RUNS"); do
    pin_via "$pa"; S+=("$SECS")
    http_via "$ph"; H+=("$SECS")
    L+=("$(python3 bench/loopback.py "$SIZE" "$PROXY" $((rtt / 2)))")
  done
  s=$(median "${S[@]}"); h=$(median "${H[@]}"); l=$(median "${L[@]}")
  printf '%-6s %-28s %-28s %-16s %-32s [pin %s] [http %s]\n' "${rtt}ms" \
    "$(printf '%.2fs (%.0f)' "$s" "$(echo "$SIZE / 1000000 / $s" | bc -l)")" \
    "$(printf '%.2fs (%.0f)' "$h" "$(echo "$SIZE / 1000000 / $h" | bc -l)")" \
    "$(printf '%.2fx' "$(echo "$h / $s" | bc -l)")" \
    "$(printf '%.2fs (%.0f); pin at %.2fx' "$l" "$(echo "$SIZE / 1000000 / $l" | bc -l)" "$(echo "$l / $s" | bc -l)")" \
    "${S[*]}" "${H[*]}"
  if [ "$rtt" = 50 ]; then PIN50=$s; PORT50=$pa; fi
  if [ "$rtt" = 0 ]; then PORT0=$pa; fi
done
C=(); for _ in $(seq "$RUNS"); do C+=("$(limit_copy "$W/src.zarr")"); done
c=$(median "${C[@]}")
printf 'limit: the disk landing the same bytes (cp -r + sync) %.2fs (%.0f MB/s)\n' "$c" "$(echo "$SIZE / 1000000 / $c" | bc -l)"

# Cold read of every chunk file through a mount at 50 ms vs the pin at 50 ms.
M=()
for _ in $(seq "$RUNS"); do
  N=$((N + 1)); start "C$N"
  "$BIN" --home "$W/C$N" connect "/ip4/127.0.0.1/tcp/$PORT50/p2p/$(peer_of A)" >/dev/null
  "$BIN" --home "$W/C$N" mount "$W/mnt" >/dev/null
  ls "$W/mnt/$ROOT" >/dev/null
  drop; t0=$(now)
  (cd "$W/mnt/$ROOT" && find . -type f -print0 | xargs -0 -P 8 -n 4 cat > /dev/null)
  t1=$(now); M+=("$(secs "$t0" "$t1")")
  "$BIN" --home "$W/C$N" unmount "$W/mnt" >/dev/null
  stop "C$N"
done
m=$(median "${M[@]}")
printf 'mount at 50 ms: cold cat of every file %.2fs (%.0f MB/s) vs pin %.2fs: %.2fx the pin'"'"'s speed (target >= 0.7x) [%s]\n' \
  "$m" "$(echo "$SIZE / 1000000 / $m" | bc -l)" "$PIN50" "$(echo "$PIN50 / $m" | bc -l)" "${M[*]}"

# The gateway of a daemon that holds nothing, at 50 ms: every chunk file
# with 8 parallel curl (blocks come through its block source, blocks_ahead
# per response) vs the pin at 50 ms.
G=()
for _ in $(seq "$RUNS"); do
  N=$((N + 1)); start "C$N"
  "$BIN" --home "$W/C$N" connect "/ip4/127.0.0.1/tcp/$PORT50/p2p/$(peer_of A)" >/dev/null
  gw=$("$BIN" --home "$W/C$N" id --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["gateway"])')
  curl -sf -o /dev/null "$gw/zarr/$ROOT/zarr.json"   # the manifest (not timed, as for the mount)
  drop; t0=$(now)
  sed "s|.*|$gw/zarr/$ROOT/&|" "$W/files.txt" | xargs -P 8 -n 1 curl -sf -o /dev/null
  t1=$(now); G+=("$(secs "$t0" "$t1")")
  stop "C$N"
done
g=$(median "${G[@]}")
printf 'gateway at 50 ms: every chunk, 8 parallel curl, from a daemon holding nothing %.2fs (%.0f MB/s) vs pin %.2fs: %.2fx the pin'"'"'s speed [%s]\n' \
  "$g" "$(echo "$SIZE / 1000000 / $g" | bc -l)" "$PIN50" "$(echo "$PIN50 / $g" | bc -l)" "${G[*]}"

# Metadata, discovery and query at 50 ms against the same through the 0 ms
# proxy: the difference, in round trips, is what distance costs each.
# A fresh daemon each time (nothing cached): `ls` (manifest root and
# pages), `providers` (a DHT lookup), and a remote `query` (the plan's
# manifest walk, then compute requests answered by A).
declare -A OPS
for port in "$PORT0" "$PORT50"; do
  for op in ls providers query; do
    T=()
    for _ in $(seq "$RUNS"); do
      N=$((N + 1)); start "C$N"
      "$BIN" --home "$W/C$N" connect "/ip4/127.0.0.1/tcp/$port/p2p/$(peer_of A)" >/dev/null
      case $op in
        ls) cmd=(ls "$ROOT") ;;
        providers) cmd=(providers "$ROOT") ;;
        query) cmd=(query "$ROOT" sst --op mean --dim time) ;;
      esac
      t0=$(now); "$BIN" --home "$W/C$N" "${cmd[@]}" >/dev/null; t1=$(now)
      T+=("$(secs "$t0" "$t1")")
      stop "C$N"
    done
    OPS[$port.$op]=$(median "${T[@]}")
  done
done
for op in ls providers query; do
  a=${OPS[$PORT0.$op]}; b=${OPS[$PORT50.$op]}
  printf '%-10s at 0 ms %.3fs, at 50 ms %.3fs: %.1f round trips of 50 ms\n' "$op" "$a" "$b" "$(echo "($b - $a) / 0.05" | bc -l)"
done

# Two providers: A behind 20 ms and B behind 100 ms, first at the same
# bandwidth, then with B capped at 200 Mbit/s (a slow link must not hold
# the pin back: its share follows its throughput and the endgame asks the
# fast provider for what the slow one still owes). Each run uses a fresh
# pair of providers that have never met: once they know each other's
# direct (loopback) addresses, the fetcher would reach B around its proxy.
for cap in "" 200; do
  T=()
  for i in $(seq "$RUNS"); do
    N=$((N + 1)); a="P$N"; b="Q$N"; c="C$N"
    start "$a"; start "$b"
    "$BIN" --home "$W/$a" add "$W/src.zarr" >/dev/null; "$BIN" --home "$W/$b" add "$W/src.zarr" >/dev/null
    p20=$(proxy "$(port_of "$a")" 10); p100=$(proxy "$(port_of "$b")" 50 $cap)
    start "$c"
    "$BIN" --home "$W/$c" connect "/ip4/127.0.0.1/tcp/$p20/p2p/$(peer_of "$a")" >/dev/null
    "$BIN" --home "$W/$c" connect "/ip4/127.0.0.1/tcp/$p100/p2p/$(peer_of "$b")" >/dev/null
    drop; t0=$(now)
    "$BIN" --home "$W/$c" pin "$ROOT" --json > "$W/pin2.$i.json"
    t1=$(now); T+=("$(secs "$t0" "$t1")")
    peers[$i]="$(peer_of "$a") $(peer_of "$b")"
    stop "$c"; stop "$a"; stop "$b"
  done
  t=$(median "${T[@]}")
  for i in $(seq "$RUNS"); do [ "${T[$((i - 1))]}" = "$t" ] && m=$i; done
  what="same bandwidth"; [ -n "$cap" ] && what="B capped at $cap Mbit/s"
  python3 - "$W/pin2.$m.json" ${peers[$m]} "$t" "$what" "${T[*]}" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["fetched"]
by = {l["peer"]: l for l in r["links"]}
a, b = by.get(sys.argv[2], {}), by.get(sys.argv[3], {})
tot = sum(l["bytes"] for l in r["links"]) or 1
def d(l):
    return "%.0f%% of the bytes, rtt floor %s ms, best rate %.0f MB/s, peak in flight %.1f MB" % (
        100 * l.get("bytes", 0) / tot, "%.0f" % l["min_rtt_ms"] if l.get("min_rtt_ms") else "-",
        l.get("max_rate", 0) / 1e6, l.get("peak_inflight", 0) / 1e6)
print("two providers, %s (pin median %.2fs [%s]): A at 20 ms: %s; B at 100 ms: %s" % (
    sys.argv[5], float(sys.argv[4]), sys.argv[6], d(a), d(b)))
PY
done
