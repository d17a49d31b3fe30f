"""Causal language modelling: token-mean negative log-likelihood ``loss`` and ``perplexity``.

loss = Σ_{i,t≥1} −log p(x_{i,t} | x_{i,<t}) / (number of predicted tokens);
perplexity = exp(loss). Padding is masked out; the first token of each text is
context only.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from basin.data import Dataset
from basin.errors import DatasetError
from basin.evaluate.base import Evaluator, length_batches, pad


class CausalLMEvaluator(Evaluator):
    task = "causal_lm"

    def prepare(self, tokenizer: Any, data: Dataset, model: nn.Module, *, batch_size: int,
                max_length: int) -> list[dict[str, torch.Tensor]]:
        ids = tokenizer(data.columns["text"], truncation=True, max_length=max_length)["input_ids"]
        self.num_tokens = sum(max(len(s) - 1, 0) for s in ids)
        if self.num_tokens == 0:
            raise DatasetError(f"dataset {data.path.name}: no text has two or more tokens to score")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        out = []
        self.targets: list[torch.Tensor] = []  # (B, T-1) next tokens per batch, -100 on padding
        for idx in length_batches([len(s) for s in ids], batch_size):
            seqs = [ids[i] for i in idx]
            out.append(self._to(input_ids=pad(seqs, pad_id), attention_mask=pad([[1] * len(s) for s in seqs], 0)))
            self.targets.append(pad([s[1:] for s in seqs], -100).to(self.device))
        return out

    def _evaluate(self, model: nn.Module) -> dict[str, float]:
        nll = torch.zeros((), device=self.device, dtype=torch.float64)
        for b, tgt in zip(self.batches, self.targets, strict=True):
            logits = model(**b).logits
            T = b["input_ids"].shape[1]
            if T < 2:
                continue
            z = logits[:, :-1].float()  # (B, T-1, V)
            nll += F.cross_entropy(z.reshape(-1, z.shape[-1]), tgt[:, : T - 1].reshape(-1),
                                   ignore_index=-100, reduction="sum").double()
        loss = float(nll.cpu()) / self.num_tokens
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}
