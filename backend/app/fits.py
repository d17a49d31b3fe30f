"""Fit bookkeeping for the API: validate a fit spec against the store, then queue it.

The state itself (Redis keys, create / read / cancel) is :mod:`service.fits`, shared with
the fit worker (:mod:`workers.fitjob`).
"""

from __future__ import annotations

from typing import Any

from backend.app.api.errors import carried_references
from backend.app.runs import check_compatibility
from basin.errors import InvalidSpec
from basin.fit import FitSpec, curve_run_data, parse_fit_spec
from basin.scope_regex import compile_scope
from basin.spec import SCOPE_PRESETS, parse_spec
from service.store import Store


def resolve_fit_spec(body: Any, store: Store, *, names: dict[str, str] | None = None) -> FitSpec:
    """Parse ``body`` as a :class:`FitSpec`, rewrite its references to store ids and check
    them (the endpoints exist and are compatible, the datasets exist, the scope compiles,
    the evaluation runs it will queue are valid specs). ``names`` is filled with store
    id → the item's name. Raises the same errors as :func:`backend.app.runs.resolve_spec`."""
    if not isinstance(body, dict):
        raise InvalidSpec("invalid fit spec: the body must be a JSON object (a FitSpec: a, b, dataset, ...)")
    spec = parse_fit_spec(body)
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
    return resolved


__all__ = ["resolve_fit_spec"]
