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
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from basin.errors import InvalidSpec
from basin.metrics import Task, default_metrics, task_metrics
from basin.names import optional_name
from basin.paths import PATHS, is_1d, path_class
from basin.paths.base import FrozenModel
from basin.refine import RefineSpec, budget_of, check_shape
from basin.tasks import task_entry, tasks_with

#: Named scopes the form offers (see :func:`basin.space.select_scope`): the groups of the
#: module tree, thirds of every stack, and thirds of the encoder / decoder stack alone.
SCOPE_PRESETS = (
    "all", "embeddings", "lower", "middle", "upper", "head", "rest",
    "encoder.lower", "encoder.middle", "encoder.upper", "decoder.lower", "decoder.middle", "decoder.upper",
)
SCOPE_HELP = (
    "which tensors move, the rest stay at the first checkpoint: all; embeddings (input, position and "
    "type embeddings, embeddings norm); lower / middle / upper (that third of the blocks of every stack); "
    "<stack>.<third> (encoder.upper, decoder.lower) or <stack> (a whole stack); head (output embeddings, "
    "classifier, pooler, score); rest (final norms); or a regex over parameter names. Tied word "
    "embeddings count as embeddings."
)

# The ``path`` field: one spec model per registered path type, told apart by ``type``.
# The union is built from the registry at import, which a static checker cannot follow:
# to mypy the field is ``Any`` (each path class reads its own ``Spec``'s fields), while
# pydantic validates against, and the JSON schema shows, the discriminated union.
if TYPE_CHECKING:
    PathSpec = Any
else:
    PathSpec = Annotated[Union[tuple(cls.Spec for cls in PATHS.values())], Field(discriminator="type")]  # noqa: UP007 (built at runtime)


class GenerationSpec(FrozenModel):
    """Sampling and scoring of continuations (task ``generation``; see :mod:`basin.evaluate.generation`).

    Sampling is reproducible per point and per prompt: row ``(prompt p, sample j)`` at a
    point draws from its own generator seeded from ``(seed, the point's coordinates, p, j)``,
    so the texts do not depend on the worker, the batch size or the order of points.
    """

    prompts: str | None = Field(None, description="prompts dataset (only with task causal_lm; with task "
                                "generation the run's dataset holds the prompts)")
    prompt_tokens: int | None = Field(None, ge=1, le=512, description="cut the 'text' column to its first N "
                                      "tokens as prompts (for datasets without a 'prompt' column)")
    samples_per_prompt: int = Field(4, ge=1, le=64)
    max_new_tokens: int = Field(30, ge=1, le=512)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    temperature: float = Field(1.0, gt=0.0, le=10.0)
    seed: int = 0
    scorer: str | None = Field(None, description="checkpoint of a sentiment classifier (for 'sentiment')")
    positive_label: str | None = Field(None, description="the scorer's label counted as positive (default: "
                                       "the one named 'positive' or 'pos')")
    label_scores: dict[str, float] | None = Field(
        None, description="score of each scorer label; sentiment = the expected score E[s] under the scorer "
        "(default: the positive label 1, a label named 'neutral' 0.5, others 0: P(positive) for a two-class "
        "scorer, 001's expected positive score for a three-class one)")
    reference: str | None = Field(None, description="causal LM that scores the samples' perplexity (default: "
                                  "the path's θ0 — its 'base' or 'origin' — when it has one; one end of the path "
                                  "would tilt the curve, so a path without θ0 needs it named, e.g. the common "
                                  "init of the two checkpoints)")
    keep_samples: int = Field(8, ge=0, le=256, description="samples kept per point in the result")


#: Tasks whose evaluators keep per-example outcomes (``per_example: true``; their entries in :mod:`basin.tasks`).
PER_EXAMPLE_TASKS = tasks_with(per_example=True)
#: At most max_examples × points per-example values per outcome in one result document.
PER_EXAMPLE_LIMIT = 2_000_000

#: Tasks whose outputs can be ensembled along a path between two endpoints (α = 0 and 1).
ENSEMBLE_TASKS = tasks_with(ensemble=True)
#: The task whose metrics a ``generates: with_prompts`` task (causal_lm) adds for its prompts' samples.
GENERATION = "generation"


class RunSpec(FrozenModel):
    """A run: a path through parameter space, the data to evaluate on, and how.

    ``scope`` picks the parameters that move (``all``; the module-tree groups
    ``embeddings``, ``head``, ``rest``; ``lower``/``middle``/``upper`` thirds of every
    stack of blocks, ``encoder.upper``-style thirds of one stack; or a regex over
    parameter names); the others stay at the first checkpoint (004 §7).
    ``on_mismatch="hold"`` keeps tensors whose shapes differ at the first checkpoint
    instead of refusing the run (e.g. classification heads of different tasks).
    """

    path: PathSpec
    dataset: str
    task: Task = "classification"
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
    generation: GenerationSpec | None = None
    ensemble: bool = Field(False, description="also evaluate output ensembling (1−α)·zA + α·zB at every α "
                           "(classification, causal_lm; generation: the two LMs' next-token log-probabilities mixed at every "
                           "sampling step; paths between two checkpoints)")
    space: Literal["merged", "adapter"] = Field(
        "merged", description="for PEFT adapter checkpoints: 'merged' interpolates merged weights θ_base + ΔW "
        "(full checkpoints and adapters on one base mix); 'adapter' interpolates the adapters' own tensors "
        "(LoRA A and B, saved modules) on their common base (see docs/adapters.md)")
    per_example: bool = Field(False, description="keep every example's outcome at every point in the result "
                              "(classification: loss, correct, confidence; causal_lm / seq2seq: summed NLL and "
                              "tokens per text): forgetting along the path (every 1D run gets the barrier's bootstrap "
                              "interval anyway, from a compact copy of the barrier's columns)")
    refine: RefineSpec | None = Field(None, description="adaptive refinement: the path's grid is the fine grid; "
                                      "its coarse subset first, then waves of points where the metric changes "
                                      "most, up to a budget ('adaptive' = {mode: adaptive}); absent: every point")

    @field_validator("refine", mode="before")
    @classmethod
    def _refine_shorthand(cls, v: Any) -> Any:
        return {"mode": v} if isinstance(v, str) else v

    @field_validator("name")
    @classmethod
    def _clean_name(cls, v: str | None) -> str | None:
        return optional_name(v, "run name")  # NFKC, no control / zero-width / bidi characters

    @model_validator(mode="after")
    def _metrics(self) -> RunSpec:
        gen = self.generation
        entry = task_entry(self.task)
        always, with_prompts = entry.generates == "always", entry.generates == "with_prompts"
        generates = always or (with_prompts and gen is not None and bool(gen.prompts))
        if always and gen is None:
            object.__setattr__(self, "generation", gen := GenerationSpec.model_validate({}))
        if gen is not None and gen.prompts and not with_prompts:
            raise ValueError("generation.prompts names a prompts dataset for a causal_lm run (loss on the "
                             "dataset + generation metrics on the prompts); with task generation the run's "
                             "dataset holds the prompts")
        if gen is not None and not generates:
            raise ValueError(f"generation settings need task generation (or causal_lm with generation.prompts), "
                             f"not {self.task!r}")
        sampled = with_prompts and generates  # the generation metrics of the prompts' samples too
        allowed = task_metrics(self.task) + (task_metrics(GENERATION) if sampled else ())
        if not self.metrics:
            wanted = list(default_metrics(self.task))
            if sampled:
                wanted += default_metrics(GENERATION)
            if gen is not None and gen.scorer is None:
                wanted = [m for m in wanted if m != "sentiment"]
            if gen is not None and self.reference_lm() is None:
                wanted = [m for m in wanted if m != "sample_perplexity"]
            object.__setattr__(self, "metrics", wanted)
        bad = [m for m in self.metrics if m not in allowed]
        if bad:
            raise ValueError(f"metrics {bad} not available for task {self.task!r}; choose from {list(allowed)}")
        if "sentiment" in self.metrics and (gen is None or gen.scorer is None):
            raise ValueError("metric 'sentiment' needs a scorer: set generation.scorer to a sentiment "
                             "classifier checkpoint")
        if "sample_perplexity" in self.metrics and self.reference_lm() is None:
            raise ValueError("metric 'sample_perplexity' needs a reference LM that does not tilt the curve: set "
                             "generation.reference (e.g. the common init θ0 of the two checkpoints; scoring with "
                             "one end of the path favours the samples near it), or use a path with a 'base'")
        if self.ensemble:
            if self.task not in ENSEMBLE_TASKS:
                raise ValueError(f"ensemble: output ensembling is defined for tasks {list(ENSEMBLE_TASKS)}, "
                                 f"not {self.task!r}")
            if PATHS[self.path.type](self.path).endpoints() is None:
                raise ValueError(f"ensemble: needs a path between two checkpoints (linear, bezier, polychain), "
                                 f"not {self.path.type!r}")
        if self.refine is not None:
            why = check_shape(self.shape, self.refine.levels)
            if why:
                raise ValueError(why)
            if self.refine.metric is not None and self.refine.metric not in self.metrics:
                raise ValueError(f"refine.metric {self.refine.metric!r} is not one of the run's metrics "
                                 f"{list(self.metrics)}")
            if self.refine.budget is not None and self.refine.budget > self.num_points:
                raise ValueError(f"refine.budget {self.refine.budget} is more than the fine grid's "
                                 f"{self.num_points} points (drop refine to evaluate them all)")
        if self.per_example:
            if self.task not in PER_EXAMPLE_TASKS:
                raise ValueError(f"per_example: per-example outcomes are kept for tasks {list(PER_EXAMPLE_TASKS)}, "
                                 f"not {self.task!r}")
            size = self.max_examples * self.planned_points
            if size > PER_EXAMPLE_LIMIT:
                raise ValueError(f"per_example: {self.max_examples} examples × {self.planned_points} points = {size} "
                                 f"values per outcome, over the {PER_EXAMPLE_LIMIT} a result document keeps; "
                                 "lower max_examples or the number of points")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        return self

    # ---- helpers shared by the CLI, API and UI -------------------------------------

    @property
    def is_1d(self) -> bool:
        """Whether the path is a 1D curve in α (else a 2D grid in x, y)."""
        return is_1d(self.path.type)

    @property
    def shape(self) -> tuple[int, ...]:
        """Grid shape: ``(points,)`` for 1D paths, ``(nx, ny)`` for planes."""
        return path_class(self.path.type).shape_of(self.path)

    @property
    def num_points(self) -> int:
        """Number of grid points (the product of :attr:`shape`)."""
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def planned_points(self) -> int:
        """Most points the run evaluates: the refinement budget, else every grid point."""
        if self.refine is None:
            return self.num_points
        return budget_of(self.refine, self.shape)

    @property
    def refine_required(self) -> list[int]:
        """Fine-grid indices an adaptive run always evaluates besides its coarse grid: on a 1D
        path, α = 0 and 1 (the checkpoints: the barrier's chord) when the grid has them."""
        if self.refine is None or not self.is_1d:
            return []
        lo, hi = self.path.range
        n = self.shape[0]
        out = []
        for a in (0.0, 1.0):
            i = round((a - lo) / (hi - lo) * (n - 1))
            if 0 <= i < n and abs(lo + i * (hi - lo) / (n - 1) - a) <= 1e-9 * max(1.0, hi - lo):
                out.append(i)
        return out

    @property
    def refine_metric(self) -> str:
        """The metric adaptive refinement follows (``refine.metric``, else the first metric)."""
        return (self.refine.metric if self.refine is not None and self.refine.metric else None) or self.metrics[0]

    def roles(self) -> dict[str, str | list[str]]:
        """``{field: ref or [refs]}`` for the path's checkpoint fields (``basis: pca`` left out)."""
        return path_class(self.path.type).roles_in(self.path)

    def reference_lm(self) -> str | None:
        """The checkpoint that scores the samples' perplexity: ``generation.reference``, else the path's θ0
        (its ``base`` / ``origin`` field), else ``None`` (it must be named)."""
        gen = self.generation
        if gen is not None and gen.reference:
            return gen.reference
        roles = self.roles()
        for field in ("base", "origin"):
            if isinstance(roles.get(field), str):
                return str(roles[field])
        return None

    def checkpoint_refs(self) -> list[str]:
        """Every checkpoint reference in the spec, in anchor order, without duplicates
        (the path's, then the tokenizer, the generation scorer and reference)."""
        out = path_class(self.path.type).refs_in(self.path)
        gen = self.generation
        for extra in (self.tokenizer, gen and gen.scorer, gen and gen.reference):
            if extra and extra not in out:
                out.append(extra)
        return out

    def dataset_refs(self) -> list[str]:
        """Every dataset reference: the run's dataset, then the prompts of a causal_lm run's generation."""
        out = [self.dataset]
        if self.generation is not None and self.generation.prompts and self.generation.prompts not in out:
            out.append(self.generation.prompts)
        return out

    def map_refs(self, checkpoint: Callable[[str], str], dataset: Callable[[str], str]) -> RunSpec:
        """A copy with every checkpoint and dataset reference rewritten."""
        data = self.model_dump(mode="json")
        data["path"] = path_class(self.path.type).map_refs_in(data["path"], checkpoint)
        data["dataset"] = dataset(data["dataset"])
        if data.get("tokenizer"):
            data["tokenizer"] = checkpoint(data["tokenizer"])
        gen = data.get("generation")
        if gen:
            for f in ("scorer", "reference"):
                if gen.get(f):
                    gen[f] = checkpoint(gen[f])
            if gen.get("prompts"):
                gen["prompts"] = dataset(gen["prompts"])
        return RunSpec.model_validate(data)

    def to_yaml(self) -> str:
        """The spec as YAML, every default filled in (what ``basin eval`` reads back)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def parse_spec(data: dict[str, Any]) -> RunSpec:
    """Validate a spec dict, turning pydantic's errors into one readable :class:`InvalidSpec`."""
    try:
        return RunSpec.model_validate(data)
    except ValidationError as e:
        raise InvalidSpec(format_validation_error(e)) from None


def format_validation_error(e: ValidationError) -> str:
    """pydantic's errors as one line: ``invalid spec: <where>: <what>; ...``."""
    parts = []
    for err in e.errors():
        # the union's tag (``path.trajectory.checkpoints``) is the type the user already chose
        loc = ".".join(str(x) for x in err["loc"] if not str(x).endswith("Path") and str(x) not in PATHS)
        msg = _words(err)
        if err["type"] == "union_tag_invalid":
            msg = f"unknown path type {_shown(err['input'].get('type'))}; choose from {', '.join(PATHS)}"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "invalid spec: " + "; ".join(parts)


def _shown(value: Any) -> str:
    """A client's value as an error quotes it: a short repr, whatever its size (a list of a
    million items, or a YAML structure whose aliases stand for 9⁹ of them, is not walked)."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxstring, r.maxother, r.maxlong = 2, 4, 4, 60, 60, 40
    return r.repr(value)


def _words(err: Any) -> str:
    """One pydantic error in plain words (no ``input_value=`` / ``type=`` / links)."""
    kind, ctx, given = err["type"], err.get("ctx") or {}, err.get("input")
    field = str(err["loc"][-1]) if err["loc"] else ""
    if kind == "too_short":
        n = len(given) if isinstance(given, (list, tuple, str)) else 0
        what = "checkpoints" if field in ("checkpoints", "models", "basis") else "items"
        return f"pick at least {ctx.get('min_length')} {what} ({n or 'none'} given)"
    if kind == "too_long":
        return f"at most {ctx.get('max_length')} allowed"
    if kind == "missing":
        return "required"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": "≥", "greater_than": ">", "less_than_equal": "≤", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()), "?")
        return f"must be {op} {bound} (got {_shown(given)})"
    if kind in ("int_parsing", "int_type", "float_parsing", "float_type"):
        return f"must be a number (got {_shown(given)})"
    if kind == "extra_forbidden":
        return "unknown field"
    return str(err["msg"]).removeprefix("Value error, ")


def read_spec_file(path: str | Path, what: str = "spec", needs: str = "'path' and 'dataset'") -> dict[str, Any]:
    """The mapping in a ``.yaml``/``.yml``/``.json`` file; :class:`InvalidSpec` naming ``what``
    when it cannot be read, does not parse or is not a mapping (with at least ``needs``)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise InvalidSpec(f"cannot read {what} {p}: {e.strerror}") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise InvalidSpec(f"{what} {p} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {e}") from None
    if not isinstance(data, dict):
        raise InvalidSpec(f"{what} {p} must be a mapping with at least {needs}")
    return data


def load_spec(path: str | Path) -> RunSpec:
    """Read a spec from a ``.yaml``/``.yml``/``.json`` file."""
    return parse_spec(read_spec_file(path))
