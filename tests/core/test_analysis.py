"""Barriers and distances on constructed cases."""

from __future__ import annotations

import math

import pytest
import torch

from basin.analysis import barrier, barrier_label, barriers, distances, is_partial
from basin.errors import InvalidSpec
from basin.groups import model_groups
from basin.space import select_scope


def test_loss_barrier_constructed():
    # L(α) = chord + bump of height 0.3 at α = 0.5 between L(0) = 1 and L(1) = 2
    curve = [(a / 4, (1 - a / 4) * 1.0 + (a / 4) * 2.0 + (0.3 if a == 2 else 0.0)) for a in range(5)]
    b = barrier(curve, lo=0.0, hi=1.0)
    assert b["value"] == pytest.approx(0.3) and b["alpha"] == 0.5
    # endpoints inside a wider range are α = 0 and 1; points outside [0, 1] do not count
    wide = [(-0.5, 9.0), (0.0, 1.0), (0.5, 1.0), (1.0, 1.0), (1.5, 9.0)]
    assert barrier(wide, lo=-0.5, hi=1.5) == {"value": 0.0, "alpha": 0.0, "start": 0.0, "end": 1.0,
                                              "partial": False}
    # a range without 0 and 1 uses its own ends: a partial-range barrier, labelled so
    inner = barrier([(0.2, 1.0), (0.4, 2.0), (0.6, 1.0)], lo=0.2, hi=0.6)
    assert inner["value"] == pytest.approx(1.0) and (inner["start"], inner["end"]) == (0.2, 0.6)
    assert inner["partial"] is True and is_partial(inner)
    assert barrier_label(inner) == "partial-range barrier (chord α = 0.2 → 0.6)"
    assert barrier_label(barrier(wide, lo=-0.5, hi=1.5)) == "barrier"
    # documents stored before the flag: read from start / end
    assert is_partial({"value": 1.0, "start": 0.0, "end": 0.8}) and not is_partial({"value": 1.0})


def test_accuracy_barrier_is_drop_below_chord():
    results = [{"coords": {"alpha": a}, "metrics": {"loss": 0.1, "accuracy": acc}}
               for a, acc in [(0.0, 0.9), (0.5, 0.5), (1.0, 0.8)]]
    out = barriers(results, ["loss", "accuracy"], 0.0, 1.0)
    assert out["accuracy"]["value"] == pytest.approx(0.85 - 0.5) and out["accuracy"]["alpha"] == 0.5
    assert out["loss"]["value"] == pytest.approx(0.0)


def test_distances():
    a = {"layer.0.w": torch.ones(2, 2), "classifier.bias": torch.tensor([1.0, 0.0])}
    b = {"layer.0.w": torch.ones(2, 2) * 3, "classifier.bias": torch.tensor([0.0, 1.0])}
    d = distances(a, b, list(a))
    assert d["l2"] == pytest.approx(math.sqrt(16 + 2))
    t = {x["name"]: x for x in d["per_tensor"]}
    assert t["layer.0.w"]["scaled"] == pytest.approx(2.0) and t["layer.0.w"]["cosine"] == pytest.approx(1.0)
    assert t["classifier.bias"]["cosine"] == pytest.approx(0.0)
    assert [g["name"] for g in d["per_layer"]] == ["rest"]  # no model groups: one row


def test_per_layer_distances_are_per_stack():
    from transformers import T5Config, T5ForConditionalGeneration

    m = T5ForConditionalGeneration(T5Config(vocab_size=20, d_model=8, d_kv=4, d_ff=8, num_layers=3,
                                            num_decoder_layers=2, num_heads=2))
    a = {k: v.clone() for k, v in m.state_dict().items()}
    b = {k: v + 1.0 if k.startswith("decoder.block.0.") else v.clone() for k, v in a.items()}
    names = [k for k, _ in m.named_parameters()]  # one name per tensor (shared, not its aliases)
    rows = distances(a, b, names, groups=model_groups(m))["per_layer"]
    assert [r["name"] for r in rows] == [
        "embeddings", "encoder layer 0", "encoder layer 1", "encoder layer 2",
        "decoder layer 0", "decoder layer 1", "rest",
    ]
    moved = {r["name"]: r["l2"] for r in rows if r["l2"] > 0}
    assert list(moved) == ["decoder layer 0"]  # encoder block 0 is a row of its own, unmoved
    assert rows[4]["stack"] == "decoder" and rows[1]["stack"] == "encoder"


def test_thirds_per_stack_and_stack_scopes():
    from transformers import BartConfig, BartForConditionalGeneration

    # distilbart-12-6 shape in miniature: 6 encoder and 3 decoder blocks
    m = BartForConditionalGeneration(BartConfig(
        vocab_size=20, d_model=8, encoder_layers=6, decoder_layers=3, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=8, decoder_ffn_dim=8, max_position_embeddings=16))
    mg = model_groups(m)
    assert mg.stacks == {"encoder": 6, "decoder": 3}
    names = [k for k, _ in m.named_parameters()]

    def blocks(scope):
        return sorted({(mg[n].stack, mg[n].index) for n in select_scope(scope, names, mg)})

    assert blocks("lower") == [("decoder", 0), ("encoder", 0), ("encoder", 1)]
    assert blocks("upper") == [("decoder", 2), ("encoder", 4), ("encoder", 5)]
    assert blocks("decoder.lower") == [("decoder", 0)]
    assert blocks("encoder.middle") == [("encoder", 2), ("encoder", 3)]
    assert len(blocks("decoder")) == 3
    assert mg.label("model.encoder.layers.3.fc1.weight") == "encoder layer 3"
    assert mg.label("model.decoder.layers.0.fc1.weight") == "decoder layer 0"
    # a regex still works; an unknown stack is a regex that matches nothing, and says what exists
    assert select_scope(r"decoder\.layers\.2\.fc1", names, mg) == ["model.decoder.layers.2.fc1.weight",
                                                                  "model.decoder.layers.2.fc1.bias"]
    with pytest.raises(InvalidSpec, match=r"this model.s stacks: encoder\.lower.*decoder\.upper, encoder, decoder"):
        select_scope("middle.upper", names, mg)


def test_mpt_blocks_and_neox_embed_out_are_filed_by_the_module_tree():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, MptConfig, MptForCausalLM

    mpt = MptForCausalLM(MptConfig(vocab_size=20, d_model=8, n_heads=2, n_layers=3, max_seq_len=16))
    mg = model_groups(mpt)
    assert mg.stacks == {"blocks": 3}
    assert mg.label("transformer.blocks.2.ffn.up_proj.weight") == "layer 2"
    neox = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=20, hidden_size=8, num_hidden_layers=2,
                                            num_attention_heads=2, intermediate_size=8))
    mg = model_groups(neox)
    assert mg.label("lm_head.weight") == "head"  # stored as embed_out: the output head, not embeddings
    assert mg.label("gpt_neox.embed_in.weight") == "embeddings"
    assert mg.label("gpt_neox.final_layer_norm.weight") == "rest"


def test_tied_weights_are_embeddings_whichever_name_comes_first():
    from transformers import GPT2Config, GPT2LMHeadModel

    m = GPT2LMHeadModel(GPT2Config(vocab_size=20, n_embd=8, n_layer=2, n_head=2, n_positions=16))
    mg = model_groups(m)
    assert mg["lm_head.weight"] == mg["transformer.wte.weight"] and mg["lm_head.weight"].kind == "embeddings"
    for order in (["lm_head.weight", "transformer.wte.weight"], ["transformer.wte.weight", "lm_head.weight"]):
        assert select_scope("embeddings", order, mg) == order
        with pytest.raises(InvalidSpec):
            select_scope("head", order, mg)
