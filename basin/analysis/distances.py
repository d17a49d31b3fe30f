"""Distances between two checkpoints (001 §5.3; 002 ``calculate_dist``).

Over the flattened vectors of the shared floating tensors:
``l2`` = ‖θB − θA‖₂, ``cosine`` = ⟨θA, θB⟩ / (‖θA‖·‖θB‖). Per tensor W:
``l2`` = ‖ΔW‖₂, ``scaled`` = ‖ΔW‖₂ / √numel(W), ``cosine`` of W_A and W_B. Per layer
(``embeddings``, ``layer N``, ``head``): the same over the layer's tensors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def _cos(ab: float, aa: float, bb: float) -> float:
    return ab / math.sqrt(aa * bb) if aa > 0 and bb > 0 else 0.0


def distances(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], names: Sequence[str]) -> dict[str, Any]:
    """``{l2, cosine, per_tensor: [{name, l2, scaled, cosine, numel}], per_layer: [...]}``."""
    import torch  # here, not at the top: basin.analysis (barriers for the figures) loads without it

    from basin.space import param_group

    per_tensor = []
    groups: dict[str, list[float]] = {}
    tot = [0.0, 0.0, 0.0, 0.0]  # ‖Δ‖², ⟨a,b⟩, ‖a‖², ‖b‖²
    for n in names:
        x = a[n].reshape(-1).double()
        y = b[n].reshape(-1).double()
        d2 = float(torch.sum((y - x) ** 2))
        ab, aa, bb = float(x @ y), float(x @ x), float(y @ y)
        numel = x.numel()
        per_tensor.append({
            "name": n, "l2": math.sqrt(d2), "scaled": math.sqrt(d2 / max(numel, 1)),
            "cosine": _cos(ab, aa, bb), "numel": numel,
        })
        g = groups.setdefault(param_group(n), [0.0, 0.0, 0.0, 0.0, 0.0])
        for acc in (g, tot):
            acc[0] += d2
            acc[1] += ab
            acc[2] += aa
            acc[3] += bb
        g[4] += numel

    def order(k: str) -> tuple[int, int]:
        if k == "embeddings":
            return (0, 0)
        if k.startswith("layer "):
            return (1, int(k.split()[1]))
        return (2, 0)

    per_layer = [
        {"name": k, "l2": math.sqrt(g[0]), "scaled": math.sqrt(g[0] / max(g[4], 1)),
         "cosine": _cos(g[1], g[2], g[3]), "numel": int(g[4])}
        for k, g in sorted(groups.items(), key=lambda kv: order(kv[0]))
    ]
    return {"l2": math.sqrt(tot[0]), "cosine": _cos(tot[1], tot[2], tot[3]),
            "per_tensor": per_tensor, "per_layer": per_layer}
