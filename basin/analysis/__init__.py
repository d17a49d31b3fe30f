"""Analyses over a run's points and checkpoints: barriers, distances, surface extremes.

Projection onto planes (PCA of a trajectory via its Gram matrix, least squares onto
a plane through three) lives with the path that uses it, :mod:`basin.paths.trajectory`.
"""

from basin.analysis.barrier import barrier, barriers
from basin.analysis.distances import distances
from basin.analysis.surface import extremes

__all__ = ["barrier", "barriers", "distances", "extremes"]
