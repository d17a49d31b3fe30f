"""Tune bookkeeping for the API: validate a tune spec against the store and the server's
limits, then queue it (:mod:`service.jobs.tune`); the cartography of a run's endpoints
joined with its forgetting table."""

from __future__ import annotations

from typing import Any

from backend.app.api.errors import carried_references
from basin.errors import InvalidSpec
from service.jobs.limits import JobLimits
from service.jobs.tune import TUNE
from service.store import Store

#: The file a tune member's final checkpoint folder holds its dataset cartography in
#: (written by :mod:`workers.tunejob`).
CARTOGRAPHY_FILE = "cartography.csv"


def resolve_tune_spec(
    body: Any, store: Store, *, names: dict[str, str] | None = None, limits: JobLimits | None = None
) -> Any:
    """Parse ``body`` as a :class:`basin.tune.TuneSpec`, check it against the server's job
    ``limits`` (before any file is read), rewrite its references (base, tokenizer,
    datasets) to store ids and check them; ``names`` gets store id → the item's name."""
    from basin.tune import parse_tune_spec

    if not isinstance(body, dict):
        raise InvalidSpec(
            "invalid tune spec: the body must be a JSON object (a TuneSpec: base, dataset, ...)"
        )
    spec = parse_tune_spec(body)
    over = TUNE.check(spec, limits or JobLimits(), None, {})
    if over:
        raise InvalidSpec("invalid tune spec: " + "; ".join(over))
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
        update: dict[str, Any] = {"base": ckpt(spec.base), "dataset": data(spec.dataset)}
        if spec.eval_dataset:
            update["eval_dataset"] = data(spec.eval_dataset)
        if spec.tokenizer:
            update["tokenizer"] = ckpt(spec.tokenizer)
    base = store.get_checkpoint(update["base"])
    if base.get("adapter"):
        raise InvalidSpec(
            f"invalid tune spec: base {spec.base!r} is an adapter; tune its base checkpoint "
            f"({base.get('base_name') or base.get('base')!r}) instead"
        )
    return parse_tune_spec({**spec.model_dump(mode="json"), **update})


def parse_body(raw: bytes, content_type: str) -> Any:
    """The request body as data: JSON (:func:`basin.strict_json.loads`), or YAML when the content
    type says so (:func:`basin.strict_yaml.loads`: safe tags only, no aliases, bounded nesting,
    finite numbers) — a request is untrusted text either way."""
    from basin import strict_json, strict_yaml

    if "yaml" in (content_type or ""):
        try:
            return strict_yaml.loads(raw)
        except ValueError as e:
            raise InvalidSpec(f"invalid tune spec: {e}") from None
    try:
        return strict_json.loads(raw)
    except ValueError as e:
        raise InvalidSpec(f"invalid tune spec: the body is not JSON ({str(e)[:300]})") from None


def read_cartography(store: Store, ref: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The manifest of checkpoint ``ref`` (a tune member's final) and the cartography rows
    stored with it (:func:`basin.tune.cartography.read_map`: ``row`` of the training file,
    ``label``, ``confidence``, ``variability``, ``correctness``), or None."""
    from basin.tune.cartography import read_map

    try:
        m = store.get_checkpoint(ref)
    except Exception:
        return None
    path = store.checkpoints_dir / str(m["id"]) / CARTOGRAPHY_FILE
    if not path.is_file():
        return None
    return m, read_map(path)


def cartography_join(
    forgetting: dict[str, Any], carto: list[dict[str, Any]], file_rows: list[int]
) -> list[dict[str, Any]]:
    """The forgetting table's rows joined with a cartography table by the training file's row:
    forgetting row ``index`` i is the run's i-th evaluated example, file row ``file_rows[i]``
    (the run's subsample of the same file the member trained on). Each joined row gets that
    example's ``confidence`` (mean gold-label probability over training), ``variability``
    (its standard deviation over the cartography points) and ``correctness``; examples the
    member did not train on (held out, or another split's) are left out."""
    by_row = {int(c["row"]): c for c in carto}
    out = []
    for row in forgetting.get("rows") or []:
        i = row.get("index")
        if not isinstance(i, int) or not 0 <= i < len(file_rows):
            continue
        c = by_row.get(file_rows[i])
        if c is None:
            continue
        out.append(
            {
                **row,
                "file_row": file_rows[i],
                "confidence": c["confidence"],
                "variability": c["variability"],
                "correctness": c["correctness"],
            }
        )
    return out


__all__ = [
    "CARTOGRAPHY_FILE",
    "cartography_join",
    "parse_body",
    "read_cartography",
    "resolve_tune_spec",
]
