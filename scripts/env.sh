#!/usr/bin/env bash
# Create (once) and activate the project's virtual environment in .venv.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (it only installs what is missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NC_PRUNE_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[nc_prune] creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
STAMP="$VENV/.nc_prune-installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
  echo "[nc_prune] installing torch==2.13.0 (CPU), tensorflow-cpu, jax[cpu] and nc_prune[dev] into $VENV" >&2
  python -m pip install -q --upgrade pip >/dev/null
  # torch is pinned exactly: a looser pin pulls gigabytes of CUDA packages.
  python -m pip install -q "torch==2.13.0" "tensorflow-cpu" "jax[cpu]" -e "$ROOT[dev,plot,integrations]"
  touch "$STAMP"
fi
export PYTHONHASHSEED=0
export TF_CPP_MIN_LOG_LEVEL=2
