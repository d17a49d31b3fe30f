"""The unified optimisation subspace of delta tuning (Yi et al. 2022): approximation,
optimisation and transfer (:mod:`.core`), methods as flat vectors with their task loss
(:mod:`.methods`), specs (:mod:`.spec`), the stages run from specs (:mod:`.run`) and the
``basin subspace`` command (:mod:`.cli`).

Importing this package imports nothing heavy; :mod:`.core` and :mod:`.run` need torch.
Nothing here imports the service.
"""
