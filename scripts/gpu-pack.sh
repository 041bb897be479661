#!/usr/bin/env bash
# Packs the GPU checks (issue 8) for a GPU machine that has no cargo and no network: the
# `sparse` binary, the `gen_model` and `gpu_bench` examples and the `tests/gpu.rs` test binary,
# all built here with `--features cuda`, stripped, in one xz tarball small enough to carry.
#
#   scripts/gpu-pack.sh            -> .gpu/bin.tar.xz (ignored by git)
#
# Then, on the GPU machine, from the repository root (with .gpu carried over):
#   scripts/gpu-run.sh [test|bench|all] [SIZE_GB]
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=$((60 * 1024 * 1024))
# The executables cargo built, by target name (wherever CARGO_TARGET_DIR puts them).
executables() {
  python3 -c 'import sys, json
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])'
}
built=$(cargo build --release --locked --features cuda --bin sparse --example gen_model --example gpu_bench \
  --message-format=json | executables)
built+=$'\n'$(cargo test --release --locked --features cuda --test gpu --no-run --message-format=json | executables)
path_of() { awk -v n="$1" '$1 == n { print $2 }' <<<"$built" | tail -1; }
rm -rf .gpu && mkdir -p .gpu/bin
for name in sparse gen_model gpu_bench gpu; do
  exe=$(path_of "$name")
  [ -x "$exe" ] || { echo "gpu-pack: cargo built no $name" >&2; exit 1; }
  cp "$exe" ".gpu/bin/$([ "$name" = gpu ] && echo gpu-tests || echo "$name")"
done
strip .gpu/bin/*
# The test binary runs `sparse` by the path it was built with (CARGO_BIN_EXE_sparse).
path_of sparse > .gpu/bin/sparse-path
tar -C .gpu -cJf .gpu/bin.tar.xz bin
rm -rf .gpu/bin
size=$(stat -c %s .gpu/bin.tar.xz)
[ "$size" -le "$LIMIT" ] || { echo "gpu-pack: .gpu/bin.tar.xz is $size bytes, over $LIMIT" >&2; exit 1; }
echo "gpu-pack: .gpu/bin.tar.xz, $((size / 1024 / 1024)) MiB, at $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')" >&2
