"""``basin up``'s supervisor on real child processes, with a clock the test moves: a child
that dies is started again after 1, 2, 4 … s (reset once it stayed up), the reason names
the signal, and only a critical child's exit stops everything.

What a user would notice: a worker killed by the kernel that stays dead, a crash loop that
restarts hundreds of times a second, the dashboard going down with the worker.
"""

from __future__ import annotations

import os
import signal
import sys

from service import launch
from service.launch import BACKOFF_S, Child, Supervisor, exit_reason


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _child(name: str, tmp_path, code: str, **kw) -> Child:
    return Child(name, lambda: [sys.executable, "-c", code], dict(os.environ),
                 tmp_path / f"{name}.log", **kw)


def test_exit_reasons_name_the_signal():
    assert exit_reason(-9) == "exited with code -9 (killed — out of memory?)"
    assert exit_reason(-15) == "exited with code -15 (SIGTERM)"
    assert exit_reason(1) == "exited with code 1"
    assert "stopped heart-beating for 21 s" in exit_reason(-9, wedged_s=21.0)


def test_a_dead_child_is_restarted_with_back_off_and_the_api_exit_stops_all(tmp_path):
    clock = Clock()
    said: list[str] = []
    sup = Supervisor(launch.free_port(), said.append, clock=clock)  # no Redis: events logged
    worker = sup.add(_child("worker", tmp_path, "import time; time.sleep(600)"))
    api = sup.add(_child("api", tmp_path, "import time; time.sleep(600)", critical=True))
    try:
        pids = [worker.proc.pid]
        delays = []
        for _ in range(3):  # three quick deaths: 1 s, 2 s, 4 s
            os.kill(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait()
            assert sup.poll() is None and worker.proc is None
            delays.append(worker.due - clock.t)
            clock.t = worker.due - 0.01
            assert sup.poll() is None and worker.proc is None  # not before its time
            clock.t = worker.due
            assert sup.poll() is None and worker.proc is not None
            pids.append(worker.proc.pid)
        assert delays == list(BACKOFF_S[:3])
        assert len(set(pids)) == 4 and worker.restarts == 3
        assert any("the worker exited with code -9 (killed — out of memory?); restarting it in 4 s"
                   in s for s in said), said
        assert any(s.startswith("the worker exited with code -9 (killed — out of memory?) and "
                                "was restarted at ") for s in said), said

        clock.t += launch.STABLE_S  # it stayed up: the next death waits 1 s again
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait()
        sup.poll()
        assert worker.due - clock.t == BACKOFF_S[0]

        os.kill(api.proc.pid, signal.SIGKILL)
        api.proc.wait()
        assert sup.poll() == "api" and sup.last_exit.startswith("exited with code -9")
    finally:
        sup.stop_all()
    assert all(c.proc is None or c.proc.poll() is not None for c in sup.children)
