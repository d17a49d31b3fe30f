"""Studies of many checkpoints (issue 26): the barrier matrix over N checkpoints, its
clusters, within- vs between-group barriers, the instability curve.

- :mod:`basin.study.plan` — the spec, the pairs and their phases, when a pair is decided;
- :mod:`basin.study.matrix` — the result from the pairs' summaries (no torch);
- :mod:`basin.study.run` — the whole study in one process (``basin study``).
"""

from basin.study.plan import StudySpec, plan

__all__ = ["StudySpec", "plan"]
