"""A server that has no model has not imported torch; the first model imports it with the
server's --threads (run with one shard started with --threads 1). MPMD links have no window,
whatever the number of client ranks."""

import io

import numpy as np
import torch

from mpistage import Client, app_comm

comm = app_comm()
c = Client()
if comm.Get_rank() == 0:
    info = c.get_server_info()[0]
    assert info["engine"]["torch_imported"] is False, info["engine"]
    assert info["engine"]["runtimes"] == {}
    (link,) = [lk for lk in info["links"] if lk["kind"] == "mpmd"]
    assert link["ranks"] == comm.Get_size() and link["window_bytes"] == 0 and link["slot_bytes"] == 0, link
    print(f"seams_lazy_torch: mpmd link of {link['ranks']} ranks has {link['window_bytes']} bytes of window",
          flush=True)
    print("seams_lazy_torch: no torch before the first model", flush=True)
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), buf)
    c.set_model("lin", buf.getvalue())
    info = c.get_server_info()[0]
    assert info["engine"]["torch_imported"] is True
    assert info["engine"]["runtimes"]["TORCH"]["torch_threads"] == 1, info["engine"]["runtimes"]
    c.put_tensor("x", np.ones((4, 3), np.float32))
    c.run_model("lin", "x", "y")
    assert c.get_tensor("y").shape == (4, 2)
    print("seams_lazy_torch: the first model imported torch with --threads 1", flush=True)
comm.Barrier()
print("seams_lazy_torch OK", flush=True)
