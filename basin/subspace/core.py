"""The unified optimisation subspace of delta tuning (Yi et al. 2022): its three stages.

1. **Approximation** (:func:`fit`). Per method t a down-projection Projₜ↓: R^|θₜ| → R^y
   and an up-projection Projₜ↑: R^y → R^|θₜ| (MLPs: Linear → tanh → Linear). For each
   task i the intrinsic vectors Iᵢ,ₜ = Projₜ↓(θᵢ,ₜ). Each step draws α ~ U[0,1],
   β ~ U[0, 1−α], forms I = α·Iᵢ,A + β·Iᵢ,P + (1−α−β)·Iᵢ,L (methods in the order given;
   with k methods the i-th weight is drawn from U[0, 1 − the earlier weights], the last
   takes the rest), decodes I with *every* method's up-projection and minimises
   Σᵢ Σₜ ‖Projₜ↑(I) − θᵢ,ₜ‖² + L_task(Projₜ↑(I) | θ0). Only the projections train; the
   base θ0 is frozen (the task loss runs through ``peft``'s model, :mod:`.methods`).
2. **Optimisation** (:func:`optimise`). Only a y-dimensional vector I trains, decoded by a
   frozen Projₜ↑ into method t's parameters; the loss is the task loss alone.
3. **Transfer** (:func:`transfer`). Decode one I through other methods' up-projections,
   untrained.

The projections are saved as ``projections.safetensors`` (their weights and the
training solutions' intrinsic vectors) and ``projections.json`` (sizes, methods, layouts,
base, tasks, settings, losses); nothing is pickled (:meth:`Subspace.save`, :meth:`Subspace.load`).

Randomness: ``torch.manual_seed(seed)`` before the projections are built (in method
order), then one ``torch.Generator(seed)`` draws, per step, (α, β, …) with
``torch.rand(k-1)`` and, per task, the batch's example indices with ``torch.randint``.
On the CPU a fit is reproducible bit for bit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from basin.errors import IncompatibleCheckpoints, InvalidSpec

if TYPE_CHECKING:
    from basin.subspace.methods import Method

FORMAT = "basin-subspace-projections"
FORMAT_VERSION = 1
WEIGHTS_FILE = "projections.safetensors"
META_FILE = "projections.json"


class Stopped(Exception):  # noqa: N818 - a request, not a failure
    """``should_stop`` answered true: the stage stopped between two steps."""


@dataclass
class FitSettings:
    """What a fit does besides its solutions (the spec's numbers)."""

    y: int = 4
    hidden: int = 64
    steps: int = 200
    lr: float = 1e-3
    batch_size: int = 16
    max_length: int = 64
    seed: int = 0
    dist_weight: float = 1.0
    task_weight: float = 1.0


class Projection(nn.Module):
    """One method's pair: ``down`` R^n → R^y and ``up`` R^y → R^n (Linear, tanh, Linear)."""

    def __init__(self, n: int, y: int, hidden: int):
        super().__init__()
        self.down = nn.Sequential(nn.Linear(n, hidden), nn.Tanh(), nn.Linear(hidden, y))
        self.up = nn.Sequential(nn.Linear(y, hidden), nn.Tanh(), nn.Linear(hidden, n))


def mixing_weights(u: torch.Tensor) -> list[torch.Tensor]:
    """The paper's sampling generalised to k methods from k−1 uniforms ``u`` in [0, 1):
    w₁ = u₁, w₂ = u₂·(1 − w₁), …, w_k = 1 − Σ the others (k = 3: α, β, 1−α−β)."""
    out: list[torch.Tensor] = []
    rest = torch.tensor(1.0)
    for x in u:
        w = x * rest
        out.append(w)
        rest = rest - w
    out.append(rest)
    return out


@dataclass
class Subspace:
    """Fitted projections: one :class:`Projection` per method, their sizes, and what they
    were fitted on (``meta``: base, tasks, the intrinsic vectors of the training solutions)."""

    methods: list[str]
    projections: dict[str, Projection]
    layouts: dict[str, dict[str, Any]]
    y: int
    hidden: int
    meta: dict[str, Any] = field(default_factory=dict)
    intrinsic: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # task → method → I

    def encode(self, method: str, vec: torch.Tensor) -> torch.Tensor:
        return self._proj(method).down(vec)

    def decode(self, method: str, intrinsic: torch.Tensor) -> torch.Tensor:
        return self._proj(method).up(intrinsic)

    def _proj(self, method: str) -> Projection:
        try:
            return self.projections[method]
        except KeyError:
            raise InvalidSpec(
                f"the subspace has no method {method!r}; it has {', '.join(self.methods)}"
            ) from None

    def save(self, out: str | Path) -> Path:
        """``projections.safetensors`` + ``projections.json`` in folder ``out``."""
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {
            f"proj.{m}.{k}": v.detach().contiguous()
            for m in self.methods
            for k, v in self.projections[m].state_dict().items()
        }
        for task, per in self.intrinsic.items():
            for m, v in per.items():
                tensors[f"intrinsic.{task}.{m}"] = v.detach().contiguous()
        save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": FORMAT})
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "methods": self.methods,
            "y": self.y,
            "hidden": self.hidden,
            "layouts": self.layouts,
            "tasks": sorted(self.intrinsic),
            **self.meta,
        }
        (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        return out

    @classmethod
    def load(cls, folder: str | Path) -> Subspace:
        """Read a saved subspace (safetensors + JSON; checked against each other)."""
        from safetensors.torch import load_file

        from basin.untrusted import read_untrusted_json

        d = Path(folder)
        try:
            meta = read_untrusted_json(d / META_FILE, META_FILE)
        except Exception as e:  # CheckpointError with the reason
            raise InvalidSpec(f"not a subspace folder ({d.name}): {e}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise InvalidSpec(f"{d.name}/{META_FILE} is not a Basin subspace (format {FORMAT!r})")
        if meta.get("version") != FORMAT_VERSION:
            raise InvalidSpec(
                f"{d.name}: subspace format version {meta.get('version')!r}; this Basin reads "
                f"{FORMAT_VERSION}"
            )
        try:
            methods = [str(m) for m in meta["methods"]]
            y, hidden = int(meta["y"]), int(meta["hidden"])
            layouts = {m: dict(meta["layouts"][m]) for m in methods}
            sizes = {
                m: sum(math.prod(int(x) for x in s) for s in layouts[m]["shapes"]) for m in methods
            }
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidSpec(f"{d.name}/{META_FILE} lacks or garbles {e}") from None
        try:
            tensors = load_file(str(d / WEIGHTS_FILE), device="cpu")
        except Exception as e:  # safetensors' own error types
            raise InvalidSpec(f"{d.name}/{WEIGHTS_FILE} is not readable: {e}") from None
        projections = {}
        for m in methods:
            p = Projection(sizes[m], y, hidden)
            want = p.state_dict()
            got = {k: tensors.get(f"proj.{m}.{k}") for k in want}
            bad = [k for k, v in got.items() if v is None or tuple(v.shape) != tuple(want[k].shape)]
            if bad:
                raise InvalidSpec(
                    f"{d.name}: method {m!r}'s projection tensors {bad} are missing or mis-shaped"
                )
            p.load_state_dict({k: v.to(torch.float32) for k, v in got.items() if v is not None})
            p.requires_grad_(False)
            projections[m] = p
        intrinsic: dict[str, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("intrinsic."):
                task, _, m = k.removeprefix("intrinsic.").rpartition(".")
                intrinsic.setdefault(task, {})[m] = v.to(torch.float32)
        rest = {
            k: v for k, v in meta.items() if k not in ("methods", "y", "hidden", "layouts", "tasks")
        }
        return cls(methods, projections, layouts, y, hidden, rest, intrinsic)


# ---- checks ----------------------------------------------------------------------------------


def check_solutions(
    solutions: Mapping[str, Mapping[str, Any]],
    y: int | None = None,
    sizes: Mapping[str, int] | None = None,
) -> list[str]:
    """The methods (in order) of ``{task: {method: CheckpointSource}}``, or :class:`InvalidSpec` /
    :class:`IncompatibleCheckpoints` saying what is wrong: no tasks, fewer than two methods
    (one method's solutions alone span no shared subspace), tasks that do not all have
    the same methods, solutions that are not adapters or sit on different bases, and
    (``sizes``: method → |θₜ|) a y at least the size of a method's solution vector."""
    if not solutions:
        raise InvalidSpec("a subspace fit needs at least one task with its solutions")
    tasks = list(solutions)
    methods = list(solutions[tasks[0]])
    if len(methods) < 2:
        raise InvalidSpec(
            f"task {tasks[0]!r} has solutions of one method only ({', '.join(methods) or 'none'}): a shared "
            "subspace needs one solution of each of at least two methods per task (e.g. adapter, prefix, lora)"
        )
    for t in tasks[1:]:
        if set(solutions[t]) != set(methods):
            raise InvalidSpec(
                f"tasks have different methods: {tasks[0]!r} has {sorted(methods)}, {t!r} has "
                f"{sorted(solutions[t])}; every task needs one solution of every method"
            )
    bases: dict[str, str] = {}
    for t in tasks:
        for m in methods:
            src = solutions[t][m]
            if getattr(src, "adapter", None) is None:
                raise InvalidSpec(
                    f"task {t!r}, method {m!r}: {src.weights.name} is a full checkpoint; the "
                    "subspace is fitted on delta-tuning solutions (PEFT adapters)"
                )
            bases[f"{t}/{m}"] = src.base_source().id
    if len(set(bases.values())) > 1:
        first = next(iter(bases))
        other = next(k for k, v in bases.items() if v != bases[first])
        raise IncompatibleCheckpoints(
            f"solutions on different bases: {first} and {other} are adapters of different base checkpoints; "
            "every solution must tune the same frozen base θ0",
            [(other, "another base")],
        )
    if y is not None and y < 1:
        raise InvalidSpec(f"y must be at least 1, not {y}")
    if y is not None and sizes:
        small = min(sizes, key=lambda m: sizes[m])
        if y >= sizes[small]:
            raise InvalidSpec(
                f"y = {y} is not smaller than method {small!r}'s solutions ({sizes[small]} numbers): the "
                "intrinsic subspace must be lower-dimensional than every method's parameters"
            )
    return methods


# ---- stage 1: approximation ------------------------------------------------------------------


StepCallback = Callable[[dict[str, Any]], None]


def fit(
    methods: Mapping[str, Method],
    vectors: Mapping[str, Mapping[str, torch.Tensor]],
    train: Mapping[str, Callable[[torch.Generator], Mapping[str, torch.Tensor]]],
    settings: FitSettings,
    *,
    on_step: StepCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> tuple[Subspace, list[dict[str, Any]]]:
    """Stage 1: fit the projections on ``vectors`` (task → method → θ) with the task loss.

    ``train[task]`` draws one training batch from a generator (:func:`sampler`). Returns the
    subspace and one record per step: α/β…, the reconstruction ‖Projₜ↑(I) − θ‖² and the
    task loss per (task, method), and the total.
    """
    names = list(methods)
    sizes = {m: methods[m].layout.size for m in names}
    check_sizes(vectors, methods, settings.y)
    torch.manual_seed(settings.seed)
    projections = {m: Projection(sizes[m], settings.y, settings.hidden) for m in names}
    params = [p for m in names for p in projections[m].parameters()]
    opt = torch.optim.Adam(params, lr=settings.lr)
    gen = torch.Generator().manual_seed(settings.seed)
    history: list[dict[str, Any]] = []
    for step in range(settings.steps):
        if should_stop is not None and should_stop():
            raise Stopped(f"stopped after {step} of {settings.steps} steps")
        w = mixing_weights(torch.rand(len(names) - 1, generator=gen))
        total = torch.zeros(())
        rec: dict[str, Any] = {
            "step": step + 1,
            "weights": [float(x) for x in w],
            "dist": {},
            "task": {},
        }
        for task in vectors:
            batch = train[task](gen)
            mix = sum(
                (w[j] * projections[m].down(vectors[task][m]) for j, m in enumerate(names)),
                torch.zeros(settings.y),
            )
            for m in names:
                theta = projections[m].up(mix)
                dist = ((theta - vectors[task][m]) ** 2).sum()
                tl = methods[m].loss(theta, batch)
                total = total + settings.dist_weight * dist + settings.task_weight * tl
                rec["dist"][f"{task}/{m}"] = float(dist.detach())
                rec["task"][f"{task}/{m}"] = float(tl.detach())
        opt.zero_grad()
        total.backward()
        opt.step()
        rec["loss"] = float(total.detach())
        history.append(rec)
        if on_step is not None:
            on_step(rec)
    for p in projections.values():
        p.requires_grad_(False)
    with torch.no_grad():
        intrinsic = {
            t: {m: projections[m].down(vectors[t][m]).clone() for m in names} for t in vectors
        }
    out_meta = {"settings": asdict(settings), **(meta or {})}
    sub = Subspace(
        names,
        projections,
        {m: methods[m].layout.to_dict() for m in names},
        settings.y,
        settings.hidden,
        out_meta,
        intrinsic,
    )
    return sub, history


def check_sizes(
    vectors: Mapping[str, Mapping[str, torch.Tensor]], methods: Mapping[str, Method], y: int
) -> None:
    """y below every method's solution size; every vector of the method's size."""
    for t, per in vectors.items():
        for m, v in per.items():
            if v.shape != (methods[m].layout.size,):
                raise InvalidSpec(
                    f"task {t!r}, method {m!r}: a vector of {tuple(v.shape)}, not "
                    f"({methods[m].layout.size},)"
                )
    sizes = {m: methods[m].layout.size for m in methods}
    small = min(sizes, key=lambda m: sizes[m])
    if y >= sizes[small]:
        raise InvalidSpec(
            f"y = {y} is not smaller than method {small!r}'s solutions ({sizes[small]} numbers): the "
            "intrinsic subspace must be lower-dimensional than every method's parameters"
        )


def sampler(
    batches: Sequence[Mapping[str, torch.Tensor]] | None = None,
    *,
    tokenizer: Any = None,
    data: Any = None,
    batch_size: int = 16,
    max_length: int = 64,
) -> Callable[[torch.Generator], Mapping[str, torch.Tensor]]:
    """A batch drawer for :func:`fit` / :func:`optimise`: ``batch_size`` example indices drawn
    with ``torch.randint`` from the generator over ``data`` (a :class:`basin.data.Dataset`),
    tokenised with ``tokenizer``."""
    from basin.subspace.methods import batches as make

    n = len(data)

    def draw(gen: torch.Generator) -> Mapping[str, torch.Tensor]:
        idx = torch.randint(n, (batch_size,), generator=gen).tolist()
        return make(tokenizer, data, batch_size, max_length, order=idx)[0]

    return draw


# ---- stage 2: optimisation; stage 3: transfer ------------------------------------------------


def optimise(
    sub: Subspace,
    method: Method,
    draw: Callable[[torch.Generator], Mapping[str, torch.Tensor]],
    *,
    steps: int = 100,
    lr: float = 1e-2,
    seed: int = 0,
    init: str | torch.Tensor = "zeros",
    on_step: StepCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Stage 2: train only a y-dim vector I through ``method``'s frozen up-projection.

    ``init``: ``"zeros"``, ``"normal"`` (standard normal from the seed) or a tensor. Adam on
    the task loss L_task(Projₜ↑(I) | θ0); one batch per step from ``draw`` (generator seeded
    with ``seed``). Returns I and one record per step.
    """
    if isinstance(init, torch.Tensor):
        start = init.detach().to(torch.float32).clone()
    elif init == "zeros":
        start = torch.zeros(sub.y)
    elif init == "normal":
        start = torch.randn(sub.y, generator=torch.Generator().manual_seed(seed))
    else:
        raise InvalidSpec(f"init must be zeros or normal, not {init!r}")
    if start.shape != (sub.y,):
        raise InvalidSpec(
            f"the initial intrinsic vector has shape {tuple(start.shape)}, not ({sub.y},)"
        )
    up = sub._proj(method.name).up
    up.requires_grad_(False)
    vec = nn.Parameter(start)
    opt = torch.optim.Adam([vec], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, Any]] = []
    for step in range(steps):
        if should_stop is not None and should_stop():
            raise Stopped(f"stopped after {step} of {steps} steps")
        loss = method.loss(up(vec), draw(gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec = {"step": step + 1, "task": float(loss.detach())}
        history.append(rec)
        if on_step is not None:
            on_step(rec)
    return vec.detach().clone(), history


@torch.no_grad()
def transfer(
    sub: Subspace, intrinsic: torch.Tensor, to: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """Stage 3: decode ``intrinsic`` through each method's up-projection (default: all)."""
    return {m: sub.decode(m, intrinsic).clone() for m in (to or sub.methods)}


def check_subspace_fits(sub: Subspace, methods: Mapping[str, Method]) -> None:
    """The live methods have the layouts the subspace was fitted on (same tensors and shapes)."""
    for m, meth in methods.items():
        want = sub.layouts.get(m)
        if want is None:
            raise InvalidSpec(f"the subspace has no method {m!r}; it has {', '.join(sub.methods)}")
        if meth.layout.to_dict() != want:
            raise IncompatibleCheckpoints(
                f"method {m!r}: the adapter given does not have the layout the subspace was fitted on "
                f"({len(want['names'])} tensors, {sum(math.prod(s) for s in want['shapes'])} numbers)",
                [(m, "layout")],
            )
