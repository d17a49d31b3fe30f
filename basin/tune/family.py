"""A whole family in-process (``basin tune``): every member in turn, then ``family.json``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from basin.resolve import Resolver
from basin.tune.spec import Member, TuneSpec, members
from basin.tune.train import MemberResult, train_member

#: The family's record in its folder.
FAMILY_META = "family.json"


def family_doc(spec: TuneSpec, results: list[MemberResult], out_dir: Path) -> dict[str, Any]:
    """``family.json``: the spec, and per member its tags, checkpoints (paths relative to
    ``out_dir``), held-out metrics and timings."""
    return {
        "kind": "basin-tune-family",
        "family": spec.family,
        "spec": spec.model_dump(mode="json"),
        "members": [r.to_dict(relative_to=out_dir) for r in results],
    }


def write_family(spec: TuneSpec, results: list[MemberResult], out_dir: Path) -> Path:
    doc = family_doc(spec, results, out_dir)
    tmp = out_dir / (FAMILY_META + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, out_dir / FAMILY_META)
    return out_dir / FAMILY_META


def run_family(
    spec: TuneSpec,
    resolver: Resolver,
    out_dir: str | Path,
    *,
    on_member: Callable[[Member], None] | None = None,
    on_step: Callable[[Member, int, float, int], None] | None = None,
    on_done: Callable[[MemberResult], None] | None = None,
) -> list[MemberResult]:
    """Train every member of ``spec`` into ``out_dir`` (one after another) and write
    ``family.json`` after each member (so a stopped family keeps what it finished)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: list[MemberResult] = []
    t0 = time.perf_counter()
    for m in members(spec):
        if on_member is not None:
            on_member(m)
        step_cb = (lambda s, loss, n, m=m: on_step(m, s, loss, n)) if on_step is not None else None
        r = train_member(spec, m, resolver, out, on_step=step_cb)
        results.append(r)
        write_family(spec, results, out)
        if on_done is not None:
            on_done(r)
    del t0
    return results


__all__ = ["FAMILY_META", "family_doc", "run_family", "write_family"]
