#!/usr/bin/env bash
# The GPU smoke test: every CUDA path in a few minutes, one report (scripts/gpu_smoke.py, docs/gpu.md).
#   DEV=cuda OUT=/tmp/smoke bash scripts/gpu_smoke.sh      # on the lent GPU (from a checkout: PYTHONPATH=.)
#   DEV=cpu  OUT=/tmp/smoke bash scripts/gpu_smoke.sh      # the CPU variant that CI runs
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" scripts/gpu_smoke.py --device "${DEV:-cuda}" --out "${OUT:-runs/gpu_smoke}" "$@"
