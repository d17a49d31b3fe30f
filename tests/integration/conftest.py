"""Integration fixtures: a store of tiny real checkpoints and the real stack over it.

One stack (real redis-server, two real Celery workers with the solo pool, uvicorn) is
shared by the tests of the session; tests that must break it (flush Redis) start
their own. Every test here is marked ``integration``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.store import Store
from tests import factories
from tests.stack import Stack, running_stack

LEASE_SECONDS = 3


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def store_root(tmp_path_factory, classifier_family) -> Path:
    """A store with ``init``, ``ft_a``, ``ft_b``, ``ft_c``, ``wide`` (3 labels: incompatible head),
    datasets ``eval.csv`` (64 rows) and ``big.csv`` (1500 rows, for slow points); for generation
    ``lm_init``, ``lm_neg``, ``lm_pos`` (tiny GPT-2s), ``scorer`` (labels negative / positive), ``prompts.csv``
    (6 prompts) and ``many-prompts.csv`` (40)."""
    root = tmp_path_factory.mktemp("service") / "store"
    store = Store(root)
    for name in ("init", "ft_a", "ft_b", "ft_c"):
        store.add_checkpoint_dir(classifier_family[name], name=name, tags={"task": "sentiment"})
    tok = factories.make_tokenizer("bert")
    wide = factories.save(factories.init_classifier(0, num_labels=3), root.parent / "wide", tok)
    store.add_checkpoint_dir(wide, name="wide")
    store.add_dataset(classifier_family["data"], name="eval.csv")
    big = factories.write_classification_dataset(root.parent / "big.csv", n=1500, seed=5)
    store.add_dataset(big, name="big.csv")
    # generation (issue 9): two LMs tuned towards negative / positive words, a named-label scorer
    lm = factories.build_sentiment_pair(root.parent / "lm", kind="gpt2")
    for name in ("init", "neg", "pos", "scorer"):
        store.add_checkpoint_dir(lm[name], name=f"lm_{name}" if name != "scorer" else "scorer")
    store.add_dataset(lm["prompts"], name="prompts.csv")
    store.add_dataset(factories.write_prompts(root.parent / "many-prompts.csv", n=40), name="many-prompts.csv")
    return root


@pytest.fixture(scope="session")
def stack(store_root) -> Stack:
    """The shared stack: two workers, short leases, API only (the dashboard has its own tests),
    with the worker hook (``stack.seam``: hold a worker inside a point)."""
    seam = store_root.parent / "seam"
    with running_stack(
        store_root, workers=2, lease_seconds=LEASE_SECONDS, ui=False, seam=seam
    ) as s:
        yield s


@pytest.fixture
def fresh_store(store_root, tmp_path) -> Path:
    """A private copy of the store (for a stack of the test's own)."""
    dst = tmp_path / "store"
    shutil.copytree(store_root, dst, ignore=shutil.ignore_patterns("runs", "tmp"))
    return dst


def queue_unchecked(stack: Stack, spec: dict) -> str:
    """Queue ``spec`` (store names) without the API's checks, as the fit worker queues its
    evaluation runs: for the worker's own failures, which Check now refuses up front."""
    import redis

    from basin.spec import parse_spec
    from service.runstate.create import create_run

    store = Store(stack.store)
    names: dict[str, str] = {}

    def ck(ref: str) -> str:
        m = store.get_checkpoint(ref)
        names[m["id"]] = ref
        return m["id"]

    def ds(ref: str) -> str:
        m = store.get_dataset(ref)
        names[m["id"]] = ref
        return m["id"]

    resolved = parse_spec(spec).map_refs(ck, ds)
    return create_run(redis.Redis.from_url(stack.redis_url, decode_responses=True), resolved,
                      redis_url=stack.redis_url, queue="basin", names=names)


def linear_spec(points: int = 5, **kw) -> dict:
    spec = {
        "path": {"type": "linear", "a": "ft_a", "b": "ft_b", "points": points},
        "dataset": "eval.csv",
        "max_examples": 32,
        "batch_size": 16,
    }
    spec.update(kw)
    return spec


def plane_spec(res: int = 3, **kw) -> dict:
    spec = {
        "path": {"type": "plane", "a": "ft_a", "b": "ft_b", "c": "ft_c", "resolution": [res, res]},
        "dataset": "eval.csv",
        "max_examples": 32,
        "batch_size": 16,
    }
    spec.update(kw)
    return spec
