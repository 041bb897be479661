#!/usr/bin/env bash
# Fetch NVRTC (the CUDA runtime compiler library) from its pinned, sha256-checked PyPI wheel, so
# that the GPU kernels can be compiled on a machine without CUDA or a GPU (tests/gpu.rs).
#   usage: scripts/fetch-nvrtc.sh [OUTDIR]   (default ~/.cache/sparse-nvrtc)
# Prints the directory holding libnvrtc.so.13 on its last line. Nothing is installed.
set -euo pipefail
OUT=${1:-$HOME/.cache/sparse-nvrtc}
SPEC=nvidia-cuda-nvrtc==13.0.88
SUM=ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575
if [[ ! -f "$OUT/lib/.ok" ]]; then
  mkdir -p "$OUT/wheel"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --disable-pip-version-check -d "$OUT/wheel" "$SPEC" >&2
  whl=$(ls "$OUT"/wheel/*.whl | head -1)
  echo "$SUM  $whl" | sha256sum -c --quiet - || { echo "fetch-nvrtc: sha256 mismatch for $SPEC" >&2; exit 1; }
  rm -rf "$OUT/lib" && mkdir -p "$OUT/lib"
  python3 - "$whl" "$OUT/lib" <<'PY'
import sys, zipfile, os
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("nvidia/cu13/lib/libnvrtc") and ".alt." not in base:
            with z.open(name) as src, open(os.path.join(out, base), "wb") as dst:
                dst.write(src.read())
PY
  rm -rf "$OUT/wheel"
  touch "$OUT/lib/.ok"
fi
echo "$OUT/lib"
