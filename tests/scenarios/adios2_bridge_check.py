"""A store client for tests/test_adios2_bridge.py (connect mode, started without mpiexec).

    adios2_bridge_check.py seed     # put out.a (Fortran-ordered) and dataset out.ds
    adios2_bridge_check.py verify   # check what the bridge ingested from adios2_sst_peer's stock writer
"""

from __future__ import annotations

import sys

import numpy as np

from mpistage import Client, Dataset


def seeded() -> np.ndarray:
    """out.a as the seed puts it."""
    return np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))


def main() -> None:
    client = Client()
    if sys.argv[1] == "seed":
        client.put_tensor("out.a", seeded())
        ds = Dataset("out.ds")
        ds.add_tensor("t", np.arange(5, dtype=np.int64))
        ds.add_meta_string("units", "K")
        client.put_dataset(ds)
        print("seeded", flush=True)
        return
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from adios2_sst_peer import field

    for step in range(3):
        np.testing.assert_array_equal(client.get_tensor(f"in.u.{step}"), field(step))
        np.testing.assert_array_equal(client.get_tensor(f"in.probe/p.{step}"), np.full(2, step, np.float32))
    assert not client.tensor_exists("in.u.3")
    print("verified", flush=True)


if __name__ == "__main__":
    main()
