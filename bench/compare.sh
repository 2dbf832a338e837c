#!/usr/bin/env bash
# Runs one benchmark script against two shoal builds, interleaved, N times
# each (single runs on this VM vary 25-30%; compare medians).
# usage: bench/compare.sh OLD_BIN NEW_BIN N SCRIPT [ARGS...]
#   e.g. bench/compare.sh /tmp/shoal-old target/release/shoal 3 bench/network.sh 1.1
set -euo pipefail
OLD=$(realpath "$1"); NEW=$(realpath "$2"); N=$3; shift 3
for i in $(seq "$N"); do
  for which in old new; do
    bin=$OLD; [ "$which" = new ] && bin=$NEW
    echo "=== run $i: $which ($bin)"
    SHOAL_BIN=$bin "$@" 2>&1 | tail -n "${TAIL:-6}"
  done
done
