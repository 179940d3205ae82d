#!/usr/bin/env bash
# Sets up mpistage on Debian 12 (root or not): Debian's Open MPI and gfortran when missing, the
# virtualenv .venv, torch (for the server ranks), mpi4py, the package itself with its server and test
# extras, and the Fortran module. A second run takes seconds.
#
# Which torch build: the pin torch==2.13.0 chooses the version, not the build. Set MPISTAGE_TORCH:
#   unset  pip's own choice: a local wheel where pip is configured with one (this project's CI
#          machines have a CPU wheel); on a plain machine with PyPI that is PyPI's default build,
#          which for Linux x86_64 is the CUDA one (several GB of downloads, GPU-ready)
#   cpu    the CPU-only wheel from PyTorch's own index (download.pytorch.org/whl/cpu, ~200 MB)
#   cuda   PyPI's default (CUDA) build, asked for explicitly
# The script prints which build it got.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v mpiexec >/dev/null 2>&1 || missing+=(openmpi-bin)
command -v mpif90 >/dev/null 2>&1 || missing+=(libopenmpi-dev)
command -v gfortran >/dev/null 2>&1 || missing+=(gfortran)
command -v make >/dev/null 2>&1 || missing+=(make)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]} with apt-get"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

torch_choice="${MPISTAGE_TORCH:-}"
case "$torch_choice" in
  "") torch_args=() ;;
  cpu) torch_args=(--index-url https://download.pytorch.org/whl/cpu) ;;
  cuda) torch_args=(--index-url https://pypi.org/simple) ;;
  *) echo "setup: MPISTAGE_TORCH must be unset, cpu or cuda (got '$torch_choice')" >&2; exit 2 ;;
esac

[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.mpistage-setup
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)-$torch_choice"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c "import torch, mpi4py, mpistage" 2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  # torch first, on its own, so that the choice above decides its build (the extra below then
  # finds it installed).
  .venv/bin/python -m pip install -q "torch==2.13.0" "${torch_args[@]}"
  .venv/bin/python -m pip install -q "mpi4py==4.1.2" numpy h5py adios2 pytest pytest-timeout ruff setuptools
  PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q --no-build-isolation -e ".[server,test,ocean]"
  echo "$want" > "$stamp"
fi
if [ -f fortran/Makefile ]; then
  make -s -C fortran >/dev/null
fi
torch_build="$(.venv/bin/python -c 'import torch; c = torch.version.cuda; print(torch.__version__ + (" (CUDA " + c + " build)" if c else " (CPU-only build)"))')"
echo "setup: ready (.venv, Open MPI $(mpiexec --version 2>/dev/null | head -1 | awk '{print $NF}'), torch $torch_build)"
