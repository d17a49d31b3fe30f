"""Training one family member (:func:`train_member`): full fine-tuning or a PEFT method.

The recipe, exactly (a plain loop that does the same gives the same bits on a CPU; the
tests write one):

1. **θ0.** The base checkpoint. A classifier whose base has no head, whose labels differ
   from the family's, or ``head: fresh``, gets a fresh head: ``torch.manual_seed(seed)``,
   the ``transformers`` auto class built from the base's config (with the family's labels),
   then the base's tensors loaded over it — the tensors the base lacks (the head) keep their
   seeded init. That θ0 is written once per seed as ``<out>/init-s<seed>`` (a checkpoint: the
   family's step 0) and the member opens it.
2. **Opening.** :func:`basin.opening.open_model` on θ0 (the one way to open a model: data
   read and validated, tokenizer, model, device, dtype).
3. **Rows.** Held-out rows first (``eval_fraction`` of the file by a fixed seed, when no
   ``eval_dataset``), then the split's part of the rest, then ``max_examples`` of those
   (seeded); each example is tokenised once.
4. **Method.** ``full``: every parameter trains. Otherwise ``torch.manual_seed(seed)`` then
   :func:`peft.get_peft_model` (the adapter's init comes from the seed); a classifier's head
   is trained with it (peft's ``modules_to_save``).
5. **Loop.** ``torch.manual_seed(seed)`` (dropout), ``g = torch.Generator().manual_seed(order)``,
   AdamW over the trainable parameters (``lr``, ``weight_decay``), LambdaLR ``1 − s/steps``
   (``linear``) or 1, ``model.train()``; per epoch ``perm = torch.randperm(n, generator=g)``,
   batches ``perm[i:i+batch_size]`` padded to their longest row; per step: ``loss =
   model(**batch, labels=…).loss``, ``zero_grad``, ``backward``, ``clip_grad_norm_``
   (``grad_clip``), ``opt.step()``, ``sched.step()``.
6. **Checkpoints.** Every ``save_every`` steps and at the end: a full model as an HF folder
   (``model.safetensors``, config, tokenizer files), a PEFT member as a peft adapter folder
   (``adapter_config.json`` + ``adapter_model.safetensors``) whose
   ``base_model_name_or_path`` is θ0's folder, so :class:`basin.resolve.FileResolver` opens
   it as ``<adapter>`` or ``<adapter>::<θ0>``. Each holds ``basin_tune.json`` (tags, step).
7. **Held-out metrics** of the final model by the task's evaluator; **cartography**
   (:mod:`basin.tune.cartography`) from the gold-label probabilities recorded in eval mode
   (no RNG is drawn, so recording changes no checkpoint).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from basin.adapters import enable_prefix
from basin.checkpoints import TOKENIZER_FILES, load_state_dict
from basin.data import Dataset, load_dataset
from basin.errors import DatasetError, InvalidSpec
from basin.formats import label_info, read_config
from basin.resolve import CheckpointSource, Resolver
from basin.tasks import task_entry
from basin.tune.spec import Member, MethodSpec, TuneSpec

logger = logging.getLogger(__name__)

#: Per-checkpoint metadata file (tags, step, the spec); not the store's ``manifest.json``.
TUNE_META = "basin_tune.json"
#: The member's own record in its folder.
MEMBER_META = "member.json"
#: Seed of the held-out rows set aside from the training file (fixed: every member agrees).
HOLDOUT_SEED = 0x7E5
#: peft ``task_type`` per task.
PEFT_TASK = {"classification": "SEQ_CLS", "causal_lm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}
#: The FFN output projection of common architectures: where ``adapter`` puts its bottleneck.
FFN_OUT = re.compile(
    r"(^|\.)(layer\.\d+\.output\.dense|mlp\.c_proj|mlp\.down_proj|mlp\.fc2|fc2|DenseReluDense\.wo|"
    r"mlp\.dense_4h_to_h|mlp\.fc_out|ffn\.lin2)$"
)
_EXTRA_FILES = ("special_tokens_map.json", "added_tokens.json", "merges.txt", *TOKENIZER_FILES)


@dataclass
class MemberResult:
    """A trained (or cancelled) member.

    ``final``: its last checkpoint folder; ``checkpoints``: ``(step, folder)`` of every
    checkpoint it wrote, the final one last; ``base_ref``: θ0's folder or the spec's base
    (the step-0 checkpoint; PEFT checkpoints sit on it); ``init``: θ0's folder when this
    family wrote one. ``losses``: training loss of each step; ``metrics``: held-out metrics
    of the final model; ``cartography``: ``cartography.csv`` or ``None``.
    """

    member: Member
    folder: Path
    final: Path
    checkpoints: list[tuple[int, Path]]
    base_ref: str
    init: Path | None
    losses: list[float]
    metrics: dict[str, float]
    cartography: Path | None
    status: Literal["done", "cancelled"]
    examples_seen: int
    train_examples: int
    eval_examples: int
    timings: dict[str, float] = field(default_factory=dict)
    trainable_parameters: int = 0

    def to_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        """JSON-ready (paths relative to ``relative_to`` when given)."""

        def p(x: Path | None) -> str | None:
            if x is None:
                return None
            return os.path.relpath(x, relative_to) if relative_to is not None else str(x)

        return {
            "name": self.member.name,
            "index": self.member.index,
            "tags": self.member.tags,
            "method": self.member.method.model_dump(mode="json", exclude_none=True),
            "status": self.status,
            "final": p(self.final),
            "checkpoints": [{"step": s, "path": p(d)} for s, d in self.checkpoints],
            "base": self.base_ref if self.init is None else p(self.init),
            "metrics": self.metrics,
            "losses": self.losses,
            "cartography": p(self.cartography),
            "examples_seen": self.examples_seen,
            "train_examples": self.train_examples,
            "eval_examples": self.eval_examples,
            "trainable_parameters": self.trainable_parameters,
            "timings": self.timings,
        }


class _WithLocal:
    """The caller's resolver, plus local folders this trainer wrote (θ0)."""

    def __init__(self, inner: Resolver, local: dict[str, Path]):
        self.inner, self.local = inner, local

    def checkpoint(self, ref: str) -> CheckpointSource:
        if ref in self.local:
            return CheckpointSource.from_path(self.local[ref])
        return self.inner.checkpoint(ref)

    def dataset(self, ref: str) -> Path:
        return self.inner.dataset(ref)


# ---- rows ------------------------------------------------------------------------------------


def split_rows(n: int, spec: TuneSpec, split: int | None) -> tuple[list[int], list[int]]:
    """``(train rows, held-out rows)`` of a training file with ``n`` rows (0-based, sorted).

    Held-out rows (no ``eval_dataset``): ``round(n · eval_fraction)`` (at least 1) picked by
    :data:`HOLDOUT_SEED`; the split's part of the rest (parts cut by ``split.seed``,
    round-robin over a shuffle, so they are disjoint and differ in size by at most one);
    then at most ``max_examples`` of those (seeded by 0). Pure: tests call it.
    """
    rows = list(range(n))
    held: list[int] = []
    if spec.eval_dataset is None:
        k = max(1, round(n * spec.eval_fraction))
        if k >= n:
            raise DatasetError(
                f"training dataset {spec.dataset!r} has {n} row(s): too few to hold "
                f"{spec.eval_fraction:.0%} out and still train; add rows or give eval_dataset"
            )
        held = sorted(random.Random(HOLDOUT_SEED).sample(rows, k))
        taken = set(held)
        rows = [r for r in rows if r not in taken]
    if split is not None:
        shuffled = rows[:]
        random.Random(spec.split.seed).shuffle(shuffled)
        rows = sorted(shuffled[split :: spec.split.parts])
    if len(rows) > spec.max_examples:
        rows = sorted(random.Random(0).sample(rows, spec.max_examples))
    if not rows:
        raise DatasetError(
            f"training dataset {spec.dataset!r}: split {split} leaves no training rows"
        )
    return rows, held


def _subset(data: Dataset, rows: Sequence[int]) -> Dataset:
    return Dataset(
        path=data.path,
        sha256=data.sha256,
        task=data.task,
        columns={c: [v[i] for i in rows] for c, v in data.columns.items()},
        num_rows_total=data.num_rows_total,
    )


# ---- θ0 --------------------------------------------------------------------------------------


def _is_default(l2i: dict[str, int]) -> bool:
    return all(k == f"LABEL_{v}" for k, v in l2i.items())


def family_labels(
    spec: TuneSpec, resolver: Resolver, config: dict[str, Any]
) -> dict[str, int] | None:
    """The family's ``label2id`` (classification; ``None`` otherwise): ``labels``, else the
    base's named labels, else the training file's distinct labels (integers: ``LABEL_<i>``
    for 0 … max; text: sorted)."""
    if spec.task != "classification":
        return None
    if spec.labels is not None:
        return {lab: i for i, lab in enumerate(spec.labels)}
    _, base_l2i = label_info(config)
    if not _is_default(base_l2i):
        return base_l2i
    from basin.data import read_rows

    cols, rows = read_rows(resolver.dataset(spec.dataset))
    if "label" not in cols:
        raise DatasetError(
            f"dataset {spec.dataset!r} lacks column 'label' needed for task 'classification'"
        )
    values = {str(r.get("label")).strip() for r in rows if r.get("label") is not None}
    if values and all(re.fullmatch(r"\d+", v) for v in values):
        n = max(2, max(int(v) for v in values) + 1, len(base_l2i))
        return {f"LABEL_{i}": i for i in range(n)}
    if len(values) < 2:
        raise DatasetError(
            f"dataset {spec.dataset!r} has fewer than two distinct labels: nothing to classify"
        )
    return {lab: i for i, lab in enumerate(sorted(values))}


def initial_model(
    spec: TuneSpec, seed: int, src: CheckpointSource, label2id: dict[str, int]
) -> tuple[nn.Module, list[str]]:
    """θ0 of a classifier with a fresh head: ``(model, fresh tensor names)``; see step 1 of the
    module docstring. ``fresh`` is empty when the base's head is kept."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(str(src.config_dir))
    id2label = {i: lab for lab, i in label2id.items()}
    same_labels = config.label2id == label2id and config.num_labels == len(label2id)
    config.num_labels = len(label2id)
    config.id2label, config.label2id = id2label, dict(label2id)
    auto = getattr(transformers, task_entry(spec.task).auto_class)
    torch.manual_seed(seed)
    model = auto.from_config(config).float()
    from basin.space import key_mapper, rename

    sd = load_state_dict(src)
    sd = rename(sd, key_mapper(model)(sd))
    own = model.state_dict()
    prefix = getattr(model, "base_model_prefix", "") or ""
    head = [k for k in own if prefix and not k.startswith(prefix + ".")]
    drop: set[str] = set()
    if spec.head == "fresh" or (spec.head == "auto" and not same_labels):
        drop = set(head)
    drop |= {k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)}
    if spec.head == "base" and any(k not in sd or k in drop for k in head):
        raise InvalidSpec(
            f"head: base, but the base's head does not fit the family's {len(label2id)} labels "
            f"{sorted(label2id)} (use head: auto or fresh)"
        )
    result = model.load_state_dict(
        {k: v for k, v in sd.items() if k in own and k not in drop}, strict=False
    )
    fresh = sorted(set(result.missing_keys) | (drop & set(own)))
    body_fresh = [k for k in fresh if k not in head]
    if body_fresh:
        logger.warning(
            "base %s lacks %d body tensor(s), seeded fresh: %s",
            src.id,
            len(body_fresh),
            body_fresh[:4],
        )
    model.eval()
    return model, fresh


def _copy_tokenizer(dirs: Sequence[Path], dest: Path) -> None:
    for d in dirs:
        if not d.is_dir():
            continue
        for name in _EXTRA_FILES:
            if (d / name).is_file() and not (dest / name).exists():
                shutil.copyfile(d / name, dest / name)


@contextlib.contextmanager
def _quiet_saves():
    """transformers' "Writing model shards" bar off while saving (restored after)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _atomic_dir(dest: Path, write: Callable[[Path], None]) -> Path:
    """Write a folder through a temporary sibling, then rename it into place (replacing)."""
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with _quiet_saves():
            write(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def ensure_init(
    spec: TuneSpec, seed: int, resolver: Resolver, out_dir: Path
) -> tuple[str, Path | None]:
    """θ0 for members of ``seed``: ``(checkpoint ref, folder written or None)``.

    A classifier that needs a fresh head gets ``out_dir/init-s<seed>`` (written once; a
    later member of the same seed reuses it); otherwise the base itself (``spec.base``)."""
    src = resolver.checkpoint(spec.base)
    if src.adapter is not None:
        raise InvalidSpec(
            f"base {spec.base!r} is a PEFT adapter: tune from a full checkpoint (its base, or the "
            "adapter merged into one)"
        )
    if spec.task != "classification":
        return spec.base, None
    config = read_config(src.config_dir)
    label2id = family_labels(spec, resolver, config)
    assert label2id is not None
    dest = Path(out_dir) / f"init-s{seed}"
    if (dest / "model.safetensors").is_file() and (dest / TUNE_META).is_file():
        made = json.loads((dest / TUNE_META).read_text())
        if made.get("base_id") != src.id or made.get("labels") != label2id:
            raise InvalidSpec(
                f"{dest} holds θ0 of another family (base {made.get('base')!r}, labels "
                f"{sorted(made.get('labels') or {})}): train this family into another folder"
            )
        return str(dest.resolve()), dest
    model, fresh = initial_model(spec, seed, src, label2id)
    if not fresh:
        return spec.base, None

    def write(d: Path) -> None:
        model.save_pretrained(d, safe_serialization=True)  # type: ignore[operator]
        _copy_tokenizer([src.config_dir, src.weights], d)
        meta = {
            "kind": "basin-tune-init",
            "family": spec.family,
            "seed": seed,
            "base": spec.base,
            "base_id": src.id,
            "fresh": fresh,
            "labels": label2id,
            "tags": {"family": spec.family, "seed": seed, "step": 0, "method": "init"},
        }
        (d / TUNE_META).write_text(json.dumps(meta, indent=1) + "\n")

    _atomic_dir(dest, write)
    return str(dest.resolve()), dest


# ---- methods ---------------------------------------------------------------------------------


def ffn_output_modules(model: nn.Module) -> list[str]:
    """Names of the FFN output projections (:data:`FFN_OUT`) of ``model``: the ``adapter``
    method's targets."""
    out = []
    for n, m in model.named_modules():
        w = getattr(m, "weight", None)
        if FFN_OUT.search(n) and isinstance(w, torch.Tensor) and w.dim() == 2:
            out.append(n)
    return out


def peft_config(method: MethodSpec, task: str, model: nn.Module) -> Any:
    """The ``peft`` config of ``method`` for ``model`` (see :data:`basin.tune.spec.METHODS`)."""
    import peft

    tt = PEFT_TASK[task]
    arch = type(model).__name__
    if method.name == "lora":
        return peft.LoraConfig(
            task_type=tt,
            r=method.rank,
            lora_alpha=method.alpha or 2 * method.rank,
            lora_dropout=method.dropout,
            target_modules=method.target_modules,
        )
    if method.name == "adapter":
        targets = method.target_modules or ffn_output_modules(model)
        if not targets:
            raise InvalidSpec(
                f"method adapter: found no FFN output projection in {arch} to put the bottleneck "
                "beside; name the modules in target_modules"
            )
        return peft.LoraConfig(
            task_type=tt,
            r=method.rank,
            lora_alpha=method.alpha or method.rank,
            lora_dropout=method.dropout,
            target_modules=targets,
        )
    if method.name == "ia3":
        chosen = method.target_modules
        if chosen is not None:
            ff = [
                t
                for t in chosen
                if FFN_OUT.search(t) or t in ("output.dense", "c_proj", "down_proj", "wo", "fc2")
            ]
            return peft.IA3Config(task_type=tt, target_modules=chosen, feedforward_modules=ff)
        return peft.IA3Config(task_type=tt)
    if method.name == "prefix":
        return peft.PrefixTuningConfig(task_type=tt, num_virtual_tokens=method.num_virtual_tokens)
    if method.name == "prompt":
        if task != "classification":
            raise InvalidSpec(
                "method prompt (soft prompt tuning) is offered for task classification only"
            )
        return peft.PromptTuningConfig(task_type=tt, num_virtual_tokens=method.num_virtual_tokens)
    raise InvalidSpec(f"unknown method {method.name!r}")


def apply_method(model: nn.Module, method: MethodSpec, task: str, seed: int) -> nn.Module:
    """``model`` ready to train with ``method``: every parameter (``full``) or peft's model
    (seeded adapter init). :class:`InvalidSpec` when the base cannot take the method."""
    if method.name == "full":
        model.requires_grad_(True)
        return model
    import peft

    if method.target_modules:  # peft's rule: a module named t, or ending in ".t"
        names = [n for n, _ in model.named_modules()]
        missing = [
            t
            for t in method.target_modules
            if not any(n == t or n.endswith("." + t) for n in names)
        ]
        if missing:
            leaves = sorted(
                {
                    n.rsplit(".", 1)[-1]
                    for n, m in model.named_modules()
                    if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() == 2
                }
            )
            raise InvalidSpec(
                f"method {method.name}: target module(s) {missing} not found in "
                f"{type(model).__name__}; its weight layers are named {leaves[:20]}"
            )
    cfg = peft_config(method, task, model)
    torch.manual_seed(seed)
    try:
        wrapped = peft.get_peft_model(model, cfg)
    except (ValueError, KeyError, TypeError, AttributeError, NotImplementedError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InvalidSpec(
            f"method {method.name} does not fit {type(model).__name__}: {msg}"
        ) from None
    if method.name == "prefix":
        enable_prefix(wrapped)
    return wrapped


# ---- batches ---------------------------------------------------------------------------------


class Batches:
    """The member's training rows tokenised once; :meth:`collate` pads a list of them
    (dynamic padding) into the keyword arguments of one forward pass, ``labels`` included.

    Classification: ``input_ids``/``attention_mask`` (``token_type_ids`` when the model takes
    them), padded with :func:`basin.evaluate.classification.padding_id`, ``labels`` the class
    ids. Causal LM: ``labels`` = the input ids with padding at −100 (the model shifts them).
    Seq2seq: source ids and target ``labels`` (−100 padding; the model builds the decoder input).
    """

    def __init__(
        self,
        task: str,
        tokenizer: Any,
        data: Dataset,
        model: nn.Module,
        *,
        max_length: int,
        batch_size: int,
        device: torch.device,
    ):
        import inspect

        from basin.evaluate.base import pad

        self.task, self.device, self._pad = task, device, pad
        self.n = len(data)
        fwd = inspect.signature(model.forward).parameters
        if task == "classification":
            from basin.evaluate.classification import encode, padding_id

            enc = encode(tokenizer, data.columns["text"], data.columns.get("text_pair"), max_length)
            self.ids = enc["input_ids"]
            self.tt = enc.get("token_type_ids") if "token_type_ids" in fwd else None
            self.pad_id = padding_id(model, tokenizer, batch_size=batch_size, num_rows=self.n)
            self.labels = list(data.columns["label"])
        elif task == "causal_lm":
            self.ids = tokenizer(data.columns["text"], truncation=True, max_length=max_length)[
                "input_ids"
            ]
            self.tt = None
            self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            if not any(len(s) > 1 for s in self.ids):
                raise DatasetError(
                    f"dataset {data.path.name}: no text has two or more tokens to train on"
                )
        elif task == "seq2seq":
            self.ids = tokenizer(data.columns["source"], truncation=True, max_length=max_length)[
                "input_ids"
            ]
            self.targets = tokenizer(
                text_target=data.columns["target"], truncation=True, max_length=max_length
            )["input_ids"]
            self.tt = None
            self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        else:
            raise InvalidSpec(f"tuning does not know the training loss of task {task!r}")

    def collate(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        pad = self._pad
        seqs = [self.ids[i] for i in idx]
        b = {
            "input_ids": pad(seqs, self.pad_id),
            "attention_mask": pad([[1] * len(s) for s in seqs], 0),
        }
        if self.tt is not None:
            b["token_type_ids"] = pad([self.tt[i] for i in idx], 0)
        if self.task == "classification":
            b["labels"] = torch.tensor([self.labels[i] for i in idx], dtype=torch.long)
        elif self.task == "causal_lm":
            b["labels"] = pad(seqs, -100)
        else:
            b["labels"] = pad([self.targets[i] for i in idx], -100)
        return {k: v.to(self.device) for k, v in b.items()}


# ---- the member ------------------------------------------------------------------------------


def _gold_probabilities(
    model: nn.Module, batches: Batches, batch_size: int
) -> tuple[list[float], list[bool]]:
    """Gold-label probability and correctness of every training row (eval mode, no RNG drawn)."""
    was = model.training
    model.eval()
    probs: list[float] = []
    correct: list[bool] = []
    with torch.inference_mode():
        for s in range(0, batches.n, batch_size):
            b = batches.collate(list(range(s, min(s + batch_size, batches.n))))
            y = b.pop("labels")
            p = torch.softmax(model(**b).logits.float(), dim=-1)
            probs += p.gather(1, y[:, None])[:, 0].tolist()
            correct += (p.argmax(-1) == y).tolist()
    model.train(was)
    return probs, correct


def _save(
    model: nn.Module,
    dest: Path,
    *,
    full: bool,
    copy_from: Sequence[Path],
    base_path: str,
    meta: dict[str, Any],
) -> Path:
    def write(d: Path) -> None:
        model.save_pretrained(d, safe_serialization=True)  # type: ignore[operator]
        if full:
            _copy_tokenizer(copy_from, d)
        else:  # the adapter names θ0's folder as its base (basin.resolve's convention)
            (d / "README.md").unlink(
                missing_ok=True
            )  # peft's model card template: not the checkpoint
            cfg_path = d / "adapter_config.json"
            cfg = json.loads(cfg_path.read_text())
            cfg["base_model_name_or_path"] = base_path
            cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        (d / TUNE_META).write_text(json.dumps(meta, indent=1) + "\n")

    return _atomic_dir(dest, write)


def train_member(
    spec: TuneSpec,
    member: Member,
    resolver: Resolver,
    out_dir: str | Path,
    *,
    on_step: Callable[[int, float, int], None] | None = None,
    on_save: Callable[[int, Path, dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> MemberResult:
    """Train ``member`` of ``spec``'s family (the module docstring's recipe) into
    ``out_dir/<member.name>/`` (θ0, when one is needed, into ``out_dir/init-s<seed>/``).

    Checkpoints: ``<member>/step-<k>`` every ``save_every`` steps and ``<member>/final``;
    ``<member>/member.json`` records the result; ``<member>/cartography.csv`` with
    ``cartography``. ``on_step(step, loss, examples_seen)`` after each step;
    ``on_save(step, folder, tags)`` after each checkpoint is in place (θ0 first, with step 0,
    when this call wrote it); ``should_stop()`` before each step — True ends the member
    ``cancelled`` with a final checkpoint of where it got to. Bad input raises
    :class:`basin.errors.BasinError` subclasses before any training step.
    """
    from basin.evaluate import EVALUATORS
    from basin.opening import open_model

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = out_dir / member.name
    had_init = (out_dir / f"init-s{member.seed}" / TUNE_META).is_file()
    base_ref, init = ensure_init(spec, member.seed, resolver, out_dir)
    local = _WithLocal(resolver, {base_ref: init} if init is not None else {})
    if init is not None and not had_init and on_save is not None:
        on_save(0, init, {"family": spec.family, "seed": member.seed, "step": 0, "method": "init"})

    entry = task_entry(spec.task)
    opened = open_model(
        spec.task,
        [base_ref],
        local,
        dataset=spec.dataset,
        max_examples=10**9,
        seed=0,
        device=spec.device,
        dtype=spec.dtype,
        tokenizer=spec.tokenizer,
        lazy=False,
        parameters_only=True,
        only_moved=False,
    )
    opened.release()
    base_src = opened.first
    base_path = str(init.resolve()) if init is not None else str(base_src.config_dir)
    train_rows, held = split_rows(len(opened.data), spec, member.split)
    train = _subset(opened.data, train_rows)
    if spec.eval_dataset is not None:
        eval_data = load_dataset(
            resolver.dataset(spec.eval_dataset),
            spec.task,
            max_examples=spec.eval_max_examples,
            seed=0,
            **entry.dataset_options(opened.config),
        )
    else:
        eval_rows = (
            held
            if len(held) <= spec.eval_max_examples
            else sorted(random.Random(0).sample(held, spec.eval_max_examples))
        )
        eval_data = _subset(opened.data, eval_rows)

    device = opened.device
    model = apply_method(opened.model, member.method, spec.task, member.seed)
    batches = Batches(
        spec.task,
        opened.tokenizer,
        train,
        model,
        max_length=spec.max_length,
        batch_size=spec.batch_size,
        device=device,
    )
    if member.method.name in (
        "prefix",
        "prompt",
    ):  # peft checks the architecture at the first forward
        model.eval()
        try:
            with torch.inference_mode():
                model(**batches.collate([0]))
        except (ValueError, TypeError, AttributeError, RuntimeError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InvalidSpec(
                f"method {member.method.name} does not fit {type(opened.model).__name__}: {msg} "
                "(prefix tuning needs a model whose forward takes a key/value cache)"
            ) from None
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    ev_autocast = opened.autocast
    autocast = (
        torch.autocast(device_type=device.type, dtype=ev_autocast)
        if ev_autocast is not None
        else contextlib.nullcontext()
    )

    torch.manual_seed(member.seed)  # dropout masks
    gen = torch.Generator().manual_seed(member.order)
    opt = torch.optim.AdamW(params, lr=member.lr, weight_decay=spec.weight_decay)
    steps = spec.steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, (lambda s: max(0.0, 1.0 - s / steps)) if spec.schedule == "linear" else (lambda s: 1.0)
    )
    full = member.method.name == "full"
    copy_from = [base_src.config_dir, base_src.weights]
    checkpoints: list[tuple[int, Path]] = []
    carto_steps: list[int] = []
    carto_p: list[list[float]] = []
    carto_c: list[list[bool]] = []
    losses: list[float] = []
    seen = 0
    step = 0
    status: Literal["done", "cancelled"] = "done"

    def checkpoint(at: int, name: str) -> None:
        tags = {**member.tags, "step": at}
        meta = {
            "kind": "basin-tune",
            "member": member.name,
            "index": member.index,
            "tags": tags,
            "base": base_path,
            "peft": member.method.peft_class,
            "spec": spec.model_dump(mode="json"),
        }
        d = _save(
            model, folder / name, full=full, copy_from=copy_from, base_path=base_path, meta=meta
        )
        checkpoints.append((at, d))
        if on_save is not None:
            on_save(at, d, tags)

    def record(at: int) -> None:
        if spec.cartography and (not carto_steps or carto_steps[-1] != at):
            p, c = _gold_probabilities(model, batches, spec.batch_size)
            carto_steps.append(at)
            carto_p.append(p)
            carto_c.append(c)

    folder.mkdir(parents=True, exist_ok=True)
    load_s = time.perf_counter() - t_start
    t0, c0 = time.perf_counter(), time.process_time()
    model.train()
    while step < steps and status == "done":
        perm = torch.randperm(batches.n, generator=gen).tolist()
        for s in range(0, batches.n, spec.batch_size):
            if should_stop is not None and should_stop():
                status = "cancelled"
                break
            idx = perm[s : s + spec.batch_size]
            batch = batches.collate(idx)
            with autocast:
                loss = model(**batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if spec.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, spec.grad_clip)
            opt.step()
            sched.step()
            step += 1
            seen += len(idx)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise InvalidSpec(
                    f"member {member.name} diverged at step {step} (training loss {value}): "
                    f"lower its learning rate (now {member.lr})"
                )
            losses.append(value)
            if on_step is not None:
                on_step(step, value, seen)
            if spec.save_every and step % spec.save_every == 0 and step < steps:
                checkpoint(step, f"step-{step}")
                record(step)
            if step >= steps:
                break
        else:
            if not spec.save_every and step < steps:
                record(step)  # an epoch's end
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    model.eval()
    checkpoint(step, "final")
    record(step)

    ev = EVALUATORS[spec.task](
        opened.tokenizer,
        eval_data,
        model,
        batch_size=max(spec.batch_size, 32),
        max_length=spec.max_length,
        device=device,
        autocast_dtype=ev_autocast,
    )
    metrics = {k: float(v) for k, v in ev.evaluate(model).items()}
    carto_path = None
    if spec.cartography and carto_steps:
        from basin.tune.cartography import write_map

        carto_path = write_map(
            folder / "cartography.csv",
            carto_steps,
            train_rows,
            list(train.columns["label"]),
            carto_p,
            carto_c,
        )
    result = MemberResult(
        member=member,
        folder=folder,
        final=checkpoints[-1][1],
        checkpoints=checkpoints,
        base_ref=base_ref,
        init=init,
        losses=losses,
        metrics=metrics,
        cartography=carto_path,
        status=status,
        examples_seen=seen,
        train_examples=len(train),
        eval_examples=len(eval_data),
        trainable_parameters=n_trainable,
        timings={
            "load_s": load_s,
            "train_s": train_s,
            "examples_per_s": seen / train_s if train_s > 0 else 0.0,
            "train_cpu_s": train_cpu_s,  # this process's CPU seconds in the loop (a busy machine's clock)
            "total_s": time.perf_counter() - t_start,
        },
    )
    doc = result.to_dict(relative_to=folder)
    doc["eval"] = {
        "dataset": spec.eval_dataset or spec.dataset,
        "held_out_of_training_file": spec.eval_dataset is None,
        "rows": len(eval_data),
    }
    tmp = folder / (MEMBER_META + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, folder / MEMBER_META)
    del ev, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


__all__ = [
    "FFN_OUT",
    "MEMBER_META",
    "TUNE_META",
    "Batches",
    "MemberResult",
    "apply_method",
    "ensure_init",
    "enable_prefix",
    "family_labels",
    "ffn_output_modules",
    "initial_model",
    "peft_config",
    "split_rows",
    "train_member",
]
