"""Form defaults, pure functions over the API's manifests (no Dash), so they are easy to test."""

from __future__ import annotations


def default_picks(ckpts: list[dict]) -> list[str]:
    """Three checkpoint ids to preselect, so the form runs as soon as it opens.

    The final checkpoint of each seed first (the classic question: are two seeds
    connected?) — of each family member, when the checkpoints come from a tune job (members
    that share a seed and differ in data order, split, method or learning rate) — then the
    step-0 checkpoint (θ0), then the rest — e.g. the demo gives seed1, seed2, then the init.
    """
    def tags(m: dict) -> dict:
        return m.get("tags") or {}

    def member(m: dict) -> tuple[str, ...] | None:
        t = tags(m)
        if (t.get("seed") is None and t.get("order") is None) or t.get("step") in (0, "0") \
                or t.get("method") == "init":
            return None
        return tuple(str(t.get(k)) for k in ("family", "seed", "order", "split", "method", "lr"))

    final: dict[tuple[str, ...], dict] = {}
    for m in ckpts:
        key = member(m)
        if key is not None and (key not in final or (tags(m).get("step") or 0) > (tags(final[key]).get("step") or 0)):
            final[key] = m
    ordered = [final[k] for k in sorted(final)]
    ordered += [m for m in ckpts if m not in ordered and tags(m).get("step") in (0, "0")]
    ordered += [m for m in ckpts if m not in ordered and tags(m).get("seed") is None]
    ordered += [m for m in ckpts if m not in ordered]
    ids = [m["id"] for m in ordered[:3]]
    return ids + [""] * (3 - len(ids))


def default_dataset(dsets: list[dict]) -> str:
    """An evaluation set if one is named so, else the first dataset, else nothing."""
    for d in dsets:
        if "eval" in str(d.get("name", "")).lower():
            return d["id"]
    return dsets[0]["id"] if dsets else ""


def default_base(ckpts: list[dict]) -> str:
    """The merge base θ0 to preselect: the step-0 checkpoint (``tags.step == 0``, the demo's
    ``minilm-init``), else one tagged or named as the pre-trained/init model; ``""`` when none."""
    def tags(m: dict) -> dict:
        return m.get("tags") or {}

    for test in (lambda m: tags(m).get("step") in (0, "0"),
                 lambda m: str(tags(m).get("role") or "").lower() in ("base", "init", "pretrained", "pre-trained"),
                 lambda m: any(w in str(m.get("name") or "").lower() for w in ("init", "base", "pretrained"))):
        for m in ckpts:
            if test(m) and m.get("id") and not m.get("adapter"):
                return str(m["id"])
    return ""


#: The task(s) a model class's head serves, by the class name's ending (as basin.precheck).
_HEAD_TASKS = (
    ("ForSequenceClassification", ("classification",)),
    ("ForCausalLM", ("causal_lm", "generation")),
    ("LMHeadModel", ("causal_lm", "generation")),
    ("ForConditionalGeneration", ("seq2seq",)),
    ("ForSeq2SeqLM", ("seq2seq",)),
)


def fits_task(m: dict, task: str | None) -> bool:
    """Whether checkpoint ``m`` (a manifest of ``GET /api/checkpoints``) can serve ``task``:
    its architecture's head; unknown architectures and adapters are kept (the API decides)."""
    if not task or m.get("adapter"):
        return True
    arch = str(m.get("architecture") or "")
    for end, tasks in _HEAD_TASKS:
        if arch.endswith(end):
            return task in tasks
    return True


def fits_first(m: dict, first: dict | None) -> bool:
    """Whether ``m`` can share a path with the first checkpoint: one model type (adapters are
    kept). Sizes may differ — a resized head is what ``on_mismatch: hold`` is for; the API's
    Check names the mismatched tensors."""
    if first is None or m.get("id") == first.get("id"):
        return True
    if first.get("adapter") or m.get("adapter"):
        return True  # adapters and full checkpoints share a path in space: merged; the API decides
    return m.get("model_type") == first.get("model_type")


def fitting(ckpts: list[dict], task: str | None, first_id: str | None = None) -> list[dict]:
    """The checkpoints a picker offers for ``task`` (and, given the first pick, beside it)."""
    first = next((m for m in ckpts if m.get("id") == first_id), None) if first_id else None
    return [m for m in ckpts if fits_task(m, task) and fits_first(m, first)]
