#!/usr/bin/env bash
# Interleaved checkout timings of two or more sparse builds, with cp of the same file in the
# same loop: the way the A/B tables in docs/PERFORMANCE.md are measured.
#
#   benches/checkout_ab.sh REV RUNS FILE BIN:STORE [BIN:STORE ...]
#   benches/checkout_ab.sh finetune 21 ft.safetensors /tmp/old/sparse:/tmp/st-old /tmp/new/sparse:/tmp/st-new
#
# Each round checks out REV with every BIN from its STORE (a directory holding .sparse, made
# by that build, since the builds may code differently) into a fresh directory after `sync` and
# a prefault (benches/lib.sh: memory freed long ago is slow to touch on some VMs), then copies
# FILE (the revision's source) with cp. Rounds alternate the builds, so that a machine whose
# speed drifts (a shared VM) slows all of them alike. Prints the median CPU time (task-clock)
# and wall time of each, in ms, and the range of the wall times.
#
# Needs perf (linux-perf, or linux-tools-$(uname -r) on Ubuntu).
set -euo pipefail

if [ $# -lt 4 ]; then
    sed -n '2,13p' "$0" >&2
    exit 2
fi
REV=$1
RUNS=$2
FILE=$3
shift 3
command -v perf >/dev/null || { echo "perf not found" >&2; exit 1; }
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
WORK=$OUT
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WARM_MB=$(warm_mb "$FILE")

for _ in $(seq "$RUNS"); do
    for pair in "$@" cp; do
        rm -rf "$OUT/dir" "$OUT/copy"
        sync
        prefault
        if [ "$pair" = cp ]; then
            stat=$(perf stat -e task-clock cp "$FILE" "$OUT/copy" 2>&1 >/dev/null)
        else
            bin=${pair%%:*}
            store=${pair#*:}
            stat=$(cd "$store" && perf stat -e task-clock "$bin" checkout "$REV" -o "$OUT/dir" 2>&1 >/dev/null)
        fi
        perf_ms "$pair" "$stat"
    done
done

for pair in "$@" cp; do
    echo "$pair: CPU $(median "cpu.$pair") ms, wall $(median "wall.$pair") ms ($(range "wall.$pair"))"
done
