"""Machines on one box: Linux network namespaces joined by veth pairs (``ip netns``, ``ip link``).

::

    root ns ── veth 0 ── api ns (redis-server, the API) ── veth 1 ── w0 ns (worker 0)
                                                        └─ veth 2 ── w1 ns (worker 1)

Each worker namespace sees only its own link to the API namespace (a /30 each), so a worker
reaches Redis and the API the way a GPU box reaches the service host, and :meth:`Net.cut`
takes one worker's link down (``ip link set … down`` on the API's end: the worker's end
loses its carrier, packets are dropped, TCP retransmits) until :meth:`Net.restore`. The test
process stays in the root namespace and talks to the API namespace over veth 0.

:func:`make_net` needs root and a kernel that allows namespaces; it raises
:class:`NetUnavailable` with the reason otherwise (the test skips with it). :meth:`Net.close`
deletes every namespace and veth it created, also after a half-built setup.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from dataclasses import dataclass, field


class NetUnavailable(RuntimeError):
    """Namespaces cannot be made here (not root, no ``ip``, or the kernel refuses)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


@dataclass
class Net:
    """The namespaces of one test session; addresses are ``10.<b>.<k>.{1,2}/30`` for veth ``k``."""

    tag: str
    b: int
    api_ns: str
    worker_ns: list[str]
    namespaces: list[str] = field(default_factory=list)  # created so far (what close() deletes)
    links: list[str] = field(default_factory=list)  # root-ns ends created so far

    def addr(self, k: int, end: int) -> str:
        """Veth ``k``'s address at ``end`` 1 (root / API side) or 2 (API / worker side)."""
        return f"10.{self.b}.{k}.{end}"

    @property
    def api_host(self) -> str:
        """The API namespace's address as the test process (root ns) reaches it."""
        return self.addr(0, 2)

    def service_host(self, worker: int) -> str:
        """The API namespace's address as worker ``worker`` reaches it."""
        return self.addr(worker + 1, 1)

    def api_end(self, worker: int) -> str:
        return f"b{worker + 1}a{self.tag}"

    def exec_argv(self, ns: str, argv: list[str]) -> list[str]:
        """``argv`` run inside ``ns`` (``ip netns exec`` execs it: the PID is the program's)."""
        return ["ip", "netns", "exec", ns, *argv]

    def cut(self, worker: int) -> None:
        """Take worker ``worker``'s only link down (from the API's end)."""
        _ip("-n", self.api_ns, "link", "set", self.api_end(worker), "down")

    def restore(self, worker: int) -> None:
        _ip("-n", self.api_ns, "link", "set", self.api_end(worker), "up")

    def close(self) -> None:
        for ns in reversed(self.namespaces):
            _ip("netns", "del", ns, check=False)  # its veth ends go with it, and their peers
        for link in self.links:
            _ip("link", "del", link, check=False)
        self.namespaces, self.links = [], []

    def leftovers(self) -> list[str]:
        """Namespaces or links of this session that still exist (empty after :meth:`close`)."""
        names = set(_ip("netns", "list", check=False).stdout.split())
        left = [ns for ns in (self.api_ns, *self.worker_ns) if ns in names]
        links = _ip("-o", "link", "show", check=False).stdout
        return left + [
            f"link {n}" for n in (f"bh{self.tag}",) if f" {n}@" in links or f" {n}:" in links
        ]


def make_net(workers: int = 2) -> Net:
    """Namespaces for the API and ``workers`` workers, wired as the module says."""
    if os.geteuid() != 0:
        raise NetUnavailable("network namespaces need root (ip netns add)")
    if shutil.which("ip") is None:
        raise NetUnavailable("no `ip` command (iproute2)")
    tag = f"{random.randrange(16**4):04x}"
    net = Net(
        tag=tag,
        b=100 + random.randrange(100),
        api_ns=f"bsn{tag}-api",
        worker_ns=[f"bsn{tag}-w{i}" for i in range(workers)],
    )
    try:
        try:
            _ip("netns", "add", net.api_ns)
        except RuntimeError as e:
            raise NetUnavailable(f"the kernel refused a network namespace: {e}") from None
        net.namespaces.append(net.api_ns)
        _ip("-n", net.api_ns, "link", "set", "lo", "up")
        # veth 0: root ns ↔ API ns (the test's way in)
        host, api0 = f"bh{tag}", f"b0a{tag}"
        _ip("link", "add", host, "type", "veth", "peer", "name", api0)
        net.links.append(host)
        _ip("link", "set", api0, "netns", net.api_ns)
        _ip("addr", "add", f"{net.addr(0, 1)}/30", "dev", host)
        _ip("link", "set", host, "up")
        _ip("-n", net.api_ns, "addr", "add", f"{net.addr(0, 2)}/30", "dev", api0)
        _ip("-n", net.api_ns, "link", "set", api0, "up")
        for i, ns in enumerate(net.worker_ns):
            _ip("netns", "add", ns)
            net.namespaces.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            a, w = net.api_end(i), f"b{i + 1}w{tag}"
            _ip("-n", net.api_ns, "link", "add", a, "type", "veth", "peer", "name", w, "netns", ns)
            _ip("-n", net.api_ns, "addr", "add", f"{net.addr(i + 1, 1)}/30", "dev", a)
            _ip("-n", net.api_ns, "link", "set", a, "up")
            _ip("-n", ns, "addr", "add", f"{net.addr(i + 1, 2)}/30", "dev", w)
            _ip("-n", ns, "link", "set", w, "up")
    except BaseException:
        net.close()
        raise
    return net


__all__ = ["Net", "NetUnavailable", "make_net"]
