"""Build the Fortran ocean model with its Makefile: ``python examples/ocean/build.py`` prints the executable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXECUTABLE = HERE / "build" / "ocean"


def build(timeout: float = 600) -> Path:
    """Run ``make`` in ``examples/ocean`` and return the path of ``build/ocean``.

    Raises RuntimeError with the compiler's output if the build fails or runs over ``timeout`` seconds.
    """
    try:
        proc = subprocess.run(["make", "-C", str(HERE)], capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ))
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"building the ocean model took over {timeout} s") from exc
    if proc.returncode != 0 or not EXECUTABLE.exists():
        raise RuntimeError(f"building the ocean model failed:\n{proc.stdout}\n{proc.stderr}")
    return EXECUTABLE


if __name__ == "__main__":
    try:
        print(build())
    except RuntimeError as err:
        sys.exit(str(err))
