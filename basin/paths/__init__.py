"""Path types: one module each in this package, discovered, registered by ``spec.path.type``.

Every module here except ``base`` is imported and each :class:`PathType` subclass it
defines with a ``type`` is registered in :data:`PATHS`. Adding a path type = adding
one module (see :mod:`basin.paths.base`); the spec union (:mod:`basin.spec`), the
engine, the figures and ``GET /api/meta`` all read this registry.

The helpers :func:`is_1d` and :func:`refs_of` work on plain dicts, so code that holds
only a stored result document (the dashboard, the runs listing) asks here too.
Importing this package does not import torch.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from basin.paths.base import Anchor, BuildContext, Built, PathType


def _discover() -> dict[str, type[PathType]]:
    """``{type: class}`` for every path class in the modules of this package, in module order."""
    found: dict[str, type[PathType]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, PathType) and obj.__module__ == module.__name__
                    and "type" in obj.__dict__):
                if obj.type in found and found[obj.type] is not obj:
                    raise TypeError(f"path type {obj.type!r} is defined twice: {found[obj.type].__module__} "
                                    f"and {module.__name__}")
                found[obj.type] = obj
    return found


def _ordered(found: dict[str, type[PathType]]) -> dict[str, type[PathType]]:
    """By each class's ``order`` (the form lists them so), then by type name."""
    return {t: found[t] for t in sorted(found, key=lambda t: (found[t].order, t))}


PATHS: dict[str, type[PathType]] = _ordered(_discover())


def path_class(type_name: str) -> type[PathType]:
    """The class of path type ``type_name``; ``KeyError`` naming the known types if none."""
    try:
        return PATHS[type_name]
    except KeyError:
        raise KeyError(f"unknown path type {type_name!r}; choose from {', '.join(PATHS)}") from None


def is_1d(type_name: str | None) -> bool:
    """Whether ``type_name`` is a 1D path (a curve in α); False for unknown types."""
    cls = PATHS.get(type_name or "")
    return cls is not None and cls.ndim == 1


def refs_of(path: Mapping[str, Any]) -> list[str]:
    """Checkpoint references of a path dict (a spec's ``path``), in anchor order, no duplicates.

    Literal values that are not references (trajectory's ``basis: pca``) are skipped;
    an unknown path type has none.
    """
    cls = PATHS.get(str(path.get("type") or ""))
    return cls.refs_in(path) if cls is not None else []


__all__ = ["PATHS", "Anchor", "BuildContext", "Built", "PathType", "is_1d", "path_class", "refs_of"]
