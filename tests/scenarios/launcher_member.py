"""An ensemble member: writes its parameter under its own prefix (SSKEYOUT), reads ``config.txt``
(configured with ;value;), then behaves as ``--mode`` says: ok, fail (exit 3), crash (SIGSEGV),
abort (MPI_Abort), hang (sleeps until stopped)."""

import time

STARTED_AT = time.time()

import argparse  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

from mpistage import Client  # noqa: E402
from mpistage.mpienv import mpi  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--mode", default="ok")
p.add_argument("--value", type=float, default=0.0)
p.add_argument("--tag", default="", help="ignored: lets a test find its processes with pgrep -f")
args = p.parse_args()
MPI = mpi()
rank = MPI.COMM_WORLD.Get_rank()
client = Client()
CONNECTED_AT = time.time()
config = open("config.txt").read().strip() if os.path.exists("config.txt") else ""
if rank == 0:
    client.put_tensor("value", np.array([args.value], dtype=np.float64))
    print(f"member {os.environ.get('SSKEYOUT', '?')} of {MPI.COMM_WORLD.Get_size()} ranks wrote {args.value} "
          f"config={config!r} cwd={os.getcwd()} started_at={STARTED_AT:.6f} connected_at={CONNECTED_AT:.6f}",
          flush=True)
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
