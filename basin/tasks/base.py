"""The task entry: everything Basin knows about one task, in one place.

A task module in :mod:`basin.tasks` defines one :class:`TaskEntry` (conventionally
``TASK``); the registry discovers it. The spec (which tasks exist, which support
``ensemble`` / ``per_example``), the dataset reader (required columns), the model
builder (the ``transformers`` auto class), PEFT adapters (their ``task_type``), the
evaluators, the engine (labels, generation, frozen-prefix reuse), curve fitting (a
training loss) and ``GET /api/meta`` (the new-run form) all read the entry.

Pure Python: importing it pulls in neither torch nor transformers.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskEntry:
    """One task.

    ``name``: the spec's ``task``. ``label``/``help``: how the form names and explains it.
    ``auto_class``: the ``transformers`` auto class a checkpoint is built with for it.
    ``columns``: dataset columns it needs; ``optional_columns``: those it reads when present.
    ``peft_task_types``: the PEFT ``task_type`` values of adapters trained for it.
    ``evaluator``: ``"module:Class"`` of its :class:`basin.evaluate.base.Evaluator` (imported
    on first use, so the registry stays torch-free). ``metrics``: the metrics its evaluator
    reports (names in :mod:`basin.metrics`), ``default_metrics`` those reported when a spec
    names none; both add to what the metric entries themselves declare (``Metric.tasks``,
    ``default_in``), and :mod:`basin.metrics` checks every task ends up with a default. What it supports: ``ensemble`` (output ensembling along a 1D path),
    ``per_example`` (per-example outcomes kept in the records), ``prefix_reuse``
    (frozen-prefix reuse of the lower layers' activations), ``trainable`` (a differentiable
    loss: curve fits), ``generates`` (it samples continuations of prompts: ``always``, only
    ``with_prompts`` when ``generation.prompts`` is set, or ``never``). ``labels``: the
    dataset's labels map through the checkpoint config's ``label2id`` (classification).
    ``example_columns``: the per-example outcomes its evaluator keeps (``per_example``
    records, the barrier's bootstrap; :mod:`basin.analysis.uncertainty` reads them).
    ``order``: where the form lists it.
    """

    name: str
    label: str
    help: str
    auto_class: str
    columns: tuple[str, ...]
    evaluator: str
    metrics: tuple[str, ...]
    default_metrics: tuple[str, ...]
    optional_columns: tuple[str, ...] = ()
    peft_task_types: tuple[str, ...] = ()
    ensemble: bool = False
    per_example: bool = False
    prefix_reuse: bool = True
    trainable: bool = False
    generates: str = "never"
    labels: bool = False
    example_columns: tuple[str, ...] = ()
    order: int = 100

    def __post_init__(self) -> None:
        if self.generates not in ("never", "with_prompts", "always"):
            raise ValueError(f"task {self.name!r}: generates must be never, with_prompts or always")
        if not set(self.default_metrics) <= set(self.metrics):
            raise ValueError(f"task {self.name!r}: a default metric it does not report")

    def evaluator_class(self) -> type[Any]:
        """The evaluator class (imports it)."""
        module, _, attr = self.evaluator.partition(":")
        return getattr(importlib.import_module(module), attr)

    def dataset_options(self, config: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments of :func:`basin.data.load_dataset` that come from the first
        checkpoint's ``config.json`` (a classifier's label names and count)."""
        if not self.labels:
            return {}
        from basin.formats import label_info

        num, label2id = label_info(config)
        return {"label2id": label2id, "num_labels": num}

    def public(self) -> dict[str, Any]:
        """The entry as ``GET /api/meta`` serves it (JSON-ready)."""
        return {
            "label": self.label,
            "help": self.help,
            "columns": list(self.columns),
            "optional_columns": list(self.optional_columns),
            "metrics": list(self.metrics),
            "default_metrics": list(self.default_metrics),
            "ensemble": self.ensemble,
            "per_example": self.per_example,
            "prefix_reuse": self.prefix_reuse,
            "trainable": self.trainable,
            "generates": self.generates,
            "example_columns": list(self.example_columns),
            "order": self.order,
        }


__all__ = ["TaskEntry"]
