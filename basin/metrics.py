"""The metric registry: every metric Basin can report, what it means and which tasks give it.

One entry per metric. The run spec (which metrics a task allows, which are on by
default), the evaluators (:attr:`basin.evaluate.base.Evaluator.metrics`), the barrier's
direction, the figures' axis titles and scaling, and the new-run form (through
:func:`basin.meta.meta`) all read this table. Adding a metric = one entry here plus the
code in the evaluator of each task that computes it. Which tasks give a metric is the
union of the entry's ``tasks`` and the task entries (:mod:`basin.tasks`) that list it, so
a task module names its own metrics and a new task needs no edit here.

Pure Python: importing it pulls in neither torch nor plotly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from basin.tasks import TASKS as _TASK_ENTRIES

#: Every task's name (:mod:`basin.tasks`), in the form's order.
TASKS: tuple[str, ...] = tuple(_TASK_ENTRIES)
if TYPE_CHECKING:
    Task = str
else:  # the spec's ``task`` field: one of the registered tasks (a JSON-schema enum)
    Task = Literal[TASKS]
#: Tasks that score a dataset's targets (everything but generation, which samples).
_SCORED = ("classification", "causal_lm", "seq2seq")


@dataclass(frozen=True)
class Metric:
    """One metric.

    ``label`` names it on an axis; ``unit`` is what its values are measured in ("" when
    unitless). ``percent``: stored as a fraction in [0, 1], shown ×100 (axis "(%)", a
    difference in percentage points "pts"). ``higher_is_better`` sets the barrier's
    direction: a rise above the chord for losses, a drop below it for accuracies.
    ``tasks`` produce it; ``default_in`` are the tasks that report it when a spec names
    no metrics. ``barrier``: whether a barrier (rise above / drop below the chord) means
    something for it; not for the descriptive generation metrics (sentiment, distinct-n,
    length), where a bump is a finding, not a cost.
    """

    name: str
    label: str
    unit: str
    higher_is_better: bool
    tasks: tuple[str, ...]
    percent: bool = False
    default_in: tuple[str, ...] = ()
    barrier: bool = True

    @property
    def axis_title(self) -> str:
        """Axis title with the displayed unit: ``loss (nats)``, ``accuracy (%)``, ``perplexity``."""
        unit = "%" if self.percent else self.unit
        return f"{self.label} ({unit})" if unit else self.label

    @property
    def scale(self) -> float:
        """Display factor: 100 for fractions shown in percent, else 1."""
        return 100.0 if self.percent else 1.0

    @property
    def delta_unit(self) -> str:
        """Unit of a difference of displayed values (a barrier): ``nats``, ``pts``, or ""."""
        return "pts" if self.percent else self.unit


_ENTRIES = (
    Metric("loss", "loss", "nats", higher_is_better=False, tasks=_SCORED, default_in=_SCORED),
    Metric("accuracy", "accuracy", "", higher_is_better=True, tasks=("classification",), percent=True,
           default_in=("classification",)),
    Metric("f1", "F1", "", higher_is_better=True, tasks=("classification",), percent=True),
    Metric("perplexity", "perplexity", "", higher_is_better=False, tasks=("causal_lm", "seq2seq"),
           default_in=("causal_lm",)),
    # generation (001 §4.1): metrics of sampled continuations of prompts (basin.evaluate.generation);
    # a causal_lm run with ``generation.prompts`` reports them too
    # sentiment: the scorer's expected score E[s] (s: positive 1, neutral 0.5, negative 0 unless
    # generation.label_scores says otherwise; = P(positive) for a two-class scorer)
    Metric("sentiment", "sentiment (expected positive score)", "", higher_is_better=True, tasks=("generation",),
           default_in=("generation",), barrier=False),
    Metric("sample_perplexity", "perplexity of samples", "", higher_is_better=False, tasks=("generation",),
           default_in=("generation",)),
    # distinct-n per prompt over its samples, averaged over prompts (DExperts / 001); _pooled: over all samples
    Metric("distinct_1", "distinct-1 (per prompt)", "", higher_is_better=True, tasks=("generation",), percent=True,
           barrier=False),
    Metric("distinct_2", "distinct-2 (per prompt)", "", higher_is_better=True, tasks=("generation",), percent=True,
           default_in=("generation",), barrier=False),
    Metric("distinct_3", "distinct-3 (per prompt)", "", higher_is_better=True, tasks=("generation",), percent=True,
           barrier=False),
    Metric("distinct_1_pooled", "distinct-1 (pooled)", "", higher_is_better=True, tasks=("generation",),
           percent=True, barrier=False),
    Metric("distinct_2_pooled", "distinct-2 (pooled)", "", higher_is_better=True, tasks=("generation",),
           percent=True, barrier=False),
    Metric("distinct_3_pooled", "distinct-3 (pooled)", "", higher_is_better=True, tasks=("generation",),
           percent=True, barrier=False),
    Metric("length", "sample length", "tokens", higher_is_better=True, tasks=("generation",), barrier=False),
)

METRICS: dict[str, Metric] = {m.name: m for m in _ENTRIES}


def metric(name: str) -> Metric | None:
    """The registry entry for ``name``, or ``None`` for a metric Basin does not know."""
    return METRICS.get(name)


def metric_tasks(name: str) -> tuple[str, ...]:
    """Tasks that produce metric ``name``: its entry's ``tasks`` and the task entries naming it."""
    m = METRICS[name]
    return tuple(t for t, e in _TASK_ENTRIES.items() if t in m.tasks or name in e.metrics)


def task_metrics(task: str) -> tuple[str, ...]:
    """Metrics ``task`` produces, in registry order; ``()`` for an unknown task."""
    entry = _TASK_ENTRIES.get(task)
    return tuple(m.name for m in _ENTRIES if task in m.tasks or (entry is not None and m.name in entry.metrics))


def default_metrics(task: str) -> tuple[str, ...]:
    """Metrics reported for ``task`` when a spec names none, in registry order."""
    entry = _TASK_ENTRIES.get(task)
    return tuple(m.name for m in _ENTRIES
                 if task in m.default_in or (entry is not None and m.name in entry.default_metrics))


def _check() -> None:
    """The table is consistent: known tasks only; every task has a default metric."""
    for m in _ENTRIES:
        unknown = [t for t in (*m.tasks, *m.default_in) if t not in TASKS]
        if unknown:
            raise ValueError(f"metric {m.name!r}: unknown tasks {unknown}; tasks are {list(TASKS)}")
        if not set(m.default_in) <= set(m.tasks):
            raise ValueError(f"metric {m.name!r}: a default in tasks it does not produce")
    for t, e in _TASK_ENTRIES.items():
        unknown = [m for m in e.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"task {t!r}: unknown metrics {unknown}; metrics are {list(METRICS)}")
        if not default_metrics(t):
            raise ValueError(f"task {t!r} has no default metric")


_check()

__all__ = ["METRICS", "TASKS", "Metric", "Task", "default_metrics", "fmt_number", "metric", "metric_tasks", "task_metrics"]


def fmt_number(v: float, digits: int = 3) -> str:
    """``v`` with ``digits`` significant digits and never a negative zero (``-0`` → ``0``)."""
    text = f"{v:.{digits}g}"
    return text[1:] if text.startswith("-") and float(text) == 0.0 else text
