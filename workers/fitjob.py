"""The Celery task ``basin.fit``'s body: fit, store the control point, queue the evaluations.

The fit's state lives in Redis (:mod:`service.fits`): each training step's loss is
appended as it is computed, the cancel flag is read before each step. When the fit ends
``done`` the control point is saved (:func:`basin.fit.save_control`) and moved into the
store as a new checkpoint (tags: role, fitted_from, the fit's id and how it was fitted),
then two evaluation runs are queued through :func:`service.runstate.create.create_run`,
the function behind ``POST /api/runs``: the straight line A→B and the fitted curve with
the new checkpoint as control (same scope, the fit's eval dataset or else its training
set). A fit needs the shared store (it writes a checkpoint): a worker with
``BASIN_API_URL`` fails it with a message saying so.

While it runs, the worker's heartbeat announces the fit and refreshes its ``beat``; if
the worker dies, the API's reaper fails the fit saying so (:func:`service.fits.reap_fits`).
A fit that stops being ``running`` under the worker (the reaper failed it while this
worker was cut off from Redis) stops before its next step and stores nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from service.fits import FitKeys, FitState

logger = logging.getLogger(__name__)


def run_fit(fit_id: str, state: Any) -> dict:
    """Run fit ``fit_id`` to its end (done, failed or cancelled); safe to deliver twice."""
    from basin.errors import BasinError

    r = state.client
    raw = r.hget(FitKeys(fit_id).fit, "spec")
    if raw is None:
        return {"fit": fit_id, "skipped": "gone"}
    fs = FitState(r, fit_id)
    hb = getattr(state, "heartbeat", None)
    if hb is not None:
        hb.fitting(fit_id)  # first: the reaper must see the fit is being worked on
    try:
        started = fs.start(state.name)
        if started != "ok":  # cancelled while queued, or another delivery took it
            return {"fit": fit_id, "skipped": started}
        try:
            out = _run(fit_id, fs, state, json.loads(raw))
        except BasinError as e:
            fs.end("failed", str(e))
            return {"fit": fit_id, "error": str(e)}
        except Exception as e:  # a bug or a broken file: say so on the fit rather than hang it
            logger.exception("fit %s failed", fit_id)
            fs.end("failed", f"{type(e).__name__}: {e}")
            return {"fit": fit_id, "error": str(e)}
        return out
    finally:
        if hb is not None:
            hb.fitting(None)


def _run(fit_id: str, fs: FitState, state: Any, data: dict) -> dict:
    from basin.errors import InvalidSpec
    from basin.fit import FitSpec, curve_run_data, fit, save_control
    from basin.spec import parse_spec
    from service.runstate.create import create_run
    from service.store import Store

    settings = state.settings
    if (getattr(settings, "api_url", "") or "").strip():
        raise InvalidSpec("this worker has no shared store (BASIN_API_URL is set): a fit writes its "
                          "control point into the store, so it needs a worker on the API's store")
    spec = FitSpec.model_validate(data)
    if spec.device == "auto" and state.device != "auto":
        spec = spec.model_copy(update={"device": state.device})
    store = Store(settings.store)
    names: dict[str, str] = json.loads(fs.r.hget(fs.k.fit, "names") or "{}")
    result = fit(spec, store.resolver(), on_step=fs.step, should_stop=fs.cancelled)
    fs.set(final_loss=repr(result.final_loss) if result.final_loss is not None else "")
    if result.status == "cancelled":
        fs.end("cancelled")  # (no-op when the reaper failed it meanwhile)
        return {"fit": fit_id, "status": "cancelled", "steps": len(result.losses)}
    if not fs.running():  # failed by the reaper while this worker was cut off: store nothing
        return {"fit": fit_id, "status": fs.r.hget(fs.k.fit, "status") or "gone"}

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
    base = f"{spec.name or 'fitted ' + spec.curve} {a_name}+{b_name} {fit_id[:8]}"
    controls: list[str] = []
    with store.workspace() as ws:
        folders = save_control(result, ws / "control")
        for i, folder in enumerate(folders):
            name = base if len(folders) == 1 else f"{base} bend {i + 1}"
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
        run_tags = {controls[0]: tags} if not line else {}
        runs[label] = create_run(fs.r, run_spec, redis_url=settings.redis_url,
                                 queue=settings.task_queue, names=run_names, tags=run_tags)
    fs.set(runs=runs)
    fs.end("done")
    logger.info("fit %s done: control %s, runs %s", fit_id, controls[0][:12], runs)
    return {"fit": fit_id, "status": "done", "control": controls[0], "runs": runs}
