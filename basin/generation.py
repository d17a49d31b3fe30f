"""Generation runs, the parts that need no model: the scorer's positive label, the checks made before any worker
starts, and the pieces of sampling and scoring that are plain Python (row seeds, distinct-n).

The API validates a generation spec with these (reading only the scorer's config.json and
the dataset's manifest); :mod:`basin.evaluate.generation` samples and scores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
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


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams of lower-cased whitespace words over ``texts`` (0 when none)."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for t in texts:
        words = t.lower().split()
        for i in range(len(words) - n + 1):
            seen.add(tuple(words[i : i + n]))
            total += 1
    return len(seen) / total if total else 0.0


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


__all__ = ["POSITIVE_NAMES", "check_prompts", "distinct_n", "positive_index", "row_seed"]
