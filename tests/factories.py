"""Tiny *real* transformers checkpoints and datasets for the fast suite.

Everything is built from config classes and a word-level tokenizer made here, so the
suite needs no download. A "pre-trained" init θ0 is a seeded random model; the
fine-tuned checkpoints are θ0 trained a few Adam steps on a synthetic sentiment
task (label 1 when the sentence has more positive than negative words), with
different seeds / data orders, like the seeds of ``000``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

POS = ["good", "great", "happy", "love", "nice", "fine", "superb", "joy"]
NEG = ["bad", "awful", "sad", "hate", "poor", "ugly", "grim", "pain"]
NEUTRAL = ["the", "a", "movie", "day", "food", "was", "is", "and", "it", "this", "very", "so", "today", "service"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "</s>"]
VOCAB = SPECIAL + POS + NEG + NEUTRAL


def make_tokenizer(kind: str = "bert") -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over :data:`VOCAB` (BERT-style [CLS] x [SEP] for ``bert``)."""
    vocab = {w: i for i, w in enumerate(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if kind == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
        )
    if kind == "t5":
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", special_tokens=[("</s>", vocab["</s>"])]
        )
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>")


def sentences(n: int, seed: int) -> list[tuple[str, int]]:
    """``n`` synthetic labelled sentences of varied length (4–20 words)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(4, 20)
        words = [rng.choice(NEUTRAL) for _ in range(k)]
        npos, nneg = rng.randint(0, 3), rng.randint(0, 3)
        if npos == nneg:
            npos += 1
        for w in [rng.choice(POS) for _ in range(npos)] + [rng.choice(NEG) for _ in range(nneg)]:
            words.insert(rng.randrange(len(words) + 1), w)
        out.append((" ".join(words), int(npos > nneg)))
    return out


def write_classification_dataset(path: Path, n: int = 64, seed: int = 123, fmt: str | None = None) -> Path:
    """CSV / TSV / JSONL with ``text`` and ``label`` columns (format from the suffix)."""
    rows = sentences(n, seed)
    fmt = fmt or path.suffix.lstrip(".")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    else:
        sep = "\t" if fmt == "tsv" else ","
        path.write_text("text" + sep + "label\n" + "".join(f"{t}{sep}{y}\n" for t, y in rows))
    return path


def write_lm_dataset(path: Path, n: int = 32, seed: int = 7) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t, _ in sentences(n, seed)))
    return path


def write_seq2seq_dataset(path: Path, n: int = 32, seed: int = 9) -> Path:
    rows = sentences(n, seed)
    path.write_text(
        "".join(json.dumps({"source": t, "target": "good" if y else "bad"}) + "\n" for t, y in rows)
    )
    return path


def bert_config(**kw) -> BertConfig:
    base = dict(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=2, pad_token_id=0,
    )
    base.update(kw)
    return BertConfig(**base)


def init_classifier(seed: int = 0, **kw) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(bert_config(**kw)).eval()


def finetune_classifier(
    model: BertForSequenceClassification, seed: int, steps: int = 40, lr: float = 5e-3, save_every: int = 0,
    out: Path | None = None,
) -> list[Path]:
    """Train ``model`` in place on synthetic data ordered by ``seed``; optional intermediate saves."""
    tok = make_tokenizer("bert")
    data = sentences(steps * 16, 1000 + seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    saved = []
    for step in range(steps):
        batch = [data[i] for i in torch.randint(len(data), (16,), generator=g).tolist()]
        enc = tok([t for t, _ in batch], padding=True, return_tensors="pt")
        loss = model(**enc, labels=torch.tensor([y for _, y in batch])).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if save_every and out is not None and (step + 1) % save_every == 0 and step + 1 < steps:
            model.eval()
            saved.append(save(model, out.parent / f"{out.name}-step{step + 1}", tok))
            model.train()
    model.eval()
    return saved


def save(model, path: Path, tokenizer: PreTrainedTokenizerFast | None = None) -> Path:
    """``save_pretrained`` as safetensors, with the tokenizer beside it."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def build_classifier_family(root: Path, steps: int = 40) -> dict[str, Path]:
    """θ0 (``init``), two fine-tuned seeds (``ft_a``, ``ft_b``), a third (``ft_c``), a trajectory.

    Returns names → model directories, plus ``data`` → an evaluation CSV and
    ``traj`` steps under ``ft_a-step*``.
    """
    tok = make_tokenizer("bert")
    out: dict[str, Path] = {"init": save(init_classifier(0), root / "init", tok)}
    for name, seed in (("ft_a", 1), ("ft_b", 2), ("ft_c", 3)):
        m = init_classifier(0)
        saved = finetune_classifier(m, seed, steps=steps, save_every=steps // 4 if name == "ft_a" else 0, out=root / name)
        out[name] = save(m, root / name, tok)
        for p in saved:
            out[p.name] = p
    out["data"] = write_classification_dataset(root / "eval.csv", n=64)
    return out


def build_gpt2(root: Path, seed: int = 0, steps: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(VOCAB), n_embd=32, n_layer=2, n_head=2, n_positions=64, pad_token_id=0,
                     bos_token_id=VOCAB.index("</s>"), eos_token_id=VOCAB.index("</s>"))
    model = GPT2LMHeadModel(cfg).eval()
    tok = make_tokenizer("gpt2")
    if steps:
        lm_steps(model, [t for t, _ in sentences(steps * 8, 50 + seed)], lr=3e-3)
    return save(model, root, tok)


def lm_steps(model, texts: list[str], lr: float) -> None:
    """Adam next-token steps over ``texts`` in batches of 8 (padding masked), then eval mode."""
    tok = make_tokenizer("gpt2")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for s in range(0, len(texts) - 7, 8):
        enc = tok(texts[s : s + 8], padding=True, return_tensors="pt")
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def build_t5(root: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=len(VOCAB), d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2,
        pad_token_id=0, eos_token_id=VOCAB.index("</s>"), decoder_start_token_id=0,
    )
    return save(T5ForConditionalGeneration(cfg).eval(), root, make_tokenizer("t5"))


def train_lm(model, steps: int, seed: int, words: list[str] | None = None, lr: float = 3e-3) -> None:
    """A few Adam steps of next-token training on synthetic sentences (optionally only with ``words``
    as the sentiment words, which tilts what the LM samples)."""
    rng = random.Random(50 + seed)
    pool = words if words is not None else POS + NEG
    data = [" ".join(rng.choice(pool if rng.random() < 0.5 else NEUTRAL) for _ in range(rng.randint(4, 12)))
            for _ in range(steps * 8)]
    lm_steps(model, data, lr)


def build_llama(root: Path, seed: int = 0, steps: int = 0, words: list[str] | None = None) -> Path:
    """A tiny Llama LM (2 layers, hidden 32), optionally trained a few steps."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    eos = VOCAB.index("</s>")
    cfg = LlamaConfig(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                      pad_token_id=0, bos_token_id=eos, eos_token_id=eos)
    model = LlamaForCausalLM(cfg).eval()
    if steps:
        train_lm(model, steps, seed, words)
    return save(model, root, make_tokenizer("gpt2"))


def build_sentiment_pair(root: Path, kind: str = "gpt2", steps: int = 40) -> dict[str, Path]:
    """Two LMs from one init, tuned towards negative (``neg``) and positive (``pos``) words; a
    sentiment scorer (``scorer``: a classifier whose id2label names negative / positive); prompts."""
    build = build_gpt2 if kind == "gpt2" else build_llama
    out = {"init": build(root / "init", seed=0)}
    for name, words in (("neg", NEG), ("pos", POS)):
        from transformers import AutoModelForCausalLM

        m = AutoModelForCausalLM.from_pretrained(out["init"])
        train_lm(m, steps, seed=1, words=words)
        out[name] = save(m, root / name, make_tokenizer("gpt2"))
    scorer = init_classifier(0, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    finetune_classifier(scorer, seed=1, steps=40)
    out["scorer"] = save(scorer, root / "scorer", make_tokenizer("bert"))
    out["prompts"] = write_prompts(root / "prompts.csv")
    out["text"] = write_lm_dataset(root / "text.jsonl", n=16)
    return out


def write_prompts(path: Path, n: int = 6, seed: int = 11) -> Path:
    """A ``prompt`` CSV of short neutral prompts."""
    rng = random.Random(seed)
    rows = [" ".join(rng.choice(NEUTRAL) for _ in range(rng.randint(1, 4))) for _ in range(n)]
    path.write_text("prompt\n" + "".join(f"{r}\n" for r in rows))
    return path


def build_lora(base: Path, out: Path, seed: int, steps: int = 12, *, peft_type: str = "lora",
               target_modules: tuple[str, ...] = ("query", "value"), r: int = 4) -> Path:
    """A PEFT adapter on the classifier ``base``, trained ``steps`` Adam steps (data order by ``seed``).

    LoRA starts with random A *and* B (``init_lora_weights=False``) so adapters of different
    seeds differ from the first step; IA³ (``peft_type="ia3"``) scales the same modules.
    ``base_model_name_or_path`` in the saved config is ``base``'s absolute path.
    """
    from peft import IA3Config, LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(str(base))
    if peft_type == "ia3":
        cfg = IA3Config(task_type="SEQ_CLS", target_modules=list(target_modules),
                        feedforward_modules=[], init_ia3_weights=True)
    else:
        cfg = LoraConfig(task_type="SEQ_CLS", r=r, lora_alpha=2 * r, target_modules=list(target_modules),
                         init_lora_weights=False)
    pm = get_peft_model(model, cfg)
    finetune_classifier(pm, seed, steps=steps, lr=1e-2)
    pm.save_pretrained(str(out))
    return out


def build_lora_family(root: Path, base: Path) -> dict[str, Path]:
    """Three LoRA adapters (``lora_a``/``lora_b``/``lora_c``, seeds 1-3) and an IA³ adapter
    (``ia3``) on the classifier ``base``; ``base`` and ``data`` (an evaluation CSV) beside them."""
    out = {name: build_lora(base, root / name, seed) for name, seed in (("lora_a", 1), ("lora_b", 2), ("lora_c", 3))}
    out["ia3"] = build_lora(base, root / "ia3", 4, peft_type="ia3")
    out["base"] = base
    out["data"] = write_classification_dataset(root / "eval.csv", n=48)
    return out


def build_prompt(base: Path, out: Path, seed: int, steps: int = 12, *, tokens: int = 4) -> Path:
    """A prompt-tuning adapter (peft ``PROMPT_TUNING``, ``tokens`` virtual tokens, random init)
    on the classifier ``base``, trained ``steps`` Adam steps like :func:`build_lora`."""
    from peft import PromptTuningConfig, get_peft_model

    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(str(base))
    pm = get_peft_model(model, PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=tokens))
    finetune_classifier(pm, seed, steps=steps, lr=1e-2)
    pm.save_pretrained(str(out))
    return out


def build_delta_family(root: Path, base: Path) -> dict[str, Path]:
    """One task's solutions of three delta-tuning methods on ``base`` (Yi et al. 2022's setting):
    ``adapter`` (a rank-2 LoRA on the FFN's ``intermediate.dense``: a bottleneck beside the
    feed-forward layer), ``prompt`` (prompt tuning, 4 tokens) and ``lora`` (rank 2 on query /
    value); ``lora_2`` a second LoRA seed; ``train`` / ``data`` CSVs (disjoint seeds)."""
    out = {
        "adapter": build_lora(base, root / "adapter", 5, target_modules=("intermediate.dense",), r=2),
        "prompt": build_prompt(base, root / "prompt", 6),
        "lora": build_lora(base, root / "lora", 7, r=2),
        "lora_2": build_lora(base, root / "lora_2", 8, r=2),
    }
    out["base"] = base
    out["train"] = write_classification_dataset(root / "train.csv", n=64, seed=321)
    out["data"] = write_classification_dataset(root / "eval.csv", n=48, seed=654)
    return out


def permute_ffn(model: BertForSequenceClassification, seed: int = 0) -> BertForSequenceClassification:
    """The same function in another basin: in every layer the FFN's hidden neurons permuted —
    the intermediate dense's rows (and bias) and the output dense's columns by one permutation
    (issue 26: a study must put such a copy in a cluster of its own)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            inter, out = layer.intermediate.dense, layer.output.dense
            perm = torch.randperm(inter.out_features, generator=g)
            inter.weight.copy_(inter.weight[perm])
            inter.bias.copy_(inter.bias[perm])
            out.weight.copy_(out.weight[:, perm])
    return model


def build_study_family(root: Path, *, pretrain_steps: int = 100, steps: int = 12) -> dict[str, Path]:
    """A study's tiny population (issue 26): θ0 trained ``pretrain_steps`` on the task (a
    "pre-trained" init that sits in a basin), two seeds fine-tuned from it a few gentle steps
    (``seed_a``, ``seed_b``: one basin), and ``seed_a`` with its FFN neurons permuted
    (``permuted``: the same function, another basin); ``data`` an evaluation CSV. θ0's FFN
    weights start 40× / 80× larger than the other factories' so the FFN carries the function
    (at the usual scale this tiny BERT barely uses it, and averaging its neurons with a
    permutation of them changed nothing); no dropout, so the family is the same on every run
    (with these seeds the permuted copy's midpoint loses ≈ 0.2 nats, the seeds' none)."""
    tok = make_tokenizer("bert")
    base = init_classifier(0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with torch.no_grad():
        for layer in base.bert.encoder.layer:
            layer.intermediate.dense.weight.mul_(40.0)
            layer.output.dense.weight.mul_(80.0)
    finetune_classifier(base, 7, steps=pretrain_steps)
    out: dict[str, Path] = {"init": save(base, root / "init", tok)}
    for name, seed in (("seed_a", 1), ("seed_b", 2)):
        m = BertForSequenceClassification.from_pretrained(root / "init").eval()
        finetune_classifier(m, seed, steps=steps, lr=1e-3)
        out[name] = save(m, root / name, tok)
    m = permute_ffn(BertForSequenceClassification.from_pretrained(out["seed_a"]).eval(), seed=5)
    out["permuted"] = save(m, root / "permuted", tok)
    out["data"] = write_classification_dataset(root / "eval.csv", n=256, seed=321)
    return out
