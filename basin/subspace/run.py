"""The subspace stages from specs: resolve, check, fit / optimise / transfer, evaluate, write.

Each ``run_*`` writes into a folder ``out``:

- ``fit``: ``projections/`` (the artefact: :meth:`Subspace.save`), ``report.json`` with
  003's first two tables: each original solution's evaluation loss and accuracy, and its
  reconstruction's — Projₜ↑(Projₜ↓(θᵢ,ₜ)) — with the relative distance ‖θ̂ − θ‖/‖θ‖; and
  the solution decoded through every *other* method (the training solutions' transfer).
- ``optimise``: ``intrinsic.safetensors`` (the trained I), ``adapters/<method>/`` (I decoded
  through each method: PEFT adapter folders with ``subspace.json`` saying how they were
  made), ``report.json`` (the task performance of each decode: the optimised method's
  is subspace optimisation, the others transfer).
- ``transfer``: ``adapters/<method>/`` and ``report.json``.

``on_step(record)`` streams each training step; ``should_stop()`` is asked between steps
(a cancel); :class:`basin.subspace.core.Stopped` is raised then.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from basin.errors import IncompatibleCheckpoints, InvalidSpec
from basin.resolve import Resolver
from basin.source import CheckpointSource
from basin.subspace.core import (
    FitSettings,
    Subspace,
    check_solutions,
    check_subspace_fits,
    fit,
    optimise,
    sampler,
    transfer,
)
from basin.subspace.methods import Layout, Method, batches
from basin.subspace.spec import FitSpec, OptimiseSpec, TransferSpec

Callback = Callable[[dict[str, Any]], None]


def _labels(config_dir: Path) -> tuple[dict[str, int] | None, int | None]:
    from basin.formats import read_config

    cfg = read_config(config_dir)
    l2i = cfg.get("label2id")
    n = cfg.get("num_labels") or (
        len(cfg["id2label"]) if isinstance(cfg.get("id2label"), dict) else None
    )
    return ({str(k): int(v) for k, v in l2i.items()} if isinstance(l2i, dict) else None), n


def _dataset(resolver: Resolver, ref: str, base: CheckpointSource, n: int, seed: int) -> Any:
    from basin.data import load_dataset

    l2i, num = _labels(base.config_dir)
    return load_dataset(
        resolver.dataset(ref),
        "classification",
        max_examples=n,
        seed=seed,
        label2id=l2i,
        num_labels=num,
    )


def _tokenizer(base: CheckpointSource) -> Any:
    from basin.evaluate import load_tokenizer

    return load_tokenizer([base.config_dir])


def _base_sd(base: CheckpointSource) -> dict[str, torch.Tensor]:
    from basin.checkpoints import load_state_dict

    return load_state_dict(base)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def run_fit(
    spec: FitSpec,
    resolver: Resolver,
    out: str | Path,
    *,
    on_step: Callback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Stage 1 from a spec; writes ``out/projections`` and ``out/report.json``; returns the report."""
    t0 = time.monotonic()
    out = Path(out)
    sources = {
        t: {m: resolver.checkpoint(ref) for m, ref in ts.solutions.items()}
        for t, ts in spec.tasks.items()
    }
    methods_order = check_solutions(sources)
    first_task = next(iter(sources))
    base = sources[first_task][methods_order[0]].base_source()
    base_sd = _base_sd(base)
    methods = {
        m: Method.from_adapter(m, sources[first_task][m], base_sd, spec.task) for m in methods_order
    }
    vectors = {t: {m: methods[m].flatten(sources[t][m]) for m in methods_order} for t in sources}
    check_solutions(sources, spec.y, {m: methods[m].layout.size for m in methods_order})
    tok = _tokenizer(base)
    train = {
        t: _dataset(resolver, ts.train, base, spec.train_examples, spec.seed)
        for t, ts in spec.tasks.items()
    }
    evals = {
        t: _dataset(resolver, ts.eval, base, spec.eval_examples, spec.seed)
        for t, ts in spec.tasks.items()
        if ts.eval is not None
    }
    for t, ev in evals.items():
        _no_overlap(train[t], ev, f"task {t!r}", spec.allow_overlap)
    draw = {
        t: sampler(
            tokenizer=tok, data=train[t], batch_size=spec.batch_size, max_length=spec.max_length
        )
        for t in train
    }
    settings = FitSettings(
        y=spec.y,
        hidden=spec.hidden,
        steps=spec.steps,
        lr=spec.lr,
        batch_size=spec.batch_size,
        max_length=spec.max_length,
        seed=spec.seed,
        dist_weight=spec.dist_weight,
        task_weight=spec.task_weight,
    )
    meta = {
        "base": base.id,
        "task": spec.task,
        "configs": {m: methods[m].clean for m in methods_order},
        "peft_types": {m: methods[m].peft_type for m in methods_order},
        "solutions": {t: {m: sources[t][m].id for m in methods_order} for t in sources},
    }
    sub, history = fit(
        methods, vectors, draw, settings, on_step=on_step, should_stop=should_stop, meta=meta
    )
    sub.save(out / "projections")
    eval_batches = {t: batches(tok, evals[t], 64, spec.max_length) for t in evals}
    rows = []
    with torch.no_grad():
        for t in sources:
            for m in methods_order:
                theta = vectors[t][m]
                recon = sub.decode(m, sub.intrinsic[t][m])
                row: dict[str, Any] = {
                    "task": t,
                    "method": m,
                    "peft_type": methods[m].peft_type,
                    "parameters": theta.numel(),
                    "relative_distance": _rel(recon, theta),
                }
                if t in eval_batches:  # task performance only on held-out data
                    ev = eval_batches[t]
                    row["original"] = methods[m].evaluate(theta, ev)
                    row["reconstruction"] = methods[m].evaluate(recon, ev)
                    row["decoded_from"] = {
                        s: methods[m].evaluate(sub.decode(m, sub.intrinsic[t][s]), ev)
                        for s in methods_order
                        if s != m
                    }
                rows.append(row)
    report = {
        "stage": "fit",
        "spec": spec.model_dump(mode="json"),
        "methods": methods_order,
        "y": spec.y,
        "rows": rows,
        "final": history[-1] if history else None,
        "seconds": round(time.monotonic() - t0, 1),
    }
    _write(out / "report.json", report)
    return report


def _open_subspace(
    folder: str | Path, base_ref: str, resolver: Resolver, wanted: list[str] | None, task: str
) -> tuple[Subspace, CheckpointSource, dict[str, Method]]:
    sub = Subspace.load(folder)
    base = resolver.checkpoint(base_ref).base_source()
    if sub.meta.get("base") not in (None, base.id):
        raise IncompatibleCheckpoints(
            f"the subspace was fitted on base {str(sub.meta.get('base'))[:16]!r}; {base_ref!r} is another base "
            f"({base.id[:16]!r})",
            [(base_ref, "another base")],
        )
    names = wanted or sub.methods
    unknown = [m for m in names if m not in sub.methods]
    if unknown:
        raise InvalidSpec(
            f"the subspace has no method {unknown[0]!r}; it has {', '.join(sub.methods)}"
        )
    configs = sub.meta.get("configs") or {}
    base_sd = _base_sd(base)
    methods = {
        m: Method.from_config(
            m, configs.get(m), Layout.from_dict(sub.layouts[m]), base, base_sd, task
        )
        for m in names
    }
    check_subspace_fits(sub, methods)
    return sub, base, methods


def _decode_all(
    sub: Subspace,
    intrinsic: torch.Tensor,
    methods: Mapping[str, Method],
    out: Path,
    evals: list[dict[str, torch.Tensor]] | None,
    how: dict[str, Any],
) -> list[dict[str, Any]]:
    rows = []
    for m, vec in transfer(sub, intrinsic, list(methods)).items():
        folder = methods[m].save(vec, out / "adapters" / m, {**how, "decoded_with": m})
        row: dict[str, Any] = {"method": m, "adapter": str(folder)}
        if evals is not None:
            row["eval"] = methods[m].evaluate(vec, evals)
        rows.append(row)
    return rows


def run_optimise(
    spec: OptimiseSpec,
    resolver: Resolver,
    out: str | Path,
    *,
    on_step: Callback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Stages 2 + 3 from a spec; returns the report (also ``out/report.json``)."""
    from safetensors.torch import save_file

    t0 = time.monotonic()
    out = Path(out)
    names = list(dict.fromkeys([spec.method, *(spec.decode or [])])) if spec.decode else None
    sub, base, methods = _open_subspace(spec.projections, spec.base, resolver, names, spec.task)
    if spec.method not in methods:
        raise InvalidSpec(
            f"the subspace has no method {spec.method!r}; it has {', '.join(sub.methods)}"
        )
    tok = _tokenizer(base)
    train = _dataset(resolver, spec.train, base, spec.train_examples, spec.seed)
    draw = sampler(
        tokenizer=tok, data=train, batch_size=spec.batch_size, max_length=spec.max_length
    )
    intrinsic, history = optimise(
        sub,
        methods[spec.method],
        draw,
        steps=spec.steps,
        lr=spec.lr,
        seed=spec.seed,
        init=spec.init,
        on_step=on_step,
        should_stop=should_stop,
    )
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {"intrinsic": intrinsic.contiguous()},
        str(out / "intrinsic.safetensors"),
        metadata={"method": spec.method},
    )
    evals = None
    if spec.eval is not None:
        ev = _dataset(resolver, spec.eval, base, spec.eval_examples, spec.seed)
        _no_overlap(train, ev, "the optimisation", spec.allow_overlap)
        evals = batches(tok, ev, 64, spec.max_length)
    how = {
        "made_by": "subspace optimise",
        "optimised_with": spec.method,
        "projections": str(spec.projections),
        "steps": spec.steps,
        "lr": spec.lr,
        "seed": spec.seed,
        "intrinsic": [float(x) for x in intrinsic],
    }
    rows = _decode_all(sub, intrinsic, methods, out, evals, how)
    report = {
        "stage": "optimise",
        "spec": spec.model_dump(mode="json"),
        "method": spec.method,
        "intrinsic": [float(x) for x in intrinsic],
        "rows": rows,
        "final": history[-1] if history else None,
        "seconds": round(time.monotonic() - t0, 1),
    }
    _write(out / "report.json", report)
    return report


def run_transfer(spec: TransferSpec, resolver: Resolver, out: str | Path) -> dict[str, Any]:
    """Stage 3 from a spec: decode a saved vector or a training solution's through methods."""
    from safetensors.torch import load_file

    out = Path(out)
    sub, base, methods = _open_subspace(
        spec.projections, spec.base, resolver, spec.decode, spec.task
    )
    if spec.intrinsic is not None:
        try:
            intrinsic = load_file(str(Path(spec.intrinsic)), device="cpu")["intrinsic"].to(
                torch.float32
            )
        except Exception as e:  # safetensors' own errors, a missing key
            raise InvalidSpec(
                f"intrinsic {spec.intrinsic!r} is not an intrinsic-vector file: {e}"
            ) from None
        origin: dict[str, Any] = {"intrinsic_file": str(spec.intrinsic)}
    else:
        task = spec.source_task or (next(iter(sub.intrinsic)) if len(sub.intrinsic) == 1 else None)
        if task is None or task not in sub.intrinsic or spec.source not in sub.intrinsic[task]:
            raise InvalidSpec(
                f"the subspace holds no solution of method {spec.source!r} for task {task!r}; it holds "
                f"tasks {sorted(sub.intrinsic)} with methods {sub.methods}"
            )
        intrinsic = sub.intrinsic[task][str(spec.source)]
        origin = {"source_task": task, "source_method": spec.source}
    if intrinsic.shape != (sub.y,):
        raise InvalidSpec(
            f"the intrinsic vector has shape {tuple(intrinsic.shape)}; the subspace's y is {sub.y}"
        )
    evals = None
    if spec.eval is not None:
        tok = _tokenizer(base)
        evals = batches(
            tok,
            _dataset(resolver, spec.eval, base, spec.eval_examples, spec.seed),
            64,
            spec.max_length,
        )
    how = {
        "made_by": "subspace transfer",
        "projections": str(spec.projections),
        **origin,
        "intrinsic": [float(x) for x in intrinsic],
    }
    rows = _decode_all(sub, intrinsic, methods, out, evals, how)
    report = {"stage": "transfer", "spec": spec.model_dump(mode="json"), "rows": rows}
    _write(out / "report.json", report)
    return report


def _no_overlap(train: Any, ev: Any, what: str, allowed: bool) -> None:
    """Training examples never double as evaluation examples unless the spec allows it."""
    if allowed:
        return
    seen = set(zip(train.columns["text"], train.columns["label"], strict=True))
    both = sum(1 for x in zip(ev.columns["text"], ev.columns["label"], strict=True) if x in seen)
    if both:
        raise InvalidSpec(
            f"{what}: {both} of the {len(ev)} evaluation examples are also training examples; "
            "evaluate on held-out data, or set allow_overlap: true"
        )


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False, default=_num))
    tmp.replace(path)


def _num(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    raise TypeError(f"not JSON: {type(x).__name__}")
