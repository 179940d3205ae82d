"""Write every generated Fortran file (``make -C fortran generate``; the outputs are checked in,
so building the library needs no Python):

    python fortran/tools/generate.py [--out DIR]

DIR (default: fortran/) receives ``src/generated/*.inc`` and ``tests/generated/*.inc``.
``tests/test_generated.py`` regenerates into a temporary DIR and compares with the checked-in files.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

FORTRAN = Path(__file__).resolve().parent.parent
# The generator reads mpistage's protocol, router and mpienv modules of this source tree, not the
# package's __init__ (which pulls in the whole client): a bare package object stands in for it.
_package = types.ModuleType("mpistage")
_package.__path__ = [str(FORTRAN.parent / "mpistage")]
sys.modules.setdefault("mpistage", _package)
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen_generics  # noqa: E402
import gen_protocol  # noqa: E402

#: Folders (relative to fortran/) that hold only generated files.
GENERATED_DIRS = ("src/generated", "tests/generated")


def outputs() -> dict[str, str]:
    """Every generated file's text, by path relative to fortran/."""
    return {**gen_protocol.outputs(), **gen_generics.outputs()}


def write(out: Path) -> list[Path]:
    """Write the generated files under ``out`` (leaving unchanged ones untouched, so that make
    rebuilds only what changed); returns the paths written."""
    written = []
    for rel, text in outputs().items():
        path = out / rel
        if path.is_file() and path.read_text() == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FORTRAN, help="where src/ and tests/ go (default: fortran/)")
    args = parser.parse_args()
    for path in write(args.out):
        print(path)


if __name__ == "__main__":
    main()
