"""The ocean example: a Fortran shallow-water double gyre and its Python side (see README.md).

With ``examples/`` on ``sys.path`` this is the package ``ocean``: :mod:`ocean.build` (compile the
model), :mod:`ocean.configs` (namelists of the fine and coarse configurations), :mod:`ocean.state`
(read the model's files, write namelists), :mod:`ocean.features` (coarse-graining, features, truth).
"""
