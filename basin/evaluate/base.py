"""The evaluator interface: tokenise once, keep padded batches on the device, evaluate a model.

Batches: examples sorted by length, cut into ``batch_size`` chunks, each padded only
to its own longest sequence (dynamic padding), built once per Landscape and kept on
the device, so a point costs forward passes and nothing else. Every statistic is
accumulated on the device and read back with one synchronisation per point.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from basin.data import Dataset
from basin.drive import between_batches
from basin.evaluate.prefix import PrefixReuse
from basin.metrics import task_metrics


def pad(seqs: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """Right-pad integer sequences to the longest: ``(B, T_max)`` int64."""
    width = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), max(width, 1)), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Example indices sorted by length (stable), chunked into batches."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class _Checked(list):
    """The batches, iterated with :func:`basin.drive.between_batches` after each one (and, with
    frozen-prefix reuse, telling it which batch comes next)."""

    def __init__(self, batches: Sequence[dict[str, torch.Tensor]], at: Callable[[int], None] | None = None):
        super().__init__(batches)
        self.at = at

    def __iter__(self):  # noqa: ANN204 - a generator over the list
        for i, batch in enumerate(list.__iter__(self)):
            if self.at is not None:
                self.at(i)
            yield batch
            between_batches()


class Evaluator(ABC):
    """Evaluates a live model on a tokenised dataset; ``evaluate(model) -> {metric: value}``.

    ``metrics`` is not declared by hand: it is every metric the registry
    (:mod:`basin.metrics`) lists for ``task``, and :meth:`evaluate` checks the
    evaluator reports each of them.
    """

    task: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "task" in cls.__dict__:
            cls.metrics = task_metrics(cls.task)
            if not cls.metrics:
                raise TypeError(f"evaluator {cls.__name__}: task {cls.task!r} has no metrics in basin.metrics")

    def __init__(
        self,
        tokenizer: Any,
        data: Dataset,
        model: nn.Module,
        *,
        batch_size: int,
        max_length: int,
        device: torch.device,
        autocast_dtype: torch.dtype | None = None,
    ):
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.num_examples = len(data)
        #: Per-example values of the last :meth:`evaluate`, in dataset order (``None`` when the
        #: task has none): classification ``{loss, correct, confidence}``, causal LM and
        #: seq2seq ``{nll, tokens}`` (see :mod:`basin.analysis.uncertainty`).
        self.examples: dict[str, list] | None = None
        #: Frozen-prefix reuse (:mod:`basin.evaluate.prefix`), set by the engine when the scope
        #: leaves the embeddings and lower blocks at θA; used by :meth:`evaluate` only.
        self.prefix: PrefixReuse | None = None
        self.batches: list[dict[str, torch.Tensor]] = self.prepare(
            tokenizer, data, model, batch_size=batch_size, max_length=max_length
        )

    @abstractmethod
    def prepare(self, tokenizer: Any, data: Dataset, model: nn.Module, *, batch_size: int,
                max_length: int) -> list[dict[str, torch.Tensor]]:
        """Tokenise ``data`` once into padded batches of model inputs on ``self.device``.

        Each batch is the keyword arguments of one forward pass; targets (labels) are
        kept by the evaluator in lists aligned with the batches.
        """

    @abstractmethod
    def _evaluate(self, model: nn.Module) -> dict[str, float]: ...

    #: The task reads several points per forward pass (:meth:`evaluate_many`): it defines
    #: :meth:`_batch_values` and :meth:`_finish`, whose composition is :meth:`_evaluate`.
    stacks: ClassVar[bool] = False

    def _runs(self, i: int, batch: dict[str, torch.Tensor]) -> bool:
        """Whether batch ``i`` needs a forward pass at all (causal LM: not for one-token rows)."""
        return True

    def _batch_values(self, i: int, logits: torch.Tensor) -> Any:
        """What this task keeps of batch ``i``'s ``logits`` at one point (small: a row each)."""
        raise NotImplementedError

    def _finish(self, values: list[Any]) -> dict[str, float]:
        """The metrics (and :attr:`examples`) from every batch's :meth:`_batch_values` (``None`` for a
        batch :meth:`_runs` skipped)."""
        raise NotImplementedError

    def evaluate_many(self, forward: Callable[[dict[str, torch.Tensor]], torch.Tensor], k: int,
                      ) -> list[tuple[dict[str, float], dict[str, list] | None]]:
        """:meth:`evaluate` at ``k`` points at once: ``forward(batch)`` returns the ``k`` points'
        logits ``(k, ...)`` (:meth:`basin.evaluate.multi.PointStack.forward`); returns each point's
        ``(metrics, examples)``. The batches are walked once (with :func:`basin.drive.between_batches`
        after each, and frozen-prefix replay when :attr:`prefix` is set), each point's logits
        reduced to :meth:`_batch_values` before the next batch runs."""
        if not self.stacks:
            raise NotImplementedError(f"task {self.task!r} does not take several points per pass")
        batches = self.batches
        prefix = self.prefix
        self.batches = _Checked(batches, prefix.at if prefix is not None else None)
        values: list[list[Any]] = [[] for _ in range(k)]
        out: list[tuple[dict[str, float], dict[str, list] | None]] = []
        try:
            with torch.inference_mode(), self.autocast(), prefix.active() if prefix else contextlib.nullcontext():
                for i, b in enumerate(self.batches):
                    if not self._runs(i, b):
                        for v in values:
                            v.append(None)
                        continue
                    logits = forward(b)
                    for j in range(k):
                        values[j].append(self._batch_values(i, logits[j]))
                    del logits
                for j in range(k):
                    self.examples = None
                    got = self._finish(values[j])
                    values[j] = []
                    self._check(got)
                    out.append((got, self.examples))
        finally:
            self.batches = batches
        return out

    def _check(self, values: dict[str, float]) -> None:
        missing = [m for m in self.metrics if m not in values]
        if missing:
            raise RuntimeError(f"{type(self).__name__} did not report {missing}, which basin.metrics "
                               f"lists for task {self.task!r}")

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """All of this task's metrics for the model's current parameters.

        Between batches (and after the last) :func:`basin.drive.between_batches` runs: a
        driver's cancel or per-point time limit stops the point there.
        """
        batches = self.batches
        prefix = self.prefix
        self.batches = _Checked(batches, prefix.at if prefix is not None else None)
        self.examples = None
        try:
            with torch.inference_mode(), self.autocast(), prefix.active() if prefix else contextlib.nullcontext():
                values = self._evaluate(model)
        finally:
            self.batches = batches
        self._check(values)
        return values

    def batch_loss(self, i: int, logits: torch.Tensor) -> torch.Tensor:
        """Mean loss of batch ``i`` given the model's ``logits`` on ``self.batches[i]``: a
        differentiable tensor (what a curve fit minimises), the loss :meth:`evaluate` reports,
        averaged over the batch's examples (classification) or target tokens (LM losses).

        A task with nothing to differentiate (generation scores samples) does not define it.
        """
        raise NotImplementedError(f"task {self.task!r} has no training loss")

    def batch_weights(self) -> list[float]:
        """How much each batch weighs in the full-data loss :meth:`batch_loss` averages: its
        examples (a mean over examples) or its target tokens (a mean over tokens). Drawing
        batch ``i`` with probability ``wᵢ / Σ w`` makes its mean loss an unbiased sample of
        the full-data loss (a curve fit's objective, :func:`basin.fit.batch_weights`).
        """
        raise NotImplementedError(f"task {self.task!r} has no training loss")

    #: Output ensembling (001 §4.4) is defined for this task (see :meth:`ensemble`).
    ensembles: ClassVar[bool] = False

    def ensemble(self, model: nn.Module, at: Callable[[int], None], alphas: Sequence[float]) -> dict[float, dict[str, float]]:
        """Output ensembling ``z(α) = (1−α)·z_A + α·z_B`` at every α of ``alphas``: ``{α: metrics}``.

        ``at(0)`` / ``at(1)`` set the live model's weights to the path's two endpoints; the
        endpoints' outputs come from the same forward passes :meth:`evaluate` runs there,
        so at α = 0 and 1 the ensemble's metrics equal the weight path's exactly.
        """
        if not self.ensembles:
            raise NotImplementedError(f"{type(self).__name__} has no output ensembling")
        batches = self.batches
        self.batches = _Checked(batches)
        try:
            with torch.inference_mode(), self.autocast():
                return self._ensemble(model, at, list(alphas))
        finally:
            self.batches = batches

    def _ensemble(self, model: nn.Module, at: Callable[[int], None], alphas: list[float]) -> dict[float, dict[str, float]]:
        raise NotImplementedError

    def _to(self, **tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in tensors.items()}
