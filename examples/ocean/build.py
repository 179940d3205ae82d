"""Build the Fortran ocean model: ``python examples/ocean/build.py`` prints the executable.

Builds the mpistage Fortran client (``make -C fortran``) first, then ``make -C examples/ocean``
with ``MPISTAGE_CONFIG`` set to this Python's ``-m mpistage.fortran_config``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FORTRAN = HERE.parents[1] / "fortran"
EXECUTABLE = HERE / "build" / "ocean"


def build(timeout: float = 600) -> Path:
    """Run ``make`` in ``examples/ocean`` and return the path of ``build/ocean``.

    Raises RuntimeError with the compiler's output if the build fails or runs over ``timeout`` seconds.
    """
    config = f"{sys.executable} -m mpistage.fortran_config"
    for cmd in (["make", "-C", str(FORTRAN)], ["make", "-C", str(HERE), f"MPISTAGE_CONFIG={config}"]):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{' '.join(cmd)} took over {timeout} s") from exc
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    if not EXECUTABLE.exists():
        raise RuntimeError(f"the build did not make {EXECUTABLE}")
    return EXECUTABLE


if __name__ == "__main__":
    try:
        print(build())
    except RuntimeError as err:
        sys.exit(str(err))
