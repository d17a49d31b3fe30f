"""Path types: one class each, registered in :data:`PATHS` by ``spec.path.type``.

Adding a path type = one class (see :mod:`basin.paths.base`) + one entry here
(+ its pydantic model in :mod:`basin.spec` and a form entry in the UI).
"""

from __future__ import annotations

from basin.paths.base import Anchor, BuildContext, Built, PathType
from basin.paths.bezier import Bezier
from basin.paths.linear import Linear
from basin.paths.plane import Plane
from basin.paths.polychain import Polychain
from basin.paths.random_plane import RandomPlane
from basin.paths.task_plane import TaskPlane
from basin.paths.trajectory import Trajectory

PATHS: dict[str, type[PathType]] = {
    cls.type: cls for cls in (Linear, Bezier, Polychain, Plane, TaskPlane, RandomPlane, Trajectory)
}

__all__ = ["PATHS", "Anchor", "BuildContext", "Built", "PathType"]
