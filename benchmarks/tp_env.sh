#!/usr/bin/env bash
# Create (once) the virtual environment with Torch-Pruning that benchmarks/tp_driver.py runs in:
# benchmarks/.envs/tp (gitignored), never mixed with the project's .venv. It is the anchor of
# benchmarks/slim_speed.py: the same models pruned by Torch-Pruning, timed beside nc_prune's slimmed ones.
# Prints the environment's python path on stdout; exits non-zero with the reason when it cannot be built.
#
#   PY=$(bash benchmarks/tp_env.sh) && python benchmarks/slim_speed.py --quick --tp-python "$PY"
#
# torch is pinned exactly in the same pip command as torch-pruning (which asks for any torch): a looser pin
# would let pip pull a CUDA build (gigabytes). transformers comes second, again beside the exact torch pin,
# at the project's .venv version: the driver saves Torch-Pruning's pruned model whole (torch.save), and the
# benchmark unpickles it in the project's environment, which needs the same transformers classes. Without
# transformers the driver still prunes ResNet-50 (built in plain torch by benchmarks/slim_models.py, so no
# torchvision is needed on either side). Override the pins with TP_PINS / TP_TRANSFORMERS at your own risk.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=ref_env.sh
source "$ROOT/benchmarks/ref_env.sh"
ENV_DIR="${NC_PRUNE_TP_ENV:-$ROOT/benchmarks/.envs/tp}"
PINS="${TP_PINS:-torch-pruning==1.6.1}"
TRANSFORMERS="${TP_TRANSFORMERS:-transformers==5.24.0}"
STAMP="$ENV_DIR/.tp-installed"

if [ ! -f "$STAMP" ]; then
  ref_env_create tp_env "$ENV_DIR"
  # shellcheck disable=SC2086
  ref_env_pip $PINS || ref_env_fail "pip could not install $REF_TORCH_PIN $PINS (see above and $REF_LOG)"
  ref_env_pip "$TRANSFORMERS" \
    || echo "[tp_env] $TRANSFORMERS could not be installed (see $REF_LOG): Torch-Pruning will prune ResNet-50 only" >&2
  ref_env_check '
import importlib.metadata as md
import torch, torch_pruning  # noqa: E401
try:
    import transformers
    extra = f", transformers {transformers.__version__}"
except ImportError:
    extra = ", no transformers"
tp = md.version("torch-pruning")
print(f"[tp_env] torch {torch.__version__}, torch-pruning {tp}{extra}")'
  touch "$STAMP"
fi
echo "$ENV_DIR/bin/python"
