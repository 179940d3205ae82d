#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite (ruff, then pytest; every MPI scenario is bounded).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check mpistage inference tests scaling examples
exec .venv/bin/python -m pytest -q "$@"
