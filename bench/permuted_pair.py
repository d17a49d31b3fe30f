"""A checkpoint pair with a loss barrier on the line and none in function: θ and a permuted θ.

Permuting the hidden units of every BERT feed-forward block (rows of
``intermediate.dense``, columns of ``output.dense``) gives the same function at another
point of parameter space; the straight line between the two climbs a barrier that a
fitted curve can go around (docs/fit.md, "Examples")::

    python -m bench.permuted_pair models_store/demo/minilm-seed1 /tmp/minilm-seed1-perm
    basin fit fit.yaml -o /tmp/fit-out      # a: .../minilm-seed1, b: /tmp/minilm-seed1-perm
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def permute_ffn(src: Path, dst: Path, seed: int = 0) -> int:
    """Copy the model folder ``src`` to ``dst`` with each FFN's units permuted; returns the layers permuted."""
    shutil.copytree(src, dst, dirs_exist_ok=True)
    sd = load_file(str(src / "model.safetensors"))
    g = torch.Generator().manual_seed(seed)
    n = 0
    for k in list(sd):
        if k.endswith("intermediate.dense.weight"):
            pre = k[: -len("intermediate.dense.weight")]
            p = torch.randperm(sd[k].shape[0], generator=g)
            sd[k] = sd[k][p].contiguous()
            sd[pre + "intermediate.dense.bias"] = sd[pre + "intermediate.dense.bias"][p].contiguous()
            sd[pre + "output.dense.weight"] = sd[pre + "output.dense.weight"][:, p].contiguous()
            n += 1
    save_file(sd, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return n


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m bench.permuted_pair SRC_MODEL_DIR DST_MODEL_DIR")
    print(f"permuted {permute_ffn(Path(sys.argv[1]), Path(sys.argv[2]))} feed-forward blocks")
