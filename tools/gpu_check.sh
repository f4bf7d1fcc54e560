#!/usr/bin/env bash
# GPU figures for the capacity issue (18), prepared to run once on a lent H100/H200 (the
# project's `device` machine: Python 3.12 with torch+CUDA, CPU-only onnxruntime, no network).
#
#   bash tools/gpu_check.sh wheels   # HERE, with network: the missing packages as cp312 wheels
#                                    # in .whl/ (ignored by git; carried to the device, ~50 MB)
#   bash tools/gpu_check.sh run      # THERE, from the repo root, .whl carried; results in $OUT
#
# What `run` measures (every figure JSON, one file each under $OUT):
#   1. nvidia-smi: the GPU, its driver, memory before anything runs (gpu.txt);
#   2. the renderer on the GPU through torch (`--backend torch` picks CUDA when torch sees a GPU;
#      onnxruntime-gpu is ~300 MB and cannot travel), at 256 and 512, batch 1…128
#      (renderer_sweep.jsonl: ms per frame and frames/s per batch);
#   3. `facecast bench capacity --backend torch` at 512 over a list of session counts, with GPU
#      memory sampled every second meanwhile (capacity_512.json, gpu_memory.csv): sessions at
#      25 fps, per-stage ms, CPU %, GPU memory per session.
# Each step has its own time limit so the whole run stays under the device's 10-minute command
# limit; a step that fails is reported and the next one still runs.
set -uo pipefail

mode="${1:-run}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# Packages the device image lacks (it has torch, numpy, scipy, opencv-python-headless,
# onnxruntime, prometheus-client, cffi), pinned as in requirements.lock.
wheels=(av==17.1.0 aiortc==1.16.0 aioice==0.13.0 pylibsrtp==1.0.0 pyee==13.0.1
        google-crc32c==1.9.0 cryptography==50.0.2 pyOpenSSL==26.4.0 dnspython==2.9.2
        ifaddr==0.2.0 praat-parselmouth==0.4.7 websockets==17.4 PyJWT==2.15.1)

case "$mode" in
  wheels)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    mkdir -p .whl
    for w in "${wheels[@]}"; do
      python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .whl "$w" || echo "no cp312 wheel for $w" >&2
    done
    du -sh .whl
    exit 0 ;;
  run) ;;
  *) echo "usage: $0 wheels|run" >&2; exit 2 ;;
esac

out="${OUT:-$root/out/gpu}"
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || echo "wheel install failed" >&2
  export PYTHONPATH="/tmp/site:$root"
else
  export PYTHONPATH="$root"
fi
export PYTHONUNBUFFERED=1

nvidia-smi > "$out/gpu.txt" 2>&1
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' \
  >> "$out/gpu.txt" 2>&1

# 2. renderer sweep (about 2 s a point)
for size in 256 512; do
  for batch in 1 2 4 8 16 32 64 128; do
    timeout 60 python3 -m runtime.cli bench renderer --backend torch --size "$size" \
      --batch "$batch" --seconds 2 --json >> "$out/renderer_sweep.jsonl" \
      2>> "$out/errors.txt" || echo "renderer $size/$batch failed" >> "$out/errors.txt"
  done
done

# 3. capacity at 512 with GPU memory sampled meanwhile
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -l 1 \
  > "$out/gpu_memory.csv" 2>/dev/null &
sampler=$!
timeout 420 python3 -m runtime.cli bench capacity --backend torch --size 512 \
  --sessions 1,8,16,32,48,64 --seconds 5 --no-save --json > "$out/capacity_512.json" \
  2>> "$out/errors.txt" || echo "capacity failed or timed out" >> "$out/errors.txt"
kill "$sampler" 2>/dev/null
ls -la "$out"
