"""The family matrix's numbers, one row per family: ``python -m tests.core.family_report``.

The same checks as ``tests/core/test_families.py``, reported as measured deviations
instead of pass/fail (for notes and issues). Builds every tiny family in a temporary
directory; CPU, about half a minute.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from basin import FileResolver, Landscape  # noqa: E402
from basin.errors import InvalidSpec  # noqa: E402
from tests.core import families, helpers  # noqa: E402
from tests.core.families import FAMILIES, Family  # noqa: E402

LINEAR = {"type": "linear", "a": "A", "b": "B", "points": 3}


def _open(f: Family, dirs: dict[str, Path], path: dict, **kw) -> Landscape:
    spec = {"path": path, "dataset": dirs["data"].name, "task": f.task, "dtype": "float32", **kw}
    return Landscape.open(helpers.cpu_spec(spec), FileResolver(dirs["data"].parent))


def measure(f: Family, dirs: dict[str, Path]) -> dict[str, str]:
    row: dict[str, str] = {}
    land = _open(f, dirs, LINEAR)
    got = land.evaluate({"alpha": 0.3})["loss"]
    ref = families.mixed(f, dirs["A"], dirs["B"], 0.3)
    live = land.model.state_dict()
    dev = max(float((live[k] - v).abs().max()) for k, v in ref.state_dict().items() if v.is_floating_point())
    row["lin0.3 max|Δθ|"] = f"{dev:.1e}"
    row["lin0.3 |Δloss|"] = f"{abs(got - families.loss(f, ref, dirs['data'])):.1e}"
    land.close()

    a = families.reference(f, dirs["A"]).state_dict()
    b = families.reference(f, dirs["B"]).state_dict()
    floats = [k for k, v in a.items() if v.is_floating_point()]
    ok, refused, worst = 0, 0, 0.0
    for scope in f.scopes:
        moved = {k for k in floats if f.moves(scope, k)}
        if not moved:
            try:
                _open(f, dirs, LINEAR, scope=scope)
            except InvalidSpec:
                refused += 1
                continue
            raise AssertionError(f"{f.name}: scope {scope} should match nothing")
        land = _open(f, dirs, LINEAR, scope=scope)
        land.evaluate({"alpha": 1.0})
        live = land.model.state_dict()
        worst = max(worst, *(float((live[k] - (b[k] if k in moved else a[k])).abs().max()) for k in floats))
        ok += 1
        land.close()
    row["scopes exact/refused"] = f"{ok}/{refused}"
    row["scopes max|Δ|"] = f"{worst:.1e}"

    land = _open(f, dirs, {"type": "random_plane", "center": "A", "resolution": [2, 2], "seed": 3})
    w = land.space.current()
    rel = 0.0
    for name, d in zip(land.names, land.space.directions[0], strict=True):
        if d.dim() >= 2:
            axis = 1 if f.conv1d and "transformer.h." in name and name.endswith(".weight") else 0
            dn = d.movedim(axis, 0).reshape(d.shape[axis], -1).norm(dim=1)
            wn = w[name].movedim(axis, 0).reshape(d.shape[axis], -1).norm(dim=1)
            rel = max(rel, float(((dn - wn).abs() / wn.clamp_min(1e-12)).max()))
    row["filter norm rel err"] = f"{rel:.1e}"
    land.close()

    l32, l16 = _open(f, dirs, LINEAR), _open(f, dirs, LINEAR, dtype="bfloat16")
    m32, m16 = l32.evaluate({"alpha": 0.3})["loss"], l16.evaluate({"alpha": 0.3})["loss"]
    t32, t16 = l32.space.current(), l16.space.current()
    exact = all(torch.equal(t16[k], t32[k].to(torch.bfloat16)) for k in l32.names)
    relθ = max(float(((t16[k].float() - t32[k]).abs() / t32[k].abs().clamp_min(1e-30)).max()) for k in l32.names)
    row["bf16 θ = cast(fp32 θ)"] = "yes" if exact else "NO"
    row["bf16 θ max rel"] = f"{relθ:.1e}"
    row["bf16 loss rel"] = f"{abs(m16 - m32) / abs(m32):.1e}"
    l32.close()
    l16.close()

    planes = []
    for copy in ("A", "A_bin", "A_sharded"):
        land = _open(f, dirs, {"type": "random_plane", "center": copy, "resolution": [2, 2], "seed": 11})
        planes.append(land.space.directions)
        land.close()
    same = all(torch.equal(x0, x) for other in planes[1:] for d0, d in zip(planes[0], other, strict=True)
               for x0, x in zip(d0, d, strict=True))
    row["seed plane st/shard/bin"] = "same" if same else "DIFFER"

    if f.name == "gpt2_cls":
        one, seven = _open(f, dirs, LINEAR, batch_size=1), _open(f, dirs, LINEAR, batch_size=7)
        row["loss b1 vs b7"] = f"{abs(one.evaluate({'alpha': 0.3})['loss'] - seven.evaluate({'alpha': 0.3})['loss']):.1e}"
        one.close()
        seven.close()
    return row


def main() -> int:
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    torch.set_num_threads(1)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, f in FAMILIES.items():
            root = Path(tmp) / name
            root.mkdir()
            rows[name] = measure(f, families.build_family(f, root))
    cols = list(dict.fromkeys(c for r in rows.values() for c in r))
    print("| family | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(r.get(c, "–") for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
