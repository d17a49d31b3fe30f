"""The demos ``basin up`` brings up: the classifier demo registered through the API, and the
LM demo built in a background thread (its status in Redis for the dashboard's banner).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from service.procs import LaunchError, http_json
from service.resp import _keys, redis_command

logger = logging.getLogger(__name__)

# ---- the demo -----------------------------------------------------------------------------


def register_demo(
    base_url: str, built: dict, *, token: str | None = None, say: Callable[[str], None] = print
) -> None:
    """Register the demo's checkpoints and datasets through the API; skip those present."""
    _, ckpts = http_json("GET", base_url + "/api/checkpoints", token=token)
    have = {c.get("name") for c in ckpts} if isinstance(ckpts, list) else set()
    for c in built.get("checkpoints", []):
        if c["name"] in have:
            say(f"  checkpoint {c['name']}: already registered")
            continue
        status, body = http_json(
            "POST",
            base_url + "/api/checkpoints/register",
            {
                "path": str(Path(c["path"]).resolve()),
                "name": c["name"],
                "tags": c.get("tags") or {},
            },
            token=token,
            timeout=300,
        )
        if status >= 300:
            raise LaunchError(f"registering checkpoint {c['name']} failed ({status}): {body}")
        say(f"  checkpoint {c['name']}: registered ({body.get('id', '?')[:12]})")
    _, sets = http_json("GET", base_url + "/api/datasets", token=token)
    have = {d.get("name") for d in sets} if isinstance(sets, list) else set()
    for d in built.get("datasets", []):
        path = Path(d["path"])
        name = d["name"] if Path(d["name"]).suffix else d["name"] + path.suffix
        if d["name"] in have or name in have:
            say(f"  dataset {d['name']}: already registered")
            continue
        q = urllib.parse.urlencode({"name": name})
        status, body = http_json(
            "PUT", f"{base_url}/api/datasets?{q}", data=path.read_bytes(), token=token, timeout=300
        )
        if status >= 300:
            raise LaunchError(f"uploading dataset {d['name']} failed ({status}): {body}")
        say(f"  dataset {name}: uploaded ({body.get('id', '?')[:12]})")


# ---- the LM demo (background) -------------------------------------------------------------

#: Redis key holding the LM demo's build status (JSON); ``/api/health`` returns it as ``demo_lm``.
#: Name of the LM demo's ready run (not submitted again when a run of that name exists).
DEMO_LM_RUN_NAME = "sentiment per α: SmolLM2 negative → positive tweets"


def demo_lm_spec(points: int = 9) -> dict[str, Any]:
    """The LM demo's ready run: the linear path from the negative- to the positive-tuned
    SmolLM2, α from −0.5 to 1.5 (points at −0.5, −0.25 … 1.5), continuations of the neutral
    prompts scored by the MiniLM sentiment demo checkpoint; perplexity under their common
    θ0 (SmolLM2-135M: an end of the path would tilt the curve). Output ensembling is left
    off here (it doubles the CPU time of the first start); `bench.lm_demo_curves` draws it.
    Checkpoints and datasets are store names (:func:`register_demo` registers them).

    Sized for the first start on 2 CPU cores: 8 prompts × 4 samples × 20 new tokens per
    point (32 samples: the sentiment's standard error is about 0.05 per point). A run of 16
    prompts × 4 × 30 tokens took 1,025 s of CPU, this one 467 s."""
    from basin.demo_lm import BASE, NEGATIVE, POSITIVE

    return {
        "name": DEMO_LM_RUN_NAME,
        "path": {"type": "linear", "a": NEGATIVE, "b": POSITIVE, "points": points,
                 "range": [-0.5, 1.5]},
        "dataset": "lm-prompts.csv",
        "task": "generation",
        "max_examples": 8,
        "batch_size": 32,
        "max_length": 64,
        "generation": {
            "samples_per_prompt": 4,
            "max_new_tokens": 20,
            "top_p": 0.9,
            "temperature": 1.0,
            "seed": 0,
            "scorer": "minilm-seed1",
            "positive_label": "positive",
            "reference": BASE,
            "keep_samples": 8,
        },
    }


class DemoStatus:
    """A demo's build status, written to Redis (best effort) and to ``say`` at stage changes.

    The small interface a demo builder reports through: :meth:`progress` ``(fraction, stage)``
    is its ``on_progress`` (the build is ``build_share`` of the way, registering the rest);
    :meth:`set` writes any field. Whoever builds the demo (``basin.demo.build_demo`` now, a
    ``tune`` job later) calls only these.

    The document: ``{"state": "waiting" | "building" | "registering" | "done" | "failed",
    "fraction", "stage", "error", "run_id", "run_url", "warning", "started", "updated",
    "eta_s", "build_s", "what"}``. ``eta_s`` (seconds left, from the rate so far; ``None`` until
    a twentieth is done) lets the dashboard say when it will be ready."""

    #: the part of the way the build itself takes (registering the rest)
    build_share = 0.95

    def __init__(self, redis_port: int, say: Callable[[str], None], *,
                 key: str | None = None, label: str = "LM demo", what: str = ""):
        self.redis_port = redis_port
        self.say = say
        self.key = key or _keys().DEMO_LM_STATUS_KEY
        self.label = label
        self.doc: dict[str, Any] = {"state": "building", "fraction": 0.0, "stage": "starting",
                                    "error": None, "run_id": None, "run_url": None, "warning": None,
                                    "what": what, "eta_s": None}
        self._last_stage = ""
        self._t0: float | None = None

    def set(self, **fields: Any) -> None:
        now = time.time()
        if fields.get("state") in ("building", "registering") and self._t0 is None:
            self._t0 = now
            self.doc["started"] = now
        self.doc.update(fields, updated=now)
        f = float(self.doc.get("fraction") or 0)
        if self._t0 is not None and self.doc.get("state") in ("building", "registering") and f >= 0.05:
            self.doc["eta_s"] = round((now - self._t0) * (1 - f) / f, 1)
        elif self.doc.get("state") in ("done", "failed"):
            self.doc["eta_s"] = None
        head = str(self.doc.get("stage") or "").split(":")[0]
        if head != self._last_stage:
            self._last_stage = head
            self.say(f"{self.label}: {self.doc['stage']} ({100 * f:.0f}%)")
        try:
            redis_command(self.redis_port, "SET", self.key, json.dumps(self.doc))
        except OSError as e:
            logger.warning("could not record the %s's status: %s", self.label, e)

    def progress(self, fraction: float, stage: str) -> None:
        """The build's ``on_progress``: the build is ``build_share`` of the way, registering the rest."""
        self.set(state="building", fraction=round(self.build_share * max(0.0, min(1.0, fraction)), 4),
                 stage=stage)


class DemoLmStatus(DemoStatus):
    """The LM demo's status (Redis key ``basin:demo:lm``, ``/api/health`` → ``demo_lm``)."""

    def __init__(self, redis_port: int, say: Callable[[str], None]):
        super().__init__(redis_port, say, key=_keys().DEMO_LM_STATUS_KEY, label="LM demo",
                         what=LM_DEMO_WHAT)


#: What each demo builds, as the dashboard's first-start banner says it.
MINILM_DEMO_WHAT = ("all-MiniLM-L6-v2 fine-tuned on tweets (negative / positive) with two seeds: "
                    "5 checkpoints (θ0, two seeds, a trajectory) and the tweets-eval dataset")
LM_DEMO_WHAT = ("SmolLM2-135M fine-tuned on negative and on positive tweets, then the ready run "
                "\"sentiment per α\" between them")


def waiting_lm_status(redis_port: int) -> None:
    """Say, from the first second, that the LM pair comes after the MiniLM demo."""
    doc = {"state": "waiting", "fraction": 0.0, "stage": "waits for the MiniLM demo",
           "what": LM_DEMO_WHAT, "updated": time.time(), "eta_s": None}
    try:
        redis_command(redis_port, "SET", _keys().DEMO_LM_STATUS_KEY, json.dumps(doc))
    except OSError as e:
        logger.warning("could not record the LM demo's status: %s", e)


def submit_demo_lm_run(base_url: str, *, token: str | None = None) -> tuple[str | None, str | None]:
    """Submit :func:`demo_lm_spec` unless a run of that name exists: ``(run_id, url)``.

    Raises :class:`LaunchError` with the API's ``detail`` when the spec is refused."""
    status, runs = http_json("GET", base_url + "/api/runs", token=token)
    if status == 200 and isinstance(runs, list):
        for run in runs:
            if isinstance(run, dict) and run.get("name") == DEMO_LM_RUN_NAME:
                return run.get("id"), run.get("url")
    # background: a run a person submits meanwhile goes ahead of it (the worker yields)
    status, body = http_json("POST", base_url + "/api/runs?background=true", demo_lm_spec(), token=token,
                             timeout=120)
    if status >= 300:
        detail = body.get("detail") if isinstance(body, dict) else body
        raise LaunchError(f"the API refused the ready run ({status}): {detail}")
    return body.get("id"), body.get("url")


def demo_lm_background(
    base_url: str, store: Path, redis_port: int, say: Callable[[str], None], *,
    token: str | None = None, build: Callable[..., dict] | None = None,
    build_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the LM demo (cached), register it, submit its ready run; report all along.

    Runs in a thread of ``basin up``. Never raises: a failure is recorded as
    ``state: failed`` with its ``error`` (the dashboard shows it); a refused ready run
    (e.g. a server without the ``generation`` task) leaves ``state: done`` with a
    ``warning``. Returns the final status document."""
    status = DemoLmStatus(redis_port, say)
    status.set(state="building", fraction=0.0, stage="starting")
    t0 = time.monotonic()
    try:
        if build is None:
            from basin.demo_lm import build_lm_demo

            build = build_lm_demo
        built = build(store / "demo-src" / "lm", on_progress=status.progress, **(build_kwargs or {}))
        status.set(state="registering", fraction=0.96, stage="registering the LM checkpoints and datasets")
        register_demo(base_url, built, token=token, say=say)
        status.set(fraction=0.98, stage="submitting the ready run")
        try:
            run_id, url = submit_demo_lm_run(base_url, token=token)
        except LaunchError as e:
            status.set(state="done", fraction=1.0, stage="ready (no run)", warning=str(e),
                       build_s=round(time.monotonic() - t0, 1))
            return status.doc
        status.set(state="done", fraction=1.0, stage="ready", run_id=run_id, run_url=url,
                   build_s=round(time.monotonic() - t0, 1))
    except Exception as e:  # noqa: BLE001 - any failure goes to the banner, never further
        logger.exception("the LM demo failed")
        status.set(state="failed", stage="failed", error=f"{type(e).__name__}: {e}",
                   build_s=round(time.monotonic() - t0, 1))
    return status.doc


def start_demo_lm(base_url: str, store: Path, redis_port: int, say: Callable[[str], None]) -> threading.Thread:
    """:func:`demo_lm_background` in a daemon thread (Ctrl-C does not wait for it; an
    interrupted build leaves only a temporary folder, removed by the next build)."""
    t = threading.Thread(
        target=demo_lm_background, name="basin-demo-lm", daemon=True,
        args=(base_url, store, redis_port, say), kwargs={"token": os.environ.get("BASIN_API_TOKEN")},
    )
    t.start()
    return t
