"""Form defaults, pure functions over the API's manifests (no Dash), so they are easy to test."""

from __future__ import annotations

from typing import Any


def default_picks(ckpts: list[dict]) -> list[str]:
    """Three checkpoint ids to preselect, so the form runs as soon as it opens.

    The final checkpoint of each seed first (the classic question: are two seeds
    connected?), then the rest — e.g. the demo gives seed1, seed2, then the init.
    """
    def tags(m: dict) -> dict:
        return m.get("tags") or {}

    final: dict[Any, dict] = {}
    for m in ckpts:
        seed = tags(m).get("seed")
        if seed is not None and (seed not in final or (tags(m).get("step") or 0) > (tags(final[seed]).get("step") or 0)):
            final[seed] = m
    ordered = [final[k] for k in sorted(final, key=str)]
    ordered += [m for m in ckpts if m not in ordered and tags(m).get("seed") is None]
    ordered += [m for m in ckpts if m not in ordered]
    ids = [m["id"] for m in ordered[:3]]
    return ids + [""] * (3 - len(ids))


def default_dataset(dsets: list[dict]) -> str:
    """An evaluation set if one is named so, else the first dataset, else nothing."""
    for d in dsets:
        if "eval" in str(d.get("name", "")).lower():
            return d["id"]
    return dsets[0]["id"] if dsets else ""
