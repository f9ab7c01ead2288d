#!/usr/bin/env bash
# The main job: train and prune real models end to end (see README).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
cd "$ROOT"
python -m nc_prune demo "$@"
