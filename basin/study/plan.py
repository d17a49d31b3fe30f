"""A study's spec and its plan: which pairs, in which phase, as which runs; when a pair is decided.

A study (``basin study spec.yaml``, ``POST /api/studies``) compares N checkpoints pairwise. Each
unordered pair is one ordinary 1D run (:class:`basin.spec.RunSpec`) — so a cell of the matrix
opens that run's page — with two things that make the N × N matrix cheap:

- **coarse first, refined only while undecided**: every pair's run is adaptive
  (``refine: {levels, budget, until: decided}``): the coarse grid first (α = 0, 1/3, 2/3, 1 on
  the default 25-point fine grid), then waves of points where the curve bends most, and it
  stops as soon as the connectivity verdict of the refinement metric is decided
  (:func:`decided`).
- **each checkpoint's own point once**: α = 0 of pair (A, B) and α = 1 of pair (C, A) are the
  same model, θA; the point key says so (:meth:`basin.engine.Landscape.point_key` with
  :func:`frame_of`), so the point cache answers every pair after the first. Pairs are run in
  **phases** so that no two runs evaluate one checkpoint at the same time: phase 1 a matching
  (C1, C2), (C3, C4), …; phase 2 (odd N) the one left over with C1; phase 3 every other pair
  (each endpoint is in the cache by then).

Pure Python (pydantic, hashlib; numpy through :mod:`basin.analysis` in :func:`decided`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from basin.errors import InvalidSpec
from basin.names import optional_name
from basin.paths.base import FrozenModel
from basin.spec import RunSpec, format_validation_error, parse_spec, read_spec_file

#: Fine grid, halvings to the coarse grid and the point budget of a pair by default: 25 points
#: on [0, 1] (every 1/24), coarse every 8th (α = 0, 1/3, 2/3, 1), at most 8 points a pair.
POINTS, LEVELS, BUDGET = 25, 3, 8
#: The files around a checkpoint's weights that decide how its model is built and its data
#: tokenised (not a store's manifest, which names the checkpoint itself).
_FRAME_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
_FRAME_MAX_BYTES = 32 << 20


class StudyCheckpoint(FrozenModel):
    """One checkpoint of a study: a reference (path, store id or name), a label, its tags."""

    ref: str
    name: str | None = None
    tags: dict[str, Any] = Field(
        default_factory=dict,
        description="seed / order / split / method / step / pair …: "
        "the groups and the instability curve read them (the store's tags are added)",
    )

    @field_validator("name")
    @classmethod
    def _clean_name(cls, v: str | None) -> str | None:
        return optional_name(v, "checkpoint label")  # shown in every cell and pair run's name


class StudyPath(FrozenModel):
    """The path of every pair: its type (a 1D path between two checkpoints: linear by default) and grid."""

    type: str = "linear"
    points: int = Field(
        POINTS,
        ge=3,
        le=10_001,
        description="the fine grid on [0, 1] a pair refines towards (k·2^levels + 1 points)",
    )
    levels: int = Field(
        LEVELS, ge=1, le=8, description="halvings from the coarse grid to the fine one"
    )
    budget: int = Field(
        BUDGET, ge=2, description="most points a pair evaluates (its two checkpoints included)"
    )


class StudySpec(FrozenModel):
    """``basin study spec.yaml`` / ``POST /api/studies``: N checkpoints, a dataset, how to compare them."""

    name: str | None = Field(None, max_length=200)

    @field_validator("name")
    @classmethod
    def _clean_study_name(cls, v: str | None) -> str | None:
        return optional_name(v, "study name")

    checkpoints: list[StudyCheckpoint] = Field(
        default_factory=list, description="the checkpoints (≥ 2): references or {ref, name, tags}"
    )
    where: dict[str, Any] | None = Field(
        None,
        description="service: every store checkpoint whose tags include "
        "these (e.g. {family: demo}), added to 'checkpoints'",
    )
    dataset: str
    datasets: dict[str, str] = Field(
        default_factory=dict,
        description="more evaluation sets (label → "
        "dataset): each checkpoint's metrics on them, per cluster",
    )
    path: StudyPath = Field(default_factory=lambda: StudyPath.model_validate({}))
    task: str = "classification"
    metrics: list[str] = Field(default_factory=list)
    max_examples: int = Field(512, ge=1, le=1_000_000)
    batch_size: int = Field(32, ge=1, le=4096)
    max_length: int = Field(128, ge=4, le=8192)
    seed: int = 0
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    scope: str = "all"
    tokenizer: str | None = None
    cluster_metric: str = Field("loss", description="the barrier the clustering reads")

    @field_validator("checkpoints", mode="before")
    @classmethod
    def _refs(cls, v: Any) -> Any:
        return [{"ref": c} if isinstance(c, str) else c for c in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _check(self) -> StudySpec:
        refs = [c.ref for c in self.checkpoints]
        dup = sorted({r for r in refs if refs.count(r) > 1})
        if dup:
            raise ValueError(
                f"checkpoints: {dup[0]!r} is named twice (a study compares distinct checkpoints)"
            )
        if self.where is None and len(self.checkpoints) < 2:
            raise ValueError(f"checkpoints: a study needs at least 2, got {len(self.checkpoints)}")
        if self.path.budget > self.path.points:
            raise ValueError(
                f"path.budget: {self.path.budget} is more than the fine grid's {self.path.points} points"
            )
        if self.dataset in self.datasets.values() or "main" in self.datasets:
            raise ValueError(
                "datasets: the extra evaluation sets must differ from 'dataset' (and none may be "
                "labelled 'main': that is the study's dataset)"
            )
        return self

    def labels(self) -> list[str]:
        """Each checkpoint's label: its name, else its reference."""
        return [c.name or c.ref for c in self.checkpoints]

    def pair_data(
        self, i: int, j: int, *, dataset: str | None = None, name: str | None = None
    ) -> dict[str, Any]:
        """The run spec (a dict) of pair (i, j) on the study's dataset, or a run of the two
        checkpoints alone (α = 0 and 1) on an extra ``dataset``."""
        a, b = self.checkpoints[i], self.checkpoints[j]
        labels = self.labels()
        extra = dataset is not None
        path: dict[str, Any] = {
            "type": self.path.type,
            "a": a.ref,
            "b": b.ref,
            "points": 3 if extra else self.path.points,
        }
        data: dict[str, Any] = {
            "path": path,
            "dataset": dataset or self.dataset,
            "task": self.task,
            "metrics": list(self.metrics),
            "max_examples": self.max_examples,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "seed": self.seed,
            "device": self.device,
            "dtype": self.dtype,
            "scope": self.scope,
            "tokenizer": self.tokenizer,
            "name": name
            or f"{self.name or 'study'}: {labels[i]} × {labels[j]}"
            + (f" on {dataset}" if extra else ""),
        }
        data["refine"] = {
            "mode": "adaptive",
            "levels": self.path.levels,
            "budget": self.path.budget,
            "until": "decided",
        }
        if extra:  # the two checkpoints alone: α = 0 and 1 (the coarse grid of 3 points)
            data["refine"].update(levels=1, budget=2)
        return data

    def pair_spec(self, i: int, j: int, *, dataset: str | None = None) -> RunSpec:
        return parse_spec(self.pair_data(i, j, dataset=dataset))


def parse_study(data: dict[str, Any]) -> StudySpec:
    """Validate a study spec; one readable :class:`InvalidSpec` naming what is wrong, and every
    pair's run spec checked too (a bad path type or metric is said before anything runs)."""
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as e:
        raise InvalidSpec(
            format_validation_error(e).replace("invalid spec", "invalid study spec", 1)
        ) from None
    if len(spec.checkpoints) >= 2:
        try:
            spec.pair_spec(0, 1)
        except InvalidSpec as e:
            raise InvalidSpec(f"invalid study spec: its pairs' runs: {e}") from None
    return spec


def load_study(path: str | Path) -> StudySpec:
    """A study spec from a ``.yaml``/``.yml``/``.json`` file."""
    return parse_study(read_spec_file(path, "study spec", "'checkpoints' and 'dataset'"))


@dataclass(frozen=True)
class Pair:
    """One run of a study: checkpoints ``a``, ``b`` (indices; ``a`` at α = 0), its phase and
    dataset label (``main`` or an extra set's label)."""

    a: int
    b: int
    phase: int
    dataset: str = "main"

    @property
    def key(self) -> str:
        return f"{self.dataset}:{self.a}:{self.b}"


def plan(n: int, extra: list[str] | tuple[str, ...] = ()) -> list[Pair]:
    """Every run of a study of ``n`` checkpoints, by phase (1, 2, 3), so that no two runs of one
    phase share a checkpoint's own point before it is in the cache:

    1. a matching: (0, 1), (2, 3), … — every checkpoint but the last of an odd ``n`` once;
    2. odd ``n``: (n−1, 0) — the last one's point, checkpoint 0's from the cache;
    3. every other pair (i < j) of the study's dataset.

    ``extra`` datasets get two-point runs of the same matching (phases 1 and 2): each
    checkpoint's own metrics on them.
    """
    out: list[Pair] = []
    matched = {(i, i + 1) for i in range(0, n - 1, 2)}
    for ds in ("main", *extra):
        out += [Pair(i, j, 1, ds) for i, j in sorted(matched)]
        if n % 2 == 1 and n > 1:
            out.append(Pair(n - 1, 0, 2, ds))
    done = matched | ({(0, n - 1)} if n % 2 else set())
    out += [Pair(i, j, 3) for i in range(n) for j in range(i + 1, n) if (i, j) not in done]
    return out


def full_points(spec: StudySpec) -> int:
    """What the matrix would cost as N(N−1)/2 full runs of the fine grid (the study's yardstick)."""
    n = len(spec.checkpoints)
    return n * (n - 1) // 2 * spec.path.points


def decided(spec: RunSpec, results: list[dict[str, Any]] | Any) -> bool:
    """Whether a study pair's refinement may stop (``refine.until: decided``), from its point
    records so far (with per-example values: every 1D run keeps the barrier's bootstrap columns):

    - the verdict of the refinement metric is ``not connected``: a barrier above 0 at the 95 %
      level on the points measured; more points can only find a larger one (over the finer
      grid the barrier is at least as large);
    - or ``connected`` once at least one wave beyond the coarse grid (and the checkpoints) is in:
      a peak between the coarse points would show in the wave placed where the curve bends most.

    ``inconclusive`` refines on until the budget is spent (its verdict then says so).
    """
    from basin import refine
    from basin.analysis import barriers
    from basin.analysis.uncertainty import barrier_verdicts

    assert spec.refine is not None
    metric = spec.refine_metric
    first = refine.first_wave(spec.shape, spec.refine.levels, spec.refine_required)
    have = {int(r["index"]) for r in results}
    if not set(first) <= have:
        return False
    lo, hi = spec.path.range
    found = barriers(list(results), [metric], lo, hi)
    if metric not in found:
        return False
    said = barrier_verdicts(list(results), found, seed=spec.seed).get(metric, {}).get("verdict")
    if said == "not connected":
        return True
    return said == "connected" and len(have) > len(set(first))


#: config.json keys that do not change what Basin computes: bookkeeping, and ``problem_type``
#: (transformers sets it at the first training step; it picks the model's own loss, and Basin
#: computes its losses from the logits). A fine-tuned checkpoint and its untrained θ0 then
#: share a frame.
_CONFIG_IGNORED = ("_name_or_path", "transformers_version", "problem_type")


def _config_frame(data: bytes) -> bytes:
    try:
        config = json.loads(data)
    except ValueError:
        return data
    if not isinstance(config, dict):
        return data
    return json.dumps(
        {k: v for k, v in config.items() if k not in _CONFIG_IGNORED}, sort_keys=True
    ).encode()


def frame_of(spec: RunSpec, first: Any, tokenizer_id: str | None) -> str | None:
    """What, besides a checkpoint's weights, decides its own point's metrics in a run, or ``None``
    when the run may not share such points (not a study's plain linear run): the config and
    tokenizer files of the checkpoint that builds the model (sha256 of their contents) and
    an explicit tokenizer. Two pairs whose first checkpoints have equal frames build the
    same model around θA (the same class, labels, padding, tokenizer)."""
    if (
        spec.refine is None
        or spec.refine.until != "decided"  # only a study's runs: ordinary runs keep their keys
        or spec.path.type != "linear"
        or spec.ensemble
        or spec.generation is not None
        or spec.space != "merged"
        or getattr(first, "adapter", None) is not None
    ):
        return None
    h = hashlib.sha256(json.dumps({"tokenizer": tokenizer_id}).encode())
    found = False
    for folder in dict.fromkeys([Path(first.config_dir), Path(first.weights)]):
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            if f.name not in _FRAME_FILES or not f.is_file() or f.stat().st_size > _FRAME_MAX_BYTES:
                continue
            data = f.read_bytes()
            if f.name == "config.json":
                found = True
                data = _config_frame(data)
            h.update(f.name.encode() + b"\0")
            h.update(hashlib.sha256(data).digest())
    return h.hexdigest() if found else None


__all__ = [
    "BUDGET",
    "LEVELS",
    "POINTS",
    "Pair",
    "load_study",
    "parse_study",
    "StudyCheckpoint",
    "StudyPath",
    "StudySpec",
    "decided",
    "frame_of",
    "full_points",
    "parse_spec",
    "plan",
]
