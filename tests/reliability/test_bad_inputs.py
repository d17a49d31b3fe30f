"""Bad input, hundreds of times: hostile uploads, hostile specs, and the whole API fuzzed
from its OpenAPI schema (schemathesis). Each answer must be a 4xx with a reason — never a
5xx — and nothing may be left behind: no files in the store's ``tmp/``, no file written
by a traversal member or a pickle, no symlink in the store; the stack stays healthy (a
normal run still completes).

Inputs are drawn from seeded RNGs (uploads) and derandomised hypothesis strategies
(specs, schema fuzzing), so a failure repeats.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from tests.reliability import hostile
from tests.reliability.conftest import (
    FULL,
    assert_recorded_once,
    count,
    ensure_worker,
    linear_spec,
    store_tmp_leftovers,
)

SEED = 2026

#: upload classes: builder, (short, full) counts, whether the server must refuse them all
UPLOADS: dict[str, tuple[Any, tuple[int, int]]] = {
    "truncated": (hostile.truncated, (5, 50)),
    "wrong_magic": (hostile.wrong_magic, (5, 40)),
    "path_traversal": (hostile.traversal, (5, 40)),
    "link_members": (hostile.links, (5, 40)),
    "pickle": (hostile.pickles, (4, 30)),  # may be accepted next to good weights: see below
    "huge_headers": (
        lambda rng, m, d: hostile.huge_headers(rng, m, d, size=(32 if FULL else 16) << 20),
        (1, 4),
    ),
    "many_entries": (
        lambda rng, m, d: hostile.many_entries(rng, m, d, n=100_000 if FULL else 30_000),
        (1, 2),
    ),
    "lying_config": (hostile.lying_config, (4, 30)),
    "bad_dataset": (hostile.bad_dataset, (4, 30)),
}

HOSTILE_REGEXES = [
    r"^((\w|\.)+)+!$",
    r"(a+)+$",
    r"^(([a-z])+.)+[A-Z]([a-z])+$",
    r"(.*a){25}",
    r"((bert|\.)*)*x$",
    r"(?:(?:(?:\w+)+)+)+#",
]

ODD_TEXT = [
    "a:b",
    "ft_a:",
    ":",
    "\u202eevil",
    "\x00",
    "\ud800",
    "😀" * 40,
    "名前",
    "Ω≈ç√",
    "\r\n",
    "../../etc/passwd",
    "%00",
    "a" * 5000,
    " ",
    "NaN",
]


class Tally:
    """Statuses by input class, and which answers broke a rule."""

    def __init__(self) -> None:
        self.by_class: dict[str, Counter] = defaultdict(Counter)
        self.problems: list[str] = []
        self.runs: list[str] = []  # accepted, not yet deleted
        self.accepted_runs = 0
        self.replaced_workers = 0

    def add(self, cls: str, r: Any, *, refuse: bool, what: str = "") -> None:
        status = r.status_code if r is not None else "error"
        self.by_class[cls][str(status)] += 1
        if r is None:
            self.problems.append(f"{cls}: no answer ({what})")
            return
        if status >= 500:
            self.problems.append(f"{cls}: {status} for {what}: {r.text[:200]}")
        elif refuse and 200 <= status < 300:
            self.problems.append(f"{cls}: accepted ({status}) {what}")
        elif status >= 400:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = None
            if not detail:
                self.problems.append(f"{cls}: {status} without a detail for {what}")
        if status in (200, 201, 202):
            try:
                body = r.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and "/runs" in str(r.request.url) and body.get("id"):
                self.runs.append(body["id"])

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.by_class.values())

    @property
    def five_xx(self) -> int:
        return sum(
            n for c in self.by_class.values() for s, n in c.items() if s.isdigit() and int(s) >= 500
        )


def send(stack, method: str, path: str, **kw: Any) -> httpx.Response | None:
    try:
        return stack.request(method, path, timeout=120, **kw)
    except httpx.HTTPError:
        return None


def upload(stack, rng: random.Random, cls: str, filename: str, body: bytes):
    dataset = cls == "bad_dataset"
    kind = "datasets" if dataset else "checkpoints"
    name = filename if dataset else f"bad-{cls}-{rng.randrange(10**6)}"
    if rng.random() < 0.5:
        return send(
            stack,
            "PUT",
            f"/api/{kind}",
            params={"name": name},
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )
    return send(
        stack, "POST", f"/api/{kind}", files={"file": (filename, body)}, data={"name": name}
    )


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (``VmHWM``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def hostile_uploads(stack, tally: Tally, model: dict[str, bytes], markers: Path) -> list[str]:
    """Sends every upload class; returns the ids of new checkpoints that came with a pickle
    (accepted: a worker must still never run their pickle)."""
    rng = random.Random(SEED)
    pickled: list[str] = []
    for cls, (build, counts) in UPLOADS.items():
        for _ in range(count(*counts)):
            filename, body = build(rng, model, markers)
            r = upload(stack, rng, cls, filename, body)
            tally.add(cls, r, refuse=cls != "pickle", what=f"{filename} ({len(body)} bytes)")
            if cls == "pickle" and r is not None and r.status_code == 201:
                pickled.append(r.json()["id"])
    return pickled


def load_pickled(stack, tally: Tally, ids: list[str]) -> None:
    """A run over each accepted checkpoint that carries a pickle: the worker opens it (the
    run may fail with a reason) and no marker may appear."""
    for ref in ids[:3]:
        spec = linear_spec(2, path={"type": "linear", "a": ref, "b": "ft_a", "points": 2})
        r = send(stack, "POST", "/api/runs", json=spec)
        tally.add("pickle_runs", r, refuse=False, what=ref)
        if r is not None and r.status_code == 201:
            stack.wait_run(r.json()["id"], timeout=300)


def spec_strategy() -> st.SearchStrategy[dict]:
    """Specs a hostile client sends: one field broken at a time, or the whole thing odd."""
    base = linear_spec(3, seed=7)
    bad_number = st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=5),
        st.none(),
        st.lists(st.integers(), max_size=3),
        st.sampled_from([0, -1, 10**6, 10**12, 2**63, 2**64, 1e308]),
    )
    odd = st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=30))

    def put(path: tuple[str, ...], value: Any) -> dict:
        spec = json.loads(json.dumps(base))
        d = spec
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
        return spec

    numbers = st.tuples(
        st.sampled_from(
            [
                ("path", "points"),
                ("max_examples",),
                ("batch_size",),
                ("max_length",),
                ("seed",),
                ("path", "range"),
            ]
        ),
        bad_number,
    ).map(lambda t: put(*t))
    texts = st.tuples(
        st.sampled_from(
            [
                ("dataset",),
                ("name",),
                ("task",),
                ("device",),
                ("scope",),
                ("path", "a"),
                ("path", "b"),
                ("path", "type"),
                ("tokenizer",),
            ]
        ),
        odd,
    ).map(lambda t: put(*t))
    planes = st.tuples(
        st.lists(bad_number, min_size=0, max_size=3),
        st.sampled_from([None, -1.0, 1e9]),
    ).map(
        lambda t: {
            **base,
            "path": {
                "type": "plane",
                "a": "ft_a",
                "b": "ft_b",
                "c": "ft_c",
                "resolution": t[0],
                "margin": t[1],
            },
        }
    )
    shapes = st.one_of(
        st.none(),
        st.lists(st.integers(), max_size=3),
        st.text(max_size=10),
        st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=4),
        st.recursive(
            st.just({}), lambda s: st.dictionaries(st.just("path"), s, min_size=1), max_leaves=60
        ),
    )
    return st.one_of(numbers, texts, planes, shapes)


def without_token(stack, tally: Tally) -> None:
    """Writes without the token are refused before their body is read or parsed."""
    anon = httpx.Client(base_url=stack.base_url, timeout=120)
    big = b"\x1f\x8b" + b"\0" * (8 << 20)
    checks = [
        ("PUT", "/api/checkpoints?name=x", {"content": big}),
        ("POST", "/api/checkpoints", {"files": {"file": ("m.zip", big)}}),
        (
            "POST",
            "/api/runs",
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        ),
        ("POST", "/api/runs", {"json": linear_spec(2)}),
        ("POST", "/api/runs/validate", {"json": linear_spec(2)}),
        ("PUT", "/api/datasets?name=x.csv", {"content": b"text,label\na,1\n"}),
        ("POST", "/api/checkpoints/register", {"json": {"path": "/etc", "copy": True}}),
    ]
    with anon:
        for method, path, kw in checks:
            try:
                r = anon.request(method, path, **kw)
            except httpx.HTTPError:
                r = None
            tally.add("no_token", r, refuse=True, what=f"{method} {path}")
            if r is not None and r.status_code not in (401, 403):
                tally.problems.append(
                    f"no_token: {r.status_code} (not 401/403) for {method} {path}"
                )


def hostile_specs(stack, tally: Tally, n: int) -> None:
    for rx in HOSTILE_REGEXES:  # catastrophic backtracking under a backtracking engine
        r = send(stack, "POST", "/api/runs", json=linear_spec(3, scope=rx))
        tally.add("spec_regex", r, refuse=False, what=rx)
        if r is not None and r.status_code == 201:
            # Accepted by a linear-time matcher (RE2): the worker must then finish the run
            # (it fails: the pattern matches no tensor) instead of hanging inside the regex.
            run_id = tally.runs.pop()
            detail = stack.wait_run(run_id, timeout=300)
            if detail["status"] not in ("done", "failed"):
                tally.problems.append(f"spec_regex: run ended {detail['status']} for {rx}")
    for bad in ["a:b", "x" * 200, "%3A", "ft_a:ft_b", "a:b:c:points"]:  # ids with ':' and friends
        for method, path in [
            ("GET", f"/api/runs/{bad}"),
            ("GET", f"/api/runs/{bad}/points"),
            ("POST", f"/api/runs/{bad}/cancel"),
            ("DELETE", f"/api/runs/{bad}"),
        ]:
            tally.add("run_ids", send(stack, method, path), refuse=True, what=f"{method} {path}")
    spec = linear_spec(3, path={"type": "linear", "a": "ft_a:x", "b": "ft_b", "points": 3})
    tally.add("run_ids", send(stack, "POST", "/api/runs", json=spec), refuse=True, what="a: ft_a:x")
    huge_plane = {
        **linear_spec(3),
        "path": {
            "type": "plane",
            "a": "ft_a",
            "b": "ft_b",
            "c": "ft_c",
            "resolution": [10**4, 10**4],
        },
    }
    tally.add(
        "oversized",
        send(stack, "POST", "/api/runs", json=huge_plane),
        refuse=True,
        what="a 10^4 x 10^4 plane",
    )
    # a real run's points with malformed cursors
    ok = send(stack, "POST", "/api/runs", json=linear_spec(2, seed=9))
    assert ok is not None and ok.status_code == 201, ok.text if ok is not None else "no answer"
    real = ok.json()["id"]
    for cur in ["garbage", "1-x", "-", "99999999999999999999-0", "0-0-0", "%00", "1" * 64]:
        tally.add(
            "cursors",
            send(stack, "GET", f"/api/runs/{real}/points", params={"after": cur}),
            refuse=False,
            what=f"after={cur!r}",
        )
    for tok in ["tökén".encode(), b"\xff\xfe", b"a" * 8000]:  # odd token headers: refused
        tally.add(
            "headers",
            send(stack, "POST", f"/api/runs/{real}/cancel", headers={"X-Basin-Token": tok}),
            refuse=True,
            what=repr(tok[:8]),
        )

    @settings(
        max_examples=n,
        database=None,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(spec_strategy())
    def one(spec: Any) -> None:
        try:
            body = json.dumps(spec)
        except ValueError:
            return
        r = send(
            stack, "POST", "/api/runs", content=body, headers={"Content-Type": "application/json"}
        )
        tally.add("spec_fuzz", r, refuse=False, what=body[:120])
        if r is not None and r.status_code == 201:
            send(stack, "DELETE", f"/api/runs/{r.json()['id']}")

    one()


def schema_fuzz(stack, tally: Tally, per_op: int) -> int:
    """Every operation of ``/api/openapi.json`` with schemathesis-drawn requests (valid and
    invalid by the schema). Server-side registration is left out: on a server that allows
    it, a drawn path could copy any folder it can read (part A makes it off by default)."""
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(stack.base_url + "/api/openapi.json")
    ops = [o.ok() for o in schema.get_all_operations()]
    ops = [o for o in ops if not o.path.endswith("/register") and not o.path.endswith("/events")]
    for op in ops:
        # (a string path parameter cannot be made invalid: only bodies and queries can)
        negatable = bool(len(op.body) or len(op.query))
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if negatable else [])
        for mode in modes:

            @settings(
                max_examples=per_op,
                database=None,
                derandomize=True,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(op.as_strategy(generation_mode=mode))
            def one(case: Any) -> None:
                try:
                    r = case.call(base_url=stack.base_url, headers=stack.headers, timeout=120)
                except Exception as e:  # noqa: BLE001 (a request that never got an answer)
                    tally.problems.append(f"schema {case.operation.label}: {type(e).__name__}: {e}")
                    return
                status = r.status_code
                tally.by_class["schema_fuzz"][str(status)] += 1
                if status >= 500:
                    tally.problems.append(
                        f"schema {case.operation.label}: {status}: {r.text[:200]}"
                    )
                if status == 201 and case.operation.path == "/api/runs":
                    try:
                        tally.runs.append(r.json()["id"])
                    except (ValueError, KeyError):
                        pass

            try:
                one()
            except Unsatisfiable:  # nothing in this operation can be made invalid
                continue
            except Exception as e:  # noqa: BLE001 (an operation schemathesis cannot draw for)
                tally.problems.append(f"schema {op.label} {mode.value}: {type(e).__name__}: {e}")
    return len(ops)


def free_worker(stack, tally: Tally) -> None:
    """Delete the runs that got in; replace the worker if any did (one caught by a hostile
    regex stays busy for minutes), so what follows has a free worker and a free core."""
    if not tally.runs:
        return
    for run_id in tally.runs:
        send(stack, "DELETE", f"/api/runs/{run_id}")
    tally.replaced_workers += 1
    tally.accepted_runs += len(tally.runs)
    tally.runs = []
    for i, w in enumerate(stack.workers):
        if w is not None:
            stack.kill_worker(i)
    stack.start_worker()


def store_links(store: Path) -> list[str]:
    out = []
    for root, dirs, files in os.walk(store):
        for n in dirs + files:
            p = Path(root) / n
            if p.is_symlink():
                out.append(str(p.relative_to(store)))
    return out


def test_bad_inputs_get_4xx_and_leave_nothing_behind(rstack, classifier_family, figures):
    stack = rstack
    ensure_worker(stack)
    markers = stack.store.parent / "markers"
    markers.mkdir(exist_ok=True)
    model = hostile.folder_files(classifier_family["ft_a"])
    tally = Tally()
    t0 = time.monotonic()
    pickled = hostile_uploads(stack, tally, model, markers)
    api_rss = peak_rss_mb(stack.api_proc.pid)
    load_pickled(stack, tally, pickled)
    t1 = time.monotonic()
    without_token(stack, tally)
    hostile_specs(stack, tally, count(12, 150))
    free_worker(stack, tally)  # (a worker caught by a hostile regex burns a core)
    t2 = time.monotonic()
    n_ops = schema_fuzz(stack, tally, count(1, 3))
    t3 = time.monotonic()
    took = t3 - t0

    free_worker(stack, tally)

    leftovers = store_tmp_leftovers(stack.store)
    written = sorted(p.name for p in markers.iterdir())
    links = store_links(stack.store)
    health = send(stack, "GET", "/api/health")
    figures["bad_inputs"] = {
        "total": tally.total,
        "by_class": {k: dict(v) for k, v in sorted(tally.by_class.items())},
        "five_xx": tally.five_xx,
        "tmp_leftovers": len(leftovers),
        "markers_written": len(written),
        "store_symlinks": len(links),
        "runs_accepted": tally.accepted_runs,
        "workers_replaced": tally.replaced_workers,
        "pickled_checkpoints_loaded": len(pickled[:3]),
        "api_peak_rss_mb_after_uploads": round(api_rss, 1),
        "schema_operations": n_ops,
        "problems": tally.problems[:200],
        "seconds": round(took, 1),
        "seconds_by_phase": {
            "uploads": round(t1 - t0, 1),
            "specs": round(t2 - t1, 1),
            "schema": round(t3 - t2, 1),
        },
    }
    # the stack is healthy after it all: a normal run still completes, every point once
    r = stack.request("POST", "/api/runs", json=linear_spec(3, seed=11))
    assert r.status_code == 201, r.text
    assert_recorded_once(stack, r.json()["id"], 3)
    assert health is not None and health.status_code == 200 and health.json()["redis"]["ok"]
    assert not written, f"files written by hostile input: {written}"
    assert not leftovers, f"left in the store's tmp/: {leftovers[:20]}"
    assert not links, f"symlinks in the store: {links[:20]}"
    assert tally.five_xx == 0 and not tally.problems, "\n".join(tally.problems[:60])
