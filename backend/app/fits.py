"""Fit bookkeeping for the API: validate a fit spec against the store, then queue it; find
the fitted curves of a straight-line run's endpoints.

The state itself (Redis keys, create / read / cancel) is :mod:`service.fits`, shared with
the fit worker (:mod:`workers.fitjob`).
"""

from __future__ import annotations

from typing import Any

import redis

from backend.app.api.errors import carried_references
from backend.app.runs import check_compatibility, check_run_id, list_runs, run_detail
from basin.errors import InvalidSpec
from basin.fit import FitSpec, curve_run_data, parse_fit_spec
from basin.fitdata import check_fit_data
from basin.scope_regex import compile_scope
from basin.spec import SCOPE_PRESETS, parse_spec
from basin.status import CANCELLED, FAILED
from service.jobs.fit import FIT, list_fits
from service.jobs.limits import JobLimits
from service.store import NotFound, Store

#: Fields that must agree for a curve run and a line run to be compared point for point.
SAME_DATA = ("dataset", "max_examples", "max_length", "scope", "task", "seed")
CURVES = ("bezier", "polychain")


def check_origin(r: redis.Redis, store: Store, run_id: str, spec: FitSpec) -> str:
    """``run_id`` when it names a straight-line run between the fit's endpoints (the run a
    fit is started from, ``POST /api/fits?from_run=``), else :class:`InvalidSpec`."""
    try:
        info = run_detail(r, store, check_run_id(run_id), url="")
    except NotFound:
        raise InvalidSpec(f"invalid fit: from_run {run_id[:64]!r} names no run") from None
    path = (info.get("spec") or {}).get("path") or {}
    if path.get("type") != "linear" or (path.get("a"), path.get("b")) != (spec.a, spec.b):
        raise InvalidSpec("invalid fit: from_run must be a straight-line run between the fit's endpoints a and b")
    return run_id


def resolve_fit_spec(body: Any, store: Store, *, names: dict[str, str] | None = None,
                     limits: JobLimits | None = None) -> FitSpec:
    """Parse ``body`` as a :class:`FitSpec`, check it against this server's job ``limits``
    (the kernel's caps for the fit and for both evaluation runs it will queue, before any
    file is read), rewrite its references to store ids and check them (the endpoints exist
    and are compatible, the datasets exist, the scope compiles, the evaluation runs it
    will queue are valid specs, its training examples are not its evaluation's unless
    ``allow_overlap``: :func:`basin.fitdata.check_fit_data`). ``names`` is filled with store id → the item's name.
    Raises the same errors as :func:`backend.app.runs.resolve_spec`. (The kernel checks
    again with the names resolved and the store: the quota, the control's name.)"""
    if not isinstance(body, dict):
        raise InvalidSpec("invalid fit spec: the body must be a JSON object (a FitSpec: a, b, dataset, ...)")
    spec = parse_fit_spec(body)
    over = FIT.check(spec, limits or JobLimits(), None, {})
    if over:
        raise InvalidSpec("invalid fit spec: " + "; ".join(over))
    if spec.scope not in SCOPE_PRESETS:
        try:
            compile_scope(spec.scope)
        except InvalidSpec as e:
            raise InvalidSpec(f"invalid fit spec: scope: {e}") from None
    seen: dict[str, str] = {} if names is None else names

    def ckpt(ref: str) -> str:
        m = store.get_checkpoint(ref)
        seen.setdefault(m["id"], str(m.get("name") or ref))
        return str(m["id"])

    def data(ref: str) -> str:
        m = store.get_dataset(ref)
        seen.setdefault(m["id"], str(m.get("name") or ref))
        return str(m["id"])

    with carried_references():
        update: dict[str, Any] = {"a": ckpt(spec.a), "b": ckpt(spec.b), "dataset": data(spec.dataset)}
        if spec.eval_dataset:
            update["eval_dataset"] = data(spec.eval_dataset)
        if spec.tokenizer:
            update["tokenizer"] = ckpt(spec.tokenizer)
    if update["a"] == update["b"]:
        raise InvalidSpec(f"invalid fit spec: a ({spec.a!r}) and b ({spec.b!r}) are the same checkpoint: "
                          "there is no curve to fit between them")
    resolved = parse_fit_spec({**spec.model_dump(mode="json"), **update})
    # the straight-line evaluation it will queue: same checks as POST /api/runs (names the tensors)
    line = parse_spec(curve_run_data(resolved, resolved.a, line=True))
    check_compatibility(line, store, names=seen)
    # training examples never double as evaluation examples unless allow_overlap (by content)
    check_fit_data(resolved, store.resolver())
    return resolved


def _links_back(r: redis.Redis, store: Store, curve_run: str, control: str, line_run: str) -> bool:
    """Whether the curve run ``curve_run`` was queued by a fit of run ``line_run`` (its line
    evaluation, or the run it was started from: the worker records ``line_run`` and
    ``origin_run`` in the control's tags of the curve run)."""
    try:
        tags = run_detail(r, store, curve_run, url="").get("tags") or {}
    except NotFound:
        return False
    mine = tags.get(control) or {}
    return line_run in (mine.get("line_run"), mine.get("origin_run"))


def _same_data(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in SAME_DATA)


def fitted_for_run(r: redis.Redis, store: Store, run_id: str, *, public_url: str = "",
                   everything: bool = True) -> dict[str, Any]:
    """What ``GET /api/runs/{id}/fitted`` answers: for a straight-line run A→B, the curves
    fitted between the same endpoints (same order), newest first.

    ``everything`` False (a token is configured and the request does not carry it: the run's
    share link alone): only the fits of this run — whose own line evaluation *is* this run
    (``runs.line``) or that were started from it (``origin``: the run page's "Fit a curve"),
    or, once the fit is forgotten, a curve run that links back to this run (``line_run`` or
    ``origin_run`` in its control's tags as the run recorded them). A link reveals its run and
    what that run produced, nothing else (``docs/service.md``, "What a link reveals").

    From two sources, merged by fit: the fits Redis still has (queued and running ones
    too) and the evaluation runs of fitted curves (a Bezier / polychain run A→B whose
    control checkpoint the store tags ``role: fitted control``), which outlive the fit's
    Redis keys. Each entry: ``fit`` (id, or None once forgotten), ``fit_url``, ``status``
    (the fit's, or ``done``), ``curve``, ``control``, ``control_name``, ``curve_run``,
    ``curve_status``, ``line_run`` (the fit's own line evaluation, when known),
    ``same_data`` (the curve run evaluated the same data as this run: dataset, examples,
    length, scope, task, seed). Any other run: ``{"fits": []}``.
    """
    info = run_detail(r, store, run_id, url="")
    spec = info.get("spec") or {}
    path = spec.get("path") or {}
    if path.get("type") != "linear":
        return {"run": run_id, "fits": []}
    a, b = path.get("a"), path.get("b")
    by_fit: dict[str, dict[str, Any]] = {}
    for f in list_fits(r, public_url=public_url):
        if (f["a"], f["b"]) != (a, b) or f["status"] in (FAILED, CANCELLED):
            continue
        if not everything and run_id not in (f["runs"].get("line"), f.get("origin")):
            continue
        by_fit[f["id"]] = {"fit": f["id"], "fit_url": f["url"], "status": f["status"], "curve": f["curve"],
                           "control": f["control"], "control_name": None, "curve_run": f["runs"].get("curve"),
                           "curve_status": None, "line_run": f["runs"].get("line"), "same_data": None,
                           "created": f["created"]}
    orphans: list[dict[str, Any]] = []
    for run in list_runs(r, store, public_url=public_url):
        rs = run.get("spec") or {}
        rp = rs.get("path") or {}
        if rp.get("type") not in CURVES or (rp.get("a"), rp.get("b")) != (a, b) or not rp.get("control"):
            continue
        try:
            manifest = store.get_checkpoint(rp["control"])
        except Exception:  # the control was deleted: not a curve we can show
            continue
        tags = manifest.get("tags") or {}
        if tags.get("role") != "fitted control":
            continue
        entry = by_fit.get(str(tags.get("fit"))) if tags.get("fit") else None
        if entry is None and not everything and not _links_back(r, store, run["id"], rp["control"], run_id):
            continue
        if entry is None:
            entry = {"fit": None, "fit_url": None, "status": "done", "curve": rp["type"], "line_run": None,
                     "created": run.get("created")}
            orphans.append(entry)
        if entry.get("curve_run") not in (None, run["id"]):
            continue
        entry.update({"control": rp["control"], "control_name": manifest.get("name"), "curve_run": run["id"],
                      "curve_status": run.get("status"), "same_data": _same_data(rs, spec)})
    fits = [e for e in by_fit.values()] + orphans
    fits.sort(key=lambda e: e.get("created") or 0, reverse=True)
    return {"run": run_id, "fits": fits}


__all__ = ["check_origin", "fitted_for_run", "resolve_fit_spec"]
