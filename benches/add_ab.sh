#!/usr/bin/env bash
# Interleaved timings of `sparse add` of one fine-tune by two or more sparse builds: the way the
# add A/Bs in docs/PERFORMANCE.md are measured.
#
#   benches/add_ab.sh RUNS BASE FT BIN [BIN ...]
#   benches/add_ab.sh 15 base.safetensors ft.safetensors /tmp/old/sparse target/release/sparse
#
# Each BIN first makes a store of its own holding BASE (added from where it lies, so a known
# copy, and committed). Each round then copies every build's store aside and adds FT to the
# copy with `--base base`, after `sync` and a prefault (benches/lib.sh); the builds take turns
# going first, so that a machine whose speed drifts slows all of them alike. The copies are
# dropped from the page cache after use and deleted only at the end: ext4 checks each inode
# freed in the last minute when it allocates, which would charge the deletions to the next add.
# Prints each build's median CPU time (task-clock) and wall time, in ms, the range of the wall
# times, and the bytes FT added to the store's blobs. WORK=DIR puts the stores in a new
# directory below DIR (default: $TMPDIR or /tmp, which should be a disk, not memory).
#
# Needs perf (linux-perf, or linux-tools-$(uname -r) on Ubuntu) and python3.
set -euo pipefail

if [ $# -lt 4 ] || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
    sed -n '2,17p' "$0" >&2
    exit 2
fi
RUNS=$1
BASE=$(realpath "$2")
FT=$(realpath "$3")
shift 3
BINS=()
for bin in "$@"; do
    BINS+=("$(realpath "$(command -v "$bin")")")
done
command -v perf >/dev/null || { echo "perf not found" >&2; exit 1; }
OUT=$(mktemp -d "${WORK:-${TMPDIR:-/tmp}}/add_ab.XXXXXX")
WORK=$OUT
trap 'rm -rf "$OUT"' EXIT
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WARM_MB=$(warm_mb "$BASE" "$FT")

for i in "${!BINS[@]}"; do
    mkdir "$OUT/made-$i"
    (cd "$OUT/made-$i" && "${BINS[$i]}" init >/dev/null && "${BINS[$i]}" add "$BASE" --name base >/dev/null \
        && "${BINS[$i]}" commit -m base >/dev/null)
done
for run in $(seq "$RUNS"); do
    order=()
    for i in "${!BINS[@]}"; do
        if ((run % 2)); then order+=("$i"); else order=("$i" "${order[@]}"); fi
    done
    for i in "${order[@]}"; do
        st=$OUT/run-$run-$i
        cp -a "$OUT/made-$i" "$st"
        sync
        prefault
        stat=$(cd "$st" && perf stat -e task-clock "${BINS[$i]}" add "$FT" --name finetune --base base 2>&1 >/dev/null) || {
            printf '%s: add failed:\n%s\n' "${BINS[$i]}" "$stat" >&2
            exit 1
        }
        perf_ms "$i" "$stat"
        add "bytes.$i" $(($(du -sb "$st/.sparse/cas" | cut -f1) - $(du -sb "$OUT/made-$i/.sparse/cas" | cut -f1)))
        sync
        evict "$st"
    done
done

for i in "${!BINS[@]}"; do
    echo "${BINS[$i]}: CPU $(median "cpu.$i") ms, wall $(median "wall.$i") ms ($(range "wall.$i")), FT's blobs $(median "bytes.$i") bytes"
done
