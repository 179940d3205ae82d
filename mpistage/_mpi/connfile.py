"""The connection file: what a client needs to reach servers it was not started with (the
analogue of SmartSim's ``SSDB``), written by the servers atomically and readable by its owner
only; and what a process started without ``mpiexec`` (a singleton) needs before MPI starts."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ServerUnreachableError
from ..mpienv import MPIEXEC_ENV_MARKERS
from ..protocol import PROTOCOL_VERSION

ADDRESS_ENV = "MPISTAGE_ADDRESS"
SECRET_ENV = "MPISTAGE_SECRET"  # the deployment secret given to the servers (else shard 0 makes one)
DEFAULT_BACKEND = "mpi"  # what a connection file without a "backend" field means


@dataclass(frozen=True)
class Address:
    """What a connection file says: where the servers listen, how many shards they are, and the
    deployment secret a connecting job presents in its hello (docs/security.md)."""

    port: str
    shards: int
    protocol: int
    ompi_server_uri: str | None = None
    backend: str = DEFAULT_BACKEND
    secret: str = field(default="", repr=False)

    def to_json(self) -> str:
        """The connection file's text."""
        return json.dumps({"backend": self.backend, "port": self.port, "shards": self.shards,
                           "protocol": self.protocol, "ompi_server_uri": self.ompi_server_uri,
                           "secret": self.secret}, indent=1)


def new_secret() -> str:
    """A fresh deployment secret: 64 hex digits from the ``secrets`` module."""
    return secrets.token_hex(32)


def deployment_secret() -> str:
    """The secret the servers admit: ``$MPISTAGE_SECRET`` when set (``mpistage start`` sets it), else
    a fresh one, put in the environment so that the rest of this process sees the same."""
    secret = os.environ.get(SECRET_ENV) or new_secret()
    if not secret.isascii() or not 16 <= len(secret) <= 256 or not secret.isprintable():
        raise ValueError(f"${SECRET_ENV} must be 16 to 256 printable ASCII characters")
    os.environ[SECRET_ENV] = secret
    return secret


def write_address(path: str | os.PathLike[str], address: Address) -> None:
    """Write the connection file atomically, readable by its owner only (mode 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".mpistage-address-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(address.to_json())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_address(path: str | os.PathLike[str]) -> Address:
    """Parse a connection file; raises :class:`ServerUnreachableError` when it is unusable."""
    try:
        data = json.loads(Path(path).read_text())
        address = Address(str(data["port"]), int(data["shards"]), int(data["protocol"]),
                          data.get("ompi_server_uri"), str(data.get("backend", DEFAULT_BACKEND)),
                          str(data.get("secret", "")))
    except FileNotFoundError as exc:
        raise ServerUnreachableError(f"no connection file at {path}: are the servers running?") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise ServerUnreachableError(f"{path} is not an mpistage connection file: {exc}") from exc
    if address.protocol != PROTOCOL_VERSION:
        raise ServerUnreachableError(
            f"servers speak protocol {address.protocol}, this client speaks {PROTOCOL_VERSION}")
    return address


def backend_named_in(path: str | os.PathLike[str]) -> str:
    """The ``"backend"`` field of a connection file (``"mpi"`` when it has none). A file that
    cannot be read names the default: the backend then reports why it cannot use it."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return DEFAULT_BACKEND
    name = data.get("backend", DEFAULT_BACKEND) if isinstance(data, dict) else DEFAULT_BACKEND
    return str(name)


def launched_by_mpiexec() -> bool:
    """True when ``mpiexec`` started this process (as opposed to a singleton)."""
    return any(name in os.environ for name in MPIEXEC_ENV_MARKERS)


def prepare_singleton(address: Address) -> None:
    """Let a process started without ``mpiexec`` connect: point Open MPI at the ``ompi-server``
    named in the connection file. Only has an effect before MPI is initialized."""
    if address.ompi_server_uri and not launched_by_mpiexec():
        os.environ.setdefault("OMPI_MCA_pmix_server_uri", f"file:{address.ompi_server_uri}")


@contextmanager
def connect_lock(address_path: str | os.PathLike[str], comm: Any) -> Iterator[None]:
    """Held by the connecting job's rank 0 from ``MPI_Comm_connect`` to the end of session setup.

    Open MPI 4.1 pairs up two jobs that connect to one port at the same moment wrongly (both
    hang), so connections are serialized with ``flock`` on ``<address>.lock`` next to the file."""
    if comm.Get_rank() != 0:
        yield
        return
    with open(f"{address_path}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
