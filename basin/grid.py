"""Grids of points and the coarse-to-fine order they are evaluated in.

A run's points live on a regular grid: ``n`` values of α for 1D paths, an
``nx × ny`` grid for planes. Each point has a flat ``index`` (row-major for 2D:
``index = iy * nx + ix``). Evaluating in coarse-to-fine order (endpoints, midpoint,
quarters, ...; successive halving of a 2D grid) means a useful picture appears
after a few points. Pure functions: the API orders a run's todo list with them
before any checkpoint is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence


def linspace(lo: float, hi: float, n: int) -> list[float]:
    """``n`` evenly spaced values on ``[lo, hi]``, both ends included."""
    if n == 1:
        return [float(lo)]
    step = (hi - lo) / (n - 1)
    return [lo + i * step for i in range(n - 1)] + [float(hi)]


def order_1d(n: int) -> list[int]:
    """Indices ``0..n-1`` coarse to fine: both ends, then midpoints of ever finer halvings.

    >>> order_1d(5)
    [0, 4, 2, 1, 3]
    """
    if n <= 0:
        return []
    if n == 1:
        return [0]
    out = [0, n - 1]
    seen = set(out)
    step: float = n - 1  # halved below: a float from then on
    while step > 1:
        half = step / 2
        k = half
        while k < n - 1:
            i = int(round(k))
            if i not in seen:
                seen.add(i)
                out.append(i)
            k += step
        step = half
    out.extend(i for i in range(n) if i not in seen)  # rounding leftovers
    return out


def order_2d(nx: int, ny: int) -> list[int]:
    """Flat indices of an ``nx × ny`` grid by successive halving (row-major flat index).

    Level 0 is the four corners; each level halves the spacing in both axes and adds
    the grid nodes not seen yet, so every prefix covers the plane evenly.
    """
    ox, oy = order_1d(nx), order_1d(ny)
    rank_x = {i: r for r, i in enumerate(ox)}
    rank_y = {j: r for r, j in enumerate(oy)}

    def level(rank: int) -> int:
        # ranks 0,1 are the ends (level 0); then 1 at level 1, 2 at level 2, 4 at level 3...
        return 0 if rank < 2 else (rank - 1).bit_length()

    cells = [(ix, iy) for iy in range(ny) for ix in range(nx)]
    cells.sort(key=lambda c: (max(level(rank_x[c[0]]), level(rank_y[c[1]])), rank_y[c[1]], rank_x[c[0]]))
    return [iy * nx + ix for ix, iy in cells]


def unflatten(index: int, shape: Sequence[int]) -> tuple[int, ...]:
    """Flat index → grid position; ``shape`` is ``(n,)`` or ``(nx, ny)``."""
    if len(shape) == 1:
        return (index,)
    nx, _ = shape
    return (index % nx, index // nx)
