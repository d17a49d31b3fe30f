"""Sequence-to-sequence: token-mean cross-entropy of ``target`` given ``source``; ``perplexity``.

loss = Σ_{i,t} −log p(y_{i,t} | y_{i,<t}, x_i) / (number of target tokens), with
teacher forcing (decoder inputs = targets shifted right); perplexity = exp(loss).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from basin.data import Dataset
from basin.errors import DatasetError
from basin.evaluate.base import Evaluator, length_batches, pad

if TYPE_CHECKING:
    from transformers import PretrainedConfig


class Seq2SeqEvaluator(Evaluator):
    task = "seq2seq"

    def prepare(self, tokenizer: Any, data: Dataset, model: nn.Module, *, batch_size: int,
                max_length: int) -> list[dict[str, torch.Tensor]]:
        src = tokenizer(data.columns["source"], truncation=True, max_length=max_length)["input_ids"]
        tgt = tokenizer(text_target=data.columns["target"], truncation=True, max_length=max_length)["input_ids"]
        self.num_tokens = sum(len(t) for t in tgt)
        self.tokens = [len(t) for t in tgt]  # target tokens per example, dataset order
        if self.num_tokens == 0:
            raise DatasetError(f"dataset {data.path.name}: every target is empty")
        cfg = cast("PretrainedConfig", model.config)  # nn.Module.__getattr__ says Tensor | Module
        start = cfg.decoder_start_token_id
        if start is None:
            start = cfg.pad_token_id if cfg.pad_token_id is not None else 0
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        dec_pad = cfg.pad_token_id if cfg.pad_token_id is not None else pad_id
        out = []
        self.labels: list[torch.Tensor] = []  # (B, T_tgt) per batch, -100 on padding
        self.rows: list[torch.Tensor] = []  # dataset rows of each batch
        for idx in length_batches([len(src[i]) + len(tgt[i]) for i in range(len(src))], batch_size):
            self.rows.append(torch.tensor(idx, dtype=torch.long, device=self.device))
            labels = pad([tgt[i] for i in idx], -100)  # (B, T_tgt)
            dec = pad([[start] + tgt[i][:-1] for i in idx], dec_pad)[:, : labels.shape[1]]
            out.append(self._to(
                input_ids=pad([src[i] for i in idx], pad_id),
                attention_mask=pad([[1] * len(src[i]) for i in idx], 0),
                decoder_input_ids=dec,
            ))
            self.labels.append(labels.to(self.device))
        return out

    def batch_loss(self, i: int, logits: torch.Tensor) -> torch.Tensor:
        """Target-token NLL of batch ``i``'s decoder logits ``(B, T, V)``, mean over its target tokens."""
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), self.labels[i].reshape(-1),
                               ignore_index=-100)

    def batch_weights(self) -> list[float]:
        """Each batch's target tokens (the loss is a mean over all target tokens)."""
        return [float((t != -100).sum()) for t in self.labels]

    stacks = True

    def _evaluate(self, model: nn.Module) -> dict[str, float]:
        return self._finish([self._batch_values(i, model(**b).logits) for i, b in enumerate(self.batches)])

    def _batch_values(self, i: int, logits: torch.Tensor) -> torch.Tensor:
        """Summed target-token NLL per row of batch ``i`` (float64, ``(B,)``)."""
        labels = self.labels[i]
        z = logits.float()  # (B, T, V)
        return F.cross_entropy(z.reshape(-1, z.shape[-1]), labels.reshape(-1), ignore_index=-100,
                               reduction="none").double().view(labels.shape).sum(1)

    def _finish(self, values: list[Any]) -> dict[str, float]:
        per = torch.zeros(self.num_examples, device=self.device, dtype=torch.float64)  # NLL per example
        for v, rows in zip(values, self.rows, strict=True):
            per[rows] = v
        both = per.cpu()
        self.examples = {"nll": both.numpy().round(6).tolist(), "tokens": list(self.tokens)}
        loss = float(both.sum()) / self.num_tokens
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}
