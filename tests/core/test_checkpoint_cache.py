"""The workers' checkpoint cache is bounded by bytes (LRU), and runs give the same points whatever it holds.

``CheckpointCache(max_bytes=…)`` keeps the most recently used state dicts within its bound;
a run opens checkpoints with ``lookup``: resident on a hit, loaded and kept when it fits beside
what the run already holds, otherwise read tensor by tensor (as the CLI reads). The worker's
:class:`workers.cache.LandscapeCache` closes an evicted landscape before it opens the next.
"""

from __future__ import annotations

from basin import FileResolver, Landscape
from basin.checkpoints import CheckpointCache, LazyStateDict, checkpoint_bytes, state_bytes
from basin.resolve import CheckpointSource
from tests.core import helpers

PLANE = {"type": "plane", "a": "ft_a", "b": "ft_b", "c": "ft_c", "resolution": [2, 2]}


def _spec(path, **kw):
    return helpers.cpu_spec({"path": path, "dataset": "eval.csv", "max_examples": 8, **kw})


def _points(fam, path, cache=None) -> list[dict]:
    land = Landscape.open(_spec(path), FileResolver(fam["data"].parent), cache=cache)
    try:
        return [land.measure(p) for p in land.points()]
    finally:
        land.close()


def test_cache_evicts_by_bytes_in_lru_order(classifier_family):
    a, b, c = (CheckpointSource.from_path(classifier_family[k]) for k in ("ft_a", "ft_b", "ft_c"))
    one = checkpoint_bytes(a)
    assert one == state_bytes(
        CheckpointCache().get(a)
    )  # the header's estimate is what loading holds
    cache = CheckpointCache(max_bytes=int(2.5 * one))
    cache.get(a)
    cache.get(b)
    assert cache.keys() == [a.id, b.id] and cache.nbytes == 2 * one
    cache.get(a)  # a is now the most recent
    cache.get(c)  # over the bound: b, least recently used, goes
    assert cache.keys() == [a.id, c.id] and cache.evictions == 1
    assert cache.nbytes <= cache.max_bytes
    cache.get(b)  # and now a
    assert cache.keys() == [c.id, b.id]
    assert cache.nbytes <= cache.max_bytes


def test_a_checkpoint_over_the_bound_is_read_lazily_and_not_kept(classifier_family):
    a = CheckpointSource.from_path(classifier_family["ft_a"])
    cache = CheckpointCache(max_bytes=checkpoint_bytes(a) - 1)
    assert isinstance(cache.lookup(a), LazyStateDict) and len(cache) == 0
    assert (
        isinstance(cache.get(a), dict) and len(cache) == 0
    )  # get() gives it whole, still not kept


def test_runs_give_identical_points_whatever_the_cache_holds(classifier_family):
    lazy = _points(classifier_family, PLANE)  # the CLI: no cache
    a = CheckpointSource.from_path(classifier_family["ft_a"])
    one = checkpoint_bytes(a)
    # room for one checkpoint: the run keeps θA and reads θB, θC lazily (it never evicts what it holds)
    small = CheckpointCache(max_bytes=int(1.5 * one))
    assert _points(classifier_family, PLANE, small) == lazy
    assert small.keys() == [a.id] and small.nbytes <= small.max_bytes
    # a cache with room for two: a run over other checkpoints evicts θA, least recently used
    two = CheckpointCache(max_bytes=int(2.5 * one))
    assert _points(classifier_family, PLANE, two) == lazy
    linear = {"type": "linear", "a": "init", "b": "ft_b", "points": 3}
    _points(classifier_family, linear, two)
    assert a.id not in two and two.nbytes <= two.max_bytes
    # after the eviction the plane again gives the same points (θA read again)
    assert _points(classifier_family, PLANE, two) == lazy
    assert two.nbytes <= two.max_bytes and two.evictions >= 1


def test_the_worker_closes_an_evicted_landscape_before_opening_the_next(
    classifier_family, monkeypatch
):
    from workers.cache import LandscapeCache

    resolver = FileResolver(classifier_family["data"].parent)
    cache = LandscapeCache(max_items=1, checkpoint_bytes=0)
    first, _ = cache.get(_spec(PLANE), resolver)
    seen = []
    real = Landscape.open.__func__

    def watching(cls, *args, **kw):
        seen.append(first._closed)
        return real(cls, *args, **kw)

    monkeypatch.setattr(Landscape, "open", classmethod(watching))
    second, _ = cache.get(
        _spec({"type": "linear", "a": "ft_a", "b": "ft_b", "points": 3}), resolver
    )
    assert seen == [True]  # the first was closed before the second opened
    assert len(cache.checkpoints) == 0  # a zero bound keeps nothing: every checkpoint read lazily
    monkeypatch.undo()
    with Landscape.open(
        _spec({"type": "linear", "a": "ft_a", "b": "ft_b", "points": 3}), resolver
    ) as cli:
        assert second.evaluate({"alpha": 0.5}) == cli.evaluate({"alpha": 0.5})
    cache.clear()
    assert second._closed


def test_worker_cache_bytes_setting_reads_sizes(monkeypatch):
    from service.settings import Settings

    monkeypatch.setenv("BASIN_WORKER_CACHE_BYTES", "8GiB")
    assert int(Settings().worker_cache_bytes) == 8 * 2**30
    monkeypatch.setenv("BASIN_WORKER_CACHE_BYTES", "0")
    assert int(Settings().worker_cache_bytes) == 0
