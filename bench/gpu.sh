#!/usr/bin/env bash
# The GPU benchmark (bench/gpu.py): one table of the PixelCLIP step, Ray Train's overhead, DINO masks
# and evaluation on one GPU, in under 8 minutes.
#   bash bench/gpu.sh                         on a machine with one GPU
#   bash bench/gpu.sh --device cpu --smoke    the same code at toy sizes on the CPU (make test runs it)
# Uses the project's .venv when there is one, else python3; wheels in .whl/ (packages the machine lacks,
# such as open_clip_torch and fast-pytorch-kmeans) are installed to /tmp/pixelclip-site first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/pixelclip-site .whl/*.whl
  export PYTHONPATH="/tmp/pixelclip-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
exec "$PY" bench/gpu.py "$@"
