#!/usr/bin/env bash
# Sets everything up, then runs the main job: server ranks plus a coupled simulation, one MPMD job
# on this machine (CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mpistage launch --servers 2 -n 4 -- .venv/bin/python examples/coupled_demo.py "$@"
