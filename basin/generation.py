"""Generation runs, the parts that need no model: the scorer's positive label, the checks made before any worker
starts, and the pieces of sampling and scoring that are plain Python (row seeds, distinct-n).

The API validates a generation spec with these (reading only the scorer's config.json and
the dataset's manifest); :mod:`basin.evaluate.generation` samples and scores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from basin.errors import InvalidSpec

if TYPE_CHECKING:
    from basin.spec import RunSpec

#: Label names counted as positive when ``positive_label`` is not given (case-insensitive).
POSITIVE_NAMES = ("positive", "pos")


def positive_index(config: dict[str, Any], positive_label: str | None, *, scorer: str = "the scorer") -> int:
    """Index of the positive class of a classifier's config (its ``id2label``); :class:`InvalidSpec` when none fits.

    ``positive_label`` names it (case-insensitive); otherwise the label named ``positive``
    or ``pos``. ``LABEL_0``/``LABEL_1`` (a head nobody named; ``transformers`` leaves them
    out of ``config.json``) is refused: which one is positive cannot be known.
    """
    from basin.checkpoints import label_info

    labels = {i: name for name, i in label_info(config)[1].items()}
    if len(labels) < 2:
        raise InvalidSpec(f"{scorer} is not a classifier with two or more labels (labels: {labels or 'none'})")
    wanted = [positive_label.lower()] if positive_label else list(POSITIVE_NAMES)
    for name in wanted:
        hits = [i for i, v in sorted(labels.items()) if v.lower() == name]
        if hits:
            return hits[0]
    shown = ", ".join(repr(v) for _, v in sorted(labels.items()))
    if positive_label:
        raise InvalidSpec(f"generation.positive_label {positive_label!r} is not one of {scorer}'s labels ({shown})")
    raise InvalidSpec(
        f"{scorer} has labels {shown}, none named 'positive': set generation.positive_label to the label "
        "that means positive sentiment (or name the labels in the checkpoint's config.json id2label)"
    )


#: Label names scored 0.5 (half-way between negative and positive) when ``label_scores`` is not given.
NEUTRAL_NAMES = ("neutral", "neu")


def label_weights(config: dict[str, Any], positive_label: str | None, label_scores: Mapping[str, float] | None = None,
                  *, scorer: str = "the scorer") -> tuple[list[float], dict[str, float]]:
    """The score ``s(c)`` of each class ``c`` of a sentiment classifier: ``sentiment`` is the expected score
    E[s] = Σ_c P(c | text)·s(c) (001 appendix A.1 scores with a three-class model and uses "the expectation
    of positive sentiment").

    ``label_scores`` names them ({label: score}, case-insensitive; labels not named score 0). Without it:
    the positive label (:func:`positive_index`) scores 1, a label named ``neutral``/``neu`` 0.5, every other
    label 0 — so for a two-class scorer E[s] = P(positive). Returns (scores in class-index order,
    ``{label name: score}`` for the summary); :class:`InvalidSpec` when a name is not one of the labels.
    """
    from basin.checkpoints import label_info

    labels = {i: name for name, i in label_info(config)[1].items()}
    order = [labels[i] for i in sorted(labels)]
    if label_scores:
        if len(labels) < 2:
            raise InvalidSpec(f"{scorer} is not a classifier with two or more labels (labels: {labels or 'none'})")
        lower = {v.lower(): v for v in order}
        unknown = [k for k in label_scores if k.lower() not in lower]
        if unknown:
            shown = ", ".join(repr(v) for v in order)
            raise InvalidSpec(f"generation.label_scores names {unknown}, not among {scorer}'s labels ({shown})")
        given = {k.lower(): float(v) for k, v in label_scores.items()}
        weights = [given.get(v.lower(), 0.0) for v in order]
    else:
        pos = positive_index(config, positive_label, scorer=scorer)
        weights = [1.0 if i == pos else 0.5 if labels[i].lower() in NEUTRAL_NAMES else 0.0 for i in sorted(labels)]
    return weights, dict(zip(order, weights, strict=True))


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams of lower-cased whitespace words, pooled over ``texts`` (0 when none):
    ``distinct_n_pooled``. Basin's ``distinct_n`` metric is :func:`distinct_n_per_prompt`."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for t in texts:
        words = t.lower().split()
        for i in range(len(words) - n + 1):
            seen.add(tuple(words[i : i + n]))
            total += 1
    return len(seen) / total if total else 0.0


def distinct_n_per_prompt(groups: Sequence[Sequence[str]], n: int) -> float:
    """distinct-n as DExperts (Liu et al. 2021) and 001 compute it: for each prompt, distinct n-grams /
    all n-grams over *its* samples; then the mean over prompts (prompts with no n-gram left out; 0 when
    none has one). Pooling over every prompt's samples instead (:func:`distinct_n`) counts an n-gram two
    prompts share once and is much lower on many prompts, so it cannot be compared with the papers'."""
    per = []
    for texts in groups:
        words = [t.lower().split() for t in texts]
        grams = [tuple(w[i : i + n]) for w in words for i in range(len(w) - n + 1)]
        if grams:
            per.append(len(set(grams)) / len(grams))
    return sum(per) / len(per) if per else 0.0


def row_seed(seed: int, coords: dict[str, float], prompt: int, sample: int) -> int:
    """The seed of row (prompt, sample) at a point: sha256 of the seed, exact coordinates and row."""
    where = ",".join(f"{k}={float(v).hex()}" for k, v in sorted(coords.items()))
    digest = hashlib.sha256(f"{seed}|{where}|{prompt}|{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def check_prompts(spec: RunSpec, columns: Sequence[str], rows: int, *, max_tokens: int | None = None) -> None:
    """The prompts dataset fits the spec, and the run's sampling budget fits ``max_tokens``.

    ``columns`` / ``rows``: the prompts dataset's (the run's dataset for task generation,
    ``generation.prompts`` for causal_lm). Budget = samples per prompt × prompts × max new
    tokens (prompts = min(rows, max_examples)). :class:`InvalidSpec` names what to change.
    """
    gen = spec.generation
    if gen is None:
        return
    if "prompt" not in columns:
        if "text" not in columns:
            raise InvalidSpec(f"invalid spec: the prompts dataset has no 'prompt' column (found {list(columns)})")
        if gen.prompt_tokens is None:
            raise InvalidSpec(
                "invalid spec: the prompts dataset has no 'prompt' column: set generation.prompt_tokens to cut "
                "its 'text' column to its first N tokens"
            )
    if max_tokens is not None:
        prompts = min(rows, spec.max_examples)
        budget = gen.samples_per_prompt * prompts * gen.max_new_tokens
        if budget > max_tokens:
            raise InvalidSpec(
                f"invalid spec: generation: {gen.samples_per_prompt} samples × {prompts} prompts × "
                f"{gen.max_new_tokens} new tokens = {budget} tokens per point, over this server's limit of "
                f"{max_tokens} (BASIN_MAX_GENERATED_TOKENS): fewer prompts (max_examples), samples or tokens"
            )


__all__ = ["NEUTRAL_NAMES", "POSITIVE_NAMES", "check_prompts", "distinct_n", "distinct_n_per_prompt", "label_weights",
           "positive_index", "row_seed"]
