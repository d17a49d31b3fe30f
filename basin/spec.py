"""``RunSpec``: the one document that describes a run.

The CLI reads it from YAML/JSON, the API accepts it as JSON, the dashboard's form
produces it ("copy spec"), and every result document carries it fully resolved
(defaults filled in), so any figure can be recomputed from its JSON.

Checkpoint and dataset fields are *references*: filesystem paths for the CLI,
store ids or names for the service. A :class:`basin.resolve.Resolver` turns them
into files; :meth:`RunSpec.map_refs` rewrites them (e.g. names → ids).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from basin.errors import InvalidSpec

Range = tuple[float, float]
Resolution = tuple[Annotated[int, Field(ge=2, le=201)], Annotated[int, Field(ge=2, le=201)]]

TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("loss", "accuracy", "f1"),
    "causal_lm": ("loss", "perplexity"),
    "seq2seq": ("loss", "perplexity"),
}
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("loss", "accuracy"),
    "causal_lm": ("loss", "perplexity"),
    "seq2seq": ("loss",),
}
SCOPE_PRESETS = ("all", "embeddings", "lower", "middle", "upper", "head")


def _distinct_refs(message: str, *refs: str) -> None:
    """Planes through repeated checkpoints are degenerate: refuse them before loading anything."""
    if len(set(refs)) < len(refs):
        raise ValueError(f"{message}, got {list(refs)}")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ordered(r: Range, what: str) -> Range:
    if not r[0] < r[1]:
        raise ValueError(f"{what} must be increasing, got [{r[0]}, {r[1]}]")
    return r


class LinearPath(_Frozen):
    """θ(α) = (1−α)·θA + α·θB; α outside [0, 1] extrapolates."""

    type: Literal["linear"] = "linear"
    a: str
    b: str
    points: int = Field(26, ge=2, le=10001)
    range: Range = (0.0, 1.0)

    @field_validator("range")
    @classmethod
    def _range(cls, v: Range) -> Range:
        return _ordered(v, "range")


class BezierPath(_Frozen):
    """φ(t) = (1−t)²θA + 2t(1−t)θC + t²θB with control point θC (000 eq. 1)."""

    type: Literal["bezier"] = "bezier"
    a: str
    b: str
    control: str
    points: int = Field(26, ge=2, le=10001)
    range: Range = (0.0, 1.0)

    @field_validator("range")
    @classmethod
    def _range(cls, v: Range) -> Range:
        return _ordered(v, "range")


class PolychainPath(_Frozen):
    """A→C for t ≤ ½, C→B for t ≥ ½, linear in each half."""

    type: Literal["polychain"] = "polychain"
    a: str
    b: str
    control: str
    points: int = Field(26, ge=2, le=10001)
    range: Range = (0.0, 1.0)

    @field_validator("range")
    @classmethod
    def _range(cls, v: Range) -> Range:
        return _ordered(v, "range")


class PlanePath(_Frozen):
    """Plane through three checkpoints: origin θA, orthonormal e1 ∥ θB−θA, e2 from θC−θA.

    The grid covers the three anchors' bounding box, widened by ``margin`` × its size.
    """

    type: Literal["plane"] = "plane"
    a: str
    b: str
    c: str
    resolution: Resolution = (21, 21)
    margin: float = Field(0.2, ge=0.0, le=5.0)

    @model_validator(mode="after")
    def _distinct(self) -> PlanePath:
        _distinct_refs("a plane needs three different checkpoints", self.a, self.b, self.c)
        return self


class TaskPlanePath(_Frozen):
    """θ(α, β) = θ0 + α·(θA−θ0) + β·(θB−θ0) (001 §4.2, 004 §5)."""

    type: Literal["task_plane"] = "task_plane"
    origin: str
    a: str
    b: str
    resolution: Resolution = (21, 21)
    range: tuple[Range, Range] = ((-1.0, 2.0), (-1.0, 2.0))

    @model_validator(mode="after")
    def _distinct(self) -> TaskPlanePath:
        _distinct_refs("a task plane needs three different checkpoints", self.origin, self.a, self.b)
        return self

    @field_validator("range")
    @classmethod
    def _range(cls, v: tuple[Range, Range]) -> tuple[Range, Range]:
        return (_ordered(v[0], "range[0]"), _ordered(v[1], "range[1]"))


class RandomPlanePath(_Frozen):
    """θ + x·d1 + y·d2 with random filter-normalised directions (Li et al. 2018)."""

    type: Literal["random_plane"] = "random_plane"
    center: str
    seed: int = 0
    resolution: Resolution = (21, 21)
    range: tuple[Range, Range] = ((-1.0, 1.0), (-1.0, 1.0))
    normalization: Literal["filter", "layer", "none"] = "filter"
    ignore: Literal["biasbn", "none"] = "biasbn"

    @field_validator("range")
    @classmethod
    def _range(cls, v: tuple[Range, Range]) -> tuple[Range, Range]:
        return (_ordered(v[0], "range[0]"), _ordered(v[1], "range[1]"))


class TrajectoryPath(_Frozen):
    """Checkpoints θ_t of one training run projected onto a plane, over its loss surface.

    ``basis="pca"``: the plane through the final checkpoint spanned by the top-2
    principal directions of {θ_t − θ_final}. ``basis=[origin, a, b]``: the plane
    through those three checkpoints (as ``plane``); checkpoints are projected by
    least squares.
    """

    type: Literal["trajectory"] = "trajectory"
    checkpoints: list[str] = Field(min_length=2)
    basis: Literal["pca"] | Annotated[list[str], Field(min_length=3, max_length=3)] = "pca"
    resolution: Resolution = (21, 21)
    margin: float = Field(0.2, ge=0.0, le=5.0)

    @model_validator(mode="after")
    def _distinct(self) -> TrajectoryPath:
        if len(set(self.checkpoints)) < 2:
            raise ValueError("a trajectory needs at least two different checkpoints")
        if isinstance(self.basis, list):
            _distinct_refs("a trajectory basis needs three different checkpoints", *self.basis)
        return self


PathSpec = Annotated[
    LinearPath | BezierPath | PolychainPath | PlanePath | TaskPlanePath | RandomPlanePath | TrajectoryPath,
    Field(discriminator="type"),
]
PATH_TYPES = ("linear", "bezier", "polychain", "plane", "task_plane", "random_plane", "trajectory")
ONE_D = ("linear", "bezier", "polychain")

# Fields of each path type that hold checkpoint references, in anchor order.
_REF_FIELDS: dict[str, tuple[str, ...]] = {
    "linear": ("a", "b"),
    "bezier": ("a", "b", "control"),
    "polychain": ("a", "b", "control"),
    "plane": ("a", "b", "c"),
    "task_plane": ("origin", "a", "b"),
    "random_plane": ("center",),
    "trajectory": ("checkpoints", "basis"),
}


class RunSpec(_Frozen):
    """A run: a path through parameter space, the data to evaluate on, and how.

    ``scope`` picks the parameters that move (``all``; presets ``embeddings``,
    ``lower``/``middle``/``upper`` thirds of the layers, ``head``; or a regex over
    parameter names); the others stay at the first checkpoint (004 §7).
    ``on_mismatch="hold"`` keeps tensors whose shapes differ at the first checkpoint
    instead of refusing the run (e.g. classification heads of different tasks).
    """

    path: PathSpec
    dataset: str
    task: Literal["classification", "causal_lm", "seq2seq"] = "classification"
    metrics: list[str] = Field(default_factory=list)
    max_examples: int = Field(512, ge=1, le=1_000_000)
    batch_size: int = Field(32, ge=1, le=4096)
    max_length: int = Field(128, ge=4, le=8192)
    seed: int = 0
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    scope: str = "all"
    on_mismatch: Literal["error", "hold"] = "error"
    tokenizer: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _metrics(self) -> RunSpec:
        allowed = TASK_METRICS[self.task]
        if not self.metrics:
            object.__setattr__(self, "metrics", list(DEFAULT_METRICS[self.task]))
        bad = [m for m in self.metrics if m not in allowed]
        if bad:
            raise ValueError(f"metrics {bad} not available for task {self.task!r}; choose from {list(allowed)}")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        return self

    # ---- helpers shared by the CLI, API and UI -------------------------------------

    @property
    def is_1d(self) -> bool:
        return self.path.type in ONE_D

    @property
    def shape(self) -> tuple[int, ...]:
        """Grid shape: ``(points,)`` for 1D paths, ``(nx, ny)`` for planes."""
        p = self.path
        return (p.points,) if self.is_1d else tuple(p.resolution)  # type: ignore[union-attr]

    @property
    def num_points(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def checkpoint_refs(self) -> list[str]:
        """Every checkpoint reference in the spec, in anchor order, without duplicates."""
        out: list[str] = []
        for field in _REF_FIELDS[self.path.type]:
            v = getattr(self.path, field)
            for ref in [v] if isinstance(v, str) else list(v):
                if ref not in out and ref != "pca":
                    out.append(ref)
        if self.tokenizer and self.tokenizer not in out:
            out.append(self.tokenizer)
        return out

    def map_refs(self, checkpoint: Callable[[str], str], dataset: Callable[[str], str]) -> RunSpec:
        """A copy with every checkpoint and dataset reference rewritten."""
        data = self.model_dump(mode="json")
        path = data["path"]
        for field in _REF_FIELDS[self.path.type]:
            v = path[field]
            if isinstance(v, str):
                path[field] = v if v == "pca" else checkpoint(v)
            else:
                path[field] = [checkpoint(r) for r in v]
        data["dataset"] = dataset(data["dataset"])
        if data.get("tokenizer"):
            data["tokenizer"] = checkpoint(data["tokenizer"])
        return RunSpec.model_validate(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def parse_spec(data: dict[str, Any]) -> RunSpec:
    """Validate a spec dict, turning pydantic's errors into one readable :class:`InvalidSpec`."""
    try:
        return RunSpec.model_validate(data)
    except ValidationError as e:
        raise InvalidSpec(format_validation_error(e)) from None


def format_validation_error(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"] if not str(x).endswith("Path"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "union_tag_invalid":
            msg = f"unknown path type {err['input'].get('type')!r}; choose from {', '.join(PATH_TYPES)}"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "invalid spec: " + "; ".join(parts)


def load_spec(path: str | Path) -> RunSpec:
    """Read a spec from a ``.yaml``/``.yml``/``.json`` file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise InvalidSpec(f"cannot read spec {p}: {e.strerror}") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise InvalidSpec(f"spec {p} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {e}") from None
    if not isinstance(data, dict):
        raise InvalidSpec(f"spec {p} must be a mapping with at least 'path' and 'dataset'")
    return parse_spec(data)
