"""``mpistage-config``: compiler and linker flags for Fortran programs that ``use mpistage``.

    mpif90 app.f90 $(mpistage-config --fflags) $(mpistage-config --flibs) -o app

The library and its ``.mod`` files are built by ``make -C fortran`` into ``fortran/build/`` of the
source tree this package lives in; ``MPISTAGE_FORTRAN_PREFIX`` points elsewhere (a directory with
``include/`` and ``libmpistage_f.*``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

LIB = "mpistage_f"


def prefix() -> Path:
    """Where the built Fortran client lies."""
    env = os.environ.get("MPISTAGE_FORTRAN_PREFIX")
    if env:
        return Path(env).resolve()
    return (Path(__file__).resolve().parent.parent / "fortran" / "build").resolve()


def fflags(where: Path) -> str:
    return f"-I{where / 'include'}"


def flibs(where: Path) -> str:
    # the shared library, found at run time through the rpath; mpif90 adds MPI itself
    return f"-L{where} -Wl,-rpath,{where} -l{LIB}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mpistage-config", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fflags", action="store_true", help="compile flags (include path of the .mod files)")
    p.add_argument("--flibs", action="store_true", help="link flags (use with mpif90)")
    p.add_argument("--prefix", action="store_true", help="the directory holding the built library")
    args = p.parse_args(argv)
    if not (args.fflags or args.flibs or args.prefix):
        p.print_help()
        return 1
    where = prefix()
    if not (where / "include" / "mpistage.mod").exists() or not any(
            (where / f"lib{LIB}{ext}").exists() for ext in (".so", ".a")):
        print(f"mpistage-config: the Fortran client is not built in {where} (run: make -C fortran)",
              file=sys.stderr)
        return 1
    out = []
    if args.prefix:
        out.append(str(where))
    if args.fflags:
        out.append(fflags(where))
    if args.flibs:
        out.append(flibs(where))
    print(" ".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
