#!/usr/bin/env bash
# Sets up mpistage on Debian 12 (root or not): Debian's Open MPI and gfortran when missing, the
# virtualenv .venv with torch==2.13.0 installed first (a CPU wheel; a bare "torch" pulls a CUDA
# build), mpi4py, the package itself, and the Fortran module. A second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v mpiexec >/dev/null 2>&1 || missing+=(openmpi-bin)
command -v mpif90 >/dev/null 2>&1 || missing+=(libopenmpi-dev)
command -v gfortran >/dev/null 2>&1 || missing+=(gfortran)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v ompi-server >/dev/null 2>&1 || missing+=(openmpi-bin)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]} with apt-get"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.mpistage-setup
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c "import torch, mpi4py, mpistage" 2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q "mpi4py==4.1.2" numpy h5py adios2 pytest pytest-timeout ruff setuptools
  .venv/bin/python -m pip install -q --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
if [ -f fortran/Makefile ]; then
  make -s -C fortran >/dev/null
fi
echo "setup: ready (.venv, Open MPI $(mpiexec --version 2>/dev/null | head -1 | awk '{print $NF}'))"
