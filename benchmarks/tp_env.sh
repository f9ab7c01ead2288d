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
ENV_DIR="${NC_PRUNE_TP_ENV:-$ROOT/benchmarks/.envs/tp}"
PY="${PYTHON:-python3}"
TORCH_PIN="torch==2.13.0"
PINS="${TP_PINS:-torch-pruning==1.6.1}"
TRANSFORMERS="${TP_TRANSFORMERS:-transformers==5.24.0}"
STAMP="$ENV_DIR/.tp-installed"

fail() { echo "[tp_env] cannot build $ENV_DIR: $*" >&2; exit 1; }

if [ ! -f "$STAMP" ]; then
  if [ ! -x "$ENV_DIR/bin/python" ]; then
    echo "[tp_env] creating $ENV_DIR" >&2
    "$PY" -m venv "$ENV_DIR" || fail "'$PY -m venv' failed"
  fi
  LOG="$ENV_DIR/pip-install.log"
  echo "[tp_env] installing $TORCH_PIN (CPU) $PINS into $ENV_DIR (log: $LOG)" >&2
  # shellcheck disable=SC2086
  if ! "$ENV_DIR/bin/python" -m pip install "$TORCH_PIN" $PINS >"$LOG" 2>&1; then
    grep -E "ERROR|conflict|requires|Cannot install|ResolutionImpossible|depends on" "$LOG" | tail -n 20 >&2 || tail -n 20 "$LOG" >&2
    fail "pip could not install $TORCH_PIN $PINS (see above and $LOG)"
  fi
  echo "[tp_env] installing $TRANSFORMERS beside $TORCH_PIN" >&2
  if ! "$ENV_DIR/bin/python" -m pip install "$TORCH_PIN" "$TRANSFORMERS" >>"$LOG" 2>&1; then
    echo "[tp_env] $TRANSFORMERS could not be installed (see $LOG): Torch-Pruning will prune ResNet-50 only" >&2
  fi
  # pip must not have replaced torch, nor brought CUDA runtimes (nvidia-ml-py is only NVML's bindings).
  "$ENV_DIR/bin/python" - <<'EOF' >&2 || fail "the installed environment failed its checks (see above)"
import importlib.metadata as md, sys
torch_v = md.version("torch")
cuda = sorted(d.metadata["Name"] for d in md.distributions()
              if d.metadata["Name"] and d.metadata["Name"].lower().startswith(("nvidia-", "triton"))
              and d.metadata["Name"].lower() != "nvidia-ml-py")
if not torch_v.startswith("2.13.0"):
    sys.exit(f"[tp_env] torch is {torch_v}, not 2.13.0")
if cuda:
    sys.exit(f"[tp_env] CUDA packages were installed: {cuda}")
import torch, torch_pruning  # noqa: E401
try:
    import transformers
    extra = f", transformers {transformers.__version__}"
except ImportError:
    extra = ", no transformers"
print(f"[tp_env] torch {torch.__version__}, torch-pruning {md.version('torch-pruning')}{extra}")
EOF
  touch "$STAMP"
fi
echo "$ENV_DIR/bin/python"