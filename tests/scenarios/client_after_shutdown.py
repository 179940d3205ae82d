"""``shutdown_servers()`` and then ``Client()`` in an MPMD job: a clear ServerUnreachableError,
never a hang (issue 7, 6b)."""

import numpy as np

import mpistage
from mpistage import Client

c = Client()
c.put_tensor("x", np.ones(3))
c.shutdown_servers()
for attempt in ("a new Client", "the old Client"):
    try:
        if attempt == "a new Client":
            Client()
        else:
            c.get_tensor("x")
        raise AssertionError(f"{attempt} reached servers that were shut down")
    except mpistage.ServerUnreachableError as exc:
        print(f"{attempt}: ServerUnreachableError: {exc}", flush=True)
print("after shutdown OK", flush=True)
