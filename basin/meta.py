"""What a client needs to know to build a run spec: path types, tasks, metrics, scopes.

:func:`meta` is served by the API at ``GET /api/meta``; the new-run form renders its
path picker, checkpoint slots, grid fields and metric checkboxes from it, so a path
type or metric added to the core appears in the form with no edit to the frontend.
Pure and JSON-serialisable; importing it does not import torch.
"""

from __future__ import annotations

from typing import Any

from basin.metrics import METRICS, default_metrics, metric_tasks, task_metrics
from basin.paths import PATHS
from basin.paths.base import PathType
from basin.spec import SCOPE_HELP, SCOPE_PRESETS, RunSpec
from basin.tasks import TASKS


def path_meta(cls: type[PathType]) -> dict[str, Any]:
    """One path type as the form sees it.

    ``slots``: ``[[field, label]]`` filled by the checkpoint pickers, in order;
    ``list_slot``: ``[field, label]`` of a list of references the multi-picker fills (a
    merge's ``models``) or ``None``; ``params``: ``[[field, label]]`` other fields the form
    shows, typed by ``json_schema`` (a merge's ``density``, ``seed``, ``weights``);
    ``ref_fields``: every field holding checkpoint references (slots and lists such as
    a trajectory's ``checkpoints``); ``defaults``: the spec fields with defaults
    (``points``, ``range``, ``resolution``, ``margin``...); ``json_schema``: the spec
    model's JSON schema (bounds, enums, required fields).
    """
    return {
        "type": cls.type,
        "ndim": cls.ndim,
        "coords": list(cls.coords),
        "axis_titles": dict(cls.axis_titles),
        "help": cls.help,
        "slots": [[f, label] for f, label in cls.slots],
        "list_slot": list(cls.list_slot) if cls.list_slot is not None else None,
        "params": [[f, label] for f, label in cls.params],
        "ref_fields": list(cls.ref_fields),
        "ref_literals": sorted(cls.ref_literals),
        "sequence_field": cls.sequence_field,
        "equal_axes": cls.equal_axes,
        "defaults": cls.defaults(),
        "json_schema": cls.Spec.model_json_schema(),
    }


def run_spec_schema() -> dict[str, Any]:
    """The run spec's JSON schema (:class:`basin.spec.RunSpec`): every field's type,
    default and bounds; the form takes its defaults and bounds from it."""
    return RunSpec.model_json_schema()


def meta() -> dict[str, Any]:
    """``{paths: [...], tasks: {...}, metrics: {...}, scope_presets: [...], run_spec: {...}}`` (JSON-ready).

    ``paths`` in the form's order (:func:`path_meta` each); ``tasks``: ``{task: {label,
    help, columns, optional_columns, metrics, default_metrics, ensemble, per_example,
    prefix_reuse, trainable, generates, example_columns, order}}`` in the form's order
    (:mod:`basin.tasks`); ``metrics``: ``{name: {label, unit, axis_title,
    higher_is_better, percent, tasks}}``; ``scope_presets``: the named parameter scopes
    (module-tree groups, thirds of every stack, ``encoder.*``/``decoder.*`` thirds);
    ``scope_help``: one paragraph saying what each names (stacks, regexes); ``run_spec``:
    the run spec's JSON schema (:func:`run_spec_schema`).
    """
    return {
        "paths": [path_meta(cls) for cls in PATHS.values()],
        "tasks": {
            t: {**e.public(), "metrics": list(task_metrics(t)), "default_metrics": list(default_metrics(t))}
            for t, e in TASKS.items()
        },
        "metrics": {
            m.name: {
                "label": m.label, "unit": m.unit, "axis_title": m.axis_title,
                "higher_is_better": m.higher_is_better, "percent": m.percent, "tasks": list(metric_tasks(m.name)),
                "barrier": m.barrier,
            }
            for m in METRICS.values()
        },
        "scope_presets": list(SCOPE_PRESETS),
        "scope_help": SCOPE_HELP,
        "run_spec": run_spec_schema(),
    }


__all__ = ["meta", "path_meta", "run_spec_schema"]
