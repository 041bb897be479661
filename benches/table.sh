#!/usr/bin/env bash
# A generated Parquet table of ROWS rows (default 10 million) and its next version (every 100th
# row fixed, every 1000th removed, 1% appended; examples/gen_table.rs --parquet): sparse add of
# both (the second with --base), checkout of the second, with peak RSS (GNU time), rows per
# second and stored bytes beside the file's own size. The checkout is table-identical; sparse
# checks its rows' hash itself.
#
#   benches/table.sh                   # ROWS=10000000, release build
#   PROFILE=dev ROWS=2000000 benches/table.sh
#
# Needs GNU time at /usr/bin/time.
set -euo pipefail

ROWS=${ROWS:-10000000}
PROFILE=${PROFILE:-release}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case $PROFILE in
    release) (cd "$ROOT" && cargo build --release --quiet --bin sparse --example gen_table); DIR=release ;;
    dev) (cd "$ROOT" && cargo build --quiet --bin sparse --example gen_table); DIR=debug ;;
    *) echo "PROFILE is release or dev" >&2; exit 2 ;;
esac
WORK=$(mktemp -d /tmp/sparse-table.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
SPARSE=$WORK/sparse
cp "${CARGO_TARGET_DIR:-$ROOT/target}/$DIR/sparse" "$SPARSE"
GEN=${CARGO_TARGET_DIR:-$ROOT/target}/$DIR/examples/gen_table

mkdir -p "$WORK/v1" "$WORK/v2"
"$GEN" --out "$WORK/v1/table.parquet" --rows "$ROWS" --parquet
"$GEN" --out "$WORK/v2/table.parquet" --rows "$ROWS" --next --parquet
raw1=$(stat -c %s "$WORK/v1/table.parquet")
raw2=$(stat -c %s "$WORK/v2/table.parquet")
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
rm -rf "$WORK/v1"
m2=$(measure add2 "$SPARSE" -C "$S" add "$WORK/v2" --name table --base table)
"$SPARSE" -C "$S" commit -m v2 >/dev/null
after=$(du -sb "$S/.sparse" | cut -f1)
kind=$(git --git-dir "$S/.sparse" show table:table.parquet | grep -m1 '"kind"' | tr -d ' ,')
m3=$(measure checkout "$SPARSE" -C "$S" checkout table -o "$WORK/out")
out2=$(stat -c %s "$WORK/out/table.parquet")
rm -rf "$WORK/out"

echo "Rows: $ROWS in v1 ($raw1 bytes), $rows2 in v2 ($raw2 bytes); v2 stored as $kind. Build: $PROFILE. Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)."
echo
echo "| step | wall s | peak RSS MiB | rows/s | store growth, bytes | of the file |"
echo "|---|---:|---:|---:|---:|---:|"
read -r _ w r <<<"$m1"
echo "| add v1 | $w | $r | $(awk -v n="$ROWS" -v t="$w" 'BEGIN {printf "%.0f", n / t}') | $((mid - before)) | $(awk -v a=$((mid - before)) -v b="$raw1" 'BEGIN {printf "%.3f", a / b}') |"
read -r _ w r <<<"$m2"
echo "| add v2 --base table | $w | $r | $(awk -v n="$rows2" -v t="$w" 'BEGIN {printf "%.0f", n / t}') | $((after - mid)) | $(awk -v a=$((after - mid)) -v b="$raw2" 'BEGIN {printf "%.4f", a / b}') |"
read -r _ w r <<<"$m3"
echo "| checkout v2 | $w | $r | $(awk -v n="$rows2" -v t="$w" 'BEGIN {printf "%.0f", n / t}') | — | — |"
echo
echo "v2 as checked out: $out2 bytes (the source: $raw2)."
