"""Distances between two checkpoints (001 §5.3; 002 ``calculate_dist``).

Over the flattened vectors of the shared floating tensors:
``l2`` = ‖θB − θA‖₂, ``cosine`` = ⟨θA, θB⟩ / (‖θA‖·‖θB‖). Per tensor W:
``l2`` = ‖ΔW‖₂, ``scaled`` = ‖ΔW‖₂ / √numel(W), ``cosine`` of W_A and W_B. Per layer: the same over
each group of :mod:`basin.groups` — ``embeddings``, every block of every stack
(``encoder layer 3`` and ``decoder layer 3`` are separate rows; ``layer 3`` when the model
has one stack), ``head``, ``rest`` — in that order, each row naming its ``stack``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from basin.groups import ModelGroups


def _cos(ab: float, aa: float, bb: float) -> float:
    return ab / math.sqrt(aa * bb) if aa > 0 and bb > 0 else 0.0


#: elements per float64 slice (2 MiB a vector)
_CHUNK = 1 << 18


def distances(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], names: Sequence[str],
    groups: ModelGroups | None = None,
) -> dict[str, Any]:
    """``{l2, cosine, per_tensor: [{name, l2, scaled, cosine, numel}], per_layer: [...]}``.

    ``groups`` (the model's, :func:`basin.groups.model_groups`) names the per-layer rows;
    without it every tensor is one ``rest`` row.
    """
    import torch  # here, not at the top: basin.analysis (barriers for the figures) loads without it

    def param_group(name: str) -> str:
        return groups.label(name) if groups is not None else "rest"

    per_tensor = []
    rows: dict[str, list[float]] = {}
    tot = [0.0, 0.0, 0.0, 0.0]  # ‖Δ‖², ⟨a,b⟩, ‖a‖², ‖b‖²
    from basin.holding import read_span, shape_of, spans

    for n in names:
        numel = math.prod(shape_of(a, n))
        d2 = ab = aa = bb = 0.0
        for start, stop in spans(numel):  # a large tensor read a span at a time (basin.holding)
            xa, ya = read_span(a, n, start, stop), read_span(b, n, start, stop)
            for s in range(0, stop - start, _CHUNK):  # in float64 a slice at a time
                x, y = xa[s : s + _CHUNK].double(), ya[s : s + _CHUNK].double()
                d2 += float(torch.sum((y - x) ** 2))
                ab, aa, bb = ab + float(x @ y), aa + float(x @ x), bb + float(y @ y)
            del xa, ya
        per_tensor.append({
            "name": n, "l2": math.sqrt(d2), "scaled": math.sqrt(d2 / max(numel, 1)),
            "cosine": _cos(ab, aa, bb), "numel": numel,
        })
        g = rows.setdefault(param_group(n), [0.0, 0.0, 0.0, 0.0, 0.0])
        for acc in (g, tot):
            acc[0] += d2
            acc[1] += ab
            acc[2] += aa
            acc[3] += bb
        g[4] += numel

    def order(k: str) -> tuple[int, int, int]:
        return groups.row_order(k) if groups is not None else (3, 0, 0)

    def stack_of(k: str) -> str | None:
        if groups is None or k in ("embeddings", "head", "rest"):
            return None
        return k.rpartition(" layer ")[0] or next(iter(groups.stacks), None)

    per_layer = [
        {"name": k, "stack": stack_of(k), "l2": math.sqrt(g[0]), "scaled": math.sqrt(g[0] / max(g[4], 1)),
         "cosine": _cos(g[1], g[2], g[3]), "numel": int(g[4])}
        for k, g in sorted(rows.items(), key=lambda kv: order(kv[0]))
    ]
    return {"l2": math.sqrt(tot[0]), "cosine": _cos(tot[1], tot[2], tot[3]),
            "per_tensor": per_tensor, "per_layer": per_layer}
