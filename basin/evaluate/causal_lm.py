"""Causal language modelling: token-mean negative log-likelihood ``loss`` and ``perplexity``.

loss = Σ_{i,t≥1} −log p(x_{i,t} | x_{i,<t}) / (number of predicted tokens);
perplexity = exp(loss). Padding is masked out; the first token of each text is
context only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
        self.tokens = [max(len(s) - 1, 0) for s in ids]  # predicted tokens per text, dataset order
        if self.num_tokens == 0:
            raise DatasetError(f"dataset {data.path.name}: no text has two or more tokens to score")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        out = []
        self.targets: list[torch.Tensor] = []  # (B, T-1) next tokens per batch, -100 on padding
        self.rows: list[torch.Tensor] = []  # dataset rows of each batch
        for idx in length_batches([len(s) for s in ids], batch_size):
            seqs = [ids[i] for i in idx]
            self.rows.append(torch.tensor(idx, dtype=torch.long, device=self.device))
            out.append(self._to(input_ids=pad(seqs, pad_id), attention_mask=pad([[1] * len(s) for s in seqs], 0)))
            self.targets.append(pad([s[1:] for s in seqs], -100).to(self.device))
        return out

    def batch_loss(self, i: int, logits: torch.Tensor) -> torch.Tensor:
        """Next-token NLL of batch ``i``'s logits ``(B, T, V)``, mean over its predicted tokens."""
        T = logits.shape[1]
        if T < 2:
            return logits.sum() * 0.0
        z = logits[:, :-1].float()
        return F.cross_entropy(z.reshape(-1, z.shape[-1]), self.targets[i][:, : T - 1].reshape(-1),
                               ignore_index=-100)

    def batch_weights(self) -> list[float]:
        """Each batch's predicted tokens (the loss is a mean over all target tokens)."""
        return [float((t != -100).sum()) for t in self.targets]

    ensembles = True

    stacks = True

    def _evaluate(self, model: nn.Module) -> dict[str, float]:
        return self._finish([self._batch_values(i, model(**b).logits) if self._runs(i, b) else None
                             for i, b in enumerate(self.batches)])

    def _runs(self, i: int, batch: dict[str, torch.Tensor]) -> bool:
        return batch["input_ids"].shape[1] >= 2  # a one-token text predicts nothing

    def _batch_values(self, i: int, logits: torch.Tensor) -> torch.Tensor:
        """Summed next-token NLL per row of batch ``i`` (float64, ``(B,)``)."""
        return _nll(logits[:, :-1].float(), self.targets[i], per_row=True)

    def _finish(self, values: list[Any]) -> dict[str, float]:
        per = torch.zeros(self.num_examples, device=self.device, dtype=torch.float64)  # NLL per text
        for v, rows in zip(values, self.rows, strict=True):
            if v is not None:
                per[rows] = v
        both = per.cpu()
        self.examples = {"nll": both.numpy().round(6).tolist(), "tokens": list(self.tokens)}
        return self._metrics(both.sum())

    def _metrics(self, nll: torch.Tensor) -> dict[str, float]:
        loss = float(nll.cpu()) / self.num_tokens
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}

    def _ensemble(self, model: nn.Module, at: Callable[[int], None], alphas: list[float]) -> dict[float, dict[str, float]]:
        """Log-probabilities mixed per token: z(α) = (1−α)·log p_A + α·log p_B, renormalised (001 §4.4).

        Per batch the live model is set to each endpoint in turn (two weight mixes per
        batch), so no (tokens × vocabulary) table of a whole dataset is ever held. At α = 0
        and 1 the endpoints' raw logits are scored, exactly as :meth:`_evaluate` scores them.
        """
        # per text, summed exactly as :meth:`_evaluate` sums them (bit-equal at α = 0 and 1)
        nll = {a: torch.zeros(self.num_examples, device=self.device, dtype=torch.float64) for a in alphas}
        for b, tgt, rows in zip(self.batches, self.targets, self.rows, strict=True):
            if b["input_ids"].shape[1] < 2:
                continue
            at(0)
            za = _next_token_logits(model, b)
            at(1)
            zb = _next_token_logits(model, b)
            la, lb = F.log_softmax(za, dim=-1), F.log_softmax(zb, dim=-1)
            for a in alphas:
                z = za if a == 0.0 else zb if a == 1.0 else (1.0 - a) * la + a * lb
                nll[a][rows] = _nll(z, tgt, per_row=True)
        return {a: self._metrics(v.cpu().sum()) for a, v in nll.items()}


def _next_token_logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(B, T-1, V)`` fp32 scores of each next token."""
    return model(**batch).logits[:, :-1].float()


def _nll(z: torch.Tensor, tgt: torch.Tensor, per_row: bool = False) -> torch.Tensor:
    """Summed next-token NLL of scores ``z`` (B, T-1, V) against ``tgt`` (-100 = padding), float64;
    ``per_row``: one sum per row, (B,)."""
    B, T1 = z.shape[0], z.shape[1]
    if per_row:
        return F.cross_entropy(z.reshape(-1, z.shape[-1]), tgt[:, :T1].reshape(-1), ignore_index=-100,
                               reduction="none").double().view(B, T1).sum(1)
    return F.cross_entropy(z.reshape(-1, z.shape[-1]), tgt[:, :T1].reshape(-1),
                           ignore_index=-100, reduction="sum").double()
