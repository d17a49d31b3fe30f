"""Tuning: families of fine-tuned / delta-tuned checkpoints from one base (issue 25).

:mod:`basin.tune.spec` (torch-free): :class:`TuneSpec`, :func:`members`.
:mod:`basin.tune.train`: :func:`train_member` trains one member.
:mod:`basin.tune.family`: :func:`run_family` trains every member in-process (``basin tune``).
:mod:`basin.tune.cartography`: dataset cartography from recorded gold-label probabilities.
"""

from basin.tune.spec import (
    Member,
    MethodSpec,
    SplitSpec,
    TuneSpec,
    load_tune_spec,
    members,
    parse_tune_spec,
)

__all__ = [
    "Member",
    "MethodSpec",
    "SplitSpec",
    "TuneSpec",
    "load_tune_spec",
    "members",
    "parse_tune_spec",
]
