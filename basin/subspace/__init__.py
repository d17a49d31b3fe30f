"""The unified optimisation subspace of delta tuning (Yi et al. 2022): approximation,
optimisation and transfer (:mod:`.core`), methods as flat vectors with their task loss
(:mod:`.methods`), specs (:mod:`.spec`) and the stages run from specs (:mod:`.run`).

torch is needed; nothing here imports the service.
"""

from basin.subspace.core import FitSettings, Projection, Stopped, Subspace, fit, mixing_weights, optimise, transfer

__all__ = ["FitSettings", "Projection", "Stopped", "Subspace", "fit", "mixing_weights", "optimise", "transfer"]
