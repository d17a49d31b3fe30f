"""Per-process caches of a worker: open landscapes and resident checkpoints.

A worker drains one run after another. Opening a :class:`basin.engine.Landscape`
loads checkpoints and tokenises the dataset; keeping the last few open means a
second task for the same run (or a rerun of the same spec) starts at once, and the
shared :class:`basin.checkpoints.CheckpointCache` keeps recently used state dicts
resident across different runs over the same checkpoints, up to ``BASIN_WORKER_CACHE_BYTES``
(least recently used first out; a checkpoint that does not fit is read tensor by tensor).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Any

logger = logging.getLogger(__name__)


#: default bound of a worker's checkpoint cache (``BASIN_WORKER_CACHE_BYTES``)
DEFAULT_CACHE_BYTES = 4 * 2**30


class LandscapeCache:
    """LRU of open landscapes keyed by the resolved spec (JSON), ``max_items`` resident, and the
    worker's checkpoint cache, bounded by ``checkpoint_bytes`` (LRU; ``0``: nothing kept, every
    checkpoint read tensor by tensor as the CLI reads it).

    ``get(spec, resolver)`` returns ``(landscape, load_seconds)``; ``load_seconds`` is 0.0
    on a hit. Evicted landscapes are closed — *before* a new one opens, so no more than
    ``max_items`` are ever open at once.
    """

    def __init__(self, max_items: int = 2, checkpoint_bytes: int = DEFAULT_CACHE_BYTES,
                 checkpoints: int | None = None):
        from basin.checkpoints import CheckpointCache

        self.max_items = max(1, max_items)
        # ``checkpoints``: an additional bound on their number (the cache's old only bound)
        self.checkpoints = CheckpointCache(checkpoints, max_bytes=checkpoint_bytes)
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(spec: Any) -> str:
        return json.dumps(spec.model_dump(mode="json"), sort_keys=True)

    def get(self, spec: Any, resolver: Any) -> tuple[Any, float]:
        from basin.engine import Landscape

        k = self.key(spec)
        with self._lock:
            land = self._items.get(k)
            if land is not None:
                self._items.move_to_end(k)
                return land, 0.0
            evicted = []
            while len(self._items) >= self.max_items:  # make room first: the new one's memory
                evicted.append(self._items.popitem(last=False)[1])
        for old in evicted:
            self._close(old)
        t0 = time.perf_counter()
        land = Landscape.open(spec, resolver, cache=self.checkpoints)
        load_s = time.perf_counter() - t0
        with self._lock:
            self._items[k] = land
            self._items.move_to_end(k)
            extra = []
            while len(self._items) > self.max_items:  # another thread opened one meanwhile
                extra.append(self._items.popitem(last=False)[1])
        for old in extra:
            self._close(old)
        logger.info("opened landscape in %.2f s (%d resident, checkpoint cache %.2f GB)", load_s,
                    len(self._items), self.checkpoints.nbytes / 1e9)
        return land, load_s

    @staticmethod
    def _close(land: Any) -> None:
        try:
            land.close()
        except Exception:  # closing is best effort; the next open does not depend on it
            logger.exception("closing an evicted landscape failed")

    def clear(self) -> None:
        with self._lock:
            items = list(self._items.values())
            self._items.clear()
        for land in items:
            try:
                land.close()
            except Exception:
                logger.exception("closing a landscape failed")
