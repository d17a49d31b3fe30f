"""Specs of the subspace stages (YAML for ``basin subspace fit|optimise|transfer``, JSON for the API).

Checkpoint references go through a :class:`basin.resolve.Resolver` (paths for the CLI,
store ids / names for the service), as in run specs. Unknown fields are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from basin.paths.base import FrozenModel

#: bounds the service also enforces (a spec from the API is untrusted)
MAX_STEPS = 20000
MAX_Y = 256
MAX_HIDDEN = 4096
MAX_TASKS = 32
MAX_METHODS = 8


class TaskSolutions(FrozenModel):
    """One task: its training data (the task loss), optional evaluation data, and one solution
    (a PEFT adapter reference) per method."""

    train: str
    eval: str | None = None
    solutions: dict[str, str] = Field(min_length=1, max_length=MAX_METHODS)


class Common(FrozenModel):
    max_length: int = Field(64, ge=4, le=2048)
    batch_size: int = Field(16, ge=1, le=1024)
    train_examples: int = Field(2000, ge=1, le=1_000_000)
    eval_examples: int = Field(500, ge=1, le=1_000_000)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    task: Literal["classification"] = "classification"
    #: evaluation examples that are also training examples are refused unless this is true
    allow_overlap: bool = False


class FitSpec(Common):
    """Stage 1: the methods' solutions per task, y, the projections' hidden width, steps."""

    kind: Literal["subspace_fit"] = "subspace_fit"
    tasks: dict[str, TaskSolutions] = Field(min_length=1, max_length=MAX_TASKS)
    y: int = Field(4, ge=1, le=MAX_Y)
    hidden: int = Field(64, ge=1, le=MAX_HIDDEN)
    steps: int = Field(200, ge=1, le=MAX_STEPS)
    lr: float = Field(1e-3, gt=0, le=1.0)
    dist_weight: float = Field(1.0, ge=0, le=1e6)
    task_weight: float = Field(1.0, ge=0, le=1e6)

    @model_validator(mode="after")
    def _names(self) -> FitSpec:
        import re

        for name in [*self.tasks, *(m for t in self.tasks.values() for m in t.solutions)]:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
                raise ValueError(
                    f"task and method names are letters, digits, '_' and '-' (≤ 64), not {name!r}"
                )
        return self


class OptimiseSpec(Common):
    """Stage 2 (+3): train a y-vector for one task through ``method``'s frozen up-projection,
    then decode it through ``decode`` (default: every method of the subspace)."""

    kind: Literal["subspace_optimise"] = "subspace_optimise"
    projections: str  # a folder holding projections.json + projections.safetensors
    base: str  # the base checkpoint the subspace was fitted on
    method: str
    train: str
    eval: str | None = None
    decode: list[str] | None = None
    steps: int = Field(100, ge=1, le=MAX_STEPS)
    lr: float = Field(1e-2, gt=0, le=10.0)
    init: Literal["zeros", "normal"] = "zeros"


class TransferSpec(Common):
    """Stage 3 alone: decode a saved intrinsic vector (``intrinsic``: a file an optimise run
    wrote) or a training solution's (``task`` + ``source``) through ``decode`` methods."""

    kind: Literal["subspace_transfer"] = "subspace_transfer"
    projections: str
    base: str
    intrinsic: str | None = None
    source_task: str | None = None
    source: str | None = None
    decode: list[str] | None = None
    eval: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> TransferSpec:
        if (self.intrinsic is None) == (self.source is None):
            raise ValueError(
                "give either intrinsic (a vector file) or source (+ source_task): a training "
                "solution's method"
            )
        return self


STAGES: dict[str, type[Common]] = {
    "fit": FitSpec,
    "optimise": OptimiseSpec,
    "transfer": TransferSpec,
}


def parse_stage_spec(stage: str, data: Any) -> Common:
    """Validate a stage's spec dict; pydantic's errors become one :class:`InvalidSpec` line."""
    from pydantic import ValidationError

    from basin.errors import InvalidSpec
    from basin.spec import format_validation_error

    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != "kind"}
    try:
        return STAGES[stage].model_validate(data)
    except ValidationError as e:
        raise InvalidSpec(
            format_validation_error(e).replace("invalid spec", f"invalid subspace {stage} spec", 1)
        ) from None


def load_stage_spec(stage: str, path: str | Path) -> Common:
    """Read a stage's spec from ``.yaml`` / ``.yml`` / ``.json``."""
    from basin.spec import read_spec_file

    need = {
        "fit": "'tasks'",
        "optimise": "'projections', 'base', 'method' and 'train'",
        "transfer": "'projections', 'base' and 'intrinsic' or 'source'",
    }[stage]
    return parse_stage_spec(stage, read_spec_file(path, f"subspace {stage} spec", need))
