"""The tune spec (:class:`TuneSpec`) and its family (:func:`members`), torch-free.

A tune spec trains a *family* of checkpoints from one base checkpoint: the product of
the axes a user varies — ``seeds`` (head and adapter init, dropout), ``orders`` (data
order), ``split`` (disjoint parts of the training rows), ``methods`` (full fine-tuning or
a PEFT method) and ``learning_rates`` — each product element a :class:`Member`, tagged
with the values that made it. :mod:`basin.tune.train` trains one member; the CLI
(``basin tune``) and the service's ``tune`` job kind run the family. The service reads
the cap fields (``steps``, ``max_examples``, ``max_length``, ``batch_size``,
:attr:`TuneSpec.num_members`, :attr:`TuneSpec.total_steps`) with its ``Caps``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from basin.errors import InvalidSpec
from basin.names import optional_name
from basin.paths.base import FrozenModel
from basin.tasks import tasks_with

#: The methods a member can be trained with, and the ``peft`` config class each uses
#: (``full``: every parameter trained, no peft). ``adapter``: peft has no Houlsby bottleneck
#: adapter (huggingface/peft#244 is open); the closest it offers is a linear bottleneck
#: parallel to each FFN output projection — a LoRA on those modules (He et al. 2022 show
#: LoRA is a parallel adapter without the nonlinearity): see docs/tune.md.
METHODS: dict[str, str | None] = {
    "full": None,
    "lora": "LoraConfig",
    "ia3": "IA3Config",
    "prefix": "PrefixTuningConfig",
    "prompt": "PromptTuningConfig",
    "adapter": "LoraConfig",
}
#: The most members one spec may expand to (a server caps lower with ``Caps``).
MAX_MEMBERS = 1024


class MethodSpec(FrozenModel):
    """One tuning method of the family.

    ``name``: one of :data:`METHODS`. ``r`` (LoRA rank, adapter bottleneck width; default
    8 / 16), ``alpha`` (LoRA scaling numerator, default ``2·r``), ``dropout`` (LoRA
    dropout, default 0), ``target_modules`` (module names or suffixes peft matches;
    default: peft's per-architecture defaults for lora/ia3, the FFN output projections for
    ``adapter``), ``num_virtual_tokens`` (prefix / prompt, default 20),
    ``learning_rates``: this method's own rates (default: the spec's ``learning_rates``;
    delta tuning usually wants a larger rate than full fine-tuning).
    """

    name: Literal["full", "lora", "ia3", "prefix", "prompt", "adapter"]
    r: int | None = Field(None, ge=1, le=4096)
    alpha: int | None = Field(None, ge=1, le=1_000_000)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(None, min_length=1, max_length=256)
    num_virtual_tokens: int = Field(20, ge=1, le=512)
    learning_rates: list[float] | None = Field(None, min_length=1, max_length=16)

    @field_validator("target_modules")
    @classmethod
    def _modules(cls, v: list[str] | None) -> list[str] | None:
        for m in v or []:
            if not re.fullmatch(r"[A-Za-z0-9_.]{1,200}", m):
                raise ValueError(
                    f"target module {m!r}: a module name or dotted suffix (letters, digits, '_', '.')"
                )
        return v

    @field_validator("learning_rates")
    @classmethod
    def _rates(cls, v: list[float] | None) -> list[float] | None:
        return _check_rates(v) if v is not None else v

    @model_validator(mode="after")
    def _check(self) -> MethodSpec:
        if self.name == "full" and (
            self.r is not None or self.alpha is not None or self.target_modules
        ):
            raise ValueError(
                "method full trains every parameter: r, alpha and target_modules do not apply"
            )
        if self.name in ("prefix", "prompt") and (self.r is not None or self.target_modules):
            raise ValueError(
                f"method {self.name} learns virtual tokens: r and target_modules do not apply "
                "(set num_virtual_tokens)"
            )
        if self.name == "ia3" and (self.r is not None or self.alpha is not None):
            raise ValueError("method ia3 learns scaling vectors: r and alpha do not apply")
        return self

    @property
    def peft_class(self) -> str | None:
        """The ``peft`` config class this method builds (``None`` for full fine-tuning)."""
        return METHODS[self.name]

    @property
    def rank(self) -> int:
        """``r`` or its default (8 for LoRA, 16 for the adapter's bottleneck)."""
        return self.r if self.r is not None else (16 if self.name == "adapter" else 8)


def _check_rates(v: list[float]) -> list[float]:
    for lr in v:
        if not 0.0 < lr <= 10.0:
            raise ValueError(f"learning rate {lr} must be in (0, 10]")
    if len(set(v)) != len(v):
        raise ValueError(
            f"learning rates {v} repeat a value: each would train the same member twice"
        )
    return v


class SplitSpec(FrozenModel):
    """How the training rows are divided between members.

    ``none``: every member trains on all training rows. ``halves``: two disjoint halves;
    ``kfold``: ``k`` disjoint parts — a member with split i trains on part i only (disjoint
    data, Qin et al. 2022's "different data split"). Parts are cut by ``seed`` (fixed, not a
    member's seed), so all members agree on them. ``index``: which parts become members
    (default all).
    """

    kind: Literal["none", "halves", "kfold"] = "none"
    k: int = Field(2, ge=2, le=64)
    index: list[int] | None = Field(None, min_length=1, max_length=64)
    seed: int = Field(0, ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _check(self) -> SplitSpec:
        if self.kind == "halves" and self.k != 2:
            raise ValueError("split halves has k = 2 (use kind: kfold for more parts)")
        if self.kind == "none" and self.index is not None:
            raise ValueError("split none has no parts to index")
        for i in self.index or []:
            if not 0 <= i < self.parts:
                raise ValueError(
                    f"split index {i} is not a part of {self.parts} (0 … {self.parts - 1})"
                )
        if self.index is not None and len(set(self.index)) != len(self.index):
            raise ValueError(f"split index {self.index} repeats a part")
        return self

    @property
    def parts(self) -> int:
        """Number of parts the rows are cut into (1 for ``none``)."""
        return 1 if self.kind == "none" else self.k

    @property
    def chosen(self) -> list[int | None]:
        """The split value of each member (``None`` for ``none``)."""
        if self.kind == "none":
            return [None]
        return list(self.index) if self.index is not None else list(range(self.parts))


class TuneSpec(FrozenModel):
    """A family of fine-tuned checkpoints of ``base`` on ``dataset``; see the module docstring.

    Training: AdamW (``weight_decay``), learning rate decayed linearly to 0 over ``steps``
    (``schedule: constant`` keeps it), gradient norm clipped at ``grad_clip`` (``None``:
    off), batches of ``batch_size`` rows drawn epoch by epoch in an ``order``-seeded
    permutation of the member's training rows, padded to their longest row.
    ``max_examples`` caps the training rows (a seeded subsample).

    Held-out evaluation: ``eval_dataset`` (``eval_max_examples`` rows), or, when ``None``,
    ``eval_fraction`` of ``dataset``'s rows set aside by a fixed seed *before* any training
    rows are chosen — training rows never double as evaluation rows.

    ``save_every``: a checkpoint every N steps (tagged ``step``) besides the final one.
    ``cartography``: record each training example's gold-label probability at every
    cartography point (each saved step, else each epoch end, and the last step) and write
    the dataset map (:mod:`basin.tune.cartography`); classification only.
    ``head``: ``auto`` gives a classifier a fresh head (seeded by the member's seed) when
    the base has none or its labels differ from ``labels``; ``fresh`` always; ``base``
    keeps the base's head. ``labels``: the classes (default: the base's own label names
    when it has named ones, else the training file's distinct labels, sorted).
    """

    base: str = Field(min_length=1, max_length=4096)
    dataset: str = Field(min_length=1, max_length=4096)
    eval_dataset: str | None = Field(None, min_length=1, max_length=4096)
    eval_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    eval_max_examples: int = Field(512, ge=1, le=1_000_000)
    #: a task with a training loss (``trainable`` in :mod:`basin.tasks`)
    task: str = Field(
        "classification", json_schema_extra={"enum": list(tasks_with(trainable=True))}
    )
    methods: list[MethodSpec] = Field(
        default_factory=lambda: [MethodSpec.model_validate({"name": "full"})],
        min_length=1,
        max_length=16,
    )
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, max_length=64)
    #: data-order seeds; ``None``: each member's order is its seed (one axis, as Qin et al.)
    orders: list[int] | None = Field(None, min_length=1, max_length=64)
    split: SplitSpec = Field(default_factory=lambda: SplitSpec.model_validate({}))
    learning_rates: list[float] = Field(default_factory=lambda: [1e-4], min_length=1, max_length=16)
    steps: int = Field(100, ge=1, le=1_000_000)
    batch_size: int = Field(16, ge=1, le=4096)
    max_length: int = Field(128, ge=4, le=8192)
    max_examples: int = Field(2048, ge=1, le=1_000_000)
    weight_decay: float = Field(0.01, ge=0.0, le=1.0)
    schedule: Literal["linear", "constant"] = "linear"
    grad_clip: float | None = Field(1.0, gt=0.0, le=1e6)
    save_every: int | None = Field(None, ge=1, le=1_000_000)
    cartography: bool = False
    head: Literal["auto", "fresh", "base"] = "auto"
    labels: list[str] | None = Field(None, min_length=2, max_length=1000)
    family: str = Field("family", min_length=1, max_length=100)
    device: str = "auto"
    dtype: Literal["float32", "bfloat16", "auto"] = "float32"
    tokenizer: str | None = None
    name: str | None = None

    @field_validator("name")
    @classmethod
    def _clean_name(cls, v: str | None) -> str | None:
        return optional_name(v, "tune name")

    @field_validator("family")
    @classmethod
    def _family(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", v):
            raise ValueError(
                f"family {v!r}: letters, digits, '_', '-', '.' (it names the members' folders)"
            )
        return v

    @field_validator("learning_rates")
    @classmethod
    def _rates(cls, v: list[float]) -> list[float]:
        return _check_rates(v)

    @field_validator("seeds", "orders")
    @classmethod
    def _seeds(cls, v: list[int] | None) -> list[int] | None:
        for s in v or []:
            if not 0 <= s <= 2**32 - 1:
                raise ValueError(f"seed {s} must be in [0, 2**32 - 1]")
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"{v} repeats a value: each would train the same member twice")
        return v

    @model_validator(mode="after")
    def _check(self) -> TuneSpec:
        trainable = tasks_with(trainable=True)
        if self.task not in trainable:
            raise ValueError(
                f"task: tuning needs a task with a training loss, one of {list(trainable)}; "
                f"not {self.task!r}"
            )
        if self.cartography and self.task != "classification":
            raise ValueError(
                "cartography (per-example gold-label confidence) needs task classification"
            )
        if self.labels is not None and self.task != "classification":
            raise ValueError("labels apply to task classification only")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels {self.labels} repeat a label")
        names = [m.name for m in self.methods]
        for i, m in enumerate(self.methods):
            if m in self.methods[:i]:
                raise ValueError(f"methods: {m.name} is listed twice with the same options")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(
                f"methods: {dup} appear more than once; a family names members by method, "
                "so each method may appear once"
            )
        if self.device != "auto" and not (
            self.device == "cpu" or re.fullmatch(r"cuda(:\d+)?", self.device)
        ):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.save_every is not None and self.save_every >= self.steps:
            raise ValueError(
                f"save_every ({self.save_every}) must be below steps ({self.steps}): the final "
                "checkpoint is always saved"
            )
        n = self.num_members
        if n > MAX_MEMBERS:
            raise ValueError(
                f"the family has {n} members, over the limit of {MAX_MEMBERS}: vary fewer axes"
            )
        return self

    @property
    def order_values(self) -> list[int | None]:
        """The ``orders`` axis (``[None]``: order follows the seed)."""
        return list(self.orders) if self.orders is not None else [None]

    def rates_of(self, method: MethodSpec) -> list[float]:
        """The learning rates ``method`` is trained with."""
        return list(method.learning_rates or self.learning_rates)

    @property
    def num_members(self) -> int:
        """How many members the family has (the product of its axes)."""
        per_method = sum(len(self.rates_of(m)) for m in self.methods)
        return len(self.seeds) * len(self.order_values) * len(self.split.chosen) * per_method

    @property
    def total_steps(self) -> int:
        """Training steps of the whole family (``num_members × steps``)."""
        return self.num_members * self.steps

    @property
    def checkpoints_per_member(self) -> int:
        """Checkpoints one member writes: the intermediate ``save_every`` ones and the final one."""
        return (self.steps - 1) // self.save_every + 1 if self.save_every else 1


@dataclass(frozen=True)
class Member:
    """One member of a family: what it varies and its name (unique in the family).

    ``tags`` are the values that made it (``family``, ``seed``, ``order``, ``split``,
    ``method``, ``lr``); each checkpoint adds ``step``.
    """

    index: int
    name: str
    family: str
    seed: int
    order: int
    split: int | None
    method: MethodSpec = field(compare=False)
    lr: float

    @property
    def tags(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "seed": self.seed,
            "order": self.order,
            "split": self.split,
            "method": self.method.name,
            "lr": self.lr,
        }


def _lr_label(lr: float) -> str:
    return f"{lr:g}".replace("+", "")


def members(spec: TuneSpec) -> list[Member]:
    """The family's members, in a fixed order: method, learning rate, split, order, seed
    (the innermost axis varies fastest). Names say only the axes that vary:
    ``<family>-<method>[-lr<lr>][-split<i>][-o<order>]-s<seed>``."""
    out: list[Member] = []
    orders = spec.order_values
    splits = spec.split.chosen
    many_lr = any(
        len(spec.rates_of(m)) > 1 for m in spec.methods
    )  # a method's one rate is not named
    for method in spec.methods:
        for lr, split, order, seed in itertools.product(
            spec.rates_of(method), splits, orders, spec.seeds
        ):
            parts = [spec.family, method.name]
            if many_lr:
                parts.append(f"lr{_lr_label(lr)}")
            if split is not None:
                parts.append(f"split{split}")
            if order is not None:
                parts.append(f"o{order}")
            parts.append(f"s{seed}")
            out.append(
                Member(
                    index=len(out),
                    name="-".join(parts),
                    family=spec.family,
                    seed=seed,
                    order=seed if order is None else order,
                    split=split,
                    method=method,
                    lr=lr,
                )
            )
    return out


def parse_tune_spec(data: dict[str, Any]) -> TuneSpec:
    """Validate a tune spec dict; pydantic's errors become one :class:`InvalidSpec` line."""
    from basin.spec import format_validation_error

    try:
        return TuneSpec.model_validate(data)
    except ValidationError as e:
        raise InvalidSpec(
            format_validation_error(e).replace("invalid spec", "invalid tune spec", 1)
        ) from None


def load_tune_spec(path: str | Path) -> TuneSpec:
    """Read a tune spec from ``.yaml``/``.yml``/``.json``."""
    from basin.spec import read_spec_file

    return parse_tune_spec(read_spec_file(path, "tune spec", "'base' and 'dataset'"))


__all__ = [
    "MAX_MEMBERS",
    "METHODS",
    "Member",
    "MethodSpec",
    "SplitSpec",
    "TuneSpec",
    "load_tune_spec",
    "members",
    "parse_tune_spec",
]
