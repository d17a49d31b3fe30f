"""Basin's benchmark harness: ``python -m bench`` (see ``docs/benchmark.md``)."""
