"""Curve fitting: train the control point(s) of a Bezier or polychain curve between two checkpoints.

Given two minima θA and θB, a curve φ(t) with ``t ∈ [0, 1]``, φ(0) = θA, φ(1) = θB,
and a trainable control point θC (Garipov et al. 2018; Qin et al. 2022, eq. 2)::

    bezier (quadratic):   φ(t) = (1−t)²·θA + 2t(1−t)·θC + t²·θB
    polychain, k bends:   θ_0 = θA, θ_1..θ_k = the bends, θ_{k+1} = θB at t_i = i/(k+1);
                          φ(t) linear between consecutive θ_i (k = 1: A → C → B)

the fit minimises ``E_{t~U(0,1)} L(φ(t))`` over the control point(s) only, with the
endpoints frozen, by Adam on one (batch, t) draw per step: t ~ U(0, 1) and a batch drawn
with probability proportional to its examples (token-mean losses: its target tokens), so
each step's loss is an unbiased sample of the objective (:func:`batch_weights`). The
control point starts on the segment: θC = (θA + θB)/2 for the Bezier curve (then φ is
exactly the straight line), θ_i = θA + t_i·(θB − θA) for the bends.

φ(t) is computed *functionally*: the one live model holds θA and never changes;
:func:`torch.func.functional_call` runs it with the in-scope tensors replaced by φ(t),
so gradients flow to the control tensors only (no curve-aware model class). Only
tensors in ``scope`` (:func:`basin.space.select_scope`) get control parameters; the rest
stay at θA along the whole curve, as in a run with that scope. Dropout is off
(``model.eval()``), and the batch and t draws come from a generator seeded with
``seed``, so a fit is reproducible on one device.

Memory (device): the live model (θA, every tensor), and for the in-scope parameters,
each the size of the scoped parameters S: θB, the control point(s) θC (k of them for
k bends), their gradients, Adam's two moments, and φ(t) with its autograd graph — about
``model + (2 + 4k)·S`` plus the activations of one training batch (forward and
backward). :func:`estimate_memory` computes this, and :func:`fit` refuses to start when
it exceeds the memory available on the device.

The fitted control point is saved (:func:`save_control`) as a checkpoint folder —
``model.safetensors`` (θA with the in-scope tensors replaced by θC), θA's
``config.json`` and tokenizer files, and ``basin_fit.json`` (how it was fitted) — that
the ``bezier`` / ``polychain`` path types take as their ``control`` checkpoint.
Evaluate the fitted curve with the same scope as the fit.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from basin.checkpoints import TOKENIZER_FILES
from basin.data import read_rows
from basin.errors import DatasetError, InvalidSpec
from basin.evaluate.base import Evaluator
from basin.fitdata import fit_data
from basin.fitspec import FitSpec as FitSpec  # re-exported: the spec lived here
from basin.fitspec import load_fit_spec as load_fit_spec
from basin.fitspec import parse_fit_spec as parse_fit_spec
from basin.opening import open_model
from basin.resolve import Resolver

logger = logging.getLogger(__name__)

#: File in a fitted control checkpoint that says how it was fitted (not ``manifest.json``,
#: which the store writes for its own entries).
FIT_META = "basin_fit.json"
#: Files copied from θA's folders into the control checkpoint (config and tokenizer).
_COPIED = ("config.json", "generation_config.json", "special_tokens_map.json", "added_tokens.json",
           "merges.txt", *TOKENIZER_FILES)


# ---- the curve ------------------------------------------------------------------------------


def knots(k: int) -> list[float]:
    """The t of each polychain bend: ``i/(k+1)`` for ``i = 1..k``."""
    return [i / (k + 1) for i in range(1, k + 1)]


def curve_point(curve: str, t: float, a: torch.Tensor, b: torch.Tensor,
                controls: list[torch.Tensor]) -> torch.Tensor:
    """φ(t) for one tensor: quadratic Bezier, or the polychain through ``controls``."""
    if curve == "bezier":
        return (1 - t) ** 2 * a + 2 * t * (1 - t) * controls[0] + t * t * b
    pts = [a, *controls, b]
    seg = min(int(t * (len(pts) - 1)), len(pts) - 2)
    u = t * (len(pts) - 1) - seg
    return (1 - u) * pts[seg] + u * pts[seg + 1]


# ---- the loss of one batch -------------------------------------------------------------------


def batch_loss(ev: Evaluator, i: int, logits: torch.Tensor) -> torch.Tensor:
    """Mean loss of batch ``i`` from its logits: the task's evaluator's own
    :meth:`~basin.evaluate.base.Evaluator.batch_loss` (a tensor with grad)."""
    try:
        return ev.batch_loss(i, logits)
    except NotImplementedError:
        raise InvalidSpec(f"curve fitting does not know the loss of task {ev.task!r}") from None


def batch_weights(ev: Evaluator) -> list[float]:
    """How much each batch weighs in the full-data loss: its examples (classification) or its
    target tokens (``causal_lm``, ``seq2seq``: the loss is a token mean over the whole set).

    Batches of similar length have unequal sizes (the last one is short), so drawing a batch
    uniformly and taking its mean over-weights the short batch's examples; drawing batch i
    with probability wᵢ / Σ w makes its mean an unbiased sample of the full-data loss:
    Σᵢ (wᵢ/Σw)·(Lᵢ/wᵢ) = Σᵢ Lᵢ / Σ w.

    The task's evaluator owns them (:meth:`~basin.evaluate.base.Evaluator.batch_weights`),
    beside its loss: a task added as one module fits without an edit here.
    """
    try:
        return ev.batch_weights()
    except NotImplementedError:
        raise InvalidSpec(f"curve fitting does not know the loss of task {ev.task!r}") from None


# ---- memory ---------------------------------------------------------------------------------


def available_memory(device: torch.device) -> int | None:
    """Free bytes on the device: CUDA's free memory, or the host's MemAvailable; None if unknown."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def estimate_memory(model_bytes: int, scoped_bytes: int, controls: int, *, batch_size: int,
                    max_length: int, config: dict[str, Any]) -> dict[str, int]:
    """Bytes a fit holds on its device, by part (``total`` is their sum).

    ``model`` (θA, the live model), ``endpoint_b`` (θB's in-scope tensors),
    ``control`` (θC, k tensors for k bends), ``gradients``, ``adam`` (two moments),
    ``curve_point`` (φ(t) kept for backward), and ``activations``: a rough bound for
    one batch's forward + backward, 40 fp32 values per token, layer and hidden unit
    (plus the logits), from the config's sizes.
    """
    h = int(config.get("hidden_size") or config.get("n_embd") or config.get("d_model") or 0)
    layers = int(config.get("num_hidden_layers") or config.get("n_layer") or config.get("num_layers") or 0)
    layers += int(config.get("num_decoder_layers") or 0)
    vocab = int(config.get("vocab_size") or 0)
    tokens = batch_size * max_length
    parts = {
        "model": model_bytes,
        "endpoint_b": scoped_bytes,
        "control": controls * scoped_bytes,
        "gradients": controls * scoped_bytes,
        "adam": 2 * controls * scoped_bytes,
        "curve_point": scoped_bytes,
        "activations": 4 * tokens * (40 * h * layers + 2 * vocab),
    }
    parts["total"] = sum(parts.values())
    return parts


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


# ---- the fit --------------------------------------------------------------------------------


@dataclass
class FitResult:
    """A finished (or cancelled) fit: the control tensors on the CPU and how it went.

    ``controls[i]`` maps the in-scope tensor names (the model's canonical names) to θC_i;
    ``losses`` is the training loss of every step; ``meta`` is what :func:`save_control`
    writes to ``basin_fit.json``.
    """

    spec: FitSpec
    controls: list[dict[str, torch.Tensor]]
    losses: list[float]
    status: Literal["done", "cancelled"]
    meta: dict[str, Any]
    base_state: dict[str, torch.Tensor] = field(repr=False)
    copy_from: list[Path] = field(repr=False)

    @property
    def final_loss(self) -> float | None:
        """Mean training loss over the last 10 % of steps (at least one): less noisy than the last step."""
        if not self.losses:
            return None
        n = max(1, len(self.losses) // 10)
        return sum(self.losses[-n:]) / n


def fit(
    spec: FitSpec,
    resolver: Resolver,
    *,
    on_step: Callable[[int, float, float | None], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    memory_limit: int | None = None,
) -> FitResult:
    """Fit the control point(s) of ``spec``'s curve; see the module docstring.

    ``on_step(step, loss, eta_s)`` is called after each step (1-based step; ETA from the
    mean step time so far); ``should_stop()`` is checked before each step — when it
    returns True the fit ends with ``status == "cancelled"`` and the control point as it
    was. Bad input raises :class:`basin.errors.BasinError` subclasses before any training.
    ``memory_limit`` (bytes) caps what the fit may hold on its device; by default, what
    the device has free (:func:`available_memory`). A fit whose :func:`estimate_memory`
    exceeds it is refused with :class:`InvalidSpec` before θB is loaded.
    """
    t_start = time.perf_counter()
    if resolver.checkpoint(spec.a).id == resolver.checkpoint(spec.b).id:
        raise InvalidSpec("a and b are the same checkpoint: there is no curve to fit between them")
    # training examples, never the evaluation's unless allow_overlap (basin.fitdata): checked
    # before any weights are read
    selected = fit_data(spec, resolver)
    try:  # the engine's opening: one compatibility check (under the model's names), no hold
        opened = open_model(spec.task, [spec.a, spec.b], resolver, dataset=spec.dataset,
                            max_examples=spec.max_examples, seed=spec.seed, scope=spec.scope, device=spec.device,
                            tokenizer=spec.tokenizer, can_hold=False, lazy=False, parameters_only=True,
                            only_moved=False)
    except DatasetError:
        if not read_rows(resolver.dataset(spec.dataset))[1]:  # a header-only file reads as "no columns"
            raise DatasetError(f"training dataset {spec.dataset!r} has no rows: a fit needs training "
                               "data") from None
        raise
    model, device, prec, config = opened.model, opened.device, opened.precision, opened.config
    src_a, src_b = opened.sources[spec.a], opened.sources[spec.b]
    data = selected.train
    if len(data) == 0:
        raise DatasetError(f"training dataset {spec.dataset!r} has no rows: a fit needs training data")
    names = opened.names
    sd_a = dict(opened.load(spec.a))
    model.eval()  # dropout off: the loss at a given (batch, t) is deterministic

    params = dict(model.named_parameters())
    scoped_bytes = sum(params[n].numel() for n in names) * 4
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    model_bytes += sum(b.numel() * b.element_size() for b in model.buffers())
    need = estimate_memory(model_bytes, scoped_bytes, spec.num_controls, batch_size=spec.batch_size,
                           max_length=spec.max_length, config=config)
    free = memory_limit if memory_limit is not None else available_memory(device)
    # the model is already on the device (and θA in host memory): it counts as held, not as needed
    held = need["model"] if memory_limit is None else 0
    if free is not None and need["total"] - held > free:
        raise InvalidSpec(
            f"the fit needs about {_gib(need['total'])} on {device} (model {_gib(need['model'])}, "
            f"control point(s) + gradients + Adam state {_gib(need['control'] + need['gradients'] + need['adam'])}, "
            f"endpoint B {_gib(need['endpoint_b'])}, activations {_gib(need['activations'])}) but only "
            f"{_gib(free)} is {'allowed' if memory_limit is not None else 'free'}: narrow the scope, lower batch_size or max_length, or use a larger device"
        )

    sd_b = opened.load(spec.b)
    a_t = [params[n].detach() for n in names]  # the live model's own tensors: θA, never written
    b_t = [sd_b[n].to(device=device, dtype=torch.float32) for n in names]
    del sd_b
    opened.release()
    controls: list[list[torch.Tensor]] = []
    for tk in ([0.5] if spec.curve == "bezier" else knots(spec.bends)):
        controls.append([(a + tk * (b - a)).detach().clone().requires_grad_(True) for a, b in zip(a_t, b_t, strict=True)])
    flat = [c for cs in controls for c in cs]
    opt = torch.optim.Adam(flat, lr=spec.lr)

    ev = opened.evaluator(data, batch_size=spec.batch_size, max_length=spec.max_length)
    gen = torch.Generator().manual_seed(spec.seed)
    nb = len(ev.batches)
    # a batch with probability ∝ its examples / target tokens: its mean loss is then an
    # unbiased sample of the full-data loss, whatever the batches' sizes (batch_weights)
    draw = torch.tensor(batch_weights(ev), dtype=torch.float64)
    if not float(draw.sum()) > 0:
        raise DatasetError(f"training dataset {spec.dataset!r} has no tokens to train on")
    load_s = time.perf_counter() - t_start
    logger.info("fit %s: %d tensors in scope (%.1f M values), %d batches, %d steps on %s",
                spec.curve, len(names), scoped_bytes / 4e6, nb, spec.steps, device)

    losses: list[float] = []
    status: Literal["done", "cancelled"] = "done"
    t0 = time.perf_counter()
    for step in range(1, spec.steps + 1):
        if should_stop is not None and should_stop():
            status = "cancelled"
            break
        i = int(torch.multinomial(draw, 1, generator=gen))
        t = float(torch.rand((), generator=gen, dtype=torch.float64))
        point = {n: curve_point(spec.curve, t, a, b, [cs[j] for cs in controls])
                 for j, (n, a, b) in enumerate(zip(names, a_t, b_t, strict=True))}
        with ev.autocast():
            out = torch.func.functional_call(model, point, args=(), kwargs=ev.batches[i], strict=False)
        loss = ev.batch_loss(i, out.logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise InvalidSpec(f"the fit diverged at step {step} (training loss {value}): lower lr (now {spec.lr})")
        losses.append(value)
        if on_step is not None:
            per = (time.perf_counter() - t0) / step
            on_step(step, value, per * (spec.steps - step))
    fit_s = time.perf_counter() - t0

    control_sds = [{n: c.detach().to("cpu").clone() for n, c in zip(names, cs, strict=True)} for cs in controls]
    meta: dict[str, Any] = {
        "kind": "basin-fit",
        "fitted_from": {"a": src_a.id, "b": src_b.id},
        "refs": {"a": spec.a, "b": spec.b},
        "curve": spec.curve,
        "bends": spec.num_controls if spec.curve == "polychain" else None,
        "steps": len(losses),
        "steps_requested": spec.steps,
        "status": status,
        "dataset": {"ref": spec.dataset, "sha256": data.sha256, "examples": len(data),
                    "holdout": spec.holdout, "held_out_rows": selected.held_out},
        "evaluation": {"ref": spec.eval_dataset or spec.dataset, "examples": selected.eval_examples,
                       "overlap_with_training": selected.overlap},
        "task": spec.task,
        "scope": spec.scope,
        "tensors_fitted": len(names),
        "values_fitted": scoped_bytes // 4 * spec.num_controls,
        "seed": spec.seed,
        "lr": spec.lr,
        "batch_size": spec.batch_size,
        "max_length": spec.max_length,
        "device": str(device),
        "precision": prec,
        "memory_estimate_bytes": need,
        "timings": {"load_s": load_s, "fit_s": fit_s, "steps_per_s": len(losses) / fit_s if fit_s > 0 else 0.0},
        "spec": spec.model_dump(mode="json"),
    }
    result = FitResult(spec=spec, controls=control_sds, losses=losses, status=status, meta=meta,
                       base_state=sd_a, copy_from=[src_a.config_dir, src_a.weights])
    result.meta["final_training_loss"] = result.final_loss
    result.meta["first_training_loss"] = losses[0] if losses else None
    del ev, model, opt, controls, flat, a_t, b_t
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


# ---- saving ---------------------------------------------------------------------------------


def save_control(result: FitResult, folder: str | Path) -> list[Path]:
    """Write the fitted control point(s) as checkpoint folder(s); returns their paths.

    One control (Bezier, one-bend polychain): ``folder`` itself. k bends:
    ``folder/bend_1`` … ``folder/bend_k``. Each holds ``model.safetensors`` (θA with the
    in-scope tensors replaced by the control's), θA's config and tokenizer files, and
    ``basin_fit.json``. Written to a temporary sibling and renamed, so a failed save
    leaves no half-written checkpoint.
    """
    folder = Path(folder)
    outs = [folder] if len(result.controls) == 1 else [folder / f"bend_{i + 1}" for i in range(len(result.controls))]
    tmp_root = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp_root, ignore_errors=True)
    tmp_root.mkdir(parents=True)
    try:
        for i, ctrl in enumerate(result.controls):
            d = tmp_root if len(result.controls) == 1 else tmp_root / f"bend_{i + 1}"
            d.mkdir(parents=True, exist_ok=True)
            sd = {}
            for k, v in result.base_state.items():
                t = ctrl[k] if k in ctrl else v
                sd[k] = t.to(v.dtype).contiguous()
            save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
            for src in result.copy_from:
                if not src.is_dir():
                    continue
                for name in _COPIED:
                    if (src / name).is_file() and not (d / name).exists():
                        shutil.copyfile(src / name, d / name)
            meta = dict(result.meta, control_index=i + 1, control_t=(
                0.5 if result.spec.curve == "bezier" else knots(len(result.controls))[i]))
            (d / FIT_META).write_text(json.dumps(meta, indent=1, allow_nan=True) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp_root.rename(folder)
    except BaseException:
        shutil.rmtree(tmp_root, ignore_errors=True)
        raise
    return outs


def read_fit_meta(folder: str | Path) -> dict[str, Any] | None:
    """``basin_fit.json`` of a fitted control checkpoint, or None when the folder has none."""
    p = Path(folder) / FIT_META
    if not p.is_file():
        return None
    doc = json.loads(p.read_text())
    return doc if isinstance(doc, dict) else None


def curve_run_data(spec: FitSpec, control: str, *, line: bool = False) -> dict[str, Any]:
    """A run-spec dict evaluating the fitted curve (or, ``line=True``, the straight line) with the fit's settings.

    Same endpoints, scope, task and lengths as the fit, on its evaluation data
    (``eval_dataset`` or the training file, ``eval_max_examples`` examples);
    feed it to :func:`basin.spec.parse_spec`.
    """
    path: dict[str, Any] = {"type": "linear", "a": spec.a, "b": spec.b, "points": spec.eval_points}
    if not line:
        path = {"type": spec.curve, "a": spec.a, "b": spec.b, "control": control, "points": spec.eval_points}
    return {
        "path": path,
        "dataset": spec.eval_dataset or spec.dataset,
        "task": spec.task,
        "max_examples": spec.eval_size,
        "batch_size": spec.batch_size,
        "max_length": spec.max_length,
        "seed": spec.seed,
        "device": spec.device,
        "scope": spec.scope,
        "tokenizer": spec.tokenizer,
        "name": f"{spec.name or 'fit'}: {'line' if line else 'fitted ' + spec.curve}",
    }


__all__ = [
    "FIT_META", "FitResult", "FitSpec", "available_memory", "batch_loss", "batch_weights", "curve_point", "curve_run_data",
    "estimate_memory", "fit", "knots", "load_fit_spec", "parse_fit_spec", "read_fit_meta", "save_control",
]

