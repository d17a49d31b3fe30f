"""The demos ``basin up`` brings up, in a background thread, their status in Redis for the
dashboard's banners: the MiniLM demo — a tune job from the shipped spec
(``basin/demo-minilm.yaml``, ``examples/demo-minilm.yaml``) the worker trains while the
dashboard shows it (:func:`minilm_demo`) — then the LM demo, built in-process
(:func:`demo_lm_background`).
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


# ---- the MiniLM demo: a tune job ------------------------------------------------------------

#: A tune job's ended states (:mod:`basin.status`).
_ENDED = ("done", "failed", "cancelled")


def _checkpoints(base_url: str, token: str | None) -> list[dict[str, Any]]:
    status, body = http_json("GET", base_url + "/api/checkpoints", token=token)
    if status >= 300 or not isinstance(body, list):
        raise LaunchError(f"listing the checkpoints failed ({status}): {body}")
    return [c for c in body if isinstance(c, dict)]


def demo_checkpoint_names(spec: Mapping[str, Any]) -> list[str]:
    """The friendly names a finished demo family has (θ0 and each member's final checkpoint):
    when the store has them all, the demo is built."""
    family = str(spec.get("family") or "minilm")
    return [f"{family}-init", *(f"{family}-seed{o}" for o in spec.get("orders") or [])]


def find_demo_tune(base_url: str, name: str, *, token: str | None = None) -> dict[str, Any] | None:
    """The newest tune job called ``name`` that is queued, running or done (a failed or
    cancelled one is not reused: the next start trains the family again)."""
    status, body = http_json("GET", base_url + "/api/tunes", token=token)
    if status >= 300 or not isinstance(body, list):
        raise LaunchError(f"listing the tune jobs failed ({status}): {body}")
    for t in body:  # newest first
        if (
            isinstance(t, dict)
            and t.get("name") == name
            and t.get("status") in ("queued", "running", "done")
        ):
            return t
    return None


def _stage(body: dict[str, Any]) -> str:
    """The family's progress in words: the running member's step, else what it waits for."""
    members = body.get("member_list") or []
    running = [m for m in members if m.get("status") == "running"]
    n = len(members)
    ended = sum(1 for m in members if m.get("status") in _ENDED)
    if running:
        m = running[0]
        return f"training {m.get('name')}: step {m.get('step')}/{m.get('total')} (member {m['index'] + 1}/{n})"
    if body.get("status") == "queued" or ended == 0:
        return "the tune job waits for the worker"
    return f"{ended}/{n} members trained; the next one waits for the worker"


def name_demo_checkpoints(
    base_url: str,
    tune_id: str,
    spec: Mapping[str, Any],
    *,
    token: str | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, str]:
    """Give the finished family's checkpoints (tag ``tune`` = ``tune_id``) the demo's names
    (:func:`basin.demo.demo_name`: ``minilm-init``, ``minilm-seed1``, ``minilm-seed1-step15``
    …) and the tags ``demo`` and ``task``; returns name → store id. A name another checkpoint
    already has is left to it (said, not fatal)."""
    from basin.demo import TASK, demo_name

    family = str(spec.get("family") or "minilm")
    out: dict[str, str] = {}
    for c in _checkpoints(base_url, token):
        tags = c.get("tags") or {}
        if tags.get("tune") != tune_id:
            continue
        name = demo_name(tags, family)
        if name is None:
            continue
        body: dict[str, Any] = {"tags": {"demo": family, "task": TASK}}
        if c.get("name") != name:
            body["name"] = name
        status, answer = http_json(
            "PATCH", f"{base_url}/api/checkpoints/{c['id']}", body, token=token
        )
        if status == 409:
            say(f"  checkpoint {c.get('name')}: kept its name ({name} is taken: {answer})")
            continue
        if status >= 300:
            raise LaunchError(
                f"naming checkpoint {c.get('name')} {name} failed ({status}): {answer}"
            )
        out[name] = str(c["id"])
    return out


def minilm_demo(
    base_url: str,
    store: Path,
    say: Callable[[str], None],
    redis_port: int | None = None,
    *,
    token: str | None = None,
    spec: Mapping[str, Any] | None = None,
    assets: Callable[[Path], Mapping[str, Path]] | None = None,
    poll_s: float = 1.0,
) -> dict[str, Any]:
    """The first start's MiniLM demo, trained by a tune job the dashboard shows live.

    1. Done already when the store has the demo's names (:func:`demo_checkpoint_names`).
    2. Else, unless a tune job of the demo is queued, running or done
       (:func:`find_demo_tune`): the inputs into ``<store>/demo-src``
       (:func:`basin.demo.tune_assets`: a copy of all-MiniLM-L6-v2's files and the tweet
       split; ``assets(folder)`` instead, e.g. a tiny model in tests) registered through the
       API — ``minilm``, ``tweets-train.csv``, ``tweets-eval.csv`` — and the demo's tune spec
       (:func:`basin.demo.demo_tune_spec`, ``spec`` merged over it) submitted to
       ``POST /api/tunes``: the worker trains it, one member a task, like any family.
    3. The job watched every ``poll_s`` seconds: its progress (steps done of all members),
       the running member's step, its ETA and its members go to :class:`DemoStatus`
       (``/api/health`` → ``demo``, the banner, which links to ``/tunes/<id>``).
    4. When it ends done, its checkpoints get the demo's names (:func:`name_demo_checkpoints`).

    Never raises: a failed or cancelled family, or any error, is recorded as ``state:
    failed`` with its ``error`` and the service goes on. Returns the final status document."""
    status = DemoStatus(
        redis_port, say, key=_keys().DEMO_STATUS_KEY, label="MiniLM demo", what=MINILM_DEMO_WHAT
    )
    status.set(state="building", fraction=0.0, stage="starting")
    if redis_port is not None:
        waiting_lm_status(redis_port)
    t0 = time.monotonic()
    tune_id: str | None = None
    try:
        from basin.demo import demo_tune_spec, tune_assets

        tune = demo_tune_spec(spec)
        have = {c.get("name") for c in _checkpoints(base_url, token)}
        if set(demo_checkpoint_names(tune)) <= have:
            status.set(
                state="done",
                fraction=1.0,
                stage="ready (built on an earlier start)",
                build_s=round(time.monotonic() - t0, 1),
            )
            return status.doc
        job = find_demo_tune(base_url, str(tune.get("name")), token=token)
        if job is None:
            src = Path(store) / "demo-src"
            status.set(fraction=0.005, stage="preparing all-MiniLM-L6-v2 and the tweets")
            made = dict(assets(src)) if assets is not None else tune_assets(src, copy_base=True)
            register_demo(
                base_url,
                {
                    "checkpoints": [
                        {
                            "name": str(tune["base"]),
                            "path": str(made["minilm"]),
                            "tags": {"demo": tune.get("family"), "role": "pre-trained body"},
                        }
                    ],
                    "datasets": [
                        {"name": k, "path": str(made[k])}
                        for k in (str(tune["dataset"]), str(tune["eval_dataset"]))
                    ],
                },
                token=token,
                say=say,
            )
            code, body = http_json(
                "POST", base_url + "/api/tunes", dict(tune), token=token, timeout=120
            )
            if code >= 300 or not isinstance(body, dict):
                detail = body.get("detail") if isinstance(body, dict) else body
                raise LaunchError(f"the API refused the demo's tune job ({code}): {detail}")
            job = body
            say(f"MiniLM demo: tune job {job['id'][:12]} submitted; watch it at {job.get('url')}")
        tune_id = str(job["id"])
        status.set(
            run_id=tune_id,
            run_url=job.get("url") or f"/tunes/{tune_id}",
            fraction=0.01,
            stage="the tune job waits for the worker",
        )
        while True:
            code, body = http_json("GET", f"{base_url}/api/tunes/{tune_id}", token=token)
            if code >= 300 or not isinstance(body, dict):
                raise LaunchError(f"reading the demo's tune job {tune_id} failed ({code}): {body}")
            total = int(body.get("steps_total") or 0)
            frac = (body.get("steps_done") or 0) / total if total else 0.0
            members = [
                {k: m.get(k) for k in ("name", "status", "step", "total")}
                for m in body.get("member_list") or []
            ]
            if body.get("status") in _ENDED:
                break
            status.set(
                state="building",
                fraction=round(0.01 + (status.build_share - 0.01) * frac, 4),
                stage=_stage(body),
                eta_s=body.get("eta_s"),
                members=members,
            )
            time.sleep(poll_s)
        if body.get("status") != "done":
            bad = [m for m in body.get("member_list") or [] if m.get("error")]
            why = body.get("error") or (f"{bad[0].get('name')}: {bad[0]['error']}" if bad else "")
            status.failed(
                f"the demo's tune job ended {body.get('status')}" + (f": {why}" if why else ""),
                t0,
                members=members,
            )
            return status.doc
        status.set(
            state="registering", fraction=0.96, stage="naming the demo checkpoints", members=members
        )
        named = name_demo_checkpoints(base_url, tune_id, tune, token=token, say=say)
        say(f"MiniLM demo: {len(named)} checkpoints named ({', '.join(sorted(named))})")
        status.set(
            state="done", fraction=1.0, stage="ready", build_s=round(time.monotonic() - t0, 1)
        )
    except Exception as e:  # noqa: BLE001 - shown in the banner; the service stays up
        logger.exception("the MiniLM demo failed")
        status.failed(f"{type(e).__name__}: {e}", t0)
    return status.doc


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
        "path": {
            "type": "linear",
            "a": NEGATIVE,
            "b": POSITIVE,
            "points": points,
            "range": [-0.5, 1.5],
        },
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
    :meth:`set` writes any field. Whoever builds a demo (the MiniLM demo's tune job watched by
    :func:`minilm_demo`, :func:`basin.demo_lm.build_lm_demo`) calls only these.

    The document: ``{"state": "waiting" | "building" | "registering" | "done" | "failed",
    "fraction", "stage", "error", "run_id", "run_url", "warning", "started", "updated",
    "eta_s", "build_s", "what", "members"}`` (the MiniLM demo: ``run_id`` / ``run_url`` are its
    tune job's, ``members`` each member's ``{name, status, step, total}``). ``eta_s`` (seconds left, from the rate so far; ``None`` until
    a twentieth is done) lets the dashboard say when it will be ready."""

    #: the part of the way the build itself takes (registering the rest)
    build_share = 0.95

    def __init__(
        self,
        redis_port: int | None,
        say: Callable[[str], None],
        *,
        key: str | None = None,
        label: str = "LM demo",
        what: str = "",
    ):
        self.redis_port = redis_port
        self.say = say
        self.key = key or _keys().DEMO_LM_STATUS_KEY
        self.label = label
        self.doc: dict[str, Any] = {
            "state": "building",
            "fraction": 0.0,
            "stage": "starting",
            "error": None,
            "run_id": None,
            "run_url": None,
            "warning": None,
            "what": what,
            "eta_s": None,
        }
        self._last_stage = ""
        self._t0: float | None = None

    def set(self, **fields: Any) -> None:
        now = time.time()
        if fields.get("state") in ("building", "registering") and self._t0 is None:
            self._t0 = now
            self.doc["started"] = now
        self.doc.update(fields, updated=now)
        f = float(self.doc.get("fraction") or 0)
        if fields.get("eta_s") is not None:  # the builder knows better (a tune job's pace)
            pass
        elif (
            self._t0 is not None
            and self.doc.get("state") in ("building", "registering")
            and f >= 0.05
        ):
            self.doc["eta_s"] = round((now - self._t0) * (1 - f) / f, 1)
        elif self.doc.get("state") in ("done", "failed"):
            self.doc["eta_s"] = None
        head = str(self.doc.get("stage") or "").split(":")[0]
        if head != self._last_stage:
            self._last_stage = head
            self.say(f"{self.label}: {self.doc['stage']} ({100 * f:.0f}%)")
        if self.redis_port is None:
            return
        try:
            redis_command(self.redis_port, "SET", self.key, json.dumps(self.doc))
        except OSError as e:
            logger.warning("could not record the %s's status: %s", self.label, e)

    def failed(self, error: str, t0: float, **fields: Any) -> None:
        """The demo stopped: ``error`` in the banner, the time it ran (``time.monotonic()`` at ``t0``)."""
        self.set(state="failed", stage="failed", error=error,
                 build_s=round(time.monotonic() - t0, 1), **fields)

    def progress(self, fraction: float, stage: str) -> None:
        """The build's ``on_progress``: the build is ``build_share`` of the way, registering the rest."""
        self.set(
            state="building",
            fraction=round(self.build_share * max(0.0, min(1.0, fraction)), 4),
            stage=stage,
        )


class DemoLmStatus(DemoStatus):
    """The LM demo's status (Redis key ``basin:demo:lm``, ``/api/health`` → ``demo_lm``)."""

    def __init__(self, redis_port: int, say: Callable[[str], None]):
        super().__init__(
            redis_port, say, key=_keys().DEMO_LM_STATUS_KEY, label="LM demo", what=LM_DEMO_WHAT
        )


#: What each demo builds, as the dashboard's first-start banner says it.
MINILM_DEMO_WHAT = (
    "all-MiniLM-L6-v2 fine-tuned on tweets (negative / positive) from one θ0 in two "
    "data orders, a tune job: 9 checkpoints (θ0, two fine-tunings, their "
    "trajectories) and the tweets datasets"
)
LM_DEMO_WHAT = (
    "SmolLM2-135M fine-tuned on negative and on positive tweets, then the ready run "
    '"sentiment per α" between them'
)


def waiting_lm_status(redis_port: int) -> None:
    """Say, from the first second, that the LM pair comes after the MiniLM demo."""
    doc = {
        "state": "waiting",
        "fraction": 0.0,
        "stage": "waits for the MiniLM demo",
        "what": LM_DEMO_WHAT,
        "updated": time.time(),
        "eta_s": None,
    }
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
    status, body = http_json(
        "POST", base_url + "/api/runs?background=true", demo_lm_spec(), token=token, timeout=120
    )
    if status >= 300:
        detail = body.get("detail") if isinstance(body, dict) else body
        raise LaunchError(f"the API refused the ready run ({status}): {detail}")
    return body.get("id"), body.get("url")


def demo_lm_background(
    base_url: str,
    store: Path,
    redis_port: int,
    say: Callable[[str], None],
    *,
    token: str | None = None,
    build: Callable[..., dict] | None = None,
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
        built = build(
            store / "demo-src" / "lm", on_progress=status.progress, **(build_kwargs or {})
        )
        status.set(
            state="registering", fraction=0.96, stage="registering the LM checkpoints and datasets"
        )
        register_demo(base_url, built, token=token, say=say)
        status.set(fraction=0.98, stage="submitting the ready run")
        try:
            run_id, url = submit_demo_lm_run(base_url, token=token)
        except LaunchError as e:
            status.set(
                state="done",
                fraction=1.0,
                stage="ready (no run)",
                warning=str(e),
                build_s=round(time.monotonic() - t0, 1),
            )
            return status.doc
        status.set(
            state="done",
            fraction=1.0,
            stage="ready",
            run_id=run_id,
            run_url=url,
            build_s=round(time.monotonic() - t0, 1),
        )
    except Exception as e:  # noqa: BLE001 - any failure goes to the banner, never further
        logger.exception("the LM demo failed")
        status.failed(f"{type(e).__name__}: {e}", t0)
    return status.doc


def demos_background(
    base_url: str,
    store: Path,
    redis_port: int,
    say: Callable[[str], None],
    *,
    token: str | None = None,
) -> None:
    """The first start's demos one after the other: the MiniLM demo's tune job
    (:func:`minilm_demo`), then the LM demo (:func:`demo_lm_background`; its ready run scores
    with ``minilm-seed1``). A failed MiniLM demo does not keep the LM demo from building."""
    minilm_demo(base_url, store, say, redis_port, token=token)
    demo_lm_background(base_url, store, redis_port, say, token=token)


def start_demos(
    base_url: str, store: Path, redis_port: int, say: Callable[[str], None]
) -> threading.Thread:
    """:func:`demos_background` in a daemon thread: ``basin up`` is ready (and supervises its
    worker, which trains the MiniLM family) while the demos are made."""
    t = threading.Thread(
        target=demos_background,
        name="basin-demos",
        daemon=True,
        args=(base_url, store, redis_port, say),
        kwargs={"token": os.environ.get("BASIN_API_TOKEN")},
    )
    t.start()
    return t
