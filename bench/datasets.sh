#!/usr/bin/env bash
# A daemon holding N small named datasets (issue 29): the store is filled
# once (examples/datasets_fill, through the same path as `shoal add`), then
# for each binary, RUNS rounds interleaved (new binary, then OLD_BIN when
# set, the "before"):
#   start-up: from exec until `shoal id` answers; RSS then;
#   `shoal pins --limit 100` (the first page) and `shoal pins` (all of them,
#   listed in pages), with the line count;
#   the mount root: `ls` (names only) and `ls -l` (one readlink per name),
#   through a mount made by the daemon; peak RSS (VmHWM) at the end.
# Each step bounded by LIMIT seconds (a "before" that takes longer prints
# ">LIMIT"). Needs root (FUSE). usage: bench/datasets.sh [N] [RUNS] [LIMIT]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
RUNS=${2:-3}
LIMIT=${3:-300}
W=${BENCH_DIR:-/tmp/shoal-datasetsbench}
FILLED=${FILLED:-/tmp/shoal-filled-$N}
source bench/lib.sh
umount -l "$W/mnt" 2>/dev/null || true
bench_init
cargo build --release -q -p shoal --example datasets_fill
trap 'umount -l "$W/mnt" 2>/dev/null || true; bench_cleanup' EXIT
if [ ! -f "$FILLED/filled" ]; then
  rm -rf "$FILLED"
  target/release/examples/datasets_fill "$FILLED" "$N" | tail -3
  touch "$FILLED/filled"
fi
du -sh "$FILLED" | awk '{print "store: " $1}'

kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$2/status"; }
# timed CMD...: seconds CMD took (">LIMIT" when cut off, "n/a" when it
# failed: the old CLI has no --limit); output to $W/out.
timed() {
  local t0 rc=0; t0=$(now)
  timeout "$LIMIT" "$@" > "$W/out" 2>&1 || rc=$?
  case $rc in
    0) secs "$t0" "$(now)" | xargs printf '%.3f' ;;
    124) echo ">$LIMIT" ;;
    *) echo "n/a" ;;
  esac
}
# round LABEL BINARY: one round on a copy-free run of the filled home.
round() {
  local label=$1 bin=$2 t0 pid
  t0=$(now)
  "$bin" --home "$FILLED" daemon 2>"$W/daemon-$label.log" &
  pid=$!
  for _ in $(seq $((LIMIT * 10))); do "$bin" --home "$FILLED" id >/dev/null 2>&1 && break; sleep 0.1; done
  START[$label]+=" $(secs "$t0" "$(now)" | xargs printf '%.2f')"
  RSS[$label]+=" $(( $(kib VmRSS $pid) / 1024 ))"
  FIRST[$label]+=" $(timed "$bin" --home "$FILLED" pins --limit 100)"
  ALL[$label]+=" $(timed "$bin" --home "$FILLED" pins)"
  LINES[$label]=$(wc -l < "$W/out")
  mkdir -p "$W/mnt"
  "$bin" --home "$FILLED" mount "$W/mnt" >/dev/null
  LS[$label]+=" $(timed ls "$W/mnt")"
  ENTRIES[$label]=$(wc -l < "$W/out")
  LSL[$label]+=" $(timed ls -l "$W/mnt")"
  "$bin" --home "$FILLED" unmount "$W/mnt" >/dev/null || umount -l "$W/mnt"
  HWM[$label]+=" $(( $(kib VmHWM $pid) / 1024 ))"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
declare -A START RSS FIRST ALL LINES LS ENTRIES LSL HWM
LABELS=(new)
[ -n "${OLD_BIN:-}" ] && LABELS+=(old)
for r in $(seq "$RUNS"); do
  for l in "${LABELS[@]}"; do
    if [ "$l" = new ]; then round new "$BIN"; else round old "$OLD_BIN"; fi
  done
  echo "round $r done" >&2
done
# med LIST: the median of a space-separated list (">LIMIT" entries sort last).
med() { if [[ "$1" == *">"* ]]; then echo ">$LIMIT"; elif [[ "$1" == *n/a* ]]; then echo n/a; else median $1; fi; }
echo "== $N datasets in one daemon: medians of $RUNS interleaved rounds (each: values) =="
for l in "${LABELS[@]}"; do
  echo "-- $l ($([ "$l" = new ] && echo "$BIN" || echo "$OLD_BIN"))"
  echo "start-up to first answer: $(med "${START[$l]}") s (${START[$l]# }); RSS then $(med "${RSS[$l]}") MiB (${RSS[$l]# })"
  echo "shoal pins --limit 100: $(med "${FIRST[$l]}") s (${FIRST[$l]# })"
  echo "shoal pins (all, ${LINES[$l]} lines): $(med "${ALL[$l]}") s (${ALL[$l]# })"
  echo "ls of the mount root (${ENTRIES[$l]} entries): $(med "${LS[$l]}") s (${LS[$l]# }); ls -l: $(med "${LSL[$l]}") s (${LSL[$l]# })"
  echo "peak RSS over the round: $(med "${HWM[$l]}") MiB (${HWM[$l]# })"
done
