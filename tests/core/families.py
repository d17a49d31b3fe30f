"""The family matrix: one tiny real model per transformers family, saved with ``save_pretrained``.

Each :class:`Family` builds two checkpoints (A, B: different seeds, B nudged so even
zero-initialised tensors such as BART's ``final_logits_bias`` differ), a dataset for
its task, and says *by hand* which stored tensors each scope should move — the
expectations are written per family from its module names, not computed by Basin's
grouping code, so the tests check the grouping against an independent statement.

Reference numbers come from ``transformers`` alone (``from_pretrained`` + one row at a
time, so no padding is involved).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    RobertaConfig,
    RobertaForSequenceClassification,
    T5Config,
    T5ForConditionalGeneration,
)

from tests import factories
from tests.factories import VOCAB

V = len(VOCAB)
EOS = VOCAB.index("</s>")
AUTO = {
    "classification": "AutoModelForSequenceClassification",
    "causal_lm": "AutoModelForCausalLM",
    "seq2seq": "AutoModelForSeq2SeqLM",
}
DATA = {"classification": "data.csv", "causal_lm": "data.jsonl", "seq2seq": "data.jsonl"}
#: block i of a stack of n is in this third (written out, not computed)
THIRDS_OF = {
    2: ("lower", "upper"),
    3: ("lower", "middle", "upper"),
    6: ("lower", "lower", "middle", "middle", "upper", "upper"),
}


@dataclass
class Family:
    """One model family: how to build it, its task and tokenizer, and its groups by hand.

    ``groups``: ``[(regex over state-dict names, group)]``, first match wins; a group is
    ``embeddings``, ``head``, ``rest`` or ``<stack>:`` with the block index captured by the
    regex's first group. ``stacks``: ``{stack: depth}``. Tied aliases are listed under the
    group the tied tensor belongs to (tied word embeddings are embeddings).
    """

    name: str
    build: Callable[[], torch.nn.Module]
    task: str
    tokenizer: str
    groups: list[tuple[str, str]]
    stacks: dict[str, int]
    conv1d: bool = False  # weights stored (in, out): output neurons are columns
    extra_scopes: list[str] = field(default_factory=list)

    def group_of(self, name: str) -> tuple[str, int | None]:
        for rx, g in self.groups:
            m = re.search(rx, name)
            if m:
                return (g, int(m.group(1))) if g.endswith(":") else (g, None)
        raise AssertionError(f"{self.name}: no expected group for {name}")

    def moves(self, scope: str, name: str) -> bool:
        """Whether ``scope`` should move tensor ``name`` (by the hand-written table)."""
        g, i = self.group_of(name)
        if scope in ("embeddings", "head", "rest"):
            return g == scope
        if i is None:
            return False
        stack = g[:-1]
        third = THIRDS_OF[self.stacks[stack]][i]
        if scope in ("lower", "middle", "upper"):
            return third == scope
        want_stack, _, want_third = scope.rpartition(".")
        return stack == want_stack and third == want_third

    @property
    def scopes(self) -> list[str]:
        return ["embeddings", "lower", "middle", "upper", "head", "rest", *self.extra_scopes]


def _seeded(seed: int, make: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    torch.manual_seed(seed)
    return make().eval()


def _bert() -> torch.nn.Module:
    return BertForSequenceClassification(BertConfig(
        vocab_size=V, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, pad_token_id=0))


def _roberta() -> torch.nn.Module:
    return RobertaForSequenceClassification(RobertaConfig(
        vocab_size=V, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=72, pad_token_id=0, bos_token_id=2, eos_token_id=3, type_vocab_size=1))


def _distilbert() -> torch.nn.Module:
    return DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=V, dim=16, n_layers=3, n_heads=2, hidden_dim=32, max_position_embeddings=64,
        pad_token_id=0))


def _gpt2_config(**kw) -> GPT2Config:
    return GPT2Config(vocab_size=V, n_embd=16, n_layer=3, n_head=2, n_positions=64,
                      bos_token_id=EOS, eos_token_id=EOS, **kw)


def _gpt2_lm() -> torch.nn.Module:
    return GPT2LMHeadModel(_gpt2_config(pad_token_id=0))


def _gpt2_cls() -> torch.nn.Module:
    # config pad id (</s>) differs from the tokenizer's ([PAD] = 0): the case that read padding
    return GPT2ForSequenceClassification(_gpt2_config(pad_token_id=EOS))


def _neox() -> torch.nn.Module:
    return GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=V, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, bos_token_id=EOS, eos_token_id=EOS, pad_token_id=0))


def _llama(tied: bool) -> Callable[[], torch.nn.Module]:
    def make() -> torch.nn.Module:
        return LlamaForCausalLM(LlamaConfig(
            vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
            num_key_value_heads=2, max_position_embeddings=64, bos_token_id=EOS, eos_token_id=EOS,
            pad_token_id=0, tie_word_embeddings=tied))
    return make


def _t5() -> torch.nn.Module:
    return T5ForConditionalGeneration(T5Config(
        vocab_size=V, d_model=16, d_kv=8, d_ff=32, num_layers=3, num_decoder_layers=2, num_heads=2,
        pad_token_id=0, eos_token_id=EOS, decoder_start_token_id=0))


def _bart() -> torch.nn.Module:
    return BartForConditionalGeneration(BartConfig(
        vocab_size=V, d_model=16, encoder_layers=6, decoder_layers=3, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
        pad_token_id=0, bos_token_id=2, eos_token_id=EOS, decoder_start_token_id=EOS,
        forced_eos_token_id=EOS))


ENC_DEC = ["encoder.lower", "encoder.middle", "encoder.upper", "decoder.lower", "decoder.middle", "decoder.upper"]

FAMILIES = {
    f.name: f for f in [
        Family("bert", _bert, "classification", "bert", [
            (r"^bert\.embeddings\.", "embeddings"),
            (r"^bert\.encoder\.layer\.(\d+)\.", "encoder:"),
            (r"^(bert\.pooler|classifier)\.", "head"),
        ], {"encoder": 3}),
        Family("roberta", _roberta, "classification", "bert", [
            (r"^roberta\.embeddings\.", "embeddings"),
            (r"^roberta\.encoder\.layer\.(\d+)\.", "encoder:"),
            (r"^classifier\.", "head"),
        ], {"encoder": 3}),
        Family("distilbert", _distilbert, "classification", "bert", [
            (r"^distilbert\.embeddings\.", "embeddings"),
            (r"^distilbert\.transformer\.layer\.(\d+)\.", "transformer.layer:"),
            (r"^(pre_classifier|classifier)\.", "head"),
        ], {"transformer.layer": 3}, extra_scopes=["transformer.layer.upper"]),
        Family("gpt2_lm", _gpt2_lm, "causal_lm", "gpt2", [
            (r"^(transformer\.(wte|wpe)|lm_head)\.", "embeddings"),  # lm_head is tied to wte
            (r"^transformer\.h\.(\d+)\.", "h:"),
            (r"^transformer\.ln_f\.", "rest"),
        ], {"h": 3}, conv1d=True, extra_scopes=["h.lower"]),
        Family("gpt2_cls", _gpt2_cls, "classification", "gpt2", [
            (r"^transformer\.(wte|wpe)\.", "embeddings"),
            (r"^transformer\.h\.(\d+)\.", "h:"),
            (r"^transformer\.ln_f\.", "rest"),
            (r"^score\.", "head"),
        ], {"h": 3}, conv1d=True),
        Family("gpt_neox", _neox, "causal_lm", "gpt2", [
            (r"^gpt_neox\.embed_in\.", "embeddings"),
            (r"^gpt_neox\.layers\.(\d+)\.", "layers:"),
            (r"^gpt_neox\.final_layer_norm\.", "rest"),
            (r"^lm_head\.", "head"),  # stored as embed_out
        ], {"layers": 3}),
        Family("llama_tied", _llama(True), "causal_lm", "gpt2", [
            (r"^(model\.embed_tokens|lm_head)\.", "embeddings"),
            (r"^model\.layers\.(\d+)\.", "layers:"),
            (r"^model\.norm\.", "rest"),
        ], {"layers": 3}),
        Family("llama_untied", _llama(False), "causal_lm", "gpt2", [
            (r"^model\.embed_tokens\.", "embeddings"),
            (r"^model\.layers\.(\d+)\.", "layers:"),
            (r"^model\.norm\.", "rest"),
            (r"^lm_head\.", "head"),
        ], {"layers": 3}),
        Family("t5", _t5, "seq2seq", "t5", [
            (r"^(shared|encoder\.embed_tokens|decoder\.embed_tokens|lm_head)\.", "embeddings"),  # all tied
            (r"^encoder\.block\.(\d+)\.", "encoder:"),
            (r"^decoder\.block\.(\d+)\.", "decoder:"),
            (r"^(encoder|decoder)\.final_layer_norm\.", "rest"),
        ], {"encoder": 3, "decoder": 2}, extra_scopes=ENC_DEC),
        Family("bart", _bart, "seq2seq", "t5", [
            (r"^(model\.shared|model\.(en|de)coder\.(embed_tokens|embed_positions|layernorm_embedding)|lm_head)\.",
             "embeddings"),
            (r"^model\.encoder\.layers\.(\d+)\.", "encoder:"),
            (r"^model\.decoder\.layers\.(\d+)\.", "decoder:"),
            (r"^final_logits_bias$", "head"),
        ], {"encoder": 6, "decoder": 3}, extra_scopes=ENC_DEC),
    ]
}


def _nudge(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in {id(t): t for t in model.state_dict(keep_vars=True).values()}.values():
            if t.is_floating_point():
                t.add_(0.02 * torch.randn(t.shape, generator=g))


def write_data(fam: Family, root: Path) -> Path:
    path = root / DATA[fam.task]
    if fam.task == "classification":
        return factories.write_classification_dataset(path, n=14, seed=5)
    if fam.task == "causal_lm":
        return factories.write_lm_dataset(path, n=10, seed=6)
    rows = factories.sentences(10, 8)
    path.write_text("".join(json.dumps({"source": t, "target": "good day" if y else "bad"}) + "\n"
                            for t, y in rows))
    return path


def build_family(fam: Family, root: Path) -> dict[str, Path]:
    """``A`` and ``B`` (safetensors), ``A_bin`` (pytorch_model.bin, tied aliases stored twice),
    ``A_sharded`` (safetensors shards) and ``data``."""
    tok = factories.make_tokenizer(fam.tokenizer)
    a = _seeded(0, fam.build)
    b = _seeded(1, fam.build)
    _nudge(b, 2)
    out = {"A": factories.save(a, root / "A", tok), "B": factories.save(b, root / "B", tok)}
    # the same model as a .bin (every alias of a tied tensor stored) and as shards
    out["A_bin"] = root / "A_bin"
    out["A_bin"].mkdir()
    torch.save(a.state_dict(), out["A_bin"] / "pytorch_model.bin")  # tied aliases share storage
    for f in (out["A"]).iterdir():
        if f.suffix == ".json" and f.name != "model.safetensors.index.json":
            shutil.copy(f, out["A_bin"] / f.name)
    out["A_sharded"] = root / "A_sharded"
    a.save_pretrained(out["A_sharded"], max_shard_size="20KB")
    tok.save_pretrained(out["A_sharded"])
    out["data"] = write_data(fam, root)
    return out


def reference(fam: Family, path: Path) -> torch.nn.Module:
    """The checkpoint as ``transformers.from_pretrained`` loads it (fp32, eval)."""
    return getattr(transformers, AUTO[fam.task]).from_pretrained(str(path), dtype=torch.float32).eval()


def mixed(fam: Family, a: Path, b: Path, alpha: float) -> torch.nn.Module:
    """A fresh model holding (1−α)·θA + α·θB, every tensor mixed in float64."""
    ma, mb = reference(fam, a), reference(fam, b)
    sa, sb = ma.state_dict(), mb.state_dict()
    mix = {k: ((1 - alpha) * v.double() + alpha * sb[k].double()).float() if v.is_floating_point() else v
           for k, v in sa.items()}
    ma.load_state_dict(mix)
    return ma


@torch.no_grad()
def loss(fam: Family, model: torch.nn.Module, data: Path) -> float:
    """The task's loss computed one row at a time with ``transformers`` only."""
    tok = transformers.AutoTokenizer.from_pretrained(str(data.parent / "A"))
    rows = factories_rows(data)
    if fam.task == "classification":
        total = 0.0
        for r in rows:
            enc = tok(r["text"], return_tensors="pt")
            enc.pop("token_type_ids", None)
            logits = model(**enc).logits
            total += float(F.cross_entropy(logits, torch.tensor([r["label"]]), reduction="sum"))
        return total / len(rows)
    nll, n = 0.0, 0
    for r in rows:
        if fam.task == "causal_lm":
            ids = torch.tensor([tok(r["text"])["input_ids"]])
            z = model(input_ids=ids).logits[0, :-1]
            nll += float(F.cross_entropy(z, ids[0, 1:], reduction="sum"))
            n += ids.shape[1] - 1
        else:
            src = torch.tensor([tok(r["source"])["input_ids"]])
            tgt = torch.tensor([tok(text_target=r["target"])["input_ids"]])
            nll += float(model(input_ids=src, labels=tgt).loss) * tgt.shape[1]
            n += tgt.shape[1]
    return nll / n


def factories_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    lines = path.read_text().splitlines()[1:]
    return [{"text": ln.rsplit(",", 1)[0], "label": int(ln.rsplit(",", 1)[1])} for ln in lines]
