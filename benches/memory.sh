#!/usr/bin/env bash
# Peak memory (RSS) and wall time of sparse on a generated model of at least SIZE_GB GB.
#
#   benches/memory.sh                      # 2 GB bf16 base + fine-tune (the docs/PERFORMANCE.md table)
#   SIZE_GB=0.2 DTYPE=f32 benches/memory.sh
#
# Generates a Llama-shaped base and a fine-tune of it with examples/gen_model.rs in a scratch
# directory under /tmp (removed at the end unless KEEP=1), then runs under GNU time -v:
# add base, commit, add fine-tune --base, commit, checkout of the fine-tune, fsck. The checkout
# is compared (sha256) with the input. Prints a Markdown table.
#
# Needs GNU time at /usr/bin/time (the shell's `time` keyword cannot report peak RSS).
# On Debian/Ubuntu: apt-get install -y time
set -euo pipefail

SIZE_GB=${SIZE_GB:-2}
DTYPE=${DTYPE:-bf16}
SEED=${SEED:-1}
# Relative noise of the fine-tune's perturbed elements (gen_model --noise).
NOISE=${NOISE:-1e-3}
# Peak RSS the add and checkout steps should stay under.
TARGET_MB=${TARGET_MB:-300}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ ! -x /usr/bin/time ]]; then
    echo "GNU time is missing: apt-get install -y time" >&2
    exit 1
fi

(cd "$ROOT" && cargo build --release --quiet --bin sparse --example gen_model)
SPARSE=${CARGO_TARGET_DIR:-$ROOT/target}/release/sparse
GEN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/gen_model

WORK=$(mktemp -d /tmp/sparse-memory.XXXXXX)
cleanup() {
    if [[ ${KEEP:-0} == 1 ]]; then
        echo "kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

echo "generating ${SIZE_GB} GB $DTYPE base and fine-tune in $WORK" >&2
"$GEN" --out "$WORK/base" --size-gb "$SIZE_GB" --dtype "$DTYPE" --seed "$SEED"
"$GEN" --out "$WORK/finetune" --seed $((SEED + 1)) --noise "$NOISE" --finetune-of "$WORK/base"
model_bytes=$(stat -c %s "$WORK/base/model.safetensors")

mkdir "$WORK/store"
(cd "$WORK/store" && "$SPARSE" init >/dev/null)

rows=()
fail=0
# measure LABEL CHECK_TARGET COMMAND...: runs COMMAND under GNU time, appends a table row.
measure() {
    local label=$1 check=$2
    shift 2
    local log=$WORK/time.log
    # Dirty pages left by earlier steps (the generator writes 4 GB) are flushed first, so that
    # their writeback is not charged to this step.
    sync
    if ! /usr/bin/time -v -o "$log" "$@" >"$WORK/stdout.log" 2>"$WORK/stderr.log"; then
        echo "FAILED: $*" >&2
        cat "$WORK/stderr.log" >&2
        exit 1
    fi
    local rss_kb wall user sys
    rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
    # "Elapsed (wall clock) time (h:mm:ss or m:ss): 0:12.34"
    wall=$(awk '/Elapsed \(wall clock\)/ {print $NF}' "$log" |
        awk -F: '{s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; printf "%.2f", s}')
    user=$(awk -F': ' '/User time/ {print $2}' "$log")
    sys=$(awk -F': ' '/System time/ {print $2}' "$log")
    local faults
    faults=$(awk -F': ' '/Minor \(reclaiming a frame\) page faults/ {print $2}' "$log")
    local store
    store=$(du -sb "$WORK/store/.sparse" | cut -f1)
    local rss_mb verdict=""
    rss_mb=$(awk -v k="$rss_kb" 'BEGIN {printf "%.1f", k / 1024}')
    if [[ $check == yes ]]; then
        if ((rss_kb < TARGET_MB * 1024)); then verdict="under ${TARGET_MB} MB"; else
            verdict="**over ${TARGET_MB} MB**"
            fail=1
        fi
    fi
    rows+=("| $label | $wall | $user | $sys | $rss_mb | $faults | $store | $verdict |")
    echo "$label: wall ${wall}s, peak RSS ${rss_mb} MiB" >&2
}

load0=$(cut -d' ' -f1-3 /proc/loadavg)
S=("$SPARSE" -C "$WORK/store")
measure "add base" yes "${S[@]}" add "$WORK/base" --name base
measure "commit base" no "${S[@]}" commit -m base
measure "add fine-tune --base base" yes "${S[@]}" add "$WORK/finetune" --name finetune --base base
measure "commit fine-tune" no "${S[@]}" commit -m finetune
measure "checkout fine-tune" yes "${S[@]}" checkout finetune -o "$WORK/out"
measure "fsck" no "${S[@]}" fsck
# The same bytes written by cp, in the same state of the page cache, for comparison.
measure "cp of the fine-tune file (reference)" no cp "$WORK/finetune/model.safetensors" "$WORK/cp.safetensors"

match=yes
for f in model.safetensors config.json; do
    a=$(sha256sum <"$WORK/finetune/$f" | cut -d' ' -f1)
    b=$(sha256sum <"$WORK/out/$f" | cut -d' ' -f1)
    echo "sha256 $f: input $a, checkout $b" >&2
    [[ $a == "$b" ]] || match=no
done

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | head -1)
echo
echo "Model: $(stat -c %s "$WORK/base/model.safetensors") + $(stat -c %s "$WORK/finetune/model.safetensors") bytes" \
    "($DTYPE, generated: gen_model --size-gb $SIZE_GB --dtype $DTYPE --seed $SEED; fine-tune --seed $((SEED + 1)) --noise $NOISE)."
echo "sparse $commit${dirty:+ (src has uncommitted changes)}; $(nproc) CPUs; $(lscpu | sed -n 's/^Model name: *//p');" \
    "$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM."
echo "Load average (1, 5, 15 min) before the sparse steps: $load0; after: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| step | wall s | user s | sys s | peak RSS MiB | minor page faults | store after, bytes | target |"
echo "|---|---:|---:|---:|---:|---:|---:|---|"
printf '%s\n' "${rows[@]}"
echo
echo "Checkout sha256 equals the input: $match. Model file: $model_bytes bytes."
if [[ $match != yes || $fail != 0 ]]; then
    exit 1
fi
