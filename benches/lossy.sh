#!/usr/bin/env bash
# Size against quality of the lossy tiers on the real MiniLM pair (docs/PERFORMANCE.md, "Lossy tiers").
#   benches/lossy.sh            (needs the test data: scripts/fetch-testdata.sh)
# For each tier: what the fine-tune adds to the store (over its raw size), and how far its
# checkout is from the real fine-tune (`sparse validate`): the relative Frobenius error over
# all float tensors, and that error over the base's (how much of the fine-tune's change is lost).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${SPARSE_TESTDATA:-$(scripts/fetch-testdata.sh | tail -n 1)}
cargo build --release --locked --quiet
S=$PWD/target/release/sparse
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
"$S" init >/dev/null
"$S" add "$DATA/base.safetensors" --name base >/dev/null
"$S" commit -m base >/dev/null
frob() { "$S" --json validate "$1" --against "$DATA/finetune.safetensors" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rel_frobenius"])'; }
whole=$(frob base)
echo "| tier | stored / raw | rel. Frobenius error | share of the fine-tune's change lost | add (s) |"
echo "|---|---|---|---|---|"
for tier in none int8 "lowrank 4" "lowrank 8" "lowrank 16" "lowrank 32" "lowrank 64"; do
  set -- $tier
  name=t$RANDOM
  args=()
  case $1 in
    none) ;;
    int8) args=(--lossy int8) ;;
    lowrank) args=(--lossy lowrank --rank "$2") ;;
  esac
  start=$(date +%s%N)
  ratio=$("$S" --json add "$DATA/finetune.safetensors" --name "$name" --base base "${args[@]}" |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print("%.4f" % (s["stored_bytes"]/s["raw_bytes"]))')
  secs=$(( ($(date +%s%N) - start) / 1000000 ))
  "$S" commit -m "$tier" >/dev/null
  err=$(frob "$name")
  python3 -c "print('| $tier | $ratio | %.3e | %.3f | %.2f |' % ($err, $err / $whole, $secs / 1000))"
done
echo
echo "base against the fine-tune: relative Frobenius error $whole"
