#!/usr/bin/env bash
# Create (once) a separate virtual environment with Intel Neural Compressor 2.6, the last INC
# line whose pruner nc_prune is compared against (tests/conformance/test_inc_parity.py).
# It lives in benchmarks/.envs/inc (gitignored) and is never mixed with the project's .venv:
# INC 2.6 needs numpy<2 and setuptools<81; transformers (4.x, for numpy<2) runs the INC-style BERT
# scripts of tests/conformance. Prints the environment's python path on stdout.
#
#   PY=$(bash scripts/inc_env.sh) && NC_PRUNE_INC_PYTHON=$PY python -m pytest tests/conformance
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_DIR="${NC_PRUNE_INC_ENV:-$ROOT/benchmarks/.envs/inc}"
PY="${PYTHON:-python3}"
STAMP="$ENV_DIR/.inc-installed"
if [ ! -f "$STAMP" ]; then
  if [ ! -x "$ENV_DIR/bin/python" ]; then
    echo "[inc_env] creating $ENV_DIR" >&2
    "$PY" -m venv "$ENV_DIR"
  fi
  echo "[inc_env] installing torch==2.13.0 (CPU) and neural-compressor==2.6 into $ENV_DIR" >&2
  # torch is pinned exactly: a looser pin pulls gigabytes of CUDA packages.
  "$ENV_DIR/bin/python" -m pip install -q "torch==2.13.0" "neural-compressor==2.6" \
    "numpy<2" "setuptools<81" six "transformers<5" >&2
  "$ENV_DIR/bin/python" -c \
    "from neural_compressor.compression.pruner.patterns import PATTERNS; print('[inc_env] INC patterns:', sorted(PATTERNS))" >&2
  touch "$STAMP"
fi
echo "$ENV_DIR/bin/python"
