"""Checks of untrusted input that run third-party code, in a process with CPU, memory and time limits.

Some checks can only be made by the library that will use a file (``peft`` injecting an
uploaded adapter into its base). Such a library may spend unbounded time or memory on a
hostile file, and inside the API process that would stall every request (the GIL) or
take the server's memory. :func:`run_limited` runs one such check in a fresh Python
process — started with ``subprocess`` (fork + exec: nothing of the caller's torch state is
inherited, see STACK_NOTES on torch and fork) — that first limits itself with
``resource.setrlimit`` (``RLIMIT_AS`` for memory, ``RLIMIT_CPU`` for CPU time) and is
killed after a wall-clock timeout. Arguments and results travel as JSON over its stdin /
stdout, never pickled. Only the jobs named in :data:`JOBS` can be run.

The caller waits in a blocking ``communicate`` (the GIL is free), so a server thread that
validates an upload leaves the event loop and the other requests alone.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from basin.errors import BasinError, CheckpointError, IncompatibleCheckpoints

#: job name → "module:function" (the function takes keyword arguments, returns JSON-able data)
JOBS = {"adapter": "basin.adapters:check_adapter_on_base"}


@dataclass(frozen=True)
class Limits:
    """What one sandboxed check may use: CPU seconds, address space (bytes), wall seconds."""

    cpu_seconds: int = 60
    memory_bytes: int = 3 << 30
    wall_seconds: float = 180.0


class SandboxLimit(CheckpointError):
    """A sandboxed check ran out of its time or memory: the input is refused."""


def run_limited(
    job: str, kwargs: dict[str, Any], limits: Limits | None = None, *, what: str = "the check"
) -> Any:
    """Run ``JOBS[job](**kwargs)`` in a limited child process; its return value, or its error.

    A :class:`~basin.errors.BasinError` raised in the child is raised here with the same
    message (``IncompatibleCheckpoints`` keeps its mismatches); a child that runs out of
    CPU time, memory or wall time raises :class:`SandboxLimit` naming the limit.
    """
    if job not in JOBS:
        raise ValueError(f"unknown sandbox job {job!r}")
    lim = limits or Limits()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    request = json.dumps({"job": job, "kwargs": kwargs, "limits": asdict(lim)}).encode()
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module, arguments over stdin
        [sys.executable, "-m", "basin.sandbox"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(request, timeout=lim.wall_seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise SandboxLimit(
            f"{what} took longer than {lim.wall_seconds:g} s and was stopped: the input is refused"
        ) from None
    reply: dict[str, Any] | None = None
    for line in reversed(out.decode("utf-8", "replace").splitlines()):
        if line.startswith("{"):
            try:
                reply = json.loads(line)
                break
            except ValueError:
                continue
    if reply is None or proc.returncode != 0 and "ok" not in reply:
        if reply is not None and reply.get("error"):
            return _raise(reply, lim, what)
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        if proc.returncode in (-24, -9) or "MemoryError" in tail[0]:  # SIGXCPU / SIGKILL
            raise SandboxLimit(
                f"{what} used more than its limits ({lim.cpu_seconds} CPU seconds, "
                f"{lim.memory_bytes >> 20} MiB) and was stopped: the input is refused"
            )
        raise CheckpointError(f"{what} failed (exit {proc.returncode}): {tail[0][:300]}")
    if "ok" in reply:
        return reply["ok"]
    return _raise(reply, lim, what)


def _raise(reply: dict[str, Any], lim: Limits, what: str) -> Any:
    kind, message = reply.get("error"), str(reply.get("message", ""))[:2000]
    if kind == "IncompatibleCheckpoints":
        raise IncompatibleCheckpoints(message, [tuple(m) for m in reply.get("mismatches", [])])
    if kind == "MemoryError":
        raise SandboxLimit(
            f"{what} needed more than its {lim.memory_bytes >> 20} MiB and was stopped: "
            "the input is refused"
        )
    if kind == "BasinError":
        raise CheckpointError(message)
    raise CheckpointError(f"{what} failed: {message}")


def _limit_self(lim: dict[str, Any]) -> None:
    cpu = int(lim["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    mem = int(lim["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _held(folder: Path) -> None:
    """The test seam ``BASIN_SANDBOX_HOLD=<folder>`` (unset in production): the child marks
    ``<folder>/<pid>.started`` and waits until ``<folder>/release`` exists, so a test can
    act while a check is in progress (docs/development.md) instead of racing a clock."""
    (folder / f"{os.getpid()}.started").touch()
    while not (folder / "release").exists():
        time.sleep(0.02)


def _main() -> None:
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # what libraries print goes to stderr; the reply has its own descriptor
    req = json.loads(sys.stdin.buffer.read())
    _limit_self(req["limits"])
    hold = os.environ.get("BASIN_SANDBOX_HOLD", "").strip()
    if hold:
        _held(Path(hold))
    try:
        mod, fn = JOBS[req["job"]].split(":")
        result = {"ok": getattr(importlib.import_module(mod), fn)(**req["kwargs"])}
    except IncompatibleCheckpoints as e:
        result = {
            "error": "IncompatibleCheckpoints",
            "message": str(e),
            "mismatches": [list(m) for m in e.mismatches],
        }
    except BasinError as e:
        result = {"error": "BasinError", "message": str(e)}
    except MemoryError:
        result = {"error": "MemoryError", "message": "out of memory"}
    except (ImportError, OSError) as e:  # a library that cannot map its code under the limit
        out_of_memory = "failed to map" in str(e) or getattr(e, "errno", None) == errno.ENOMEM
        kind = "MemoryError" if out_of_memory else type(e).__name__
        result = {"error": kind, "message": f"{type(e).__name__}: {str(e)[:300]}"}
    except Exception as e:  # noqa: BLE001 - a third-party library's failure on hostile input
        first = str(e).splitlines()[0] if str(e) else ""
        result = {"error": type(e).__name__, "message": f"{type(e).__name__}: {first}"}
    os.write(reply_fd, (json.dumps(result) + "\n").encode())
    os.close(reply_fd)


if __name__ == "__main__":
    _main()
