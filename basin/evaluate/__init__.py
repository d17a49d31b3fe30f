"""Evaluators per task (:data:`EVALUATORS`, from each task's entry in :mod:`basin.tasks`) and tokenizer loading."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from basin.checkpoints import has_tokenizer
from basin.errors import CheckpointError
from basin.evaluate.base import Evaluator
from basin.tasks import TASKS

logger = logging.getLogger(__name__)

#: task → its evaluator class (a task's entry names it).
EVALUATORS: dict[str, type[Evaluator]] = {t: e.evaluator_class() for t, e in TASKS.items()}


def load_tokenizer(directories: list[Path]) -> Any:
    """The tokenizer of the first directory that has one; :class:`CheckpointError` if none does."""
    from transformers import AutoTokenizer

    for d in directories:
        if has_tokenizer(d):
            try:
                tok = AutoTokenizer.from_pretrained(str(d))
            except (OSError, ValueError, KeyError) as e:
                raise CheckpointError(f"cannot load the tokenizer in {d}: {e}") from None
            if tok.pad_token_id is None and tok.eos_token_id is not None:
                tok.pad_token = tok.eos_token  # padding is masked out; any id works
            return tok
    raise CheckpointError(
        "no tokenizer found: none of the checkpoints (or their config directories) has tokenizer "
        f"files ({', '.join(str(d) for d in directories[:3])}); set 'tokenizer' in the spec"
    )


__all__ = ["EVALUATORS", "Evaluator", "load_tokenizer"]
