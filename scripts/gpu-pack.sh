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
cargo build --release --locked --features cuda --bin sparse --example gen_model --example gpu_bench >&2
test_bin=$(cargo test --release --locked --features cuda --test gpu --no-run --message-format=json 2>/dev/null |
  python3 -c 'import sys, json
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gpu" and m.get("executable"):
        print(m["executable"])')
[ -x "$test_bin" ] || { echo "gpu-pack: no test binary for tests/gpu.rs" >&2; exit 1; }
rm -rf .gpu && mkdir -p .gpu/bin
cp target/release/sparse target/release/examples/gen_model target/release/examples/gpu_bench .gpu/bin/
cp "$test_bin" .gpu/bin/gpu-tests
strip .gpu/bin/*
# The test binary runs `sparse` by the path it was built with (CARGO_BIN_EXE_sparse).
realpath target/release/sparse > .gpu/bin/sparse-path
tar -C .gpu -cJf .gpu/bin.tar.xz bin
rm -rf .gpu/bin
size=$(stat -c %s .gpu/bin.tar.xz)
[ "$size" -le "$LIMIT" ] || { echo "gpu-pack: .gpu/bin.tar.xz is $size bytes, over $LIMIT" >&2; exit 1; }
echo "gpu-pack: .gpu/bin.tar.xz, $((size / 1024 / 1024)) MiB, at $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')" >&2
