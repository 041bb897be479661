#!/usr/bin/env bash
# A generated CSV table of ROWS rows (default 10 million) and its next version (every 100th
# row fixed, every 1000th removed, 1% appended): sparse add of both (the second with --base),
# checkout of the second, with peak RSS (GNU time), rows per second and stored bytes, beside
# whole-file storage (git-lfs, the Hub) and zstd -19 of the second file (ZSTD19=0 skips it).
#
#   benches/dataset.sh                 # ROWS=10000000
#
# Needs GNU time at /usr/bin/time and the zstd CLI.
set -euo pipefail

ROWS=${ROWS:-10000000}
ZSTD19=${ZSTD19:-1}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
(cd "$ROOT" && cargo build --release --quiet --bin sparse --example gen_table)
WORK=$(mktemp -d /tmp/sparse-dataset.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
SPARSE=$WORK/sparse
cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/sparse" "$SPARSE"
GEN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/gen_table

mkdir -p "$WORK/v1" "$WORK/v2"
"$GEN" --out "$WORK/v1/table.csv" --rows "$ROWS"
"$GEN" --out "$WORK/v2/table.csv" --rows "$ROWS" --next
raw1=$(stat -c %s "$WORK/v1/table.csv")
raw2=$(stat -c %s "$WORK/v2/table.csv")
rows2=$((ROWS - ROWS / 1000 + ROWS / 100))

S=$WORK/store
"$SPARSE" init "$S" >/dev/null
measure() { # LABEL COMMAND...: prints "label wall_s peak_rss_mib"
    local label=$1
    shift
    sync
    /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >/dev/null
    read -r wall kb <"$WORK/time"
    echo "$label $wall $((kb / 1024))"
}
before=$(du -sb "$S/.sparse" | cut -f1)
m1=$(measure add1 "$SPARSE" -C "$S" add "$WORK/v1" --name table)
"$SPARSE" -C "$S" commit -m v1 >/dev/null
mid=$(du -sb "$S/.sparse" | cut -f1)
# The first version's file is removed: the second is compared with the store's copy of it.
rm -rf "$WORK/v1"
m2=$(measure add2 "$SPARSE" -C "$S" add "$WORK/v2" --name table --base table)
"$SPARSE" -C "$S" commit -m v2 >/dev/null
after=$(du -sb "$S/.sparse" | cut -f1)
m3=$(measure checkout "$SPARSE" -C "$S" checkout table -o "$WORK/out")
cmp -s "$WORK/out/table.csv" "$WORK/v2/table.csv" || { echo "checkout differs" >&2; exit 1; }
rm -rf "$WORK/out"

z19="skipped (ZSTD19=0)"
if [[ $ZSTD19 == 1 ]]; then
    t0=$(date +%s.%N)
    zstd -q -19 -T0 "$WORK/v2/table.csv" -o "$WORK/v2.zst"
    t1=$(date +%s.%N)
    z19="$(stat -c %s "$WORK/v2.zst") bytes ($(awk -v a="$(stat -c %s "$WORK/v2.zst")" -v b="$raw2" 'BEGIN {printf "%.3f", a / b}') of raw), $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s"
fi

echo "Rows: $ROWS in v1 ($raw1 bytes), $rows2 in v2 ($raw2 bytes). Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)."
echo
echo "| step | wall s | peak RSS MiB | rows/s | store growth, bytes | of raw |"
echo "|---|---:|---:|---:|---:|---:|"
read -r _ w r <<<"$m1"
echo "| add v1 | $w | $r | $(awk -v n="$ROWS" -v t="$w" 'BEGIN {printf "%.0f", n / t}') | $((mid - before)) | $(awk -v a=$((mid - before)) -v b="$raw1" 'BEGIN {printf "%.3f", a / b}') |"
read -r _ w r <<<"$m2"
echo "| add v2 --base table | $w | $r | $(awk -v n="$rows2" -v t="$w" 'BEGIN {printf "%.0f", n / t}') | $((after - mid)) | $(awk -v a=$((after - mid)) -v b="$raw2" 'BEGIN {printf "%.4f", a / b}') |"
read -r _ w r <<<"$m3"
echo "| checkout v2 | $w | $r | $(awk -v n="$rows2" -v t="$w" 'BEGIN {printf "%.0f", n / t}') | — | — |"
echo
echo "v2 stored whole (git-lfs, the Hub): $raw2 bytes (1.000). zstd -19 -T0 of v2: $z19."
