"""One ensemble member: reads its configured sim.cfg, writes a field under its prefix (SSKEYOUT)."""

import argparse

import numpy as np

from mpistage import Client
from mpistage.mpienv import mpi

p = argparse.ArgumentParser()
p.add_argument("--scale", type=float, required=True)
scale = p.parse_args().scale
comm = mpi().COMM_WORLD
client = Client()                      # MPISTAGE_ADDRESS comes from the experiment
config = dict(line.split("=") for line in open("sim.cfg").read().split())
assert float(config["scale"]) == scale
field = np.full((4, 4), scale * (comm.Get_rank() + 1))
total = comm.allreduce(float(field.sum()))
if comm.Get_rank() == 0:
    client.put_tensor("field", np.full((4, 4), total / 16))
    print(f"scale {scale}: wrote field, sum {total}")
