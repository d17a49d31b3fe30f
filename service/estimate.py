"""What a run will cost on this server: points × examples × this model, at the measured rate.

The rate is measured from this server's finished runs: each stored result document has
``timings`` (``eval_s`` + ``load_s`` over ``evaluations`` points), its spec (how many
examples a point scores, how many tokens it generates) and its first checkpoint (its
parameter count in the store's manifest). One run gives one sample of

    c = (eval_s + load_s) / (evaluations × work × parameters)      [s per parameter·unit]

where ``work`` is the examples a point scores (``min(max_examples, rows)``), times
``samples_per_prompt × max_new_tokens`` for a generation run. A spec's estimate is
``planned_points × work × parameters × c`` with ``c`` the median over finished runs of the
same model (architecture and size) and the same kind (generation or scoring), else over
runs of the same kind, else the documented fallback :data:`FALLBACK_S`: the rate measured
on this project's 2-core machine (issue 28: a 441-point MiniLM plane, 256 examples, ~85 min;
the LM demo's ready run, 467 s of CPU for 9 points of 32 samples × 20 tokens).

Spread over the alive workers (each point is one worker's). The service layer only
(filesystem + specs): the API calls :func:`estimate` for Check, the run page and the queue.
"""

from __future__ import annotations

import logging
import statistics
import threading
from dataclasses import dataclass
from typing import Any

from basin.paths import refs_of

logger = logging.getLogger(__name__)

#: s per (parameter × unit of work) when no finished run measured this server yet.
FALLBACK_S = {"score": 2.0e-9, "generation": 6.0e-10}
#: An estimate above this many seconds is flagged with cheaper suggestions.
WARN_ABOVE_S = 600.0
#: At most this many recent finished runs are read for the rate (each read once a process).
MAX_SAMPLES = 50

_lock = threading.Lock()
#: run id → its sample ``(kind, model key, c)`` or None (finished documents never change).
_samples: dict[str, tuple[str, str, float] | None] = {}


def kind_of(spec: dict[str, Any]) -> str:
    return "generation" if spec.get("task") == "generation" or spec.get("generation") else "score"


def work_of(spec: dict[str, Any], rows: int | None) -> int:
    """Units of work a point does: examples scored (× samples × new tokens when generating)."""
    n = int(spec.get("max_examples") or 512)
    if rows:
        n = min(n, int(rows))
    gen = spec.get("generation")
    if isinstance(gen, dict):
        n *= int(gen.get("samples_per_prompt") or 1) * int(gen.get("max_new_tokens") or 1)
    return max(n, 1)


def model_key(manifest: dict[str, Any] | None) -> str:
    m = manifest or {}
    return f"{m.get('model_type') or m.get('architecture') or '?'}:{m.get('num_parameters') or 0}"


def _first_checkpoint(spec: dict[str, Any]) -> str | None:
    path = spec.get("path")
    try:
        refs = refs_of(path) if isinstance(path, dict) else []
    except Exception:  # noqa: BLE001 - an odd document: no sample
        refs = []
    return refs[0] if refs else None


def _manifest(store: Any, ref: str | None) -> dict[str, Any] | None:
    if not ref:
        return None
    try:
        return store.get_checkpoint(ref)
    except Exception:  # noqa: BLE001 - deleted since: no sample
        return None


def _rows(store: Any, ref: Any) -> int | None:
    if not isinstance(ref, str) or not ref:
        return None
    try:
        return int(store.get_dataset(ref).get("rows") or 0) or None
    except Exception:  # noqa: BLE001
        return None


def _sample(store: Any, run_id: str) -> tuple[str, str, float] | None:
    doc = store.load_run(run_id)
    if not isinstance(doc, dict) or doc.get("status", "done") != "done":
        return None
    t = doc.get("timings") or {}
    spec = doc.get("spec") or {}
    try:
        evals = int(t.get("evaluations") or 0)
        secs = float(t.get("eval_s") or 0) + float(t.get("load_s") or 0)
    except (TypeError, ValueError):
        return None
    m = _manifest(store, _first_checkpoint(spec))
    params = int((m or {}).get("num_parameters") or 0)
    if evals <= 0 or secs <= 0 or params <= 0:
        return None
    gen = spec.get("generation") if isinstance(spec.get("generation"), dict) else None
    rows = _rows(store, (gen or {}).get("prompts") or spec.get("dataset"))
    return kind_of(spec), model_key(m), secs / (evals * work_of(spec, rows) * params)


def measured(store: Any) -> list[tuple[str, str, float]]:
    """Samples ``(kind, model key, c)`` of the newest finished runs (read once each)."""
    out = []
    for entry in [e for e in store.list_runs() if e.get("status", "done") == "done"][:MAX_SAMPLES]:
        rid = str(entry.get("id"))
        with _lock:
            known = rid in _samples
            s = _samples.get(rid)
        if not known:
            try:
                s = _sample(store, rid)
            except Exception as e:  # noqa: BLE001 - an unreadable document gives no sample
                logger.debug("no rate from run %s: %s", rid, e)
                s = None
            with _lock:
                _samples[rid] = s
        if s is not None:
            out.append(s)
    return out


@dataclass(frozen=True)
class Estimate:
    seconds: float  # on one worker
    wall_s: float  # spread over the alive workers
    points: int
    work: int  # per point
    parameters: int
    rate: float  # c, s per parameter·unit
    basis: str  # how the rate was found, in words
    measured_runs: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "wall_s": round(self.wall_s, 1),
            "points": self.points,
            "work_per_point": self.work,
            "parameters": self.parameters,
            "rate": self.rate,
            "basis": self.basis,
            "measured_runs": self.measured_runs,
            "per_point_s": round(self.seconds / max(self.points, 1), 3),
        }


def rate_for(store: Any, kind: str, key: str) -> tuple[float, str, int]:
    samples = measured(store)
    same_model = [c for k, m, c in samples if k == kind and m == key]
    if same_model:
        return (
            statistics.median(same_model),
            f"measured on {len(same_model)} finished run(s) of this model",
            len(same_model),
        )
    same_kind = [c for k, _, c in samples if k == kind]
    if same_kind:
        return (
            statistics.median(same_kind),
            f"measured on {len(same_kind)} finished run(s) of other models, scaled by size",
            len(same_kind),
        )
    return (
        FALLBACK_S[kind],
        "no finished run on this server yet: the project's measured 2-core rate",
        0,
    )


def estimate(store: Any, spec: dict[str, Any], points: int, *, workers: int = 1) -> Estimate | None:
    """The estimate for ``spec`` (store ids resolved) with ``points`` points; None when its first
    checkpoint's size is unknown."""
    m = _manifest(store, _first_checkpoint(spec))
    params = int((m or {}).get("num_parameters") or 0)
    if params <= 0:
        return None
    gen = spec.get("generation") if isinstance(spec.get("generation"), dict) else None
    work = work_of(spec, _rows(store, (gen or {}).get("prompts") or spec.get("dataset")))
    kind = kind_of(spec)
    c, basis, n = rate_for(store, kind, model_key(m))
    seconds = points * work * params * c
    return Estimate(
        seconds=seconds,
        wall_s=seconds / max(workers, 1),
        points=points,
        work=work,
        parameters=params,
        rate=c,
        basis=basis,
        measured_runs=n,
    )


def duration_words(s: float) -> str:
    """``"about 85 min"``, ``"about 40 s"``, ``"about 2.5 h"``."""
    if s < 90:
        return f"about {max(1, round(s))} s"
    if s < 5400:
        return f"about {round(s / 60)} min"
    return f"about {s / 3600:.1f} h"


def cheaper(spec: dict[str, Any], est: Estimate) -> list[str]:
    """Cheaper variants of ``spec`` with their estimates, in words (for a costly run)."""
    from basin.spec import parse_spec

    out: list[str] = []
    per_unit = est.seconds / max(est.points * est.work, 1)

    def cost(points: int, work: int) -> str:
        return duration_words(points * work * per_unit)

    def planned(variant: dict[str, Any]) -> int | None:
        try:
            return parse_spec(variant).planned_points
        except Exception:  # noqa: BLE001 - that variant does not fit this spec
            return None

    if not spec.get("refine"):
        n = planned({**spec, "refine": "adaptive"})
        if n is not None and n < est.points:
            out.append(
                f"coarse-to-fine (refine: adaptive): {n} points instead of {est.points}, "
                f"{cost(n, est.work)}"
            )
    examples = int(spec.get("max_examples") or 512)
    scored = est.work // max(1, examples) if spec.get("generation") else 1
    per_point_examples = est.work // max(scored, 1)
    if per_point_examples > 64:
        out.append(
            f"fewer examples (max_examples: 64 instead of {per_point_examples}): "
            f"{cost(est.points, 64 * max(scored, 1))} — wider intervals"
        )
    path = spec.get("path") or {}
    if isinstance(path.get("resolution"), (list, tuple)) and est.points > 121:
        n = planned({**spec, "path": {**path, "resolution": [11, 11]}})
        if n is not None:
            out.append(f"a coarser grid (resolution 11 × 11): {n} points, {cost(n, est.work)}")
    elif isinstance(path.get("points"), int) and path["points"] > 11:
        n = planned({**spec, "path": {**path, "points": 11}})
        if n is not None:
            out.append(f"fewer points (points: 11): {cost(n, est.work)}")
    return out


def summary(
    store: Any, spec: dict[str, Any], points: int, *, workers: int
) -> dict[str, Any] | None:
    """The estimate as the API answers it: seconds, words, the basis, and for a run above
    :data:`WARN_ABOVE_S` a ``warning`` with ``suggestions`` (cheaper variants)."""
    est = estimate(store, spec, points, workers=workers)
    if est is None:
        return None
    out = est.as_dict()
    out["workers"] = workers
    out["words"] = (
        f"{duration_words(est.wall_s)} ({est.points} point{'s' if est.points != 1 else ''} × "
        f"{est.work} {'sample-tokens' if kind_of(spec) == 'generation' else 'examples'} "
        f"on {max(workers, 1)} worker{'s' if max(workers, 1) != 1 else ''}; {est.basis})"
    )
    out["warning"] = None
    out["suggestions"] = []
    if est.wall_s > WARN_ABOVE_S:
        out["warning"] = (
            f"This run would take {duration_words(est.wall_s)} on this server — "
            f"more than {round(WARN_ABOVE_S / 60)} minutes."
        )
        out["suggestions"] = cheaper(spec, est)
    return out
