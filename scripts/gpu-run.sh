#!/usr/bin/env bash
# Runs the GPU checks packed by scripts/gpu-pack.sh, on a machine with an NVIDIA GPU and its
# driver, without cargo or network (docs/PERFORMANCE.md, "GPU checkout").
#
#   scripts/gpu-run.sh [test|bench|all] [SIZE_GB]     (default: all, 13.5)
#
# test: tests/gpu.rs (every transform, width and context against the host decoder, device
#       hashes, checkouts and swaps byte-identical to the CPU).
# bench: benches/gpu.sh SIZE_GB with RUNS (default 3).
# Logs go to OUT (default .gpu/out): gpu-tests.log, gpu-bench.log, machine.txt.
# NVRTC is the machine's own (CUDA 13), found under /usr/local/cuda*; NVRTC_DIR overrides.
set -uo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-all}
SIZE=${2:-13.5}
OUT=${OUT:-.gpu/out}
mkdir -p "$OUT" .gpu/unpacked
python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
  .gpu/bin.tar.xz .gpu/unpacked || { echo "gpu-run: cannot unpack .gpu/bin.tar.xz" >&2; exit 1; }
BIN=$(realpath .gpu/unpacked/bin)

nvrtc=${NVRTC_DIR:-}
if [[ -z $nvrtc ]]; then
  # The build loads libnvrtc.so.13 (CUDA 13); a machine may hold other CUDA versions too.
  found=$(ls /usr/local/cuda*/targets/x86_64-linux/lib/libnvrtc.so.13* /usr/local/cuda*/lib64/libnvrtc.so.13* 2>/dev/null | head -1)
  [[ -n $found ]] && nvrtc=$(dirname "$found")
fi
[[ -n $nvrtc ]] && export LD_LIBRARY_PATH=$nvrtc${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  nproc
  free -g | head -2
  echo "NVRTC from ${nvrtc:-the library path (none found under /usr/local/cuda*)}"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

rc=0
if [[ $WHAT == test || $WHAT == all ]]; then
  # The test binary runs `sparse` from the path it was built at.
  want=$(cat "$BIN/sparse-path")
  mkdir -p "$(dirname "$want")" && cp "$BIN/sparse" "$want"
  echo "== tests/gpu.rs" | tee "$OUT/gpu-tests.log"
  # A missing device or NVRTC fails the tests here instead of skipping them.
  SPARSE_REQUIRE_GPU=1 "$BIN/gpu-tests" 2>&1 | tee -a "$OUT/gpu-tests.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
fi
if [[ $WHAT == bench || $WHAT == all ]]; then
  echo "== benches/gpu.sh $SIZE" | tee "$OUT/gpu-bench.log"
  BIN=$BIN RUNS=${RUNS:-3} benches/gpu.sh "$SIZE" 2>&1 | tee -a "$OUT/gpu-bench.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
fi
exit $rc
