#!/usr/bin/env bash
# Sets everything up, then ruff, then the tests (every MPI scenario is bounded). Two tiers, named in
# tests/conftest.py (SLOW):
#   bash scripts/test.sh              the fast tier: every unit test and one lean MPI scenario per capability
#   bash scripts/test.sh --all        every test
#   bash scripts/test.sh --slow-only  the tests the fast tier leaves out (CI runs it after the fast tier)
# Further arguments go to pytest (bash scripts/test.sh --all tests/test_server.py: one file, all of it).
set -euo pipefail
cd "$(dirname "$0")/.."
tier=(-m "not slow")
case "${1:-}" in
  --all) tier=(); shift ;;
  --slow-only) tier=(-m slow); shift ;;
esac
bash scripts/setup.sh
.venv/bin/ruff check mpistage inference tests scaling examples
exec .venv/bin/python -m pytest -q "${tier[@]}" "$@"
