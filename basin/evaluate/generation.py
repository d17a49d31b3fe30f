"""Generation: sample continuations of prompts at a point and score them (001 §4.1, appendix A.1).

For each of P prompts, k continuations are sampled (top-p, temperature, at most
``max_new_tokens``) from the live model, batched with a KV cache and left padding
(``transformers``' ``generate``). Metrics over the k·P continuations:

- ``sentiment`` = (1/kP) Σ E_scorer[s | continuation]: the expected score of a sentiment
  classifier from the store, s = 1 for its positive label, 0.5 for a label named neutral, 0
  for the others unless ``generation.label_scores`` says otherwise (P(positive) for a
  two-class scorer; 001's expected positive score for a three-class one). The continuation
  alone is scored, not the prompt, so neutral prompts do not dilute it;
- ``sample_perplexity`` = exp(Σ NLL / Σ tokens) of the continuations (their new tokens, up
  to the first end-of-text) given their prompts, under a reference causal LM that is not an
  end of the path (``generation.reference``, or the path's θ0);
- ``distinct_n`` = per prompt, #distinct n-grams / #n-grams over its k continuations, then
  the mean over prompts (DExperts / 001); ``distinct_n_pooled`` pools every continuation at
  the point. Lower-cased whitespace words (Li et al. 2016; tokenizer-independent, so two LMs
  with different vocabularies are compared on the same footing);
- ``length`` = mean number of new tokens before end-of-text.

Reproducible sampling: row (prompt p, sample j) at a point draws from its own
``torch.Generator`` seeded from ``(seed, the point's coordinates, p, j)``. The draw is a
Gumbel-max in float64 (argmax of log p + Gumbel noise over the nucleus, one uniform per
token of the vocabulary per step), done by a logits processor that leaves exactly one
finite score (``generate`` then runs greedy and picks it). So a text depends on its row's
own history only: not on the worker, the batch size, the batch's other rows or the order
points are evaluated in. Logits differ across batch shapes by float rounding (~1e-6); a
Gumbel-max draw changes only when the two best perturbed scores are that close (an
inverse-CDF draw would change whenever the uniform lands that close to any of the
thousands of cumulative-probability boundaries, which for a flat distribution is often).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from basin.data import Dataset
from basin.errors import InvalidSpec
from basin.evaluate.base import Evaluator, length_batches, pad
from basin.evaluate.classification import encode, padding_id
from basin.generation import distinct_n, distinct_n_per_prompt, row_seed
from basin.metrics import task_metrics

if TYPE_CHECKING:
    from basin.spec import GenerationSpec

class RowSampler:
    """A ``transformers`` logits processor: top-p / temperature sampling (Gumbel-max) with one generator per row.

    Leaves one finite score per row (the drawn token), so greedy decoding picks it; records
    each step's draws, which :meth:`check` compares with what ``generate`` returned.
    """

    def __init__(self, generators: list[torch.Generator], *, top_p: float, temperature: float):
        self.generators = generators
        self.top_p = top_p
        self.temperature = temperature
        self.drawn: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        V = scores.shape[-1]
        logp = torch.log_softmax(scores.double() / self.temperature, dim=-1)  # (B, V)
        # top-p: the smallest prefix of the sorted distribution whose mass reaches top_p (the most
        # likely token always stays). Only the head is sorted: top-k, widened until every row's
        # nucleus fits in it (a peaked LM needs a few hundred tokens; a flat one the whole vocabulary)
        k = min(V, 256)
        while True:
            top, idx = logp.topk(k, dim=-1)  # (B, k), sorted descending
            p = top.exp()
            mass = p.cumsum(-1)
            if k == V or bool((mass[:, -1] >= self.top_p).all()):
                break
            k = 8 * k if 32 * k < V else V
        inside = (mass - p) < self.top_p
        # Gumbel-max: argmax(log p + G), G = −log(−log U), U ~ U(0, 1) from the row's own generator, one
        # U per vocabulary entry (keyed by token id, and V of them drawn whatever k is): an exact draw
        # from p restricted to the nucleus
        u = torch.stack([torch.rand(V, generator=g, dtype=torch.float64) for g in self.generators])
        u = u.to(scores.device).gather(-1, idx).clamp_(1e-300, 1.0 - 1e-16)
        pick = torch.where(inside, top - torch.log(-torch.log(u)), -math.inf).argmax(-1, keepdim=True)
        token = idx.gather(-1, pick)  # (B, 1)
        self.drawn.append(token[:, 0].clone())
        out = torch.full_like(scores, -math.inf)
        return out.scatter_(-1, token, 0.0)

    def check(self, new_tokens: torch.Tensor, lengths: list[int]) -> None:
        """Every token ``generate`` kept is the one this sampler drew (no other processor changed it)."""
        for t, drawn in enumerate(self.drawn):
            for i, n in enumerate(lengths):
                if t < n and int(new_tokens[i, t]) != int(drawn[i]):
                    raise RuntimeError(
                        "generate() did not keep the sampled token (a logits processor from the model's "
                        "generation_config changed the scores after sampling)"
                    )


class MixedScores:
    """A ``transformers`` logits processor: the generating model's (A's) scores replaced by
    (1−α)·log_softmax(z_A) + α·log_softmax(z_B), where ``other`` (B) scores the same prefix with its own
    KV cache (one token per step after the prompt). The next processor (:class:`RowSampler`) renormalises.

    Positions and the attention mask follow ``generate``'s for left-padded batches: the prompt's mask,
    one more 1 per step; position = (number of unmasked tokens so far) − 1.
    """

    def __init__(self, other: nn.Module, alpha: float, attention_mask: torch.Tensor):
        self.other = other
        self.alpha = float(alpha)
        self.mask = attention_mask
        self.past: Any = None
        self.seen = 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.past is None:
            mask, new = self.mask, input_ids
        else:
            grow = input_ids.shape[1] - self.mask.shape[1]
            mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], grow)], dim=1)
            new = input_ids[:, self.seen:]
        pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)[:, -new.shape[1]:]
        import inspect

        # transformers 5 names the KV cache ``cache`` (``past_key_values`` before)
        key = "cache" if "cache" in inspect.signature(self.other.forward).parameters else "past_key_values"
        out = self.other(input_ids=new, attention_mask=mask, position_ids=pos, use_cache=True, **{key: self.past})
        self.past = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        self.seen = input_ids.shape[1]
        la = torch.log_softmax(scores.double(), dim=-1)
        lb = torch.log_softmax(out.logits[:, -1].double(), dim=-1)
        return (1.0 - self.alpha) * la + self.alpha * lb  # float64: the sampler reads it as such


@dataclass
class Scorer:
    """A sentiment classifier from the store: its model, tokenizer and each class's score s
    (:func:`basin.generation.label_weights`)."""

    model: nn.Module
    tokenizer: Any
    weights: list[float]
    max_length: int = 128

    def positive_prob(self, texts: list[str], batch_size: int, device: torch.device) -> list[float]:
        """The expected score E[s] = Σ_c P(c | text)·s(c) of each text, in order (P(positive) when the
        positive class scores 1 and every other 0)."""
        if not texts:
            return []
        enc = encode(self.tokenizer, texts, None, self.max_length)
        ids = enc["input_ids"]
        pad_id = padding_id(self.model, self.tokenizer, batch_size=batch_size, num_rows=len(ids))
        out = [0.0] * len(texts)
        for idx in length_batches([len(s) for s in ids], batch_size):
            b = {"input_ids": pad([ids[i] for i in idx], pad_id).to(device),
                 "attention_mask": pad([[1] * len(ids[i]) for i in idx], 0).to(device)}
            if "token_type_ids" in enc:
                b["token_type_ids"] = pad([enc["token_type_ids"][i] for i in idx], 0).to(device)
            probs = torch.softmax(self.model(**b).logits.double(), dim=-1)
            p = (probs @ torch.tensor(self.weights, dtype=probs.dtype, device=probs.device)).tolist()
            for i, v in zip(idx, p, strict=True):
                out[i] = float(v)
        return out


class GenerationEvaluator(Evaluator):
    """Samples continuations of the dataset's prompts and scores them (see the module docstring).

    Set :attr:`coords` to the point's coordinates before :meth:`evaluate` (the row seeds
    come from them); after it, :attr:`samples` holds the kept samples.
    """

    task = "generation"

    def __init__(self, tokenizer: Any, data: Dataset, model: nn.Module, *, batch_size: int, max_length: int,
                 device: torch.device, autocast_dtype: torch.dtype | None = None,
                 gen: GenerationSpec, metrics: Sequence[str], scorer: Scorer | None = None,
                 reference: nn.Module | None = None):
        self.gen = gen
        self.tokenizer = tokenizer
        self.metrics = tuple(m for m in task_metrics("generation") if m in metrics)  # type: ignore[misc]
        if "sentiment" in self.metrics and scorer is None:
            raise InvalidSpec("metric 'sentiment' needs generation.scorer")
        if "sample_perplexity" in self.metrics and reference is None:
            raise InvalidSpec("metric 'sample_perplexity' needs a reference LM")
        self.scorer = scorer
        self.reference = reference
        self.batch_size = batch_size
        self.coords: dict[str, float] = {}
        self.samples: list[dict[str, Any]] = []
        #: α → each prompt's mean sentiment of the output ensemble's samples (filled by :meth:`ensemble`)
        self.ensemble_per_prompt: dict[float, list[float]] = {}
        super().__init__(tokenizer, data, model, batch_size=batch_size, max_length=max_length, device=device,
                         autocast_dtype=autocast_dtype)

    def prepare(self, tokenizer: Any, data: Dataset, model: nn.Module, *, batch_size: int,
                max_length: int) -> list[dict[str, torch.Tensor]]:
        if "prompt" in data.columns:
            ids = tokenizer(data.columns["prompt"], truncation=True, max_length=max_length)["input_ids"]
        else:  # text cut to its first prompt_tokens tokens
            n = int(self.gen.prompt_tokens or max_length)
            ids = [s[:n] for s in tokenizer(data.columns["text"], truncation=True, max_length=max_length)["input_ids"]]
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        ids = [list(s) if s else [int(start)] for s in ids]  # an empty prompt starts at BOS
        self.prompt_ids = ids
        self.prompt_text = (list(data.columns["prompt"]) if "prompt" in data.columns
                            else [tokenizer.decode(s, skip_special_tokens=True) for s in ids])
        k = self.gen.samples_per_prompt
        self.rows = [(p, j) for p in range(len(ids)) for j in range(k)]
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        eos = tokenizer.eos_token_id
        self.eos_id = int(eos) if eos is not None else None
        out = []
        self.row_batches: list[list[int]] = []
        for idx in length_batches([len(ids[p]) for p, _ in self.rows], batch_size):
            seqs = [ids[self.rows[r][0]] for r in idx]
            width = max(len(s) for s in seqs)
            input_ids = torch.tensor([[self.pad_id] * (width - len(s)) + s for s in seqs], dtype=torch.long)
            mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long)
            out.append(self._to(input_ids=input_ids, attention_mask=mask))
            self.row_batches.append(idx)
        return out

    def _config(self) -> Any:
        from transformers import GenerationConfig

        # greedy over the sampler's one finite score; every default processor off
        return GenerationConfig(
            do_sample=False, num_beams=1, max_new_tokens=self.gen.max_new_tokens, min_new_tokens=0,
            pad_token_id=self.pad_id, eos_token_id=self.eos_id, repetition_penalty=1.0,
            no_repeat_ngram_size=0, bos_token_id=None, forced_bos_token_id=None, forced_eos_token_id=None,
            suppress_tokens=None, begin_suppress_tokens=None, temperature=None, top_p=None, top_k=None,
        )

    ensembles = True

    def _ensemble(self, model: nn.Module, at: Callable[[int], None], alphas: list[float]) -> dict[float, dict[str, float]]:
        """Output ensembling of generated text (001 §4.4, DExperts): at every sampling step the next token is
        drawn from (1−α)·log p_A + α·log p_B, renormalised, by the same seeded sampler as the weight path at
        that α (:class:`MixedScores` then :class:`RowSampler`). The live model generates as θA; a copy set
        to θB (device memory: one more model) scores the same tokens with its own KV cache. At α = 0 and 1
        the endpoint generates alone, so there the ensemble's samples and metrics are the weight path's."""
        import copy

        with torch.inference_mode(False):
            at(1)
            other = copy.deepcopy(model).eval()
        keep = (self.coords, self.samples, self.examples)
        out: dict[float, dict[str, float]] = {}
        try:
            at(0)
            for a in alphas:
                self.coords = {"alpha": a}
                out[a] = (self._evaluate(other) if a == 1.0 else self._evaluate(model)
                          if a == 0.0 else self._evaluate(model, mix=(other, a)))
                if self.examples and "sentiment" in self.examples:
                    self.ensemble_per_prompt[a] = [round(float(v), 6) for v in self.examples["sentiment"]]
        finally:
            self.coords, self.samples, self.examples = keep
            del other
        return out

    def _evaluate(self, model: nn.Module, mix: tuple[nn.Module, float] | None = None) -> dict[str, float]:
        from transformers import LogitsProcessorList

        gen = self.gen
        new: list[list[int]] = [[] for _ in self.rows]
        config = self._config()
        for b, idx in zip(self.batches, self.row_batches, strict=True):
            gens = [torch.Generator().manual_seed(row_seed(gen.seed, self.coords, *self.rows[r])) for r in idx]
            sampler = RowSampler(gens, top_p=gen.top_p, temperature=gen.temperature)
            chain: list[Any] = [sampler] if mix is None else [MixedScores(mix[0], mix[1], b["attention_mask"]), sampler]
            out = cast(Any, model).generate(**b, generation_config=config, logits_processor=LogitsProcessorList(chain))
            cont = out[:, b["input_ids"].shape[1]:].cpu()
            lengths = []
            for i, r in enumerate(idx):
                toks = cont[i].tolist()
                if self.eos_id is not None and self.eos_id in toks:
                    toks = toks[: toks.index(self.eos_id)]
                new[r] = toks
                lengths.append(len(toks))
            sampler.check(cont, lengths)
        texts = [self.tokenizer.decode(t, skip_special_tokens=True) for t in new]
        values: dict[str, float] = {}
        scores: list[float] | None = None
        # per prompt (the unit of the intervals: a prompt's samples are not independent)
        per_prompt: dict[str, list[float]] = {"length": self._per_prompt([len(t) for t in new])}
        if self.scorer is not None:
            scores = self.scorer.positive_prob(texts, self.batch_size, self.device)
            values["sentiment"] = sum(scores) / len(scores)
            per_prompt["sentiment"] = self._per_prompt(scores)
        if "sample_perplexity" in self.metrics:
            nll, count = self._nll(new)
            total = sum(count)
            values["sample_perplexity"] = math.exp(min(sum(nll) / total, 700.0)) if total else float("nan")
            per_prompt["sample_nll"] = self._per_prompt(nll, mean=False)
            per_prompt["sample_tokens"] = self._per_prompt(count, mean=False)
        groups: list[list[str]] = [[] for _ in self.prompt_ids]
        for r, t in enumerate(texts):
            groups[self.rows[r][0]].append(t)
        for n in (1, 2, 3):
            values[f"distinct_{n}"] = distinct_n_per_prompt(groups, n)
            values[f"distinct_{n}_pooled"] = distinct_n(texts, n)
        values["length"] = sum(len(t) for t in new) / len(new)
        self.examples = per_prompt
        order = sorted(range(len(self.rows)), key=lambda r: (self.rows[r][1], self.rows[r][0]))[: gen.keep_samples]
        self.samples = [
            {"prompt": self.prompt_text[self.rows[r][0]], "text": texts[r],
             "sentiment": scores[r] if scores is not None else None}
            for r in order
        ]
        return {m: values[m] for m in self.metrics}

    def _per_prompt(self, per_row: Sequence[float], *, mean: bool = True) -> list[float]:
        """Row values summed (or averaged) over each prompt's samples, in prompt order."""
        out = [0.0] * len(self.prompt_ids)
        for r, v in enumerate(per_row):
            out[self.rows[r][0]] += float(v)
        k = self.gen.samples_per_prompt
        return [v / k for v in out] if mean else out

    def _nll(self, new: list[list[int]]) -> tuple[list[float], list[int]]:
        """Per row: the summed NLL of its continuation's tokens given its prompt under the
        reference LM, and the number of those tokens (0 and 0 for an empty continuation)."""
        assert self.reference is not None
        nll = [0.0] * len(new)
        count = [len(t) for t in new]
        rows = [r for r, t in enumerate(new) if t]
        for idx in length_batches([len(self.prompt_ids[self.rows[r][0]]) + len(new[r]) for r in rows],
                                  self.batch_size):
            seqs, starts = [], []
            for i in idx:
                r = rows[i]
                prompt = self.prompt_ids[self.rows[r][0]]
                seqs.append(prompt + new[r])
                starts.append(len(prompt))
            ids = pad(seqs, self.pad_id).to(self.device)
            mask = pad([[1] * len(s) for s in seqs], 0).to(self.device)
            # targets: the continuation's tokens only (position t predicts token t + 1)
            tgt = torch.full_like(ids, -100)
            for i, (s, st) in enumerate(zip(seqs, starts, strict=True)):
                tgt[i, st : len(s)] = ids[i, st : len(s)]
            logits = self.reference(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            per_token = F.cross_entropy(logits.transpose(1, 2), tgt[:, 1:], ignore_index=-100, reduction="none")
            for i, v in zip(idx, per_token.double().sum(dim=1).cpu().tolist(), strict=True):
                nll[rows[i]] = v
        return nll, count


__all__ = ["GenerationEvaluator", "MixedScores", "RowSampler", "Scorer"]
