"""Tasks: one module each in this package, discovered, registered by ``spec.task``.

Every module here except ``base`` (and ``_``-prefixed ones) is imported and each
:class:`TaskEntry` it defines at module level is registered in :data:`TASKS`, ordered by
``order`` then name. Adding a task = adding one module (see :mod:`basin.tasks.base` and
the recipe in ``docs/engine.md``); the spec, the dataset reader, the model builder, the
evaluators, the engine, curve fitting, ``GET /api/meta`` and the new-run form read it.
Importing this package does not import torch.
"""

from __future__ import annotations

import importlib
import pkgutil

from basin.tasks.base import TaskEntry


def _discover() -> dict[str, TaskEntry]:
    found: dict[str, TaskEntry] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, TaskEntry):
                if obj.name in found and found[obj.name] is not obj:
                    raise TypeError(f"task {obj.name!r} is defined twice (in {module.__name__})")
                found[obj.name] = obj
    return {t: found[t] for t in sorted(found, key=lambda t: (found[t].order, t))}


#: Every task, in the form's order.
TASKS: dict[str, TaskEntry] = _discover()


def task_entry(name: str) -> TaskEntry:
    """The entry of task ``name``; ``KeyError`` naming the known tasks if none."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; choose from {', '.join(TASKS)}") from None


def tasks_with(**supports: object) -> tuple[str, ...]:
    """Names of the tasks whose entries have every given attribute value, in order
    (``tasks_with(ensemble=True)``)."""
    return tuple(
        t for t, e in TASKS.items() if all(getattr(e, k) == v for k, v in supports.items())
    )


def keeps_column(task: str | None, column: str) -> bool:
    """Whether runs of ``task`` keep the per-example outcome ``column`` (``correct``: the
    forgetting table); False for an unknown task. Works on stored documents' task names."""
    entry = TASKS.get(task or "")
    return entry is not None and column in entry.example_columns


__all__ = ["TASKS", "TaskEntry", "keeps_column", "task_entry", "tasks_with"]
