"""Checkpoints picked by tag: a trajectory path's ``checkpoints`` may be ``{"tags": {...}}``
instead of a list — every stored checkpoint whose tags hold all those values, in the order
of their ``step`` tag. A tune job's member is ``{"tags": {"tune": <id>, "member": 0}}``,
or by what made it: ``{"tags": {"family": "f", "seed": 1, "method": "lora"}}`` (each of its
checkpoints carries ``step``). The API expands the selection to store ids before the spec is
checked, so the run records the checkpoints it used.
"""

from __future__ import annotations

from typing import Any

from basin.errors import InvalidSpec
from service.store import Store

#: Path types whose ``checkpoints`` may be a tag selection.
SELECTABLE = ("trajectory",)


def select_by_tags(store: Store, tags: dict[str, Any]) -> list[dict[str, Any]]:
    """The stored checkpoints whose tags hold every ``tags`` value, ordered by their ``step``
    tag; :class:`InvalidSpec` when one lacks ``step`` or two share one (the selection names
    more than one member: add a tag)."""
    got = [
        m
        for m in store.list_checkpoints()
        if all((m.get("tags") or {}).get(k) == v for k, v in tags.items())
    ]
    steps: dict[int, str] = {}
    for m in got:
        step = (m.get("tags") or {}).get("step")
        if not isinstance(step, int):
            raise InvalidSpec(
                f"invalid spec: path.checkpoints: checkpoint {m.get('name')!r} matches tags {tags} "
                "but has no integer 'step' tag to order the trajectory by"
            )
        if step in steps:
            raise InvalidSpec(
                f"invalid spec: path.checkpoints: tags {tags} match two checkpoints at step {step} "
                f"({steps[step]!r} and {m.get('name')!r}): add a tag that tells them apart "
                "(member, seed, method, ...)"
            )
        steps[step] = str(m.get("name"))
    return sorted(got, key=lambda m: m["tags"]["step"])


def expand_tag_selection(body: Any, store: Store) -> Any:
    """``body`` with a trajectory's ``checkpoints: {"tags": {...}}`` replaced by the ids it selects."""
    if not isinstance(body, dict) or not isinstance(body.get("path"), dict):
        return body
    path = body["path"]
    sel = path.get("checkpoints")
    if path.get("type") not in SELECTABLE or not isinstance(sel, dict):
        return body
    tags = sel.get("tags")
    if (
        set(sel) != {"tags"}
        or not isinstance(tags, dict)
        or not tags
        or not all(
            isinstance(k, str) and (v is None or isinstance(v, (str, int, float, bool)))
            for k, v in tags.items()
        )
    ):
        raise InvalidSpec(
            'invalid spec: path.checkpoints: a list of checkpoints, or {"tags": {name: value, ...}} '
            "(at least one tag; values are strings, numbers or booleans)"
        )
    found = select_by_tags(store, tags)
    if len(found) < 2:
        raise InvalidSpec(
            f"invalid spec: path.checkpoints: tags {tags} match {len(found)} stored checkpoint(s); "
            "a trajectory needs at least two"
        )
    return {**body, "path": {**path, "checkpoints": [m["id"] for m in found]}}


__all__ = ["SELECTABLE", "expand_tag_selection", "select_by_tags"]
