#!/usr/bin/env bash
# Scrub benchmark (issue 31): does the background scrub, under its rate
# budget, slow a concurrent pin or mount read? For each scrub setting --
# off, the default 4 MiB/s, and 1 GiB/s (no budget to speak of: only the
# pause while busy holds it back) -- a fresh daemon B holds dataset D1
# (what it scrubs, and what its mount reads) and, with its scrub running:
#   pin:  `shoal pin D2` (GIB) from daemon A, timed;
#   read: every chunk file of D1 through B's mount (8 readers, page cache
#         dropped first), timed.
# RUNS interleaved runs (the three settings in turn each run), medians,
# ratios against "off"; beside them the limits: one TCP connection over
# loopback for the pin, 8 `cat` over the plain copy for the read, and the
# scrub alone (an idle pass over D1 at 1 GiB/s: read + blake3 verify).
# Needs root (FUSE, drop_caches). usage: bench/scrub.sh [GIB] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-1}
RUNS=${2:-5}
W=${BENCH_DIR:-/tmp/shoal-scrubbench}
for m in "$W"/mnt-*; do umount -l "$m" 2>/dev/null || true; done
source bench/lib.sh
bench_init
$PY bench/make_big.py "$W/d1.zarr" "$GIB" 1 >/dev/null
$PY bench/make_big.py "$W/d2.zarr" "$GIB" 2 >/dev/null
SIZE=$(du -sb "$W/d2.zarr" | cut -f1)
cleanup() {
  for m in "$W"/mnt-*; do umount -l "$m" 2>/dev/null || true; done
  bench_cleanup
}
trap cleanup EXIT
readall() { (cd "$1" && find . -type f -print0 | xargs -0 -P 8 -n 16 cat > /dev/null); }
timed() { drop; local t0 t1; t0=$(now); "$@" >/dev/null; t1=$(now); T=$(secs "$t0" "$t1"); }
json() { "$BIN" --home "$W/$1" stats --json | python3 -c "import json,sys; print(json.load(sys.stdin)['durability']['$2'])"; }

start A
D1=$("$BIN" --home "$W/A" add "$W/d1.zarr" | tail -1)
D2=$("$BIN" --home "$W/A" add "$W/d2.zarr" | tail -1)
declare -A RATE=([off]='"0"' [4MiB]='"4MiB"' [1GiB]='"1GiB"')
declare -A PIN_T=() READ_T=()
SCRUB_ALONE=()
scrub_conf() { set_conf "$1" rate "$SCRUB_RATE"; set_conf "$1" every '"1s"'; set_conf "$1" start_after '"0s"'; }
for i in $(seq "$RUNS"); do
  for cfg in off 4MiB 1GiB; do
    B="B-$cfg-$i"
    SCRUB_RATE=${RATE[$cfg]} CONFIGURE=scrub_conf start "$B"
    "$BIN" --home "$W/$B" connect "$(addr A)" >/dev/null
    t0=$(now); "$BIN" --home "$W/$B" pin "$D1" >/dev/null
    if [ "$cfg" = 1GiB ]; then
      # The scrub alone: B idle, its first pass over D1 (timed from the
      # pin's end: the scrub starts once B is idle).
      for _ in $(seq 600); do [ "$(json "$B" scrub_passes)" -ge 1 ] && break; sleep 0.1; done
      t1=$(now); SCRUB_ALONE+=("$(secs "$t0" "$t1")")
    else
      sleep 2
    fi
    timed "$BIN" --home "$W/$B" pin "$D2"; PIN_T[$cfg]+="$T "
    "$BIN" --home "$W/$B" mount "$W/mnt-$B" >/dev/null
    ls -R "$W/mnt-$B/$D1" >/dev/null
    timed readall "$W/mnt-$B/$D1"; READ_T[$cfg]+="$T "
    echo "run $i $cfg: pin $(echo ${PIN_T[$cfg]} | awk '{print $NF}')s read $(echo ${READ_T[$cfg]} | awk '{print $NF}')s; scrubbed $(json "$B" scrub_pass_bytes) B in this pass, paused $(json "$B" scrub_paused) times" >&2
    umount "$W/mnt-$B"; stop "$B"
  done
done
# shellcheck disable=SC2086
med() { median $1; }
POFF=$(med "${PIN_T[off]}"); P4=$(med "${PIN_T[4MiB]}"); PMAX=$(med "${PIN_T[1GiB]}")
ROFF=$(med "${READ_T[off]}"); R4=$(med "${READ_T[4MiB]}"); RMAX=$(med "${READ_T[1GiB]}")
LOOP=$(limit_loopback); DISK=$(limit_read "$W/d1.zarr"); ALONE=$(median "${SCRUB_ALONE[@]}")
printf 'datasets: 2 x %s bytes; runs: pin off [%s] 4MiB [%s] 1GiB [%s]; read off [%s] 4MiB [%s] 1GiB [%s]\n' \
  "$SIZE" "${PIN_T[off]% }" "${PIN_T[4MiB]% }" "${PIN_T[1GiB]% }" "${READ_T[off]% }" "${READ_T[4MiB]% }" "${READ_T[1GiB]% }"
printf 'pin:  scrub off %.2fs (%s MiB/s)  4MiB/s %.2fs (ratio %.2fx)  1GiB/s %.2fs (ratio %.2fx)  limit loopback %.2fs (%s MiB/s)\n' \
  "$POFF" "$(mib "$POFF")" "$P4" "$(echo "$POFF / $P4" | bc -l)" "$PMAX" "$(echo "$POFF / $PMAX" | bc -l)" "$LOOP" "$(mib "$LOOP")"
printf 'read: scrub off %.2fs (%s MiB/s)  4MiB/s %.2fs (ratio %.2fx)  1GiB/s %.2fs (ratio %.2fx)  limit disk 8 cat %.2fs (%s MiB/s)\n' \
  "$ROFF" "$(mib "$ROFF")" "$R4" "$(echo "$ROFF / $R4" | bc -l)" "$RMAX" "$(echo "$ROFF / $RMAX" | bc -l)" "$DISK" "$(mib "$DISK")"
printf 'scrub alone (idle, 1GiB/s budget): a pass over D1 in %.2fs (%s MiB/s)\n' "$ALONE" "$(mib "$ALONE")"
echo "(throughput ratios: scrub off / scrub on; 1.00x = no slowdown)"
