"""Sequence classification: mean cross-entropy ``loss``, ``accuracy``, macro ``f1``.

loss = (1/N) Σ_i −log softmax(z_i)[y_i];  accuracy = (1/N) Σ_i [argmax z_i = y_i];
f1 = mean over classes present in labels or predictions of 2·TP / (2·TP + FP + FN),
from a C×C confusion matrix accumulated on the device.

Padding: ``input_ids`` are padded with the model config's ``pad_token_id`` (the
tokenizer's when the config has none). Decoder classifiers (GPT-2, Llama, GPT-NeoX…:
a ``score`` head) pool the last token that is not ``config.pad_token_id``, so padding
with any other id would make a row's logits depend on its batch; RoBERTa derives
position ids from it too. A decoder classifier whose config has no ``pad_token_id``
cannot pool a padded row at all and is refused unless every batch holds one row
(``batch_size: 1``). Rows whose ``text_pair`` is empty are encoded as single sequences.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from basin.data import Dataset
from basin.errors import InvalidSpec
from basin.evaluate.base import Evaluator, length_batches, pad

if TYPE_CHECKING:
    from transformers import PretrainedConfig


def encode(tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int) -> dict[str, list]:
    """Tokenise rows: a row with a non-empty ``text_pair`` as a pair, every other row as a single text."""
    single = [i for i in range(len(texts)) if not pairs or not pairs[i]]
    paired = [i for i in range(len(texts)) if pairs and pairs[i]]
    out: dict[str, list] = {}
    for idx, enc in (
        (single, tokenizer([texts[i] for i in single], truncation=True, max_length=max_length) if single else None),
        (paired, tokenizer([texts[i] for i in paired], [pairs[i] for i in paired],  # type: ignore[index]
                           truncation=True, max_length=max_length) if paired else None),
    ):
        if enc is None:
            continue
        for key in ("input_ids", "token_type_ids"):
            if key in enc:
                col = out.setdefault(key, [None] * len(texts))
                for j, i in enumerate(idx):
                    col[i] = enc[key][j]
    if "token_type_ids" in out and any(v is None for v in out["token_type_ids"]):
        del out["token_type_ids"]  # only one half of the rows has them: let the model default
    return out


def is_decoder_classifier(model: nn.Module) -> bool:
    """A decoder-only sequence classifier (GPT-2, Llama, GPT-NeoX…): pools the last non-pad token."""
    cfg = getattr(model, "config", None)
    return isinstance(getattr(model, "score", None), nn.Linear) and not getattr(cfg, "is_encoder_decoder", False)


def padding_id(model: nn.Module, tokenizer: Any, *, batch_size: int, num_rows: int) -> int:
    """The id ``input_ids`` are padded with: the config's ``pad_token_id``, else the tokenizer's.

    Raises :class:`InvalidSpec` for a decoder classifier without ``config.pad_token_id``
    when a batch would hold more than one row.
    """
    cfg = cast("PretrainedConfig", model.config)
    if cfg.pad_token_id is not None:
        return int(cfg.pad_token_id)
    if is_decoder_classifier(model) and batch_size > 1 and num_rows > 1:
        raise InvalidSpec(
            f"{type(model).__name__} pools the last token that is not config.pad_token_id, and this "
            "checkpoint's config.json sets no pad_token_id, so padded rows would be pooled at the wrong "
            "token and the loss would depend on the batch size: set pad_token_id in the checkpoint's "
            "config.json, or run with batch_size: 1"
        )
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


class ClassificationEvaluator(Evaluator):
    task = "classification"

    def prepare(self, tokenizer: Any, data: Dataset, model: nn.Module, *, batch_size: int,
                max_length: int) -> list[dict[str, torch.Tensor]]:
        cfg = cast("PretrainedConfig", model.config)  # nn.Module.__getattr__ says Tensor | Module
        if cfg.num_labels is None:  # no id2label: impossible for a classification head (was int(None))
            raise TypeError("classification model config has no num_labels (id2label unset)")
        self.num_labels = int(cfg.num_labels)
        enc = encode(tokenizer, data.columns["text"], data.columns.get("text_pair"), max_length)
        ids = enc["input_ids"]
        use_tt = "token_type_ids" in enc and "token_type_ids" in inspect.signature(model.forward).parameters
        labels = torch.tensor(data.columns["label"], dtype=torch.long)
        pad_id = padding_id(model, tokenizer, batch_size=batch_size, num_rows=len(ids))
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
        self.order = torch.tensor(order, dtype=torch.long, device=self.device)  # batch row → dataset row
        # one write per batch; loss / argmax / confusion once per point over all N rows
        self.logits = torch.empty(len(order), self.num_labels, device=self.device)  # (N, C) fp32
        return out

    def batch_loss(self, i: int, logits: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of batch ``i``'s logits against its labels, mean over its examples."""
        s, e = self.spans[i]
        return F.cross_entropy(logits.float(), self.labels[s:e])

    def batch_weights(self) -> list[float]:
        """Each batch's examples (the loss is a mean over examples)."""
        return [float(e - s) for s, e in self.spans]

    ensembles = True

    stacks = True

    def _evaluate(self, model: nn.Module) -> dict[str, float]:
        self._fill(model)
        return self._metrics(self.logits, keep_examples=True)

    def _batch_values(self, i: int, logits: torch.Tensor) -> torch.Tensor:
        return logits  # (B, C): small; cast to fp32 when written into the buffer

    def _finish(self, values: list[Any]) -> dict[str, float]:
        for v, (s, e) in zip(values, self.spans, strict=True):
            self.logits[s:e].copy_(v)
        return self._metrics(self.logits, keep_examples=True)

    def _fill(self, model: nn.Module) -> None:
        for b, (s, e) in zip(self.batches, self.spans, strict=True):
            self.logits[s:e].copy_(model(**b).logits)  # (B, C), cast to fp32

    def _ensemble(self, model: nn.Module, at: Callable[[int], None], alphas: list[float]) -> dict[float, dict[str, float]]:
        """Logits mixed per example: z(α) = (1−α)·z_A + α·z_B (001 §4.4); the endpoints' own at 0 and 1."""
        ends = []
        for which in (0, 1):
            at(which)
            self._fill(model)
            ends.append(self.logits.clone())
        za, zb = ends
        return {a: self._metrics(za if a == 0.0 else zb if a == 1.0 else (1.0 - a) * za + a * zb) for a in alphas}

    def _metrics(self, logits: torch.Tensor, keep_examples: bool = False) -> dict[str, float]:
        """The metrics of ``logits``; with ``keep_examples`` also :attr:`examples` (dataset order):
        per-example ``loss``, ``correct`` and ``confidence`` = P(true label), read back in the
        same transfer as the metrics."""
        C = self.num_labels
        y = self.labels
        per = F.cross_entropy(logits, y, reduction="none").double()  # (N,)
        loss = per.sum()
        pred = logits.argmax(-1)
        conf = torch.bincount(y * C + pred, minlength=C * C)
        conf = conf.view(C, C).double()  # rows: true class, cols: predicted
        tp = conf.diag()
        fp = conf.sum(0) - tp
        fn = conf.sum(1) - tp
        denom = 2 * tp + fp + fn
        present = denom > 0
        f1 = torch.where(present, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))
        stats_t = torch.stack([loss, tp.sum(), f1.sum(), present.sum().double()])
        n = self.num_examples
        if keep_examples:
            inv = torch.empty_like(self.order)
            inv[self.order] = torch.arange(len(self.order), device=self.device)
            prob = torch.exp(-per)  # softmax(z)[y] = exp(−CE)
            rows = torch.stack([per, (pred == y).double(), prob])[:, inv]  # (3, N) dataset order
            both = torch.cat([stats_t, rows.reshape(-1)]).cpu()
            stats = both[:4].tolist()
            per_l, ok, p_true = both[4:].view(3, -1).numpy().round(7)
            self.examples = {"loss": per_l.tolist(), "correct": [bool(v) for v in ok],
                             "confidence": p_true.tolist()}
        else:
            stats = stats_t.cpu().tolist()
        return {
            "loss": stats[0] / n,
            "accuracy": stats[1] / n,
            "f1": stats[2] / max(stats[3], 1.0),
        }
