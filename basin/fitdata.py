"""Which examples a curve fit trains on and which it is evaluated on — never the same ones
unless asked.

A fit (:class:`basin.fit.FitSpec`) trains its control point on ``dataset`` and is then
evaluated (the straight line and the fitted curve) on ``eval_dataset`` — by default the
same file. A curve fitted on the examples it is evaluated on reports a training loss: on
the MiniLM demo, a curve fitted on the 256 evaluation tweets had loss 0.03 in the middle
against 0.37 and 0.42 at the checkpoints, a path "ten times better" than either fine-tune
(issue 23). So:

- the examples are compared by content: sha256 of each example's task fields (text, text
  pair, label for classification; text for language models; source and target for
  seq2seq), for the examples the fit actually uses (after ``max_examples`` subsampling)
  and the ones its evaluation uses (``eval_max_examples``, the same seed);
- ``holdout: true`` trains on the rows of ``dataset`` that are *not* among the evaluation's
  examples (a seeded split of one file: the evaluation's seeded subsample is held out, the
  fit draws its ``max_examples`` from the rest);
- a fit whose training and evaluation examples still overlap is refused
  (:class:`basin.errors.InvalidSpec`, with the count and what to do) unless
  ``allow_overlap: true``.

:func:`fit_data` is what :func:`basin.fit.fit` trains on; :func:`check_fit_data` is the
same check without the training data, for the API to refuse a spec before queueing it.
No torch at import: the dashboard uses :func:`train_split_name`.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from basin.data import REQUIRED, Dataset, load_dataset, read_rows
from basin.errors import DatasetError, InvalidSpec
from basin.resolve import Resolver

if TYPE_CHECKING:
    from basin.fitspec import FitSpec

#: Words in a dataset's name that mark its split, and the training split's word.
SPLIT_WORDS = ("eval", "evaluation", "test", "val", "valid", "validation", "dev", "heldout")
TRAIN_WORDS = ("train", "training")


def example_hashes(data: Dataset) -> list[str]:
    """sha256 of each example's task fields (the columns the task reads; labels as mapped)."""
    cols = [c for c in (*REQUIRED[data.task], "text_pair") if c in data.columns]
    out = []
    for i in range(len(data)):
        doc = json.dumps([[c, data.columns[c][i]] for c in cols], ensure_ascii=False)
        out.append(hashlib.sha256(doc.encode("utf-8")).hexdigest())
    return out


@dataclass
class FitData:
    """A fit's training examples and how they relate to its evaluation's."""

    train: Dataset
    eval_examples: int
    overlap: int  #: training examples that are also evaluation examples (by content)
    held_out: int  #: rows of the training file left out because the evaluation uses them

    def describe(self) -> dict[str, Any]:
        return {
            "train_examples": len(self.train),
            "eval_examples": self.eval_examples,
            "overlap": self.overlap,
            "held_out": self.held_out,
        }


def _labels(spec: FitSpec, resolver: Resolver) -> dict[str, Any]:
    if spec.task != "classification":
        return {}
    # torch: not at import (the dashboard imports this module)
    from basin.checkpoints import label_info, read_config

    config = read_config(resolver.checkpoint(spec.a).config_dir)
    num, label2id = label_info(config)
    return {"label2id": label2id, "num_labels": num}


def _subset(data: Dataset, keep: Sequence[int]) -> Dataset:
    return Dataset(
        path=data.path,
        sha256=data.sha256,
        task=data.task,
        columns={c: [v[i] for i in keep] for c, v in data.columns.items()},
        num_rows_total=data.num_rows_total,
    )


def _load(
    path: Path, spec: FitSpec, max_examples: int, labels: dict[str, Any], what: str
) -> Dataset:
    ref = spec.dataset if what.startswith("training") else (spec.eval_dataset or spec.dataset)
    try:
        data = load_dataset(path, spec.task, max_examples=max_examples, seed=spec.seed, **labels)
    except DatasetError:
        if (
            path.is_file() and not read_rows(path)[1]
        ):  # header only reads as "no columns": say what it is
            raise DatasetError(
                f"{what} {ref!r} has no rows: a fit needs {what.split()[0]} data"
            ) from None
        raise
    if len(data) == 0:
        raise DatasetError(f"{what} {ref!r} has no rows: a fit needs {what.split()[0]} data")
    return data


def fit_data(spec: FitSpec, resolver: Resolver) -> FitData:
    """The examples ``spec`` trains on (``max_examples`` of ``dataset``, without the
    evaluation's when ``holdout``), checked against its evaluation's examples: raises
    :class:`InvalidSpec` when they overlap and ``allow_overlap`` is not set, or when
    ``holdout`` leaves no training rows; :class:`DatasetError` for a missing or empty file."""
    labels = _labels(spec, resolver)
    train_path = resolver.dataset(spec.dataset)
    eval_ref = spec.eval_dataset or spec.dataset
    eval_path = resolver.dataset(eval_ref)
    evals = _load(eval_path, spec, spec.eval_size, labels, "evaluation dataset")
    held = set(example_hashes(evals))
    if spec.holdout:
        everything = _load(train_path, spec, 2**62, labels, "training dataset")
        rows = [i for i, h in enumerate(example_hashes(everything)) if h not in held]
        held_out = len(everything) - len(rows)
        if not rows:
            raise InvalidSpec(
                f"invalid fit spec: holdout leaves no training rows: all {len(everything)} rows of "
                f"{spec.dataset!r} are among the {len(evals)} evaluation examples (eval_max_examples "
                f"{spec.eval_size}); lower eval_max_examples or give a training dataset"
            )
        if len(rows) > spec.max_examples:
            rows = sorted(random.Random(spec.seed).sample(rows, spec.max_examples))
        train = _subset(everything, rows)
        return FitData(train=train, eval_examples=len(evals), overlap=0, held_out=held_out)
    train = _load(train_path, spec, spec.max_examples, labels, "training dataset")
    overlap = sum(1 for h in example_hashes(train) if h in held)
    if overlap and not spec.allow_overlap:
        same = "the same file" if train_path.resolve() == eval_path.resolve() else "these files"
        raise InvalidSpec(
            f"invalid fit spec: {overlap} of the fit's {len(train)} training examples are also among "
            f"its {len(evals)} evaluation examples ({same}: dataset {spec.dataset!r}, eval_dataset "
            f"{eval_ref!r}): a curve fitted on the examples it is evaluated on reports a training "
            "loss. Give a training split as dataset and held-out data as eval_dataset, set "
            "holdout: true to train on the rows the evaluation does not use, or allow_overlap: true "
            "to fit and evaluate on the same examples anyway"
        )
    return FitData(train=train, eval_examples=len(evals), overlap=overlap, held_out=0)


def check_fit_data(spec: FitSpec, resolver: Resolver) -> dict[str, Any]:
    """:func:`fit_data`'s checks (the API runs them before queueing a fit); returns its
    :meth:`FitData.describe`."""
    return fit_data(spec, resolver).describe()


def _tokens(stem: str) -> list[str]:
    return re.split(r"([^A-Za-z0-9]+)", stem)


def train_split_name(name: str, available: Iterable[str]) -> str | None:
    """The training split beside an evaluation dataset, by name: the same name with its split
    word (``eval``, ``test``, ``val``, ``dev``, …) replaced by ``train`` / ``training`` (any
    case, as a whole word between separators: ``tweets-eval.csv`` → ``tweets-train.csv``,
    ``sst2_validation.jsonl`` → ``sst2_train.jsonl``); ``None`` when none is in
    ``available``."""
    have = {a.lower(): a for a in available}
    stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
    parts = _tokens(stem)
    for i, part in enumerate(parts):
        if part.lower() not in SPLIT_WORDS:
            continue
        for word in TRAIN_WORDS:
            cand = "".join(parts[:i] + [word] + parts[i + 1 :]) + (dot + ext if dot else "")
            if cand.lower() in have and cand.lower() != name.lower():
                return have[cand.lower()]
    return None


__all__ = ["FitData", "check_fit_data", "example_hashes", "fit_data", "train_split_name"]
