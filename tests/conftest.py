"""Session fixtures shared by every test package: tiny real checkpoints, built once."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from tests import factories  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def classifier_family(tmp_path_factory) -> dict[str, Path]:
    """Tiny BERT classifiers: ``init`` (θ0), ``ft_a``/``ft_b``/``ft_c`` (seeds), ``ft_a-step*``, ``data``."""
    return factories.build_classifier_family(tmp_path_factory.mktemp("classifiers"))


@pytest.fixture(scope="session")
def lora_family(tmp_path_factory, classifier_family) -> dict[str, Path]:
    """PEFT adapters on the tiny classifier ``ft_a``: ``lora_a``/``lora_b``/``lora_c``, ``ia3``, ``base``, ``data``."""
    root = tmp_path_factory.mktemp("adapters")
    return factories.build_lora_family(root, classifier_family["ft_a"])


@pytest.fixture(scope="session")
def delta_family(tmp_path_factory, classifier_family) -> dict[str, Path]:
    """One task's delta-tuning solutions on the tiny ``init``: ``adapter`` (FFN LoRA), ``prompt``
    (prompt tuning), ``lora``, ``lora_2``; ``base``, ``train``, ``data`` (factories.build_delta_family)."""
    return factories.build_delta_family(tmp_path_factory.mktemp("delta"), classifier_family["init"])


@pytest.fixture(scope="session")
def gpt2_pair(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gpt2")
    return {
        "a": factories.build_gpt2(root / "a", seed=0, steps=5),
        "b": factories.build_gpt2(root / "b", seed=0, steps=0),
        "data": factories.write_lm_dataset(root / "lm.jsonl"),
    }


@pytest.fixture(scope="session")
def t5_pair(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("t5")
    return {
        "a": factories.build_t5(root / "a", seed=0),
        "b": factories.build_t5(root / "b", seed=1),
        "data": factories.write_seq2seq_dataset(root / "s2s.jsonl"),
    }


@pytest.fixture(scope="session")
def study_family(tmp_path_factory) -> dict[str, Path]:
    """A study's population (issue 26): ``seed_a``/``seed_b`` (one basin), ``permuted`` (seed_a's
    FFN neurons permuted: the same function, another basin), ``init``, ``data`` (256 rows)."""
    return factories.build_study_family(tmp_path_factory.mktemp("study"))
