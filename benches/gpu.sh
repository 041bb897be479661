#!/usr/bin/env bash
# GPU checkout benchmark, on a machine with an NVIDIA GPU (docs/PERFORMANCE.md, "GPU checkout").
#
#   benches/gpu.sh [SIZE_GB]        (default 13.5: a Llama-2-7B-shaped bf16 model)
#
# Generates a base and a fine-tune (examples/gen_model.rs), adds and commits both to a fresh
# store (the fine-tune also as `--lossy int8`), and runs examples/gpu_bench.rs: floors, swaps
# on a resident base, checkout to device memory, and the CPU checkout, medians of RUNS
# (default 5).
# Binaries come from BIN (default target/release), built with
#   cargo build --release --features cuda --bin sparse --example gen_model --example gpu_bench
# so that a GPU machine without cargo can run this. WORK (default /tmp/sparse-gpu-bench) holds
# the data; it needs about 4x SIZE_GB of disk.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-13.5}
RUNS=${RUNS:-5}
BIN=$(realpath "${BIN:-target/release}")
WORK=${WORK:-/tmp/sparse-gpu-bench}
examples=$BIN/examples
[ -x "$examples/gpu_bench" ] || examples=$BIN
rm -rf "$WORK" && mkdir -p "$WORK"
t() { local s; s=$(date +%s%N); "$@"; echo "  ($(( ($(date +%s%N) - s) / 1000000 )) ms: $*)" >&2; }
t "$examples/gen_model" --out "$WORK/base" --size-gb "$SIZE" --dtype bf16 --seed 1
t "$examples/gen_model" --out "$WORK/finetune" --finetune-of "$WORK/base" --seed 2
cd "$WORK"
"$BIN/sparse" init >/dev/null
t "$BIN/sparse" add base --name base
"$BIN/sparse" commit -m base >/dev/null
t "$BIN/sparse" add finetune --name finetune --base base
"$BIN/sparse" commit -m finetune >/dev/null
t "$BIN/sparse" add finetune --name int8 --base base --lossy int8
"$BIN/sparse" commit -m "finetune, int8" >/dev/null
du -sh .sparse base finetune >&2
t cp finetune/model.safetensors copy.safetensors && rm copy.safetensors
rm -rf base finetune
"$examples/gpu_bench" --store "$WORK" --base base --finetune finetune --lossy int8 --runs "$RUNS" --cpu-out "$WORK/cpu"
# The command a user runs, process start and kernel compilation included.
t "$BIN/sparse" checkout finetune --device cuda
rm -rf "$WORK"
