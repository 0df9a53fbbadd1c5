"""Network namespaces and the processes running inside them, always cleaned up.

A :class:`Lab` owns every namespace and process it creates, all named with one
prefix (default ``nl<pid>-``), so two labs can run side by side and a leftover
can be found and removed (:func:`clean`). Nothing here touches the root
namespace: veth pairs are created inside a lab namespace with their peer placed
directly into another lab namespace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from natlens.errors import NatlensError

# Tool -> Debian package that provides it. `nft` drives the load balancer and the
# IPVS stand-in; iptables/ipset hold kube-proxy's rules as a real node has them.
TOOLS = {
    "ip": "iproute2",
    "iptables-restore": "iptables",
    "iptables-save": "iptables",
    "ipset": "ipset",
    "nft": "nftables",
    "conntrack": "conntrack",
    "tcpdump": "tcpdump",
}


def require(tools: Sequence[str] = tuple(TOOLS)) -> None:
    """Fail with one line when not root or when a tool is missing (naming its package)."""
    if os.geteuid() != 0:
        raise NatlensError("the lab needs root (network namespaces, netfilter); run it with sudo")
    for tool in tools:
        if shutil.which(tool) is None:
            pkg = TOOLS.get(tool, tool)
            raise NatlensError(f"the lab needs `{tool}`: install the Debian package {pkg} "
                               f"(apt-get install {pkg})")


def default_prefix() -> str:
    """A namespace prefix unique to this process: ``nl<pid>-``."""
    return f"nl{os.getpid()}-"


def existing(prefix: str) -> list[str]:
    """Names of the namespaces that start with ``prefix``."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines()
            if line.strip() and line.split()[0].startswith(prefix)]


def pids_in(ns: str) -> list[int]:
    """Processes whose network namespace is ``ns``."""
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def clean(prefix: str) -> list[str]:
    """Kill every process inside, then delete, the namespaces named ``prefix*``.

    Returns the namespaces removed. Used after a lab was killed with SIGKILL.
    """
    if len(prefix) < 2:
        raise NatlensError(f"refusing to clean with a prefix this short: {prefix!r}")
    names = existing(prefix)
    for ns in names:
        for pid in pids_in(ns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for ns in names:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    return names


class Lab:
    """Namespaces and processes of one lab run; :meth:`close` undoes everything.

    Commands that fail raise NatlensError with the command and its stderr: a
    half-built topology is worthless, and the caller's ``finally`` cleans up.
    """

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.closed = False

    # -- namespaces ---------------------------------------------------------
    def ns(self, name: str) -> str:
        """Create namespace ``<prefix><name>`` with ``lo`` up; return its full name."""
        full = self.prefix + name
        if len(full) > 60:
            raise NatlensError(f"namespace name too long: {full}")
        self.sh("ip", "netns", "add", full)
        self.namespaces.append(full)
        self.sh("ip", "-n", full, "link", "set", "lo", "up")
        if Path("/proc/sys/net/ipv6").exists():
            # IPv4 only: no link-local IPv6 addresses (the lab uses 198.18.0.0/15 and nothing
            # else) and no neighbour-discovery noise in the captures.
            self.sysctl(full, {"net/ipv6/conf/all/disable_ipv6": 1,
                               "net/ipv6/conf/default/disable_ipv6": 1})
        return full

    def sh(self, *cmd: str, ns: str | None = None, stdin: str | None = None,
           check: bool = True, ok: bool = False) -> str | None:
        """Run a command (inside ``ns`` if given); return stdout.

        ``check=False, ok=True``: return None instead of stdout when the command fails.
        """
        argv = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
        r = subprocess.run(argv, input=stdin, capture_output=True, text=True)
        if ok and r.returncode != 0:
            return None
        if check and r.returncode != 0:
            where = f" in {ns}" if ns else ""
            raise NatlensError(f"lab command failed{where}: {' '.join(cmd)}: "
                               f"{(r.stderr or r.stdout).strip() or f'exit {r.returncode}'}")
        return r.stdout

    def sysctl(self, ns: str, values: dict[str, str | int]) -> None:
        """Set sysctls inside ``ns`` (keys as /proc/sys paths: ``net/ipv4/ip_forward``)."""
        script = "; ".join(f"echo {v} > /proc/sys/{k}" for k, v in values.items())
        self.sh("sh", "-ec", script, ns=ns)

    # -- processes ----------------------------------------------------------
    def spawn(self, ns: str, argv: Sequence[str], *, stdout=subprocess.DEVNULL,
              stderr=subprocess.PIPE, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a process in ``ns`` in its own session; it is stopped by :meth:`close`."""
        # Unbuffered pipes: a caller waits for a line with select(), which cannot see lines
        # already sitting in a Python buffer.
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=stdout, stderr=stderr,
                             stdin=subprocess.DEVNULL, start_new_session=True, env=env,
                             bufsize=0)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 3.0) -> None:
        """Signal a spawned process's group, wait, and SIGKILL it if it lingers."""
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for stream in (p.stdout, p.stderr):
            if stream is not None:
                stream.close()

    def close(self) -> None:
        """Stop every process, then delete every namespace. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        for p in reversed(self.procs):
            self.stop(p, signal.SIGTERM, timeout=2.0)
        # Anything else started inside (e.g. by a test via `ip netns exec`) dies too.
        for ns in self.namespaces:
            for pid in pids_in(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for ns in reversed(self.namespaces):
            for _ in range(5):
                r = subprocess.run(["ip", "netns", "del", ns], capture_output=True)
                if r.returncode == 0 or ns not in existing(ns):
                    break
                time.sleep(0.1)
