"""The MPI side of the client and the session setup that clients and servers share: how a
process finds the servers (``bootstrap``), the connection file (``connfile``), the link both
sides hold after setup (``links``), the one choice of how a payload travels (``framing``), and
the client's connection to the shards (``connection``). Nothing here is public API."""
