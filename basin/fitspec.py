"""The curve fit's spec (:class:`FitSpec`), torch-free: the fit itself (:mod:`basin.fit`),
its data selection (:mod:`basin.fitdata`) and the service read it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from basin.errors import InvalidSpec
from basin.names import optional_name
from basin.paths.base import FrozenModel
from basin.tasks import tasks_with


class FitSpec(FrozenModel):
    """A curve fit: endpoints ``a``/``b``, training ``dataset``, curve type and optimiser settings.

    ``bends`` (polychain only) is the number of bends k; the ``polychain`` path type
    evaluates one bend, so k > 1 is fitted and saved but not evaluated by the engine.
    ``lr`` is Adam's learning rate on the control point(s): about the endpoints' own
    fine-tuning rate (1e-4 default); Adam moves every coordinate by up to ``lr`` per step,
    so 1e-3 wrecks a pre-trained transformer's weights within a few steps.
    """

    a: str
    b: str
    dataset: str
    #: a task with a training loss (``trainable`` in :mod:`basin.tasks`; generation runs score
    #: samples: nothing to differentiate)
    task: str = Field("classification", json_schema_extra={"enum": list(tasks_with(trainable=True))})
    curve: Literal["bezier", "polychain"] = "bezier"
    bends: int = Field(1, ge=1, le=16)
    steps: int = Field(200, le=1_000_000)
    batch_size: int = Field(16, ge=1, le=4096)
    lr: float = Field(1e-4, gt=0.0, le=10.0)
    seed: int = 0
    scope: str = "all"
    max_examples: int = Field(512, ge=1, le=1_000_000)
    max_length: int = Field(128, ge=4, le=8192)
    device: str = "auto"
    tokenizer: str | None = None
    #: The evaluation of the line and the fitted curve (``basin fit``, the service): its
    #: dataset (default: the training dataset's file), examples (default: ``max_examples``)
    #: and number of points.
    eval_dataset: str | None = None
    eval_max_examples: int | None = Field(None, ge=1, le=1_000_000)
    eval_points: int = Field(26, ge=2, le=2001)
    #: Train on the rows of ``dataset`` that the evaluation does not use (a seeded split).
    holdout: bool = False
    #: Fit and evaluate on overlapping examples anyway (refused otherwise: :mod:`basin.fitdata`).
    allow_overlap: bool = False
    name: str | None = None

    @field_validator("name")
    @classmethod
    def _clean_name(cls, v: str | None) -> str | None:
        return optional_name(v, "fit name")  # NFKC, no control / zero-width / bidi characters

    @model_validator(mode="after")
    def _check(self) -> FitSpec:
        fittable = tasks_with(trainable=True)
        if self.task not in fittable:
            raise ValueError(f"task: a curve fit needs a task with a training loss, one of {list(fittable)}; "
                             f"not {self.task!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1 (got {self.steps}): a fit with no steps "
                             "trains nothing")
        if not self.dataset.strip():
            raise ValueError("dataset is empty: a fit needs training data (a CSV/TSV/JSONL file)")
        if self.curve == "bezier" and self.bends != 1:
            raise ValueError("bends applies to the polychain curve only (a quadratic Bezier curve "
                             "has one control point)")
        if self.a == self.b:
            raise ValueError("a and b are the same checkpoint: there is no curve to fit between them")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        return self

    @property
    def num_controls(self) -> int:
        return self.bends if self.curve == "polychain" else 1

    @property
    def eval_size(self) -> int:
        """The evaluation's ``max_examples``."""
        return self.eval_max_examples or self.max_examples


def parse_fit_spec(data: dict[str, Any]) -> FitSpec:
    """Validate a fit spec dict; pydantic's errors become one :class:`InvalidSpec` line."""
    from basin.spec import format_validation_error

    try:
        return FitSpec.model_validate(data)
    except ValidationError as e:
        raise InvalidSpec(format_validation_error(e).replace("invalid spec", "invalid fit spec", 1)) from None


def load_fit_spec(path: str | Path) -> FitSpec:
    """Read a fit spec from ``.yaml``/``.yml``/``.json``."""
    from basin.spec import read_spec_file

    return parse_fit_spec(read_spec_file(path, "fit spec", "'a', 'b' and 'dataset'"))


__all__ = ["FitSpec", "load_fit_spec", "parse_fit_spec"]
