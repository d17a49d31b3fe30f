"""The ``subspace`` job kind's executor: one stage of :mod:`basin.subspace` on the store.

A fit streams each step's reconstruction and task losses (per task and method) to the
job's loss log, stops before a step when cancelled or past the time limit
(``BASIN_JOB_TIME_LIMIT_S``), and when done moves its projections into the store as an
artefact (type ``subspace``, tagged with the base, the methods, y and the job). An
optimise streams its task loss, then decodes the trained vector through every method of
the subspace and moves each decoded adapter into the store as a checkpoint on the base,
tagged with how it was made (``made_by``, ``optimised_with``, ``decoded_with``, the
projections' id, the job), so every path type, merge and study can use it. The store's
quota is checked before anything is written. It needs the shared store.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from basin.status import CANCELLED, DONE, FAILED
from service.jobs.kernel import JobState, time_limit_message

logger = logging.getLogger(__name__)
#: a job's loss log keeps every ``stride``-th step's entry, ``stride`` = ⌈steps / MAX_LOSSES⌉
MAX_LOSSES = 1000


def execute_subspace(job_id: str, js: JobState, state: Any) -> dict:
    from basin.errors import InvalidSpec
    from basin.subspace.core import Stopped
    from basin.subspace.run import run_fit, run_optimise
    from service.jobs.limits import JobLimits
    from service.jobs.subspace import parse_subspace_spec
    from service.store import QuotaExceeded, Store

    settings = state.settings
    if (getattr(settings, "api_url", "") or "").strip():
        raise InvalidSpec(
            "this worker has no shared store (BASIN_API_URL is set): a subspace job writes its "
            "projections and adapters into the store, so it needs a worker on the API's store"
        )
    h = js.hash()
    spec = parse_subspace_spec(json.loads(h["spec"]))
    names: dict[str, str] = json.loads(h.get("names") or "{}")
    store = Store(settings.store)
    limits = JobLimits.from_settings(settings)
    resolver = store.resolver()
    steps_done = 0

    stride = max(1, -(-spec.steps // MAX_LOSSES))  # the log keeps about MAX_LOSSES entries

    def on_step(rec: dict[str, Any]) -> None:
        nonlocal steps_done
        steps_done = int(rec["step"])
        keep = steps_done % stride == 0 or steps_done >= spec.steps
        entry = (
            {k: v for k, v in rec.items() if k in ("step", "loss", "dist", "task")}
            if keep
            else None
        )
        js.progress(steps_done, entry)

    def quota(need: int) -> None:
        free = store.free_bytes(limits.store_bytes)
        if free is not None and need > free:
            raise QuotaExceeded(
                f"the subspace job's output needs about {need:,} bytes but the store has {free:,} "
                "left under its quota (BASIN_MAX_STORE_BYTES); nothing was stored"
            )

    with store.workspace() as ws:
        try:
            if spec.kind == "subspace_fit":
                report = run_fit(
                    spec, resolver, ws / "out", on_step=on_step, should_stop=js.should_stop
                )
            else:
                folder = resolver.artefact(spec.projections)  # type: ignore[attr-defined]
                local = spec.model_copy(update={"projections": str(folder)})
                report = run_optimise(
                    local, resolver, ws / "out", on_step=on_step, should_stop=js.should_stop
                )
        except Stopped:
            if js.timed_out:
                msg = time_limit_message("subspace job", js.limit_s, steps_done, spec.steps)
                js.end(FAILED, msg)
                return {"subspace": job_id, "status": FAILED, "error": msg}
            js.end(CANCELLED)
            return {"subspace": job_id, "status": CANCELLED, "steps": steps_done}
        if not js.running():
            return {"subspace": job_id, "status": js.r.hget(js.k.hash, "status") or "gone"}
        out = ws / "out"
        quota(sum(p.stat().st_size for p in out.rglob("*") if p.is_file()))
        if spec.kind == "subspace_fit":
            meta = json.loads((out / "projections" / "projections.json").read_text())
            m = store.import_artefact(
                out / "projections",
                name=f"subspace {'+'.join(meta['methods'])} {job_id[:8]}",
                type="subspace",
                tags={
                    "role": "subspace projections",
                    "subspace_job": job_id,
                    "base": meta.get("base"),
                    "methods": meta["methods"],
                    "y": meta["y"],
                    "tasks": meta.get("tasks"),
                },
            )
            js.set(artefact=m["id"], report=_short(report))
        else:
            base = store.resolver().checkpoint(spec.base).base_source().id
            adapters: dict[str, str] = {}
            for row in report["rows"]:
                folder = out / "adapters" / row["method"]
                how = json.loads((folder / "subspace.json").read_text())
                (folder / "subspace.json").unlink()
                tags = {
                    "role": "subspace solution",
                    "made_by": how["made_by"],
                    "optimised_with": how.get("optimised_with"),
                    "decoded_with": row["method"],
                    "projections": spec.projections,
                    "subspace_job": job_id,
                    "eval": row.get("eval"),
                }
                added = store.import_checkpoint(
                    folder,
                    name=f"subspace {how.get('optimised_with')}→{row['method']} {job_id[:8]}",
                    tags=tags,
                    mode="move",
                    base=base,
                )
                adapters[row["method"]] = added.manifest["id"]
                names[added.manifest["id"]] = added.manifest["name"]
            js.set(adapters=adapters, report=_short(report))
    js.end(DONE)
    logger.info("subspace job %s done", job_id)
    return {"subspace": job_id, "status": DONE}


def _short(report: dict[str, Any]) -> dict[str, Any]:
    """The report without the spec (the job has it) and without local paths."""
    rows = [{k: v for k, v in r.items() if k != "adapter"} for r in report.get("rows", [])]
    return {k: v for k, v in report.items() if k not in ("spec", "rows")} | {"rows": rows}


__all__ = ["execute_subspace"]
