"""Sequence classification: mean cross-entropy ``loss``, ``accuracy``, macro ``f1``.

loss = (1/N) Σ_i −log softmax(z_i)[y_i];  accuracy = (1/N) Σ_i [argmax z_i = y_i];
f1 = mean over classes present in labels or predictions of 2·TP / (2·TP + FP + FN),
from a C×C confusion matrix accumulated on the device.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from basin.data import Dataset
from basin.evaluate.base import Evaluator, length_batches, pad

if TYPE_CHECKING:
    from transformers import PretrainedConfig


class ClassificationEvaluator(Evaluator):
    task = "classification"

    def prepare(self, tokenizer: Any, data: Dataset, model: nn.Module, *, batch_size: int,
                max_length: int) -> list[dict[str, torch.Tensor]]:
        cfg = cast("PretrainedConfig", model.config)  # nn.Module.__getattr__ says Tensor | Module
        if cfg.num_labels is None:  # no id2label: impossible for a classification head (was int(None))
            raise TypeError("classification model config has no num_labels (id2label unset)")
        self.num_labels = int(cfg.num_labels)
        texts = data.columns["text"]
        pairs = data.columns.get("text_pair")
        enc = tokenizer(texts, pairs, truncation=True, max_length=max_length) if pairs else tokenizer(
            texts, truncation=True, max_length=max_length
        )
        ids = enc["input_ids"]
        use_tt = "token_type_ids" in enc and "token_type_ids" in inspect.signature(model.forward).parameters
        labels = torch.tensor(data.columns["label"], dtype=torch.long)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        out = []
        order: list[int] = []
        self.spans: list[tuple[int, int]] = []  # rows of each batch in the logits buffer
        for idx in length_batches([len(s) for s in ids], batch_size):
            input_ids = pad([ids[i] for i in idx], pad_id)
            mask = pad([[1] * len(ids[i]) for i in idx], 0)
            b = {"input_ids": input_ids, "attention_mask": mask}
            if use_tt:
                b["token_type_ids"] = pad([enc["token_type_ids"][i] for i in idx], 0)
            out.append(self._to(**b))
            self.spans.append((len(order), len(order) + len(idx)))
            order.extend(idx)
        self.labels = labels[order].to(self.device)  # (N,) in batch order
        # one write per batch; loss / argmax / confusion once per point over all N rows
        self.logits = torch.empty(len(order), self.num_labels, device=self.device)  # (N, C) fp32
        return out

    def _evaluate(self, model: nn.Module) -> dict[str, float]:
        C = self.num_labels
        for b, (s, e) in zip(self.batches, self.spans, strict=True):
            self.logits[s:e].copy_(model(**b).logits)  # (B, C), cast to fp32
        y = self.labels
        loss = F.cross_entropy(self.logits, y, reduction="sum").double()
        conf = torch.bincount(y * C + self.logits.argmax(-1), minlength=C * C)
        conf = conf.view(C, C).double()  # rows: true class, cols: predicted
        tp = conf.diag()
        fp = conf.sum(0) - tp
        fn = conf.sum(1) - tp
        denom = 2 * tp + fp + fn
        present = denom > 0
        f1 = torch.where(present, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))
        stats = torch.stack([loss, tp.sum(), f1.sum(), present.sum().double()]).cpu().tolist()
        n = self.num_examples
        return {
            "loss": stats[0] / n,
            "accuracy": stats[1] / n,
            "f1": stats[2] / max(stats[3], 1.0),
        }
