"""The Python side of fortran/tests/roundtrip.f90: reads what the Fortran ranks put and puts
what they read, with numpy comparisons (a(i,j,...) in Fortran == x[i-1, j-1, ...] here).

    python checker.py mpmd NF      # the last rank of an MPMD job beside NF Fortran ranks
    python checker.py connect NF   # a separate client job (MPISTAGE_ADDRESS), between roundtrip put/get
"""

from __future__ import annotations

import sys

import numpy as np

import mpistage
from mpistage import app_comm

SHAPE4 = (3, 4, 5, 2)
TYPES = {"r4": np.float32, "r8": np.float64, "i1": np.int8, "i2": np.int16, "i4": np.int32, "i8": np.int64}


def expected(suffix: str, ndim: int, tag: int) -> np.ndarray:
    """The values roundtrip.f90's fill_<suffix> writes: a(i,j,k,l) = i + 10j + 100k + 1000l + 3 tag
    (1-based; indices past ndim are 1), int8 modulo 127, reals + 0.25."""
    shape = SHAPE4[:ndim]
    idx = np.indices(shape) + 1
    v = sum(idx[d] * 10**d for d in range(ndim)) + sum(10**d for d in range(ndim, 4)) + 3 * tag
    dtype = TYPES[suffix]
    if suffix == "i1":
        v = v % 127
    v = v.astype(dtype)
    if np.issubdtype(dtype, np.floating):
        v = v + dtype(0.25)
    return v


def check_fortran(c: mpistage.Client, nf: int) -> int:
    n = 0
    for r in range(nf):
        for suffix, dtype in TYPES.items():
            for ndim in range(1, 5):
                key = f"f{r}.{suffix}.{ndim}"
                got = c.get_tensor(key)
                want = expected(suffix, ndim, r)
                assert got.dtype == dtype, (key, got.dtype)
                assert got.shape == want.shape, (key, got.shape, want.shape)
                np.testing.assert_array_equal(got, want, err_msg=key)
                # the layout rule, spelled out on one element
                if ndim >= 2:
                    at = (1, 2) + (0,) * (ndim - 2)
                    assert got[at] == want[at], (key, at)
                n += 1
        ds = c.get_dataset(f"fds{r}")
        u = ds.get_tensor("u")
        assert u.shape == (3, 4)
        for i in range(3):
            for j in range(4):
                assert u[i, j] == (i + 1) + 10 * (j + 1) + 0.5 + r, (r, i, j, u[i, j])
        np.testing.assert_array_equal(ds.get_tensor("n"), np.arange(1, 6, dtype=np.int32) * 2 + r)
        np.testing.assert_array_equal(ds.get_meta_scalars("dt"), np.array([0.5, 0.25]))
        assert ds.get_meta_scalars("dt").dtype == np.float64
        np.testing.assert_array_equal(ds.get_meta_scalars("step"), np.array([7 + r], np.int64))
        assert ds.get_meta_strings("names") == ["alpha", "beta"], ds.get_meta_strings("names")
        n += 1
    assert c.get_list_length("flist") == nf
    return n


def put_python(c: mpistage.Client) -> None:
    for suffix in TYPES:
        for ndim in range(1, 5):
            c.put_tensor(f"p.{suffix}.{ndim}", np.ascontiguousarray(expected(suffix, ndim, 50)))
            c.put_tensor(f"pf.{suffix}.{ndim}", np.asfortranarray(expected(suffix, ndim, 60)))
    ds = mpistage.Dataset("pds")
    ds.add_tensor("w", np.array([[11, 12, 13], [21, 22, 23]], np.float32))
    ds.add_meta_scalar("n", np.int64(42))
    ds.add_meta_scalar("f", 1.5)
    ds.add_meta_string("s", "x")
    ds.add_meta_string("s", "yz")
    c.put_dataset(ds)
    c.append_to_list("plist", ds)


def main() -> None:
    mode, nf = sys.argv[1], int(sys.argv[2])
    c = mpistage.Client(logger_name="checker")
    if mode == "mpmd":
        comm = app_comm()
        comm.Barrier()  # 1: the Fortran ranks have put
        n = check_fortran(c, nf)
        put_python(c)
        comm.Barrier()  # 2: the Fortran ranks may read
    else:
        n = check_fortran(c, nf)
        put_python(c)
    print(f"PY {mode}: {n} Fortran tensors and datasets checked", flush=True)


if __name__ == "__main__":
    main()
