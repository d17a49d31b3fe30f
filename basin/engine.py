"""The evaluation engine: :class:`Landscape` (open once, evaluate many points) and :func:`run`.

``Landscape.open`` does all the slow work once — resolve references, read and
validate the dataset, check the checkpoints fit together, load them, build ONE live
model, build the path's basis on the device, tokenise the data into padded batches.
``Landscape.evaluate(point)`` then only mixes the weights in place
(:meth:`basin.space.ParamSpace.mix_`) and runs the forward passes.

Services drive a Landscape point by point (leases, caches, streams); the CLI calls
:func:`run`, which returns the result document.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from basin import grid, refine
from basin.analysis import barriers, distances, extremes
from basin.analysis.trend import trend
from basin.analysis.uncertainty import (
    barrier_verdicts,
    pack_bootstrap,
    point_intervals,
)
from basin.checkpoints import CheckpointCache, load_state_dict, read_config, tensor_shape
from basin.data import Dataset, load_dataset
from basin.drive import ListSink, ListSource, WaveSource, drive
from basin.errors import IncompatibleCheckpoints
from basin.evaluate import load_tokenizer
from basin.evaluate.base import Evaluator
from basin.evaluate.generation import GenerationEvaluator, Scorer
from basin.evaluate.multi import PointStack, auto_points_per_pass, points_per_pass_from_env
from basin.evaluate.prefix import ENV_SWITCH, PrefixReuse, cap_from_env, enabled_by_env
from basin.generation import label_weights
from basin.groups import ModelGroups, out_axis
from basin.holding import basis_bytes, build_basis, held_dtype, hold_from_env, on_host
from basin.opening import open_model, precision, resolve_device
from basin.paths import PATHS, BuildContext, PathType
from basin.paths.base import Anchor
from basin.resolve import CheckpointSource, Resolver
from basin.results import run_document
from basin.space import ParamSpace, build_model
from basin.spec import GENERATION, RunSpec
from basin.tasks import TaskEntry, task_entry

logger = logging.getLogger(__name__)

#: The summary's trend key of the output ensemble's sentiment (beside weight interpolation's ``sentiment``).
ENSEMBLE_TREND = "sentiment (output ensemble)"

#: Bumped whenever the numbers a point gets change for the same spec (2: fp32 basis, per-neuron
#: Conv1D filters, canonical draw order, config padding; 3: cached entries are whole point records,
#: ``{metrics, ensemble?, samples?}``; 4: records carry ``intervals`` and, with ``per_example``,
#: ``examples``; 5: 1D records without ``per_example`` carry ``bootstrap``, the compact
#: per-example values of the barrier interval), so stale cached points are not reused.
KEY_VERSION = 5

__all__ = ["Anchor", "CheckpointCache", "Landscape", "Point", "precision", "resolve_device", "run"]


@dataclass(frozen=True)
class Point:
    """One grid node: flat ``index`` (row-major for planes: ``iy * nx + ix``) and its coords."""

    index: int
    coords: dict[str, float]


class Landscape:
    """A run's parameter space, opened once: one live model, a basis, tokenised data.

    Use :meth:`open`; then :meth:`points`, :meth:`evaluate`, :meth:`point_key`,
    :meth:`summary`; :meth:`close` frees device memory. Not thread-safe: one
    Landscape evaluates one point at a time.
    """

    # Set by :meth:`open` (which builds the instance with ``cls()``), read everywhere else.
    spec: RunSpec
    path: PathType
    sources: dict[str, CheckpointSource]
    data: Dataset
    tokenizer_id: str | None
    mismatches: list[tuple[str, str]]
    device: torch.device
    dtype: torch.dtype
    precision: str
    held: torch.dtype  # the basis's dtype (basin.holding)
    names: list[str]
    groups: ModelGroups
    space: ParamSpace
    axes: list[list[float]]
    anchors: list[Anchor]
    extra: dict[str, Any]
    distance: dict[str, Any] | None
    evaluator: Evaluator
    task: TaskEntry  # the spec's task (basin.tasks)
    generator: GenerationEvaluator | None  # a causal_lm run's generation on its prompts
    scorer_id: str | None
    reference_id: str | None
    reference_name: str | None  # the reference LM as the spec names it (generation.reference or the path's θ0)
    label_scores: dict[str, float] | None  # the scorer's label → score s (sentiment = E[s])
    prompts_sha: str | None
    _ensemble: dict[float, dict[str, float]]  # output-ensemble metrics by α, filled on first use
    load_s: float
    _order: list[int]
    _key_base: dict[str, Any]
    _frame: str | None  # what builds the model around a checkpoint's own point (None: no shared key)
    _prefix_off: dict[str, Any] | None  # why frozen-prefix reuse is not used (None: it is)
    points_per_pass: int  # measure_many's k
    _width_why: str

    def __init__(self) -> None:  # use Landscape.open
        self._closed = False
        self.label_scores = None

    # ---- opening -----------------------------------------------------------------------

    @classmethod
    def open(cls, spec: RunSpec, resolver: Resolver, *, cache: CheckpointCache | None = None,
             prefix: bool | None = None, prefix_cap_mb: float | None = None,
             points_per_pass: int | None = None) -> Landscape:
        """Load everything a run needs; raises :class:`basin.errors.BasinError` subclasses on bad input.

        Order: resolve refs → read config → read/validate dataset → tokenizer →
        compatibility check (headers) → load checkpoints → live model → basis → tokenise.

        ``prefix`` switches frozen-prefix reuse (:mod:`basin.evaluate.prefix`) on or off
        (default: on unless ``BASIN_PREFIX_REUSE=0``); ``prefix_cap_mb`` bounds what it keeps
        (default ``BASIN_PREFIX_CACHE_MB`` or 1024 MiB). Results are the same either way.
        ``points_per_pass`` (default ``BASIN_POINTS_PER_PASS``, else ``auto``: 1 on the CPU, on CUDA
        :func:`basin.evaluate.multi.auto_points_per_pass`) is :meth:`measure_many`'s ``k``, which the
        drive loop uses (:func:`basin.drive.drive`); 1 whatever is asked for runs that generate.
        """
        self = cls()
        t0 = time.perf_counter()
        self.spec = spec
        self.path = PATHS[spec.path.type](spec.path)
        self.path.validate()
        refs = self.path.refs()
        gen = spec.generation
        prompts = None
        scorer_src = reference_src = None
        ref_name: str | None = None
        weights: list[float] = []

        def generation_checks() -> None:  # after the dataset, before any weights are read: a bad spec
            nonlocal prompts, scorer_src, reference_src, ref_name, weights
            if gen is None:
                return
            if gen.prompts:
                prompts = load_dataset(resolver.dataset(gen.prompts), GENERATION, max_examples=spec.max_examples,
                                       seed=spec.seed, prompts_from_text=gen.prompt_tokens is not None)
            scorer_src = resolver.checkpoint(gen.scorer) if gen.scorer else None
            ref_name = spec.reference_lm() if "sample_perplexity" in spec.metrics else None
            reference_src = resolver.checkpoint(ref_name) if ref_name else None
            if scorer_src is not None:
                weights, self.label_scores = label_weights(read_config(scorer_src.config_dir), gen.positive_label,
                                                           gen.label_scores, scorer=f"scorer {gen.scorer!r}")

        opened = open_model(
            spec.task, refs, resolver, dataset=spec.dataset, max_examples=spec.max_examples, seed=spec.seed,
            scope=spec.scope, device=spec.device, dtype=spec.dtype, tokenizer=spec.tokenizer,
            on_mismatch=spec.on_mismatch, space=spec.space, cache=cache,
            prompts_from_text=gen is not None and gen.prompt_tokens is not None, after_data=generation_checks,
        )
        self.sources, self.data, self.tokenizer_id = opened.sources, opened.data, opened.tokenizer_id
        self.mismatches, self.device, self.dtype = opened.mismatches, opened.device, opened.dtype
        self.precision, self.groups, self.names = opened.precision, opened.groups, opened.names
        model, tokenizer, autocast, load = opened.model, opened.tokenizer, opened.autocast, opened.load
        uniq = opened.movable
        axes_out = out_axis(model)
        self.space = ParamSpace(model, self.names)

        # the basis is computed in fp32 and held in fp32, or in the model's bf16 / fp16, on the
        # device or on the host (ParamSpace mixes each point in fp32, cast once: basin.holding)
        self.held = held_dtype(self.dtype)
        numel = sum(t.numel() for t in self.space.live)
        host = on_host(hold_from_env(), self.device, basis_bytes(numel, self.held, 2))
        ctx = BuildContext(names=self.names, device=self.device, dtype=torch.float32, load=load,
                           out_axes={n: axes_out[n] for n in self.names if n in axes_out}, hold=self.held,
                           hold_device=torch.device("cpu") if host else self.device,
                           pin=host and torch.cuda.is_available(), streamed=host,
                           artefact=getattr(resolver, "artefact", None))
        built = build_basis(self.path, ctx)
        self.space.set_basis(built.origin, built.directions, per_tensor=host)
        self.axes = built.axes
        self.anchors = built.anchors
        self.extra = built.extra
        self.space.mix_([0.0] * len(built.directions))

        self.distance = None
        ends = self.path.endpoints()
        if ends is not None:
            a, b = load(ends[0]), load(ends[1])
            names = [k for k in uniq if k in b and tensor_shape(b, k) == tensor_shape(a, k)]
            self.distance = distances(a, b, names, groups=self.groups)
        self.generator = None
        kw: dict[str, Any] = {"batch_size": spec.batch_size, "max_length": spec.max_length, "device": self.device,
                              "autocast_dtype": autocast}
        self.task = task_entry(spec.task)
        if gen is not None:
            scorer = None
            if scorer_src is not None:
                scorer = Scorer(self._side_model("classification", scorer_src, load_state_dict(scorer_src)),
                                load_tokenizer([scorer_src.config_dir, scorer_src.weights]), weights)
            reference = None
            if reference_src is not None:
                ref_src = reference_src
                reference = self._side_model("causal_lm", ref_src, load_state_dict(ref_src))
                vocab = (getattr(reference.config, "vocab_size", None), getattr(model.config, "vocab_size", None))
                if vocab[0] != vocab[1]:
                    raise IncompatibleCheckpoints(
                        f"reference LM {ref_name!r} has a vocabulary of {vocab[0]} tokens, the path's "
                        f"model {vocab[1]}: the perplexity of the samples needs a reference LM with the same "
                        "tokenizer", [])
            self.generator = GenerationEvaluator(tokenizer, prompts or self.data, model, gen=gen,
                                                 metrics=spec.metrics, scorer=scorer, reference=reference, **kw)
        opened.release()

        if self.task.generates == "always":
            assert self.generator is not None
            self.evaluator, self.generator = self.generator, None
        else:
            self.evaluator = opened.evaluator(batch_size=spec.batch_size, max_length=spec.max_length)
        self._prefix_off = self._plan_prefix(prefix, prefix_cap_mb)
        self.points_per_pass, self._width_why = self._plan_width(points_per_pass)
        self._ensemble = {}
        self.scorer_id = scorer_src.id if scorer_src is not None else None
        self.prompts_sha = prompts.sha256 if prompts is not None else None
        self.reference_id = reference_src.id if reference_src is not None else None
        self.reference_name = ref_name
        self._order = grid.order_1d(spec.shape[0]) if spec.is_1d else grid.order_2d(*spec.shape)
        self._key_base = self._key_base_doc()
        from basin.study.plan import frame_of

        self._frame = frame_of(spec, self.sources[refs[0]], self.tokenizer_id)
        self.load_s = time.perf_counter() - t0
        logger.info("opened %s landscape: %d movable tensors, %d examples, %d points on %s in %.2fs "
                    "(basis held in %s on %s)", spec.path.type, len(self.names), len(self.data), spec.num_points,
                    self.device, self.load_s, self.held, "the host" if host else self.device)
        return self

    def _plan_prefix(self, on: bool | None, cap_mb: float | None) -> dict[str, Any] | None:
        """Install frozen-prefix reuse on the evaluator when the scope allows; else why not."""
        if not (enabled_by_env() if on is None else on):
            return {"on": False, "reason": f"switched off ({ENV_SWITCH}=0 or prefix=False)"}
        if not self.task.prefix_reuse:
            return {"on": False, "reason": "generation samples with generate(): full passes"}
        if getattr(getattr(self.space.model, "active_peft_config", None), "is_prompt_learning", False):
            # the virtual tokens reach the backbone as its inputs (embeddings, every layer's keys
            # and values), not as a module's weights: no block of it is a frozen prefix
            return {"on": False, "reason": "a prompt-learning adapter's virtual tokens enter every layer"}
        cap = cap_from_env() if cap_mb is None else float(cap_mb)
        reuse, why = PrefixReuse.plan(self.space.model, self.names, self.groups,
                                      num_batches=len(self.evaluator.batches), cap_bytes=int(cap * 2**20))
        if reuse is None:
            logger.info("prefix reuse not used: %s", why)
            return {"on": False, "reason": why}
        self.evaluator.prefix = reuse
        logger.info("prefix reuse: replaying %s (cap %.0f MiB)", ", ".join(c.path for c in reuse.cuts), cap)
        return None

    def _plan_width(self, asked: int | None) -> tuple[int, str]:
        """``(k, why)``: how many points :meth:`measure_many` puts in one forward pass, and why."""
        if asked is None:
            asked = points_per_pass_from_env()
        if self.generator is not None or not self.evaluator.stacks:
            return 1, (f"task {self.spec.task!r} samples with generate(): one point at a time"
                       if self.task.generates != "never" else f"task {self.spec.task!r} takes one point a pass")
        if asked is not None:
            return max(1, int(asked)), "asked (points_per_pass / BASIN_POINTS_PER_PASS)"
        live = self.space.live
        params = sum(t.numel() for t in live)
        k = auto_points_per_pass(self.device, params, live[0].element_size() if live else 4)
        if self.device.type != "cuda":
            return k, "auto: one point a pass on the CPU (it does not win there)"
        return k, f"auto: {params / 1e6:.0f} M movable parameters, free device memory"

    def width_summary(self) -> dict[str, Any]:
        """Several points per pass in this run: ``{points_per_pass, why}``."""
        return {"points_per_pass": self.points_per_pass, "why": self._width_why}

    def prefix_summary(self) -> dict[str, Any]:
        """Frozen-prefix reuse of this run: ``{on, cuts, batches, cached_batches, full_batches,
        cache_mb, cap_mb, reason?}`` (``{on: false, reason}`` when it was not used)."""
        p = self.evaluator.prefix
        return p.info() if p is not None else dict(self._prefix_off or {"on": False})

    # ---- points ------------------------------------------------------------------------

    @property
    def model(self) -> torch.nn.Module:
        """The live model (its movable parameters hold the last evaluated point)."""
        return self.space.model

    def point(self, index: int) -> Point:
        """The grid node with flat ``index``."""
        n = self.spec.num_points
        if not 0 <= index < n:
            raise IndexError(f"point index {index} outside 0..{n - 1}")
        if self.spec.is_1d:
            return Point(index, {"alpha": self.axes[0][index]})
        ix, iy = grid.unflatten(index, self.spec.shape)
        return Point(index, {"x": self.axes[0][ix], "y": self.axes[1][iy]})

    def points(self) -> list[Point]:
        """All grid points in coarse-to-fine order (for an adaptive run: its fine grid, of
        which :meth:`next_wave` picks the points to evaluate)."""
        return [self.point(i) for i in self._order]

    def next_wave(self, results: Sequence[dict[str, Any]]) -> list[int]:
        """An adaptive run's next indices given the point records so far (``[]``: done);
        :func:`basin.refine.next_wave` on ``spec.refine_metric``. Every grid index for a
        uniform run until all are measured."""
        spec = self.spec
        if spec.refine is None:
            seen = {int(r["index"]) for r in results}
            return [i for i in self._order if i not in seen]
        if spec.refine.until == "decided":  # a study's pair: stop once its verdict is decided
            from basin.study.plan import decided

            if decided(spec, results):
                return []
        return refine.next_wave(spec.refine, spec.shape, refine.values_of(results, spec.refine_metric),
                                spec.refine_required)

    def evaluate(self, point: Point | dict[str, float]) -> dict[str, float]:
        """Metrics named in ``spec.metrics`` at a point (a :class:`Point` or a coords dict).

        Writes θ(point) into the live model in place, then runs the evaluator (and the
        generation evaluator of a causal_lm run with prompts).
        """
        return self.measure(point)["metrics"]

    def measure(self, point: Point | dict[str, float]) -> dict[str, Any]:
        """Everything a point's record holds besides its index and coordinates.

        ``{"metrics": {...}}``, plus ``"intervals": {metric: [lo, hi]}`` (95 % intervals over
        the examples, :func:`basin.analysis.uncertainty.point_intervals`; loss, accuracy,
        perplexity), ``"ensemble": {metric: value}`` (output ensembling at this α, when
        ``spec.ensemble``), ``"examples": {outcome: [...]}`` (per-example values in dataset
        order, when ``spec.per_example``; else, on a 1D path, ``"bootstrap"``: only the
        columns the barrier's interval needs, packed by
        :func:`basin.analysis.uncertainty.pack_bootstrap`) and ``"samples": [{prompt, text,
        sentiment}]`` (the kept generations, for runs that generate). JSON-ready.
        """
        if self._closed:
            raise RuntimeError("landscape is closed")
        coords = dict(point.coords if isinstance(point, Point) else point)
        out: dict[str, Any] = {}
        if self.spec.ensemble:
            out["ensemble"] = self._ensembled(float(coords["alpha"]))
            per = getattr(self.evaluator, "ensemble_per_prompt", {}).get(float(coords["alpha"]))
            if per is not None:  # the output ensemble's trend, beside weight interpolation's
                out["ensemble_per_prompt"] = {"sentiment": per}
        self.space.mix_(self.path.coeffs(coords))
        values = {}
        samples = None
        for ev in (self.evaluator, self.generator):
            if ev is None:
                continue
            if isinstance(ev, GenerationEvaluator):
                ev.coords = coords
            values.update(ev.evaluate(self.space.model))
            if isinstance(ev, GenerationEvaluator):
                samples = ev.samples
        return self._record(values, out, samples)

    def _record(self, values: dict[str, float], out: dict[str, Any], samples: list | None) -> dict[str, Any]:
        """A point's record from its metric values and the evaluator's per-example values."""
        result: dict[str, Any] = {"metrics": {m: float(values[m]) for m in self.spec.metrics}}
        intervals = {}
        for ev in (self.evaluator, self.generator):
            if ev is not None and ev.examples is not None:
                intervals.update(point_intervals(ev.examples, self.spec.metrics))
        if intervals:
            result["intervals"] = intervals
        examples = self.evaluator.examples
        if examples is not None:
            if self.spec.per_example:
                result["examples"] = examples
            elif self.spec.is_1d and (packed := pack_bootstrap(examples, self.spec.metrics)):
                result["bootstrap"] = packed  # the barrier's interval without per_example
        for ev in (self.evaluator, self.generator):
            if isinstance(ev, GenerationEvaluator) and ev.examples and "sentiment" in ev.examples:
                # per prompt (the unit of the trend test along the path, basin.analysis.trend)
                result["per_prompt"] = {"sentiment": [round(float(v), 6) for v in ev.examples["sentiment"]]}
        result.update(out)
        if samples is not None:
            result["samples"] = samples
        return result

    def measure_many(self, points: Sequence[Point | dict[str, float]]) -> list[dict[str, Any]]:
        """:meth:`measure` of several points, :attr:`points_per_pass` of them per forward pass.

        Each group of ``k`` points gets its movable tensors stacked and ONE vmapped forward pass
        per batch (:class:`basin.evaluate.multi.PointStack`,
        :meth:`basin.evaluate.base.Evaluator.evaluate_many`); the records equal :meth:`measure`'s
        up to rounding. With frozen-prefix reuse the first point runs alone (it records the
        prefix) and the stacked passes replay it. Runs exactly as :meth:`measure`, one point at a
        time, when ``k`` is 1 (see :meth:`open`: runs that generate, or whose task cannot take
        it, always are). Afterwards the live model holds the last point.
        """
        if self._closed:
            raise RuntimeError("landscape is closed")
        pts = list(points)
        k = self.points_per_pass
        if k <= 1 or len(pts) <= 1:
            return [self.measure(p) for p in pts]
        records: list[dict[str, Any]] = []
        prefix = self.evaluator.prefix
        if prefix is not None and prefix.needs_capture():
            records.append(self.measure(pts[0]))  # records the frozen prefix of every batch
            pts = pts[1:]
        live = self.space.live
        for s in range(0, len(pts), k):
            coords = [dict(p.coords if isinstance(p, Point) else p) for p in pts[s : s + k]]
            if len(coords) == 1:
                records.append(self.measure(coords[0]))
                continue
            outs: list[dict[str, Any]] = [{} for _ in coords]
            if self.spec.ensemble:
                for c, out in zip(coords, outs, strict=True):
                    out["ensemble"] = self._ensembled(float(c["alpha"]))
                    per = getattr(self.evaluator, "ensemble_per_prompt", {}).get(float(c["alpha"]))
                    if per is not None:
                        out["ensemble_per_prompt"] = {"sentiment": per}
            coeffs = [self.path.coeffs(c) for c in coords]
            stack = PointStack(self.space.model, self.space.names, self.space.origin, self.space.directions,
                               coeffs, [t.dtype for t in live], device=live[0].device if live else self.device)
            try:
                got = self.evaluator.evaluate_many(stack.forward, len(coords))
            finally:
                stack.close()
            for (values, examples), out in zip(got, outs, strict=True):
                self.evaluator.examples = examples
                records.append(self._record(values, out, None))
            self.space.mix_(coeffs[-1])
        return records

    def _ensembled(self, alpha: float) -> dict[str, float]:
        """Output-ensemble metrics at ``alpha``; the grid's α (and 0, 1) are computed together once."""
        if alpha not in self._ensemble:
            want = [alpha] if self._ensemble else sorted({*self.axes[0], 0.0, 1.0, alpha})

            def at(which: int) -> None:
                self.space.mix_(self.path.coeffs({"alpha": float(which)}))

            self._ensemble.update(self.evaluator.ensemble(self.space.model, at, want))
        got = self._ensemble[alpha]
        return {m: float(got[m]) for m in self.spec.metrics if m in got}

    def _side_model(self, task: str, src: CheckpointSource, sd: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        """A fixed model beside the live one (a generation scorer or reference LM), on the run's device."""
        return build_model(task, src.config_dir, sd).to(device=self.device, dtype=self.dtype)

    # ---- cache keys ----------------------------------------------------------------------

    def _key_base_doc(self) -> dict[str, Any]:
        s = self.spec
        roles = {
            field: self.sources[ref].id if isinstance(ref, str) else [self.sources[r].id for r in ref]
            for field, ref in s.roles().items()
        }
        return {
            "v": KEY_VERSION,
            "path": self.path.key_params(),
            "checkpoints": roles,
            "dataset": self.data.sha256,
            "task": s.task,
            "metrics": sorted(s.metrics),
            "max_examples": s.max_examples,
            "max_length": s.max_length,
            "seed": s.seed,
            "scope": s.scope,
            "on_mismatch": s.on_mismatch,
            "dtype": s.dtype,
            "precision": self.precision,
            # a basis held in bf16 / fp16 rounds each point differently from fp32 masters (absent: fp32)
            **({"held": str(self.held).removeprefix("torch.")} if self.held != torch.float32 else {}),
            "tokenizer": self.tokenizer_id,
            # fp32 results do not depend on the batch size beyond rounding (~1e-7): padding is
            # masked and decoder classifiers pad with config.pad_token_id. In low precision the
            # padded shapes change the rounding visibly, so the batch size is part of the key.
            "batch_size": s.batch_size if self.precision != "float32" else None,
            "ensemble": s.ensemble,
            "per_example": s.per_example,
            **({"space": s.space} if s.space != "merged" else {}),  # absent: keys of older runs stay valid
            "generation": None if s.generation is None else dict(
                s.generation.model_dump(mode="json"), scorer=self.scorer_id, reference=self.reference_id,
                prompts=self.prompts_sha,
                # sampling is batch-independent; scores and perplexities are up to rounding, like losses
            ),
        }

    def point_key(self, point: Point | dict[str, float]) -> str:
        """sha256 hex of everything that determines a point's metrics (not the device).

        Equal keys ⇒ equal metrics: key version, checkpoint ids by role (their configs fix
        the model class and padding id), path parameters that change the point, coordinates,
        dataset sha256, task, metrics, max_examples, max_length, seed, scope, on_mismatch,
        dtype and effective precision, tokenizer, and the batch size when the precision is
        not fp32 (in fp32 results are batch-independent up to rounding).
        """
        coords = point.coords if isinstance(point, Point) else point
        shared = self._checkpoint_at(coords)
        if shared is not None:  # one checkpoint's own point: the same key in every pair (a study's endpoints)
            doc = {k: v for k, v in self._key_base.items() if k not in ("path", "checkpoints")}
            doc.update(checkpoint=shared, frame=self._frame)
        else:
            doc = dict(self._key_base, coords={k: float(v).hex() for k, v in sorted(coords.items())})
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def _checkpoint_at(self, coords: Mapping[str, float]) -> str | None:
        """The store id of the checkpoint this point IS, when the key may say so (else ``None``):
        α = 0 of a linear path is θA whatever the pair, α = 1 is θB when every tensor moves
        (scope ``all``, nothing held) — equal up to float rounding (θA + (θB − θA)), the
        tolerance the key already accepts for the batch size. Only a study's plain linear run
        (``refine.until: decided``; no ensemble, no generation, merged space): it has a frame
        (:func:`basin.study.plan.frame_of`). Other runs keep their keys."""
        if self._frame is None or set(coords) != {"alpha"}:
            return None
        alpha = float(coords["alpha"])
        ends = self.path.endpoints()
        if ends is None:
            return None
        if alpha == 0.0:
            return self.sources[ends[0]].id
        if alpha == 1.0 and self.spec.scope == "all" and not self.mismatches:
            return self.sources[ends[1]].id
        return None

    # ---- summary -------------------------------------------------------------------------

    def summary(self, results: Sequence[dict]) -> dict:
        """Summary of evaluated points ``[{index, coords, metrics}]`` (any order, may be partial).

        1D: ``{"barrier": {metric: {value, alpha, start, end, ci?, verdict?, ...}}, "distance":
        {...}}`` with a barrier for every metric of the spec the registry knows
        (:mod:`basin.metrics`); ``ci`` and the connectivity ``verdict`` (a studentized
        simultaneous band, :func:`basin.analysis.uncertainty.barrier_verdicts`)
        when the records carry per-example values (``examples`` with ``spec.per_example``, else
        the compact ``bootstrap``) — the service computes the summary from stored point
        records, so only values kept in them can be resampled;
        2D: ``{"min": {metric: {value, coords}}, "max": {...}, "anchors": [...]}`` plus
        ``explained_variance`` for trajectories.
        """
        if self.spec.is_1d:
            lo, hi = self.spec.path.range
            endpoints = self._off_grid_endpoints(lo, hi)
            curve = list(results) + [{"coords": {"alpha": e["alpha"]}, **e} for e in endpoints]
            found = barriers(curve, self.spec.metrics, lo, hi)
            if found:
                for m, fields in barrier_verdicts(curve, found, seed=self.spec.seed).items():
                    found[m] = {**found[m], **fields}
            out: dict[str, Any] = {"barrier": found, "distance": self.distance}
            if self.spec.refine is not None:  # every metric's barrier comes from points placed for one metric
                for b in found.values():
                    b["points_chosen_by"] = self.spec.refine_metric
            if self.spec.generation is not None:
                out.update(self._generation_summary(curve))
            if endpoints:
                out["endpoints"] = endpoints
            if self.spec.per_example:
                out["examples"] = {"count": len(self.data), "dataset_sha256": self.data.sha256}
            return out
        mins, maxs = extremes(results, self.spec.metrics)
        out = {
            "min": mins, "max": maxs,
            "anchors": [{"name": a.name, "coords": dict(a.coords)} for a in self.anchors],
        }
        out.update(self.extra)
        return out

    def _generation_summary(self, curve: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """What a generation run's summary leads with: the trend of the attribute it measures
        (:func:`basin.analysis.trend.trend` over the per-prompt sentiment), and what scored it: the
        reference LM of the samples' perplexity and the scorer's label scores."""
        out: dict[str, Any] = {"generation": {"reference": self.reference_name, "label_scores": self.label_scores}}
        rows = sorted((float(r["coords"]["alpha"]), r["per_prompt"]["sentiment"]) for r in curve
                      if isinstance(r.get("per_prompt"), dict) and "sentiment" in r["per_prompt"])
        if len(rows) >= 2 and len({len(v) for _, v in rows}) == 1:
            out["trend"] = {"sentiment": trend([a for a, _ in rows], [v for _, v in rows])}
        ens = sorted((float(r["coords"]["alpha"]), r["ensemble_per_prompt"]["sentiment"]) for r in curve
                     if isinstance(r.get("ensemble_per_prompt"), dict) and "sentiment" in r["ensemble_per_prompt"])
        if "trend" in out and len(ens) >= 2 and len({len(v) for _, v in ens}) == 1:
            out["trend"][ENSEMBLE_TREND] = trend([a for a, _ in ens], [v for _, v in ens])
        return out

    def _off_grid_endpoints(self, lo: float, hi: float) -> list[dict[str, Any]]:
        """θA (α=0) and θB (α=1) evaluated when they lie in the range but not on its grid.

        E.g. 26 points on [−0.5, 1.5] step by 0.08 and miss α = 0 and 1; the barrier's chord
        and the figure's anchors need the endpoints' own values, which cost two extra passes.
        Each is ``{alpha, metrics, intervals?, examples?}`` (a point record's fields).
        """
        grid = [p.coords["alpha"] for p in self.points()]
        tol = 1e-6 * max(1.0, hi - lo)
        out = []
        for a in (0.0, 1.0):
            if lo - tol <= a <= hi + tol and not any(abs(g - a) <= tol for g in grid):
                rec = self.measure({"alpha": a})
                entry: dict[str, Any] = {"alpha": a}
                entry.update({k: rec[k] for k in ("metrics", "intervals", "examples", "bootstrap")
                              if k in rec})
                out.append(entry)
        return out

    def close(self) -> None:
        """Free the model, basis and batches (device memory)."""
        if self._closed:
            return
        self._closed = True
        if self.evaluator.prefix is not None:
            self.evaluator.prefix.close()
            self.evaluator.prefix = None
        self.space.origin = []
        self.space.directions = []
        self.space.live = []
        for ev in (self.evaluator, self.generator):
            if ev is not None:
                ev.batches = []
            if isinstance(ev, GenerationEvaluator):
                ev.scorer = ev.reference = None  # the side models
        self.generator = None
        del self.space
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def __enter__(self) -> Landscape:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run(
    spec: RunSpec,
    resolver: Resolver,
    *,
    on_point: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = True,
    cache: CheckpointCache | None = None,
) -> dict:
    """Evaluate a whole run in-process and return its result document.

    ``on_point({index, coords, metrics})`` is called after each point (coarse-to-fine
    order; an adaptive run's points wave by wave, :mod:`basin.refine`); ``should_stop()`` is checked before each point (cancel: the document then
    holds the points done so far and ``"status": "cancelled"``). ``progress`` shows a
    tqdm bar with ETA on stderr.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    land = Landscape.open(spec, resolver, cache=cache)
    t1 = time.perf_counter()
    try:
        sink = ListSink(on_point)
        source: ListSource | WaveSource = ListSource(land.points())
        if spec.refine is not None:  # wave by wave: each chosen from every result so far
            source = WaveSource(land.point, lambda: land.next_wave(sink.results))
        with tqdm(total=spec.planned_points, file=sys.stderr, disable=not progress,
                  desc=spec.name or spec.path.type, unit="pt", leave=False) as bar:
            stats = drive(land, source, sink, should_stop=should_stop,
                          on_progress=lambda _r, _c: bar.update(1))
        results = sink.results
        status = "cancelled" if stats.stopped == "cancelled" else "done"
        eval_s = time.perf_counter() - t1
        summary = land.summary(results)
        anchors = [{"name": a.name, "coords": dict(a.coords)} for a in land.anchors]
        device = str(land.device)
        load_s = land.load_s
        prefix = land.prefix_summary()
        width = land.width_summary()
    finally:
        land.close()
    total = time.perf_counter() - t0
    return run_document(
        spec=spec.model_dump(mode="json"),
        points=results,
        anchors=anchors,
        summary=summary,
        timings={
            "load_s": load_s, "eval_s": eval_s, "total_s": total,
            "points_per_s": len(results) / eval_s if eval_s > 0 else 0.0, "device": device,
            "prefix_reuse": prefix, "points_per_pass": width,
        },
        status=status,
    )
