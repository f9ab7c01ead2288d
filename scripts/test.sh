#!/usr/bin/env bash
# Run the test suite in the project's environment (created on first use), with the INC 2.6 reference
# environment beside it (also created on first use) so the INC parity tests run. If that environment
# cannot be built, those tests skip and say why.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
cd "$ROOT"
if [ -z "${NC_PRUNE_INC_PYTHON:-}" ]; then
  mkdir -p "$ROOT/benchmarks/.envs"
  if INC_PY="$(bash "$ROOT/scripts/inc_env.sh" 2>"$ROOT/benchmarks/.envs/inc_env.log")"; then
    export NC_PRUNE_INC_PYTHON="$INC_PY"
  else
    echo "[test] the INC 2.6 reference environment could not be built (see benchmarks/.envs/inc_env.log); INC parity tests will skip" >&2
  fi
fi
python -m pytest "$@"
