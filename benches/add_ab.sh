#!/usr/bin/env bash
# Interleaved timings of `sparse add` of one fine-tune by two or more sparse builds: the way the
# add A/Bs in docs/PERFORMANCE.md are measured.
#
#   benches/add_ab.sh RUNS BASE FT BIN [BIN ...]
#   benches/add_ab.sh 15 base.safetensors ft.safetensors /tmp/old/sparse /tmp/new/sparse
#
# Each BIN first makes a store of its own holding BASE (added from where it lies, so a known
# copy, and committed). Each round then copies every build's store aside, and adds FT to the
# copy with `--base base`, after `sync` and a prefault (benches/lib.sh); rounds alternate the
# builds, so that a machine whose speed drifts slows all of them alike. The copies are deleted
# only at the end: ext4 checks each inode freed in the last minute when it allocates, which
# would charge the deletions to the next add. Prints the median CPU time (task-clock) and wall
# time of each build, in ms, the range of the wall times, and the bytes each stored.
#
# Needs perf (linux-perf, or linux-tools-$(uname -r) on Ubuntu).
set -euo pipefail

if [ $# -lt 4 ]; then
    sed -n '2,14p' "$0" >&2
    exit 2
fi
RUNS=$1
BASE=$(realpath "$2")
FT=$(realpath "$3")
shift 3
command -v perf >/dev/null || { echo "perf not found" >&2; exit 1; }
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
WORK=$OUT
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WARM_MB=$(warm_mb "$BASE" "$FT")

i=0
for bin in "$@"; do
    i=$((i + 1))
    mkdir "$OUT/made-$i"
    (cd "$OUT/made-$i" && "$bin" init >/dev/null && "$bin" add "$BASE" --name base >/dev/null \
        && "$bin" commit -m base >/dev/null)
done
for run in $(seq "$RUNS"); do
    i=0
    for bin in "$@"; do
        i=$((i + 1))
        st=$OUT/run-$run-$i
        cp -a "$OUT/made-$i" "$st"
        sync
        prefault
        stat=$(cd "$st" && perf stat -e task-clock "$bin" add "$FT" --name finetune --base base 2>&1 >/dev/null)
        add "cpu.$i" "$(awk '/task-clock/ {gsub(",", "", $1); print $1}' <<<"$stat")"
        add "wall.$i" "$(awk '/seconds time elapsed/ {print $1 * 1000}' <<<"$stat")"
        add "bytes.$i" "$(du -sb "$st/.sparse/cas" | cut -f1)"
    done
done

i=0
for bin in "$@"; do
    i=$((i + 1))
    echo "$bin: CPU $(median "cpu.$i") ms, wall $(median "wall.$i") ms ($(range "wall.$i")), store $(median "bytes.$i") bytes"
done
