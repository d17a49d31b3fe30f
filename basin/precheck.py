"""Every test a worker runs before its first point, run without weights (Check, ``POST /runs``).

:func:`basin.opening.open_model` refuses, before any point: a checkpoint whose weights do
not fit the task's model (``causal_lm`` on a sequence classifier: the LM head is missing),
checkpoints of different architectures, a scope that matches nothing that can move, a run
with no tokenizer. :func:`precheck` asks the same questions from the safetensors headers
and a ``meta``-device skeleton of the first checkpoint's model (no memory for weights), so
the API refuses such a spec with the worker's reason, in words that name the checkpoints
and suggest only what can work, instead of approving it and failing in the worker.

Results are cached by content (store ids are sha256 of the files; paths by mtime).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from basin.checkpoints import has_tokenizer, read_config, tensor_meta
from basin.errors import CheckpointError, IncompatibleCheckpoints, InvalidSpec
from basin.resolve import CheckpointSource, Resolver

#: The task an architecture's head is for (the class name's ending), for suggestions.
HEAD_TASKS = (
    ("ForSequenceClassification", "classification"),
    ("ForCausalLM", "causal_lm or generation"),
    ("LMHeadModel", "causal_lm or generation"),
    ("ForConditionalGeneration", "seq2seq"),
    ("ForSeq2SeqLM", "seq2seq"),
)


def architecture(config: Mapping[str, Any]) -> str:
    arch = config.get("architectures") or []
    return str(arch[0]) if arch else str(config.get("model_type") or "?")


def task_for(arch: str) -> str | None:
    """The task a model class's head serves (``BertForSequenceClassification`` → classification)."""
    for end, task in HEAD_TASKS:
        if arch.endswith(end):
            return task
    return None


def check_architectures(sources: Sequence[tuple[str, CheckpointSource]]) -> None:
    """Checkpoints of different model types (BERT and Llama) cannot share a path: said plainly,
    without a tensor list or an ``on_mismatch: hold`` that cannot help."""
    if len(sources) < 2:
        return
    label0, src0 = sources[0]
    cfg0 = read_config(src0.config_dir)
    for label, src in sources[1:]:
        cfg = read_config(src.config_dir)
        if cfg.get("model_type") != cfg0.get("model_type"):
            raise IncompatibleCheckpoints(
                f"checkpoints {label0!r} ({architecture(cfg0)}) and {label!r} ({architecture(cfg)}) are "
                f"different architectures ({cfg0.get('model_type')} vs {cfg.get('model_type')}): their weights "
                "cannot be mixed; pick checkpoints fine-tuned from one pre-trained model",
                [],
            )


@functools.lru_cache(maxsize=32)
def _skeleton(task: str, config_dir: str, _stamp: int) -> Any:
    from pathlib import Path

    from basin.space import make_model

    return make_model(task, Path(config_dir), meta=True)


def _model(task: str, src: CheckpointSource) -> Any:
    cfg = src.config_dir / "config.json"
    try:
        stamp = cfg.stat().st_mtime_ns
    except OSError:
        stamp = 0
    return _skeleton(task, str(src.config_dir.resolve()), stamp)


def check_task_fits(task: str, label: str, src: CheckpointSource) -> Any:
    """The task's model can hold ``src``'s weights: every parameter is stored (or tied to a
    stored one), as :func:`basin.space.load_weights` demands. Returns the skeleton."""
    from basin.space import key_mapper

    cfg = read_config(src.config_dir)
    arch = architecture(cfg)
    fits = task_for(arch)
    hint = f"; {label!r} is a {arch}" + (f": for it pick task {fits}" if fits else "")
    try:
        model = _model(task, src)
    except CheckpointError as e:
        raise InvalidSpec(
            f"invalid spec: task {task!r} does not fit checkpoint {label!r} ({e}){hint}"
        ) from None
    stored = list(tensor_meta(src))
    canonical = set(key_mapper(model)(stored).values())
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {id(params[k]) for k in canonical if k in params}
    missing = [k for k, p in params.items() if id(p) not in loaded]
    if missing:
        raise InvalidSpec(
            f"invalid spec: task {task!r} needs weights that checkpoint {label!r} does not have: "
            f"{len(missing)} parameter(s) of the task's model are missing, e.g. {', '.join(missing[:3])}{hint}"
        )
    return model


def explain_scope(scope: str, model: Any, label: str) -> str:
    """Why scope ``head`` matches nothing on a model whose output head is its input embedding."""
    if scope != "head":
        return ""
    try:
        out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return ""
    if out is not None and inp is not None and out.weight is inp.weight:
        return (
            f": {label!r} ties its output head to its input embedding (tie_word_embeddings), so the "
            "head is the embedding matrix and moves with scope 'embeddings' (or 'all'); "
            "scope 'head' has nothing of its own to move"
        )
    return ""


def check_scope(scope: str, model: Any, label: str, src: CheckpointSource) -> None:
    """The scope moves at least one stored floating-point parameter (as the worker's)."""
    from basin.groups import model_groups
    from basin.space import key_mapper, select_scope

    meta = tensor_meta(src)
    to_model = key_mapper(model)(list(meta))
    floats = {
        to_model[k]
        for k, (_, dtype) in meta.items()
        if "float" in str(dtype).lower() or str(dtype).upper() in ("F16", "F32", "F64", "BF16")
    }
    names = [k for k, _ in model.named_parameters() if k in floats]
    try:
        select_scope(scope, names, model_groups(model))
    except InvalidSpec as e:
        why = explain_scope(scope, model, label)
        raise InvalidSpec(f"invalid spec: {e}{why}") from None


def check_tokenizer(
    sources: Sequence[tuple[str, CheckpointSource]], tokenizer: CheckpointSource | None
) -> None:
    dirs = ([tokenizer.config_dir, tokenizer.weights] if tokenizer else []) + [
        d for _, s in sources for d in (s.config_dir, s.weights)
    ]
    if not any(has_tokenizer(d) for d in dirs):
        labels = ", ".join(repr(label) for label, _ in sources[:3])
        raise InvalidSpec(
            f"invalid spec: no tokenizer: none of {labels} has tokenizer files; upload a "
            "checkpoint with its tokenizer, or name one in 'tokenizer'"
        )


def check_dataset(spec: Any, resolver: Resolver, label: str, src: CheckpointSource) -> None:
    """The dataset reads for the task under the first checkpoint's labels, as
    :func:`basin.opening.open_model` reads it (the same columns, the same subsample, string
    labels through the model's ``label2id``, integer labels inside its classes)."""
    from basin.data import load_dataset
    from basin.errors import DatasetError
    from basin.tasks import task_entry

    if not getattr(spec, "dataset", None):
        return
    entry = task_entry(spec.task)
    config = read_config(src.config_dir)
    gen = getattr(spec, "generation", None)
    try:
        load_dataset(
            resolver.dataset(spec.dataset),
            spec.task,
            max_examples=spec.max_examples,
            seed=spec.seed,
            prompts_from_text=gen is not None and gen.prompt_tokens is not None,
            **entry.dataset_options(config),
        )
    except DatasetError as e:
        raise InvalidSpec(f"invalid spec: {e} (checkpoint {label!r} reads the dataset's labels)") from None


def precheck(spec: Any, resolver: Resolver, *, labels: Mapping[str, str] | None = None) -> None:
    """What the worker checks before any point, for a resolved :class:`~basin.spec.RunSpec`
    (references as ``resolver`` takes them; ``labels``: reference → the name to print)."""
    from basin.paths import path_class

    if spec.space == "adapter":
        return  # adapters are checked by the API's own adapter rules
    labels = labels or {}
    refs = path_class(spec.path.type).refs_in(spec.path)
    if not refs:
        return
    named = [(labels.get(r) or r[:12], resolver.checkpoint(r)) for r in dict.fromkeys(refs)]
    if any(src.adapter is not None for _, src in named):
        return  # an adapter's base decides; open_model's adapter rules apply
    check_architectures(named)
    label, first = named[0]
    model = check_task_fits(spec.task, label, first)
    check_scope(spec.scope, model, label, first)
    tok = resolver.checkpoint(spec.tokenizer) if getattr(spec, "tokenizer", None) else None
    check_tokenizer(named, tok)
    check_dataset(spec, resolver, label, first)
