#!/usr/bin/env bash
# The benchmark suite in one command: builds what it needs, runs every benchmark, writes the docs.
#
#   bash benchmarks/run.sh            # full sizes (48 x 1024^2 layers, 3.02e9 parameters): about 30 min
#   bash benchmarks/run.sh --quick    # smaller sizes: a few minutes
#   bash benchmarks/run.sh --skip keras,3b
#   bash benchmarks/run.sh --only oneshot_quality --merge   # rerun one, keep the others' results
#
# The project's environment comes from scripts/env.sh (.venv). The reference environments live apart in
# benchmarks/.envs: INC 2.6 (numpy<2, setuptools<81) from scripts/inc_env.sh, llm-compressor from
# benchmarks/oneshot_refs/envs.sh, Torch-Pruning from benchmarks/tp_env.sh, and tfmot (Keras 2 via tf_keras),
# which benchmarks/keras_vs_tfmot.py
# creates itself. A reference that cannot be installed is
# skipped and the results say why. Results: benchmarks/results/{quick,full}.json, docs/benchmarks.md,
# docs/img/bench_*.png; logs in benchmarks/out/logs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
python -c "import matplotlib" 2>/dev/null || python -m pip install -q "matplotlib>=3.7"

mkdir -p "$ROOT/benchmarks/out"
LOG="$ROOT/benchmarks/out/inc_env.log"
INC_ARGS=()
if INC_PY="$(bash "$ROOT/scripts/inc_env.sh" 2>"$LOG")" \
    && "$INC_PY" -c "import neural_compressor.compression.pruner.patterns" 2>>"$LOG"; then
  INC_ARGS=(--inc-python "$INC_PY")
else
  REASON="INC 2.6 environment could not be built or imported: $(tail -n 1 "$LOG")"
  echo "[bench] skipping INC: $REASON" >&2
  INC_ARGS=(--inc-skipped "$REASON")
fi

LLMC_LOG="$ROOT/benchmarks/out/llmc_env.log"
if LLMC_PY="$(bash "$ROOT/benchmarks/oneshot_refs/envs.sh" 2>"$LLMC_LOG")" \
    && "$LLMC_PY" -c "import llmcompressor" 2>>"$LLMC_LOG"; then
  INC_ARGS+=(--llmc-python "$LLMC_PY")
else
  REASON="llm-compressor environment could not be built or imported: $(tail -n 1 "$LLMC_LOG")"
  echo "[bench] skipping llm-compressor: $REASON" >&2
  INC_ARGS+=(--llmc-skipped "$REASON")
fi

TP_LOG="$ROOT/benchmarks/out/tp_env.log"
if TP_PY="$(bash "$ROOT/benchmarks/tp_env.sh" 2>"$TP_LOG")" && "$TP_PY" -c "import torch_pruning" 2>>"$TP_LOG"; then
  INC_ARGS+=(--tp-python "$TP_PY")
else
  REASON="Torch-Pruning environment could not be built or imported: $(tail -n 1 "$TP_LOG")"
  echo "[bench] skipping Torch-Pruning: $REASON" >&2
  INC_ARGS+=(--tp-skipped "$REASON")
fi

python "$ROOT/benchmarks/run_all.py" "${INC_ARGS[@]}" "$@"
