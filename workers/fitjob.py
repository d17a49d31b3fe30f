"""The Celery task ``basin.fit``'s body: fit, store the control point, queue the evaluations.

The fit is a job of the kernel's ``fit`` kind (:mod:`service.jobs.fit`): :func:`run_fit`
hands it to the kernel's worker side (:func:`workers.jobs.run_job`: heartbeat, start,
errors), which calls :func:`execute_fit`. Its state lives in Redis: each training step's
loss goes to the loss log as it is computed, the cancel flag and the time limit
(``BASIN_JOB_TIME_LIMIT_S``) are checked before each step; a fit past its time limit ends
``failed`` saying so and stores nothing. Before the control point is written, the store's
quota is checked again (``BASIN_MAX_STORE_BYTES``). When the fit ends
``done`` the control point is saved (:func:`basin.fit.save_control`) and moved into the
store as a new checkpoint (tags: role, fitted_from, the fit's id and how it was fitted),
then two evaluation runs are queued through :func:`service.runstate.create.create_run`,
the function behind ``POST /api/runs``: the straight line A→B and the fitted curve with
the new checkpoint as control (same scope, the fit's eval dataset or else its training
set). A fit needs the shared store (it writes a checkpoint): a worker with
``BASIN_API_URL`` fails it with a message saying so.

While it runs, the worker's heartbeat announces the fit and refreshes its ``beat``; if
the worker dies, the API's reaper fails the fit saying so (:meth:`service.jobs.WorkerJobKind.reap`).
A fit that stops being ``running`` under the worker (the reaper failed it while this
worker was cut off from Redis) stops before its next step and stores nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from basin.status import CANCELLED, DONE, FAILED
from service.jobs.fit import FitState, control_bytes, control_names
from service.jobs.kernel import time_limit_message

logger = logging.getLogger(__name__)


def run_fit(fit_id: str, state: Any) -> dict:
    """Run fit ``fit_id`` to its end (done, failed or cancelled); safe to deliver twice."""
    from workers.jobs import run_job

    return run_job("fit", fit_id, state)


def execute_fit(fit_id: str, fs: FitState, state: Any) -> dict:
    """The ``fit`` kind's executor: train, store the control point(s), queue the evaluations."""
    from basin.errors import InvalidSpec
    from basin.fit import FitSpec, curve_run_data, fit, save_control
    from basin.spec import parse_spec
    from service.jobs.limits import JobLimits
    from service.runstate.create import create_run
    from service.store import QuotaExceeded, Store

    settings = state.settings
    if (getattr(settings, "api_url", "") or "").strip():
        raise InvalidSpec("this worker has no shared store (BASIN_API_URL is set): a fit writes its "
                          "control point into the store, so it needs a worker on the API's store")
    h = fs.hash()
    spec = FitSpec.model_validate(json.loads(h["spec"]))
    if spec.device == "auto" and state.device != "auto":
        spec = spec.model_copy(update={"device": state.device})
    store = Store(settings.store)
    limits = JobLimits.from_settings(settings)
    names: dict[str, str] = json.loads(h.get("names") or "{}")
    result = fit(spec, store.resolver(), on_step=fs.step, should_stop=fs.cancelled)
    fs.set(final_loss=repr(result.final_loss) if result.final_loss is not None else "")
    if result.status == "cancelled":
        if fs.timed_out:
            msg = time_limit_message("fit", fs.limit_s, len(result.losses), spec.steps)
            fs.end(FAILED, msg)
            return {"fit": fit_id, "status": FAILED, "error": msg}
        fs.end(CANCELLED)  # (no-op when the reaper failed it meanwhile)
        return {"fit": fit_id, "status": CANCELLED, "steps": len(result.losses)}
    if not fs.running():  # failed by the reaper while this worker was cut off: store nothing
        return {"fit": fit_id, "status": fs.r.hget(fs.k.hash, "status") or "gone"}

    need, free = control_bytes(spec, store), store.free_bytes(limits.store_bytes)
    if free is not None and need > free:
        raise QuotaExceeded(f"the fitted control checkpoint(s) need about {need:,} bytes but the store has "
                            f"{free:,} left under its quota (BASIN_MAX_STORE_BYTES); nothing was stored")
    a_name, b_name = names.get(spec.a, spec.a[:12]), names.get(spec.b, spec.b[:12])
    tags = {
        "role": "fitted control",
        "fitted_from": f"{a_name} + {b_name}",
        "fit": fit_id,
        "curve": spec.curve,
        "fit_steps": len(result.losses),
        "fit_dataset": names.get(spec.dataset, spec.dataset),
        "final_training_loss": result.final_loss,
    }
    controls: list[str] = []
    with store.workspace() as ws:
        folders = save_control(result, ws / "control")
        for folder, name in zip(folders, control_names(spec, names, fit_id), strict=True):
            manifest = store.import_checkpoint(folder, name=name, tags=tags, mode="move").manifest
            controls.append(manifest["id"])
            names[manifest["id"]] = manifest["name"]
    fs.set(control=controls[0], controls=json.dumps(controls))

    runs: dict[str, str] = {}
    evals = [("line", True)] + ([("curve", False)] if len(controls) == 1 else [])
    for label, line in evals:
        run_spec = parse_spec(curve_run_data(spec, controls[0], line=line))
        run_names = {k: v for k, v in names.items() if k in (spec.a, spec.b, controls[0],
                                                             spec.eval_dataset or spec.dataset)}
        run_tags: dict[str, dict[str, Any]] = {}
        if not line:  # the curve links back to its fit's line run (and the run it started from)
            links = {"line_run": runs["line"], **({"origin_run": h["origin"]} if h.get("origin") else {})}
            run_tags = {controls[0]: {**tags, **links}}
        runs[label] = create_run(fs.r, run_spec, redis_url=settings.redis_url, queue=settings.task_queue,
                                 names=run_names, tags=run_tags, limits=limits)
    fs.set(runs=runs)
    fs.end(DONE)
    logger.info("fit %s done: control %s, runs %s", fit_id, controls[0][:12], runs)
    return {"fit": fit_id, "status": DONE, "control": controls[0], "runs": runs}
