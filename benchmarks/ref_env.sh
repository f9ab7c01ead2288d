# Sourced (not run) by the scripts that build a reference system's own virtual environment beside the
# project's .venv: benchmarks/oneshot_refs/envs.sh (llm-compressor) and benchmarks/tp_env.sh (Torch-Pruning).
# They share one way to do it:
#
#   ref_env_create NAME DIR   make the venv once (NAME prefixes every message, DIR/pip-install.log logs pip)
#   ref_env_pip PINS...       one pip command with torch pinned exactly (a looser pin would let pip pull a
#                             CUDA build, gigabytes); on failure prints the resolver's reasons, returns 1
#   ref_env_check CODE        run CODE in the env after checking torch is still 2.13.0 and no CUDA runtime
#                             came along (nvidia-ml-py is only NVML's bindings); fails the script otherwise
#   ref_env_fail MESSAGE      say why the env cannot be built and exit 1
REF_TORCH_PIN="torch==2.13.0"

ref_env_fail() { echo "[$REF_NAME] cannot build $REF_DIR: $*" >&2; exit 1; }

ref_env_create() {
  REF_NAME="$1"
  REF_DIR="$2"
  REF_LOG="$REF_DIR/pip-install.log"
  if [ ! -x "$REF_DIR/bin/python" ]; then
    echo "[$REF_NAME] creating $REF_DIR" >&2
    "${PYTHON:-python3}" -m venv "$REF_DIR" || ref_env_fail "'${PYTHON:-python3} -m venv' failed"
  fi
}

ref_env_pip() {
  echo "[$REF_NAME] installing $REF_TORCH_PIN (CPU) $* into $REF_DIR (log: $REF_LOG)" >&2
  if ! "$REF_DIR/bin/python" -m pip install "$REF_TORCH_PIN" "$@" >>"$REF_LOG" 2>&1; then
    grep -E "ERROR|conflict|requires|Cannot install|ResolutionImpossible|depends on" "$REF_LOG" | tail -n 20 >&2 \
      || tail -n 20 "$REF_LOG" >&2
    return 1
  fi
}

ref_env_check() {
  { cat <<'PYEOF'
import importlib.metadata as md, os, sys
name = os.environ["REF_NAME"]
torch_v = md.version("torch")
cuda = sorted(d.metadata["Name"] for d in md.distributions()
              if d.metadata["Name"] and d.metadata["Name"].lower().startswith(("nvidia-", "triton"))
              and d.metadata["Name"].lower() != "nvidia-ml-py")
if not torch_v.startswith("2.13.0"):
    sys.exit(f"[{name}] torch is {torch_v}, not 2.13.0")
if cuda:
    sys.exit(f"[{name}] CUDA packages were installed: {cuda}")
PYEOF
    printf '%s\n' "$1"; } | REF_NAME="$REF_NAME" "$REF_DIR/bin/python" - >&2 \
    || ref_env_fail "the installed environment failed its checks (see above)"
}
