#!/usr/bin/env bash
# Sets everything up, then runs the main job: the ocean EKE example (examples/ocean/run.py --demo).
# One mpistage Experiment on this machine (CPU): 2 server ranks, a fine Fortran ocean run streaming
# its fields, an online trainer, then a coarse Fortran ensemble calling the trained network against
# a MEKE-like baseline, and the report (table on stdout; report.md and PNGs in ocean-run/).
# Extra arguments go to run.py, e.g. `bash scripts/demo.sh --full --out ocean-full`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/ocean/run.py "$@"
