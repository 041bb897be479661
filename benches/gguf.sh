#!/usr/bin/env bash
# GGUF files (llama.cpp's format) of the real pair, side by side with what a user would reach
# for: the base and the fine-tune of scripts/fetch-testdata.sh written as GGUF by
# examples/to_gguf.rs in F32, BF16, Q8_0, Q4_0 and Q4_K (for Q4_K each matrix in rows of one
# 256-element block, as MiniLM's rows of 384 are not whole blocks), each under its own
# `general.name`, so that the fine-tune's tensors lie at other offsets than the base's.
#
#   benches/gguf.sh                   # RUNS=5; TYPES="F32 BF16 Q8_0 Q4_0 Q4_K"
#
# Per type, the fine-tune's stored bytes over its raw bytes, and seconds (medians of RUNS, page
# cache warm):
#   sparse          add FT --base base + commit (the base added and committed first, not timed);
#                   checkout of the fine-tune
#   sparse, plain   the same build with the files named model.bin: a file whose format sparse
#                   does not read (how a GGUF file was stored before sparse read GGUF headers)
#   zstd -19        the fine-tune alone, and --long --patch-from the base (one run: deterministic
#                   sizes, and -19 takes tens of seconds)
#   xdelta3 -9      against the base (one run)
#   cp              of the fine-tune
# Every checkout and every delta tool's output is compared with its source.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
TYPES=${TYPES:-F32 BF16 Q8_0 Q4_0 Q4_K}
for tool in zstd xdelta3; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install zstd xdelta3)" >&2; exit 1; }
done
DATA=$(scripts/fetch-testdata.sh | tail -n 1)
cargo build --release --quiet --bin sparse --example to_gguf
TARGET=${CARGO_TARGET_DIR:-target}/release
SPARSE=$(realpath "$TARGET/sparse")
TO_GGUF=$(realpath "$TARGET/examples/to_gguf")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# shellcheck source=benches/lib.sh
source benches/lib.sh

# Adds base and fine-tune (as NAME) into a fresh store STORE; the fine-tune's add is timed as KEY.
store_pair() {
    local key=$1 store=$2 name=$3 base=$4 ft=$5
    rm -rf "$store"
    mkdir -p "$store/in"
    (cd "$store" && "$SPARSE" init >/dev/null)
    cp "$base" "$store/in/$name"
    (cd "$store" && "$SPARSE" add "in/$name" --name base >/dev/null && "$SPARSE" commit -m base >/dev/null)
    cp "$ft" "$store/in/$name"
    local before
    before=$(store_bytes "$store")
    timed "$key.add" bash -c "cd '$store' && '$SPARSE' add 'in/$name' --name ft --base base && '$SPARSE' commit -m ft"
    add "$key.size" $(($(store_bytes "$store") - before))
}

for ty in $TYPES; do
    base=$WORK/base-$ty.gguf
    ft=$WORK/ft-$ty.gguf
    "$TO_GGUF" "$DATA/base.safetensors" "$base" "$ty" "all-MiniLM-L6-v2" 2>/dev/null
    "$TO_GGUF" "$DATA/finetune.safetensors" "$ft" "$ty" "all-MiniLM-L6-v2 fine-tuned for SRE embeddings" 2>/dev/null
    WARM_MB=$(warm_mb "$ft")
    for _ in $(seq "$RUNS"); do
        store_pair "$ty.gguf" "$WORK/store" model.gguf "$base" "$ft"
        rm -rf "$WORK/out"
        timed "$ty.checkout" bash -c "cd '$WORK/store' && '$SPARSE' checkout ft -o '$WORK/out'"
        cmp -s "$WORK/out/model.gguf" "$ft" || { echo "sparse checkout of the $ty fine-tune differs" >&2; exit 1; }
        store_pair "$ty.plain" "$WORK/plain" model.bin "$base" "$ft"
        rm -f "$WORK/copy"
        timed "$ty.cp" cp "$ft" "$WORK/copy"
    done
    timed "$ty.zstd" zstd -19 -T0 -q -f "$ft" -o "$WORK/alone.zst"
    add "$ty.zstd.size" "$(stat -c %s "$WORK/alone.zst")"
    timed "$ty.patch" zstd -19 -T0 -q -f --long=27 --patch-from="$base" "$ft" -o "$WORK/patch.zst"
    add "$ty.patch.size" "$(stat -c %s "$WORK/patch.zst")"
    zstd -d -q -f --long=27 --patch-from="$base" "$WORK/patch.zst" -o "$WORK/back"
    cmp -s "$WORK/back" "$ft" || { echo "zstd --patch-from did not give back the $ty fine-tune" >&2; exit 1; }
    timed "$ty.xdelta" xdelta3 -9 -S djw -f -e -s "$base" "$ft" "$WORK/patch.xd"
    add "$ty.xdelta.size" "$(stat -c %s "$WORK/patch.xd")"
    xdelta3 -d -f -s "$base" "$WORK/patch.xd" "$WORK/back"
    cmp -s "$WORK/back" "$ft" || { echo "xdelta3 did not give back the $ty fine-tune" >&2; exit 1; }
    echo "$ty ${ft##*/}: $(stat -c %s "$ft") bytes (base $(stat -c %s "$base"))" >>"$WORK/sizes"
done

echo "The real pair as GGUF; $RUNS runs, medians (s); $(nproc) cores; sparse $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
cat "$WORK/sizes"
echo
echo "| type | sparse | sparse, as a plain file | zstd -19 alone | zstd -19 --patch-from | xdelta3 -9 |"
echo "|---|---:|---:|---:|---:|---:|"
for ty in $TYPES; do
    raw=$(stat -c %s "$WORK/ft-$ty.gguf")
    r() { awk -v b="$(median "$1")" -v r="$raw" 'BEGIN {printf "%.3f", b / r}'; }
    echo "| $ty | $(r "$ty.gguf.size") | $(r "$ty.plain.size") | $(r "$ty.zstd.size") | $(r "$ty.patch.size") | $(r "$ty.xdelta.size") |"
done
echo
echo "| type | sparse add + commit | sparse checkout | sparse (plain) add + commit | zstd -19 | zstd --patch-from | xdelta3 | cp |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for ty in $TYPES; do
    echo "| $ty | $(median "$ty.gguf.add") | $(median "$ty.checkout") | $(median "$ty.plain.add") | $(median "$ty.zstd") | $(median "$ty.patch") | $(median "$ty.xdelta") | $(median "$ty.cp") |"
done
