"""Connect mode's window under --window-cap: this job's link has the slot it was expected to
get (argument 1, bytes per rank) and a window of slot x ranks; a 400 KiB tensor round trip works
whether it goes one-sided or point-to-point."""

import sys

import numpy as np

from mpistage import Client, app_comm

expected_slot = int(sys.argv[1])
comm = app_comm()
c = Client()
x = np.arange(51200, dtype=np.float64) + comm.Get_rank()  # 400 KiB
c.put_tensor(f"w{comm.Get_rank()}", x)
assert np.array_equal(c.get_tensor(f"w{comm.Get_rank()}"), x)
comm.Barrier()
if comm.Get_rank() == 0:
    info = c.get_server_info()[0]
    mine = [lk for lk in info["links"] if lk["kind"] == "connect"]
    assert len(mine) == 1, info["links"]
    link = mine[0]
    assert link["slot_bytes"] == expected_slot, link
    assert link["window_bytes"] == expected_slot * comm.Get_size(), link
    print(f"seams_window: {comm.Get_size()} ranks, slot {link['slot_bytes']} B, window {link['window_bytes']} B, "
          f"release threads {info['release_threads']}", flush=True)
comm.Barrier()
print("seams_window OK", flush=True)
