#!/usr/bin/env bash
# Checkout time along a chain of fine-tunes: v0 a generated base, v1 a fine-tune of v0, ...,
# vN a fine-tune of v(N-1), each added with --base of the one before. Times the checkout of
# every version (median of RUNS) with the known copies of the sources in place (the parent's
# bytes are read from its source file), then with them removed, so that every version is
# decoded through its whole chain from blobs.
#
#   benches/chain.sh                          # DEPTH=8 SIZE_GB=0.25 DTYPE=bf16 RUNS=5
#   benches/chain.sh FILE0 FILE1 ... FILEN    # a real chain: FILE0 the base, FILEk a later
#                                             # checkpoint of FILE(k-1) (DEPTH is N)
#
# Prints a Markdown table: depth, what each version adds to the store (bytes, and over its raw
# size) in the chain and, for comparison, added straight on v0 (a star), then median seconds
# (min–max) of its checkout and the ratio to depth 1.
set -euo pipefail

DEPTH=${DEPTH:-8}
SIZE_GB=${SIZE_GB:-0.25}
DTYPE=${DTYPE:-bf16}
NOISE=${NOISE:-1e-2}
RUNS=${RUNS:-5}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
(cd "$ROOT" && cargo build --release --quiet --bin sparse --example gen_model)
WORK=$(mktemp -d /tmp/sparse-chain.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
SPARSE=$WORK/sparse
cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/sparse" "$SPARSE"
GEN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/gen_model
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

if (($#)); then
    DEPTH=$(($# - 1))
    v=0
    for f in "$@"; do
        mkdir "$WORK/v$v"
        cp "$f" "$WORK/v$v/model.safetensors"
        v=$((v + 1))
    done
else
    echo "generating v0..v$DEPTH ($SIZE_GB GB $DTYPE each) in $WORK" >&2
    "$GEN" --out "$WORK/v0" --size-gb "$SIZE_GB" --dtype "$DTYPE" --seed 1 >/dev/null
    for v in $(seq 1 "$DEPTH"); do
        "$GEN" --out "$WORK/v$v" --seed $((v + 1)) --noise "$NOISE" --finetune-of "$WORK/v$((v - 1))" >/dev/null
    done
fi
# store KIND DIR: v0..vDEPTH added to a new store DIR, each on the one before (chain) or on v0
# (star); records what each adds under KIND.v.
store() {
    "$SPARSE" init "$2" >/dev/null
    local v b0 b1
    for v in $(seq 0 "$DEPTH"); do
        b0=$(store_bytes "$2")
        if ((v == 0)); then
            "$SPARSE" -C "$2" add "$WORK/v0" --name v0 >/dev/null
        elif [[ $1 == chain ]]; then
            "$SPARSE" -C "$2" add "$WORK/v$v" --name "v$v" --base "v$((v - 1))" --max-depth "$DEPTH" >/dev/null
        else
            "$SPARSE" -C "$2" add "$WORK/v$v" --name "v$v" --base v0 >/dev/null
        fi
        "$SPARSE" -C "$2" commit -m "v$v" >/dev/null
        b1=$(store_bytes "$2")
        add "$1.$v" $((b1 - b0))
    done
}
S=$WORK/store
store chain "$S"
store star "$WORK/star"
rm -rf "$WORK/star"
"$SPARSE" -C "$S" family >&2

# Copies first: the blobs runs delete the records, which the adds made from the sources.
for mode in copies blobs; do
    for v in $(seq 0 "$DEPTH"); do
        for _ in $(seq "$RUNS"); do
            [[ $mode == blobs ]] && rm -rf "$S/.sparse/sparse/copies"
            rm -rf "$WORK/out"
            timed "$mode.$v" "$SPARSE" -C "$S" checkout "v$v" -o "$WORK/out"
        done
        want=$(cd "$WORK/v$v" && find . -type f | sort | xargs sha256sum | sha256sum)
        got=$(cd "$WORK/out" && find . -type f | sort | xargs sha256sum | sha256sum)
        [[ $want == "$got" ]] || { echo "v$v: checkout differs from its source" >&2; exit 1; }
    done
done

echo "| depth | stored in the chain, bytes (of raw) | on v0, bytes (of raw) | checkout from blobs, s | × depth 1 | with known copies, s | × depth 1 |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
b1=$(median blobs.1)
c1=$(median copies.1)
for v in $(seq 0 "$DEPTH"); do
    b=$(median "blobs.$v")
    c=$(median "copies.$v")
    raw=$(du -sb "$WORK/v$v" | cut -f1)
    printf "| %d | %s (%.3f) | %s (%.3f) | %s (%s) | %.2f | %s (%s) | %.2f |\n" "$v" \
        "$(median "chain.$v")" "$(awk -v a="$(median "chain.$v")" -v b="$raw" 'BEGIN {print a / b}')" \
        "$(median "star.$v")" "$(awk -v a="$(median "star.$v")" -v b="$raw" 'BEGIN {print a / b}')" \
        "$b" "$(range "blobs.$v")" "$(awk -v a="$b" -v b="$b1" 'BEGIN {print a / b}')" \
        "$c" "$(range "copies.$v")" "$(awk -v a="$c" -v b="$c1" 'BEGIN {print a / b}')"
done
