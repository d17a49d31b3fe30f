"""Basin: loss landscapes and mode connectivity of fine-tuned ``transformers`` checkpoints.

The package root imports lazily, so ``import basin.spec`` (the API, the UI) does not
pull in torch. Main entry points::

    from basin import run, Landscape, FileResolver, parse_spec
    doc = run(parse_spec({...}), FileResolver("."))
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "run": "basin.engine",
    "Landscape": "basin.engine",
    "Point": "basin.engine",
    "Anchor": "basin.engine",
    "CheckpointCache": "basin.checkpoints",
    "CheckpointInfo": "basin.checkpoints",
    "inspect_checkpoint": "basin.checkpoints",
    "check_compatible": "basin.checkpoints",
    "load_state_dict": "basin.checkpoints",
    "CheckpointSource": "basin.resolve",
    "FileResolver": "basin.resolve",
    "Resolver": "basin.resolve",
    "RunSpec": "basin.spec",
    "parse_spec": "basin.spec",
    "load_spec": "basin.spec",
    "BasinError": "basin.errors",
    "InvalidSpec": "basin.errors",
    "CheckpointError": "basin.errors",
    "IncompatibleCheckpoints": "basin.errors",
    "DatasetError": "basin.errors",
    "DegeneratePlane": "basin.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'basin' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)
