"""Virtual hosts on one machine: Linux network namespaces joined by veth pairs, for running the
sweep "across hosts" with Open MPI's TCP transport.

Each virtual host is a namespace ``<prefix>-h<i>`` with loopback and one interface ``eth0``
(``10.77.0.<i+1>/24``), the end of a veth pair whose other end sits on a bridge in a switch
namespace ``<prefix>-sw`` (which has no address). Nothing is added to the machine's own namespace:
every address used lives inside those namespaces. Open MPI starts its daemons through
``plm_rsh_agent``, a small script that runs the daemon's command with ``ip netns exec`` in the
namespace of the host it was given; ``mpiexec`` itself runs in host 0's namespace.

    with VirtualHosts(3) as vh:
        subprocess.run(vh.wrap(["mpiexec", "--host", vh.host_list(...), ...]), env=vh.environ(env))

    python scaling/netns.py --hosts 3     # make them, check TCP between every pair, remove them

Needs root and ``ip`` (iproute2); :func:`unavailable` says why not when they are missing.
Everything made is removed on exit from the block, also after an error; processes still inside a
namespace are killed first.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

SUBNET = "10.77.0"
#: Open MPI settings for the virtual hosts: TCP only, on the namespaces' subnet only.
MCA = {
    "OMPI_MCA_btl": "tcp,self",
    "OMPI_MCA_pml": "ob1",
    "OMPI_MCA_btl_tcp_if_include": f"{SUBNET}.0/24",
    "OMPI_MCA_oob_tcp_if_include": f"{SUBNET}.0/24",
    "OMPI_MCA_plm_rsh_assume_same_shell": "1",
}


@functools.cache
def unavailable() -> str | None:
    """Why virtual hosts cannot be made here (not root, no ``ip``, no namespaces), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    probe = f"mpistage-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def namespaces() -> list[str]:
    """The names ``ip netns list`` shows now."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


class VirtualHosts:
    """``n`` virtual hosts (n >= 2) for the duration of a ``with`` block; see the module doc."""

    def __init__(self, n: int, prefix: str | None = None) -> None:
        if n < 2 or n > 200:
            raise ValueError(f"virtual hosts: 2..200, not {n}")
        self.n = n
        self.prefix = prefix or f"mps{os.getpid()}"
        self.switch = f"{self.prefix}-sw"
        self.names = [f"{self.prefix}-h{i}" for i in range(n)]
        self.addresses = [f"{SUBNET}.{i + 1}" for i in range(n)]
        self.made: list[str] = []
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.agent: Path | None = None

    # ------------------------------------------------------------ lifetime
    def __enter__(self) -> VirtualHosts:
        try:
            self._create()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _create(self) -> None:
        _ip("netns", "add", self.switch)
        self.made.append(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, (name, address) in enumerate(zip(self.names, self.addresses, strict=True)):
            _ip("netns", "add", name)
            self.made.append(name)
            _ip("-n", self.switch, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", name)
            _ip("-n", self.switch, "link", "set", f"p{i}", "master", "br0", "up")
            _ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            _ip("-n", name, "link", "set", "lo", "up")
        self._tmp = tempfile.TemporaryDirectory(prefix="mpistage-netns-")
        self.agent = Path(self._tmp.name) / "netns-agent"
        cases = "\n".join(f"  {a}) ns={n} ;;" for a, n in zip(self.addresses, self.names, strict=True))
        tmpbase = Path(self._tmp.name)
        self.agent.write_text(
            "#!/bin/sh\n# Open MPI plm_rsh_agent: run the daemon's command on virtual host $1 (a namespace)\n"
            'while [ "${1#-}" != "$1" ]; do shift; done\n'
            f'case "$1" in\n{cases}\n  *) echo "netns-agent: unknown host $1" >&2; exit 1 ;;\nesac\n'
            'shift\nmkdir -p "%s/$ns"\n'
            'exec ip netns exec "$ns" unshare --uts /bin/sh -c "hostname $ns; OMPI_MCA_orte_tmpdir_base=%s/$ns; '
            'export OMPI_MCA_orte_tmpdir_base; $*"\n' % (tmpbase, tmpbase))
        self.agent.chmod(self.agent.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    def remove(self) -> None:
        """Kill what still runs inside the namespaces and delete them (idempotent)."""
        for name in reversed(self.made):
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            for _ in range(50):  # a process being killed still holds the namespace for a moment
                if subprocess.run(["ip", "netns", "del", name], capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)
        self.made.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # ------------------------------------------------------------ running things on them
    def wrap(self, cmd: Sequence[str], host: int = 0) -> list[str]:
        """``cmd`` run inside virtual host ``host`` (where ``mpiexec`` must run)."""
        name = self.names[host]
        script = f'hostname {name}; exec "$@"'
        return ["ip", "netns", "exec", name, "unshare", "--uts", "/bin/sh", "-c", script, "sh", *map(str, cmd)]

    def environ(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """``env`` plus the Open MPI settings for these hosts (TCP on their subnet, the agent)."""
        if self.agent is None:
            raise RuntimeError("virtual hosts: use inside the with block")
        return {**(env or {}), **MCA, "OMPI_MCA_plm_rsh_agent": str(self.agent)}

    def host_list(self, hosts: Sequence[int], slots: int) -> str:
        """``--host`` value: the given hosts' addresses, ``slots`` each."""
        return ",".join(f"{self.addresses[h]}:{slots}" for h in hosts)

    def check_tcp(self, timeout: float = 10) -> None:
        """Every host reaches every other one over TCP (a listener in each, a connect from each)."""
        probe = ("import socket,sys\ns=socket.socket();s.bind((sys.argv[1],0));s.listen(8);"
                 "print(s.getsockname()[1],flush=True)\nfor _ in range(int(sys.argv[2])):c,_=s.accept();c.close()")
        listeners = []
        try:
            for i, address in enumerate(self.addresses):
                proc = subprocess.Popen(self.wrap([sys.executable, "-c", probe, address, str(self.n - 1)], i),
                                        stdout=subprocess.PIPE, text=True)
                listeners.append((proc, address, int(proc.stdout.readline())))
            for i in range(self.n):
                for j, (_, address, port) in enumerate(listeners):
                    if i != j:
                        code = f"import socket;socket.create_connection(('{address}',{port}),{timeout}).close()"
                        subprocess.run(self.wrap([sys.executable, "-c", code], i), check=True, timeout=timeout)
            for proc, _, _ in listeners:
                proc.wait(timeout=timeout)
        finally:
            for proc, *_ in listeners:
                proc.kill()
                proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=3)
    args = p.parse_args()
    why = unavailable()
    if why:
        raise SystemExit(f"netns: {why}")
    before = set(namespaces())
    with VirtualHosts(args.hosts) as vh:
        print(f"made {', '.join(vh.made)}; addresses {', '.join(vh.addresses)}")
        vh.check_tcp()
        print("TCP between every pair of hosts: ok")
    left = set(namespaces()) - before
    print("removed all" if not left else f"left behind: {sorted(left)}")
    sys.exit(1 if left else 0)


if __name__ == "__main__":
    main()
