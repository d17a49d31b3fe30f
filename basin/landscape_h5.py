"""A run's surface in the HDF5 layout of Li et al.'s ``loss-landscape`` code, for its plotting
(``plot_2D.py``, ``plot_1D.py``) and ParaView (``h52vtp.py``) scripts.

Their ``plot_surface.py`` writes one ``.h5`` "surface file"; their scripts read:

==================  ==========================  ==========================================
``xcoordinates``    ``(nx,)`` float64           the grid's x values (α on a 1D path)
``ycoordinates``    ``(ny,)`` float64           planes only: the grid's y values
``train_loss``      ``(ny, nx)`` / ``(nx,)``    Basin's ``loss`` (mean per example, nats)
``train_acc``       same                        Basin's ``accuracy`` **in percent** (their
                                                plots draw 0-100 and ``100 - train_acc``);
                                                only for runs that measure accuracy
==================  ==========================  ==========================================

A plane's arrays are indexed ``[iy, ix]``: ``plot_2D.py`` contours them against
``np.meshgrid(x, y)`` and ``h52vtp.py`` ravels them in that order (y outer, x inner), which is
the order of Basin's flat point index (``iy * nx + ix``). A 1D run (a line, a curve, a
trajectory) gets their 1D layout: ``xcoordinates`` and ``(nx,)`` arrays (``plot_1D.py``).

Besides, every metric the run measured is written under its own Basin name (``loss``,
``accuracy`` as a fraction, ``perplexity``...), its 95 % interval as ``<metric>_lo`` /
``<metric>_hi`` where the run has one. A grid point not evaluated (an adaptive run's skipped
points, a run still going) or a diverged metric is NaN. The file's attributes say where it
came from: ``basin_run`` (the run id, when the document has one), ``basin_path`` (the path
type), ``basin_spec`` (the spec as JSON), ``basin_coords`` (the coordinate names).

Their ``h52vtp.py`` assumes a square grid (``nx == ny``); ``plot_2D.py`` does not.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

from basin.errors import BasinError

#: Basin metric → the name Li et al.'s scripts read, and the factor to apply.
LI_NAMES: dict[str, tuple[str, float]] = {
    "loss": ("train_loss", 1.0),
    "accuracy": ("train_acc", 100.0),
}


class ExportError(BasinError):
    """The run cannot be written in this layout (no points, not a grid)."""


def _grid_shape(doc: dict[str, Any]) -> tuple[str, tuple[int, ...]]:
    """``(path type, shape)``: ``(n,)`` for 1D paths, ``(nx, ny)`` for planes."""
    from basin.paths import path_class

    raw_spec, raw_path = doc.get("spec"), None
    spec: dict[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}
    raw_path = spec.get("path")
    path: dict[str, Any] = raw_path if isinstance(raw_path, dict) else {}
    ptype = str(path.get("type") or "")
    try:
        cls = path_class(ptype)
    except Exception:
        raise ExportError(
            f"the run's path type {ptype!r} is unknown: cannot lay out its grid"
        ) from None
    fields = {**cls.defaults(), **path}
    try:
        if cls.ndim == 1:
            return ptype, (int(fields["points"]),)
        nx, ny = (int(n) for n in fields["resolution"])
        return ptype, (nx, ny)
    except (KeyError, TypeError, ValueError):
        raise ExportError(f"the run's {ptype} path has no readable grid size") from None


def _axis(known: dict[int, float], n: int, name: str) -> list[float]:
    """The ``n`` values of a linspace axis from the ones seen at some indices (an adaptive
    run may not have evaluated every column): exact where seen, else from the spacing."""
    if not known:
        raise ExportError(f"no evaluated point gives the {name} axis")
    if len(known) == n:
        return [known[i] for i in range(n)]
    if len(known) == 1:
        if n == 1:
            return [next(iter(known.values()))]
        raise ExportError(
            f"only one {name} value of {n} was evaluated so far: the axis is not known yet"
        )
    (i0, v0), (i1, v1) = min(known.items()), max(known.items())
    step = (v1 - v0) / (i1 - i0)
    return [known.get(i, v0 + (i - i0) * step) for i in range(n)]


def _value(v: Any, factor: float = 1.0) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f * factor if math.isfinite(f) else math.nan


def surface_arrays(doc: dict[str, Any]) -> dict[str, Any]:
    """The datasets of the surface file as numpy arrays (see the module doc), plus
    ``"_attrs"``: the file's attributes. Raises :class:`ExportError` for a run without
    points or whose grid cannot be read."""
    import numpy as np

    ptype, shape = _grid_shape(doc)
    points = [p for p in doc.get("points") or [] if isinstance(p, dict)]
    if not points:
        raise ExportError("the run has no evaluated points yet: nothing to export")
    nx = shape[0]
    ny = shape[1] if len(shape) == 2 else 1
    xs: dict[int, float] = {}
    ys: dict[int, float] = {}
    metrics: list[str] = []
    bounded: list[str] = []
    for p in points:
        metrics += [m for m in p.get("metrics") or {} if m not in metrics]
        bounded += [m for m in p.get("intervals") or {} if m not in bounded]
    grid_shape = (ny, nx) if len(shape) == 2 else (nx,)
    arrays: dict[str, Any] = {m: np.full(grid_shape, np.nan) for m in metrics}
    for m in bounded:
        arrays[f"{m}_lo"] = np.full(grid_shape, np.nan)
        arrays[f"{m}_hi"] = np.full(grid_shape, np.nan)
    for p in points:
        idx, coords = int(p["index"]), p.get("coords") or {}
        if not 0 <= idx < nx * ny:
            raise ExportError(f"point {idx} lies outside the run's {nx} × {ny} grid")
        ix, iy = idx % nx, idx // nx
        where: tuple[int, ...] = (iy, ix) if len(shape) == 2 else (ix,)
        if len(shape) == 2:
            xs[ix], ys[iy] = float(coords["x"]), float(coords["y"])
        else:
            xs[ix] = float(coords.get("alpha", next(iter(coords.values()), math.nan)))
        for m, v in (p.get("metrics") or {}).items():
            arrays[m][where] = _value(v)
        for m, iv in (p.get("intervals") or {}).items():
            if isinstance(iv, (list, tuple)) and len(iv) == 2:
                arrays[f"{m}_lo"][where], arrays[f"{m}_hi"][where] = _value(iv[0]), _value(iv[1])
    out: dict[str, Any] = {
        "xcoordinates": np.asarray(_axis(xs, nx, "x" if len(shape) == 2 else "α"))
    }
    if len(shape) == 2:
        out["ycoordinates"] = np.asarray(_axis(ys, ny, "y"))
    for basin_name, (li_name, factor) in LI_NAMES.items():
        if basin_name in arrays:
            out[li_name] = arrays[basin_name] * factor
    for m, a in arrays.items():
        out.setdefault(m, a)
    spec = doc.get("spec") or {}
    out["_attrs"] = {
        "basin_path": ptype,
        "basin_coords": "x,y" if len(shape) == 2 else "alpha",
        "basin_spec": json.dumps(spec, default=str),
        **({"basin_run": str(doc["id"])} if doc.get("id") else {}),
    }
    return out


def write_surface_h5(doc: dict[str, Any], target: Path | io.BytesIO) -> None:
    """Write the surface file of result document ``doc`` to a path or a byte buffer."""
    import h5py

    arrays = surface_arrays(doc)
    attrs = arrays.pop("_attrs")
    with h5py.File(target, "w") as f:
        for name, a in arrays.items():
            f.create_dataset(name, data=a)
        for k, v in attrs.items():
            f.attrs[k] = v


def save_surface_h5(doc: dict[str, Any], path: Path) -> Path:
    """Write the surface file of ``doc`` to ``path`` atomically (a temporary file in the same
    folder, then a rename: a failed export leaves no half-written file); returns ``path``."""
    import os
    import tempfile

    path = Path(path)
    data = surface_h5_bytes(doc)  # refused before anything is written
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def surface_h5_bytes(doc: dict[str, Any]) -> bytes:
    """The surface file of ``doc`` as bytes (for a download)."""
    buf = io.BytesIO()
    write_surface_h5(doc, buf)
    return buf.getvalue()


__all__ = [
    "LI_NAMES",
    "ExportError",
    "save_surface_h5",
    "surface_arrays",
    "surface_h5_bytes",
    "write_surface_h5",
]
