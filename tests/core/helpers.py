"""Reference computations for the engine tests: a freshly built model, evaluated the plain way."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers

from basin.checkpoints import load_state_dict


def mix(sds: list[dict[str, torch.Tensor]], coeffs: list[float]) -> dict[str, torch.Tensor]:
    """Σ cₖ θₖ over floating tensors; other tensors from the first state dict."""
    out = {}
    for k, t in sds[0].items():
        if t.is_floating_point():
            out[k] = sum(c * sd[k].double() for c, sd in zip(coeffs, sds, strict=True)).float()
        else:
            out[k] = t
    return out


def fresh(auto: str, model_dir: Path, sd: dict[str, torch.Tensor]):
    """A new model from ``model_dir``'s config loaded with ``sd`` — no engine code involved."""
    cfg = transformers.AutoConfig.from_pretrained(str(model_dir))
    m = getattr(transformers, auto).from_config(cfg).float()
    m.load_state_dict(sd, strict=False)
    if hasattr(m, "tie_weights"):
        m.tie_weights()
    return m.eval()


def rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = path.read_text().splitlines()[1:]
    return [{"text": ln.rsplit(",", 1)[0], "label": int(ln.rsplit(",", 1)[1])} for ln in lines]


@torch.no_grad()
def classify(model_dir: Path, sd, data: Path) -> dict[str, float]:
    """Mean cross-entropy and accuracy, one padded batch over the whole set."""
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    rs = rows(data)
    enc = tok([r["text"] for r in rs], padding=True, return_tensors="pt")
    y = torch.tensor([r["label"] for r in rs])
    logits = fresh("AutoModelForSequenceClassification", model_dir, sd)(**enc).logits
    return {"loss": F.cross_entropy(logits, y).item(),
            "accuracy": (logits.argmax(-1) == y).float().mean().item()}


@torch.no_grad()
def causal_lm(model_dir: Path, sd, data: Path) -> float:
    """Token-mean NLL via the model's own ``labels`` loss, one batch."""
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    enc = tok([r["text"] for r in rows(data)], padding=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    m = fresh("AutoModelForCausalLM", model_dir, sd)
    return m(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss.item()


@torch.no_grad()
def seq2seq(model_dir: Path, sd, data: Path) -> float:
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    rs = rows(data)
    enc = tok([r["source"] for r in rs], padding=True, return_tensors="pt")
    tgt = tok(text_target=[r["target"] for r in rs], padding=True, return_tensors="pt")
    labels = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)
    m = fresh("AutoModelForSeq2SeqLM", model_dir, sd)
    return m(**enc, labels=labels).loss.item()


def state(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_state_dict(model_dir)


def cpu_spec(data: dict):
    """``parse_spec`` with ``device: cpu`` unless given: the fast suite checks fp32 CPU numerics."""
    from basin.spec import parse_spec

    return parse_spec({"device": "cpu", **data})
