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
# shellcheck source=../ref_env.sh
source "$ROOT/benchmarks/ref_env.sh"
ENV_DIR="${NC_PRUNE_LLMC_ENV:-$ROOT/benchmarks/.envs/llmc}"
PINS="${LLMC_PINS:-llmcompressor==0.14.0.1 compressed-tensors==0.19.0 transformers==5.17.0}"
STAMP="$ENV_DIR/.llmc-installed"

if [ ! -f "$STAMP" ]; then
  ref_env_create llmc_env "$ENV_DIR"
  # shellcheck disable=SC2086
  ref_env_pip $PINS || ref_env_fail "pip could not install $REF_TORCH_PIN $PINS (see above and $REF_LOG)"
  ref_env_check '
import torch, transformers, compressed_tensors, llmcompressor  # noqa: E401
from llmcompressor import oneshot  # noqa: F401
from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier  # noqa: F401
print(f"[llmc_env] torch {torch.__version__}, transformers {transformers.__version__}, "
      f"compressed-tensors {compressed_tensors.__version__}, llmcompressor {llmcompressor.__version__}")'
  touch "$STAMP"
fi
echo "$ENV_DIR/bin/python"
