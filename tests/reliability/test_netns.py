"""Many machines, for real, on one box: the API and Redis in one network namespace, two workers
in two others (veth pairs, :mod:`tests.reliability.netns`), each worker with its own EMPTY store
and ``BASIN_API_URL`` — it downloads the run's checkpoints and dataset by id from the API and
checks their sha256, as a worker on a GPU box without the store volume does
(``docker-compose.yml``'s ``worker`` service with ``BASIN_API_URL``).

One plane run goes through every fault the deployment must survive, each at an exact moment
(the worker hook, :class:`tests.stack.Seam`, per worker), none by a sleep:

1. worker 0 is held inside its first point (its lease taken) and its only link is cut;
2. its lease expires (no heartbeat gets through) and worker 1 leases the same point: held there;
3. Redis is restarted (append-only file) while both workers are inside that point;
4. worker 1 records it and the rest of the plane, and is held holding the finish lock;
5. worker 0's link comes back and it is let go: its late result of the point is refused;
6. worker 1 finishes the run.

Every point is recorded exactly once (Redis stream, API, stored document), the document equals a
single-process ``basin.engine.run`` of the same spec, and each worker's store holds the two
checkpoints under their ids, byte-equal to the API's. A second test times a fault-free plane
with one and with two remote workers. Figures: ``test-artifacts/reliability.json`` (``netns``).

``make test`` runs the fault test; ``make reliability`` (``BASIN_RELIABILITY=full``) the timing
test too. Skipped with the reason where namespaces cannot be made (not root, no
``ip``, a kernel or container that refuses ``ip netns add``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from basin.engine import run as run_in_process
from basin.spec import parse_spec
from service import launch as launcher
from service.runstate import RunKeys
from service.store import Store
from tests.reliability.conftest import FULL, assert_recorded_once
from tests.reliability.netns import Net, NetUnavailable, make_net
from tests.stack import Seam, Stack

LEASE_SECONDS = 3
REDIS_PORT, API_PORT = 6379, 8000  # each namespace has its own ports
RES = 4  # the plane of the fault test: RES × RES points
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "netns"


class NetStack(Stack):
    """:class:`tests.stack.Stack` whose processes live in the namespaces of ``net``."""

    net: Net
    worker_envs: list[dict[str, str]]

    def start_worker_in(self, i: int, *, wait: bool = True) -> int:
        name = f"w{i}@netns"
        argv = self.net.exec_argv(
            self.net.worker_ns[i], launcher.worker_argv(name, loglevel="INFO")
        )
        proc = launcher.spawn(argv, env=self.worker_envs[i], log=self.logs / f"worker{i}.log")
        if i < len(self.workers):
            self.workers[i], self.worker_names[i] = proc, name
        else:
            self.workers.append(proc)
            self.worker_names.append(name)
        if wait:
            launcher.wait_healthy(
                self.base_url,
                timeout=180,
                procs=[proc],
                check=lambda h: name in {w.get("name") for w in h.get("workers", [])},
            )
        return i

    def restart_redis(self) -> None:
        launcher.stop(self.redis_proc, timeout=20)
        self.redis_proc = launcher.spawn(
            _redis_argv(self.net, self.redis_dir),
            env={"PATH": "/usr/bin:/bin"},
            log=self.logs / f"redis-{self.restarts['redis'] + 1}.log",
        )
        _wait_redis(self.redis_url, self.redis_proc)
        self.restarts["redis"] += 1


def _redis_argv(net: Net, data_dir: Path | None) -> list[str]:
    argv = launcher.redis_argv(REDIS_PORT, data_dir)
    argv[argv.index("--bind") + 1] = "0.0.0.0"  # its namespace's links only
    argv[argv.index("--protected-mode") + 1] = "no"
    return net.exec_argv(net.api_ns, argv)


def _wait_redis(url: str, proc, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise launcher.LaunchError(f"redis-server exited with code {proc.returncode}")
        try:
            if redis.Redis.from_url(url, socket_timeout=2).ping():
                return
        except redis.RedisError:
            if time.monotonic() > end:
                raise
        time.sleep(0.05)


@pytest.fixture(scope="module")
def net():
    try:
        n = make_net(workers=2)
    except NetUnavailable as e:
        pytest.skip(f"network namespaces unavailable: {e}")
    yield n
    n.close()
    assert n.leftovers() == [], n.leftovers()


@pytest.fixture(scope="module")
def nstack(net, tmp_path_factory, classifier_family):
    """Redis + API in the API namespace over a store with ft_a, ft_b, ft_c and eval.csv; worker
    ``i`` in namespace ``w<i>`` with an empty store of its own."""
    base = tmp_path_factory.mktemp("netns")
    store = base / "store"
    s = Store(store)
    for name in ("ft_a", "ft_b", "ft_c"):
        s.add_checkpoint_dir(classifier_family[name], name=name, tags={"task": "sentiment"})
    s.add_dataset(classifier_family["data"], name="eval.csv")
    logs, seam_dir, redis_dir = base / "logs", base / "seam", base / "redis-data"
    seam_dir.mkdir()
    common = {
        "BASIN_LEASE_SECONDS": str(LEASE_SECONDS),
        "BASIN_WORKER_DEVICE": "cpu",
        "BASIN_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "BASIN_PUBLIC_URL": "",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "BASIN_LOST_TASK_GRACE_SECONDS": "1",
        "BASIN_WORKER_HOOK": "tests.stack:seam_hook",
        "BASIN_SEAM_DIR": str(seam_dir.resolve()),
    }
    api_env = launcher.service_env(
        redis_url=f"redis://127.0.0.1:{REDIS_PORT}/0", store=store, extra=common
    )
    api_env.pop("BASIN_API_TOKEN", None)
    # the API answers the addresses it is reached at (the test's, each worker's link)
    api_env["BASIN_ALLOWED_HOSTS"] = ",".join(
        [net.api_host, *(net.service_host(i) for i in range(2))]
    )
    worker_envs = []
    for i in range(2):
        host = net.service_host(i)
        env = launcher.service_env(
            redis_url=f"redis://{host}:{REDIS_PORT}/0",
            store=base / f"worker{i}-store",
            extra={**common, "BASIN_API_URL": f"http://{host}:{API_PORT}"},
        )
        env.pop("BASIN_API_TOKEN", None)
        worker_envs.append(env)
    redis_url = f"redis://{net.api_host}:{REDIS_PORT}/0"
    procs = []
    stack: NetStack | None = None
    try:
        redis_proc = launcher.spawn(
            _redis_argv(net, redis_dir), env={"PATH": "/usr/bin:/bin"}, log=logs / "redis.log"
        )
        procs.append(redis_proc)
        _wait_redis(redis_url, redis_proc)
        api_argv = launcher.api_argv(API_PORT, ui=False)
        api_argv[-1] = api_argv[-1].replace("host='127.0.0.1'", "host='0.0.0.0'")
        api_proc = launcher.spawn(
            net.exec_argv(net.api_ns, api_argv), env=api_env, log=logs / "api.log"
        )
        procs.append(api_proc)
        stack = NetStack(
            base_url=f"http://{net.api_host}:{API_PORT}",
            redis_url=redis_url,
            store=store,
            token=None,
            logs=logs,
            env=api_env,
            redis_proc=redis_proc,
            api_proc=api_proc,
            seam=Seam(seam_dir),
            redis_dir=redis_dir,
            api_ui=False,
        )
        stack.net, stack.worker_envs = net, worker_envs
        launcher.wait_healthy(stack.base_url, timeout=180, workers=0, procs=[api_proc])
        for i in range(2):
            (base / f"worker{i}-store").mkdir()
            stack.start_worker_in(i, wait=False)
        launcher.wait_healthy(
            stack.base_url, timeout=240, workers=2, procs=[api_proc, *stack.workers]
        )
        yield stack
    finally:
        if stack is not None:
            for w in stack.workers:
                if w is not None:
                    launcher.stop(w, timeout=10)
            procs = [stack.redis_proc, stack.api_proc]
        for p in reversed(procs):
            launcher.stop(p, timeout=10)
        # the processes' logs and the seam's arrivals, for whoever reads a failure
        shutil.rmtree(ARTIFACTS, ignore_errors=True)
        for d in (logs, seam_dir):
            if d.exists():
                shutil.copytree(d, ARTIFACTS / d.name)


def plane_spec(res: int, seed: int, examples: int = 16, batch_size: int = 16) -> dict:
    return {
        "path": {"type": "plane", "a": "ft_a", "b": "ft_b", "c": "ft_c", "resolution": [res, res]},
        "dataset": "eval.csv",
        "max_examples": examples,
        "batch_size": batch_size,
        "seed": seed,
        "device": "cpu",
    }


def wait_for(what: str, cond, stack: Stack, limit: float = 300.0):
    """Poll ``cond()`` until it is true (an event, not a deadline: ``limit`` only stops a hang)."""
    end = time.monotonic() + limit
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > end:
            logs = "\n".join(f"--- {n} ---\n{stack.log(n)}" for n in ("api", "worker0", "worker1"))
            raise AssertionError(f"{what}: not within {limit:.0f} s\n{logs}")
        time.sleep(0.05)


def recorded(stack: Stack, run_id: str) -> dict[int, str]:
    """index → the worker that recorded it (the run's Redis stream)."""
    try:
        entries = stack.redis().xrange(RunKeys(run_id).points)
    except redis.RedisError:
        return {}
    return {json.loads(f["point"])["index"]: f["worker"] for _, f in entries}


def same_document(got: dict, want: dict) -> None:
    a = {p["index"]: p for p in got["points"]}
    b = {p["index"]: p for p in want["points"]}
    assert a.keys() == b.keys()
    for i, p in b.items():
        assert a[i]["coords"] == pytest.approx(p["coords"], rel=1e-9, abs=1e-12), i
        assert a[i]["metrics"] == pytest.approx(p["metrics"], rel=1e-6, abs=1e-9), i
    for side in ("min", "max"):
        for m, v in want["summary"][side].items():
            assert got["summary"][side][m]["value"] == pytest.approx(v["value"], rel=1e-6), (
                side,
                m,
            )
            assert got["summary"][side][m]["coords"] == pytest.approx(v["coords"], rel=1e-9), (
                side,
                m,
            )


def test_cut_link_and_redis_restart_record_every_point_once_across_namespaces(nstack, net, figures):
    stack, seam = nstack, nstack.seam
    w0, w1 = stack.worker_names
    total = RES * RES
    # both held at their first point (so worker 0 surely gets one), worker 1 also at the finish
    w1_first = seam.hold_worker(w1)
    holds = [seam.hold_worker(w0), seam.hold_worker(w1, "finish"), w1_first]
    t0 = time.monotonic()
    try:
        r = stack.request("POST", "/api/runs", json=plane_spec(RES, seed=501))
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        # 1. worker 0 inside its first point (lease held): cut its only link there
        i = int(
            wait_for(
                "worker 0 inside a point",
                lambda: next((t for t, w in seam.arrived(run_id) if w == w0 and t.isdigit()), None),
                stack,
            )
        )
        net.cut(0)
        # 2. its lease expires; worker 1 leases the same point and is held inside it
        hold_i = seam.hold_worker(w1, i)
        holds.append(hold_i)
        seam.unhold(w1_first)
        wait_for(
            "worker 1 takes over the cut worker's point",
            lambda: (str(i), w1) in seam.arrived(run_id, i),
            stack,
        )
        # 3. Redis restarts while both workers are inside that point
        stack.restart_redis()
        # 4. worker 1 records it and the rest, then holds the finish lock
        seam.unhold(hold_i)
        wait_for(
            "worker 1 at the finish",
            lambda: ("finish", w1) in seam.arrived(run_id, "finish"),
            stack,
        )
        by_index = recorded(stack, run_id)
        assert sorted(by_index) == list(range(total)) and by_index[i] == w1
        by_worker = Counter(by_index.values())
        # 5. worker 0's link comes back; let go, its late result of point i is refused
        net.restore(0)
        seam.unhold(holds[0])
        wait_for(
            "worker 0's late record refused",
            lambda: (
                "already recorded" in stack.log("worker0")
                or "ended while evaluating" in stack.log("worker0")
            ),
            stack,
        )
        assert "already recorded" in stack.log("worker0")  # the run was still open: a duplicate
    finally:
        net.restore(0)
        seam.unhold(*holds)
    # 6. worker 1 finishes the run
    doc = assert_recorded_once(stack, run_id, total)
    wall = time.monotonic() - t0

    want = run_in_process(
        parse_spec(plane_spec(RES, seed=501)), Store(stack.store).resolver(), progress=False
    )
    same_document(doc, want)

    api = Store(stack.store)
    for k in range(2):
        local = Store(stack.store.parent / f"worker{k}-store")
        ids = {api.get_checkpoint(n)["id"] for n in ("ft_a", "ft_b", "ft_c")}
        assert {
            p.name for p in local.checkpoints_dir.iterdir()
        } == ids  # fetched by id, hashes checked
        for n in ("ft_a", "ft_b", "ft_c"):
            m = api.get_checkpoint(n)
            assert (
                Path(local.get_checkpoint(m["id"])["path"]) / "model.safetensors"
            ).read_bytes() == (Path(m["path"]) / "model.safetensors").read_bytes()
        assert list(local.tmp_dir.iterdir()) == []
        assert list(local.runs_dir.iterdir()) == []  # the API's reaper stored the document

    starts = Counter(t for t, _ in seam.arrived(run_id) if t.isdigit())
    logs = stack.log("worker0") + stack.log("worker1")
    figures.setdefault("netns", {})["faults"] = {
        "run": run_id,
        "points": total,
        "recorded_once": True,
        "recorded_by": dict(by_worker),
        "cut_point": i,
        "point_starts": sum(starts.values()),
        "lease_retries": sum(n - 1 for n in starts.values()),
        "duplicates_refused": logs.count("already recorded"),
        "celery_retries": logs.count("Retry in"),
        "redis_restarts": stack.restarts["redis"],
        "wall_s": round(wall, 2),
        "document_equals_single_process": True,
    }


def _timed_run(stack: NetStack, res: int, seed: int) -> tuple[float, dict[str, int]]:
    r = stack.request(
        "POST", "/api/runs", json=plane_spec(res, seed=seed, examples=64, batch_size=8)
    )
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    t0 = time.monotonic()
    red = stack.redis()
    wait_for(
        "the timed run ends",
        lambda: red.hget(RunKeys(run_id).run, "status") in ("done", "failed"),
        stack,
    )
    wall = time.monotonic() - t0
    assert_recorded_once(stack, run_id, res * res)
    return wall, dict(Counter(recorded(stack, run_id).values()))


@pytest.mark.skipif(not FULL, reason="timing: `make reliability` (BASIN_RELIABILITY=full) runs it")
def test_wall_time_with_one_and_two_remote_workers(nstack, figures):
    """A fault-free 8×8 plane (fresh seeds: nothing cached; 64 examples in batches of 8) on two
    remote workers, then on one."""
    stack = nstack
    for h in stack.seam.dir.glob("hold-*"):
        h.unlink()
    res = 8
    two, split = _timed_run(stack, res, seed=601)
    assert len(split) == 2, split  # both workers took points
    launcher.stop(stack.workers[0], timeout=20)
    stack.workers[0] = None
    one, alone = _timed_run(stack, res, seed=602)
    assert set(alone) == {stack.worker_names[1]}
    figures.setdefault("netns", {})["wall_time"] = {
        "points": res * res,
        "one_worker_s": round(one, 2),
        "two_workers_s": round(two, 2),
        "two_workers_split": split,
        "speedup": round(one / two, 2) if two else None,
        "note": "shared 2-core CPU, one torch thread per worker",
    }
