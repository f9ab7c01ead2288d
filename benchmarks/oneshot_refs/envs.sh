#!/usr/bin/env bash
# Create (once) the virtual environment with llm-compressor that benchmarks/oneshot_refs/llmc_oneshot.py
# runs in: benchmarks/.envs/llmc (gitignored), never mixed with the project's .venv or INC's env (INC 2.6
# needs numpy<2 and transformers 4.x; llm-compressor needs numpy>=2 and transformers 5.x).
# Prints the environment's python path on stdout; exits non-zero with the reason when it cannot be built.
# INC's environment is built by scripts/inc_env.sh.
#
#   PY=$(bash benchmarks/oneshot_refs/envs.sh) && $PY benchmarks/oneshot_refs/llmc_oneshot.py --help
#
# torch is pinned exactly in the same pip command: llm-compressor accepts torch>=2.10,<=2.14.0, and a
# looser pin would let pip pull a CUDA build (gigabytes). The versions below are the ones resolved and
# checked together on CPU (torch 2.13.0+cpu, python 3.11); override with LLMC_PINS at your own risk.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ENV_DIR="${NC_PRUNE_LLMC_ENV:-$ROOT/benchmarks/.envs/llmc}"
PY="${PYTHON:-python3}"
TORCH_PIN="torch==2.13.0"
PINS="${LLMC_PINS:-llmcompressor==0.14.0.1 compressed-tensors==0.19.0 transformers==5.17.0}"
STAMP="$ENV_DIR/.llmc-installed"

fail() { echo "[llmc_env] cannot build $ENV_DIR: $*" >&2; exit 1; }

if [ ! -f "$STAMP" ]; then
  if [ ! -x "$ENV_DIR/bin/python" ]; then
    echo "[llmc_env] creating $ENV_DIR" >&2
    "$PY" -m venv "$ENV_DIR" || fail "'$PY -m venv' failed"
  fi
  LOG="$ENV_DIR/pip-install.log"
  echo "[llmc_env] installing $TORCH_PIN (CPU) $PINS into $ENV_DIR (log: $LOG)" >&2
  # shellcheck disable=SC2086
  if ! "$ENV_DIR/bin/python" -m pip install "$TORCH_PIN" $PINS >"$LOG" 2>&1; then
    grep -E "ERROR|conflict|requires|Cannot install|ResolutionImpossible|depends on" "$LOG" | tail -n 20 >&2 || tail -n 20 "$LOG" >&2
    fail "pip could not install $TORCH_PIN $PINS (see above and $LOG)"
  fi
  # pip must not have replaced torch, nor brought CUDA runtimes (nvidia-ml-py is only NVML's bindings).
  "$ENV_DIR/bin/python" - <<'EOF' >&2 || fail "the installed environment failed its checks (see above)"
import importlib.metadata as md, sys
torch_v = md.version("torch")
cuda = sorted(d.metadata["Name"] for d in md.distributions()
              if d.metadata["Name"] and d.metadata["Name"].lower().startswith(("nvidia-", "triton"))
              and d.metadata["Name"].lower() != "nvidia-ml-py")
if not torch_v.startswith("2.13.0"):
    sys.exit(f"[llmc_env] torch is {torch_v}, not 2.13.0")
if cuda:
    sys.exit(f"[llmc_env] CUDA packages were installed: {cuda}")
import torch, transformers, compressed_tensors, llmcompressor  # noqa: E401
from llmcompressor import oneshot  # noqa: F401
from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier  # noqa: F401
print(f"[llmc_env] torch {torch.__version__}, transformers {transformers.__version__}, "
      f"compressed-tensors {compressed_tensors.__version__}, llmcompressor {llmcompressor.__version__}")
EOF
  touch "$STAMP"
fi
echo "$ENV_DIR/bin/python"
