#!/usr/bin/env bash
# Plain files (no format sparse parses) of a real family, side by side with the delta tools a user
# would reach for: the four real Tesseract fine-tunes of scripts/fetch-testdata.sh (15.4 MB
# .traineddata files, float64 weights). The first is stored alone, each other one on it.
#
#   benches/plain.sh                  # RUNS=5; SPARSE=target/release/sparse
#
# Per model file, stored bytes over raw bytes and seconds (medians of RUNS, page cache warm):
#   sparse     add + commit alone (the first) or with --base (the others); checkout of the last
#   zstd -19   the file alone; zstd -19 --long --patch-from the first (a delta, as git-lfs or the
#              Hub have none); xdelta3 -9 -S djw against the first; bsdiff against the first
#   cp         of the file
# Every sparse checkout is compared (sha256) with its source, and so is every delta tool's output.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
SPARSE=${SPARSE:-target/release/sparse}
SPARSE=$(realpath "$SPARSE")
DATA=$(scripts/fetch-testdata.sh | tail -n 1)
for tool in zstd xdelta3 bsdiff bspatch; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install zstd xdelta3 bsdiff)" >&2; exit 1; }
done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# shellcheck source=benches/lib.sh
source benches/lib.sh
fonts=(courier dejavu libmono ocrb)
model() { echo "$DATA/tesseract-$1/glyphive_ocrmodel_$1/glyphive$1.traineddata"; }
first=$(model "${fonts[0]}")
raw=$(stat -c %s "$first")
WARM_MB=$(warm_mb "$first")

for _ in $(seq "$RUNS"); do
    rm -rf "$WORK/store"
    mkdir "$WORK/store"
    (cd "$WORK/store" && "$SPARSE" init >/dev/null)
    for i in "${!fonts[@]}"; do
        f=${fonts[$i]}
        base=()
        ((i > 0)) && base=(--base "${fonts[0]}")
        before=$(store_bytes "$WORK/store")
        timed "sparse.add.$i" bash -c "cd '$WORK/store' && '$SPARSE' add '$(dirname "$(model "$f")")' --name $f ${base[*]} && '$SPARSE' commit -m $f"
        add "sparse.size.$i" $(($(store_bytes "$WORK/store") - before))
    done
    last=${fonts[-1]}
    rm -rf "$WORK/out"
    timed sparse.checkout bash -c "cd '$WORK/store' && '$SPARSE' checkout $last -o '$WORK/out'"
    [[ $(sha256sum <"$WORK/out/glyphive$last.traineddata") == $(sha256sum <"$(model "$last")") ]] ||
        { echo "sparse checkout of $last differs from its source" >&2; exit 1; }
    for i in "${!fonts[@]}"; do
        m=$(model "${fonts[$i]}")
        timed "zstd.$i" zstd -19 -q -f "$m" -o "$WORK/alone.zst"
        add "zstd.size.$i" "$(stat -c %s "$WORK/alone.zst")"
        ((i == 0)) && continue
        timed "patch.$i" zstd -19 -q -f --long=24 --patch-from="$first" "$m" -o "$WORK/patch.zst"
        add "patch.size.$i" "$(stat -c %s "$WORK/patch.zst")"
        timed "xdelta.$i" xdelta3 -9 -S djw -f -e -s "$first" "$m" "$WORK/patch.xd"
        add "xdelta.size.$i" "$(stat -c %s "$WORK/patch.xd")"
        timed "bsdiff.$i" bsdiff "$first" "$m" "$WORK/patch.bsd"
        add "bsdiff.size.$i" "$(stat -c %s "$WORK/patch.bsd")"
        zstd -d -q -f --long=24 --patch-from="$first" "$WORK/patch.zst" -o "$WORK/back"
        cmp -s "$WORK/back" "$m" || { echo "zstd --patch-from did not give back $m" >&2; exit 1; }
        xdelta3 -d -f -s "$first" "$WORK/patch.xd" "$WORK/back"
        cmp -s "$WORK/back" "$m" || { echo "xdelta3 did not give back $m" >&2; exit 1; }
        bspatch "$first" "$WORK/back" "$WORK/patch.bsd"
        cmp -s "$WORK/back" "$m" || { echo "bspatch did not give back $m" >&2; exit 1; }
    done
    timed "patch.decode" zstd -d -q -f --long=24 --patch-from="$first" "$WORK/patch.zst" -o "$WORK/back"
    timed "xdelta.decode" xdelta3 -d -f -s "$first" "$WORK/patch.xd" "$WORK/back"
    timed "bsdiff.decode" bspatch "$first" "$WORK/back" "$WORK/patch.bsd"
    rm -f "$WORK/copy"
    timed cp cp "$(model "$last")" "$WORK/copy"
done

ratio() { awk -v b="$(median "$1")" -v r="$raw" 'BEGIN {printf "%.3f", b / r}'; }
echo "Tesseract family, $raw bytes per model file; $RUNS runs, medians (s), $(nproc) cores"
echo
echo "| model | sparse | zstd -19 alone | zstd -19 --patch-from | xdelta3 -9 | bsdiff |"
echo "|---|---:|---:|---:|---:|---:|"
for i in "${!fonts[@]}"; do
    if ((i == 0)); then
        echo "| ${fonts[$i]} (alone) | $(ratio sparse.size.$i) | $(ratio zstd.size.$i) | — | — | — |"
    else
        echo "| ${fonts[$i]} (on ${fonts[0]}) | $(ratio sparse.size.$i) | $(ratio zstd.size.$i) | $(ratio patch.size.$i) | $(ratio xdelta.size.$i) | $(ratio bsdiff.size.$i) |"
    fi
done
echo
echo "| step | sparse | zstd --patch-from | xdelta3 | bsdiff | cp |"
echo "|---|---:|---:|---:|---:|---:|"
n=$((${#fonts[@]} - 1))
echo "| store ${fonts[$n]} on ${fonts[0]} | $(median sparse.add.$n) | $(median patch.$n) | $(median xdelta.$n) | $(median bsdiff.$n) | |"
echo "| give back ${fonts[$n]} | $(median sparse.checkout) | $(median patch.decode) | $(median xdelta.decode) | $(median bsdiff.decode) | $(median cp) |"
echo "| store ${fonts[0]} alone | $(median sparse.add.0) | zstd -19: $(median zstd.0) | | | |"
