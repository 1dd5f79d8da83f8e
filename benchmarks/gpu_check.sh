#!/usr/bin/env bash
# Every CUDA path of clipdepth at full size with random weights, in one run of under 8 minutes on
# one H100; prints key=value figures (benchmarks/README.md, "gpu_check.sh"). From the repository root
# of a plain checkout:
#   bash benchmarks/gpu_check.sh
# Python: $PYTHON if set, else .venv/bin/python, else python3. Where it already imports torch and
# transformers, the checkout's src/ is used as it is; otherwise `pip install -e .` fills a virtual
# environment in $GPU_CHECK_VENV (default ~/.cache/clipdepth-gpu-check; torch's Linux wheels on
# PyPI come with CUDA), outside the checkout.
# Without an NVIDIA GPU it refuses in one line (exit status 2).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi finds none); run it on a machine with one" >&2
    exit 2
fi

python=${PYTHON:-}
if [ -z "$python" ]; then
    if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
if "$python" -c "import torch, transformers" >/dev/null 2>&1; then
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
else
    venv=${GPU_CHECK_VENV:-$HOME/.cache/clipdepth-gpu-check}
    echo "gpu_check: installing clipdepth into $venv (pip install -e .)" >&2
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet -e .
    python=$venv/bin/python
fi

exec timeout 480 "$python" benchmarks/gpu_check.py "$@"
