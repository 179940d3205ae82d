"""A raw mpi4py client for tests/test_hardening_access.py: connects to started servers through the
connection file, presents a chosen secret and purpose, and SIGKILLs itself at a chosen phase of
session setup (docs/protocol.md, "Session setup").

    python connect_faults.py ADDRESS PHASE [--secret good|bad|none] [--purpose client|stop]

PHASE: before-hello, after-hello (the verdict is not read), after-verdict, after-merge,
after-widen, after-merge2 (before the window), or done (a full session, then exit without goodbye). Prints
``VERDICT <code> <reason>`` once it has the verdict.
"""

import argparse
import os
import signal

import numpy as np

from mpistage._mpi.connfile import prepare_singleton, read_address
from mpistage._mpi.links import ConnectHello, unpack_verdict, wait_for
from mpistage.mpienv import mpi
from mpistage.protocol import HELLO_MAX_BYTES, HELLO_TAG, PROTOCOL_VERSION, PURPOSE_CLIENT, PURPOSE_STOP, WIDEN_TAG

p = argparse.ArgumentParser()
p.add_argument("address")
p.add_argument("phase")
p.add_argument("--secret", default="good", choices=["good", "bad", "none"])
p.add_argument("--purpose", default="client", choices=["client", "stop"])
args = p.parse_args()
address = read_address(args.address)
prepare_singleton(address)
MPI = mpi()


def die_at(phase: str) -> None:
    if args.phase == phase:
        print(f"DYING {phase}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


secret = {"good": address.secret.encode(), "bad": b"0" * 64, "none": b""}[args.secret]
purpose = PURPOSE_STOP if args.purpose == "stop" else PURPOSE_CLIENT
first = MPI.COMM_SELF.Connect(address.port, MPI.INFO_NULL, 0)
die_at("before-hello")
first.Send(ConnectHello(PROTOCOL_VERSION, purpose, secret).pack(), 0, HELLO_TAG)
die_at("after-hello")
buf = np.zeros(HELLO_MAX_BYTES, np.uint8)
status = MPI.Status()
request = first.Irecv(buf, 0, HELLO_TAG)
assert wait_for(request, 60, status), "no verdict"
code, reason = unpack_verdict(buf[:status.Get_count(MPI.BYTE)].tobytes())
print(f"VERDICT {code} {reason}", flush=True)
if code != 0:
    first.Free()
    raise SystemExit(0)
die_at("after-verdict")
bridge = first.Merge(True)
die_at("after-merge")
inter = MPI.COMM_SELF.Create_intercomm(0, bridge, 0, WIDEN_TAG)
die_at("after-widen")
merged = inter.Merge(True)
die_at("after-merge2")
slot = np.zeros(1, np.int64)
merged.Bcast(slot, 0)
window = MPI.Win.Allocate(0, 1, MPI.INFO_NULL, merged)
assert args.phase == "done", args.phase
print("SESSION OK", flush=True)
os._exit(0)  # no goodbye: the servers keep the link of a job that vanished
