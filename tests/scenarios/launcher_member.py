"""An ensemble member: writes its parameter under its own prefix (SSKEYOUT), reads ``config.txt``
(configured with ;value;), then behaves as ``--mode`` says: ok, fail (exit 3), crash (SIGSEGV),
abort (MPI_Abort), hang (sleeps until stopped)."""

import argparse
import os
import signal
import sys
import time

import numpy as np

from mpistage import Client
from mpistage.mpienv import mpi

p = argparse.ArgumentParser()
p.add_argument("--mode", default="ok")
p.add_argument("--value", type=float, default=0.0)
p.add_argument("--tag", default="", help="ignored: lets a test find its processes with pgrep -f")
args = p.parse_args()
MPI = mpi()
rank = MPI.COMM_WORLD.Get_rank()
client = Client()
config = open("config.txt").read().strip() if os.path.exists("config.txt") else ""
if rank == 0:
    client.put_tensor("value", np.array([args.value], dtype=np.float64))
    print(f"member {os.environ.get('SSKEYOUT', '?')} of {MPI.COMM_WORLD.Get_size()} ranks wrote {args.value} "
          f"config={config!r} cwd={os.getcwd()}", flush=True)
MPI.COMM_WORLD.Barrier()
if args.mode == "fail":
    print("failing on purpose", file=sys.stderr, flush=True)
    sys.exit(3)
if args.mode == "crash":
    os.kill(os.getpid(), signal.SIGSEGV)
if args.mode == "abort":
    MPI.COMM_WORLD.Abort(7)
if args.mode == "hang":
    while True:
        time.sleep(0.2)
print(f"rank {rank} done", flush=True)
