"""Prompt-learning adapters (peft prompt tuning and prefix tuning) in Basin.

They pass the same checks as other adapters (an allow-list of fields, values checked
against the base and the stored table, peft's injection in the sandbox); on a path they
live in adapter space, where a point equals peft's own model with the mixed table; merged
space refuses them, since their virtual tokens are no weights of the base.
"""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from peft import PeftConfig, PrefixTuningConfig, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import BertForSequenceClassification

from basin import FileResolver, Landscape
from basin.adapters import validate_adapter
from basin.errors import CheckpointError
from basin.resolve import CheckpointSource
from basin.untrusted import clean_adapter_config
from tests import factories
from tests.core import helpers


@pytest.fixture(scope="module")
def prompts(delta_family, tmp_path_factory):
    root = tmp_path_factory.mktemp("prompts")
    out = {
        "a": delta_family["prompt"],
        "b": factories.build_prompt(delta_family["base"], root / "b", 9, steps=4),
    }
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(str(delta_family["base"]))
    get_peft_model(
        model, PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=3)
    ).save_pretrained(str(root / "prefix"))
    out["prefix"] = root / "prefix"
    out["root"] = root
    return out


def _base(fam) -> CheckpointSource:
    return CheckpointSource.from_path(fam["base"])


def test_prompt_and_prefix_adapters_pass_the_sandboxed_check(delta_family, prompts):
    info = validate_adapter(prompts["a"], _base(delta_family))  # in the limited child process
    assert info.peft_type == "PROMPT_TUNING" and info.num_parameters == 4 * 32 + 2 * 32 + 2
    info = validate_adapter(prompts["prefix"], _base(delta_family), sandbox=False)
    assert (
        info.peft_type == "PREFIX_TUNING" and info.num_parameters == 3 * (3 * 2 * 32) + 2 * 32 + 2
    )


def _hostile(src, dst, *, config=None, table=None):
    shutil.copytree(src, dst)
    if config is not None:
        cfg = json.loads((dst / "adapter_config.json").read_text())
        cfg.update(config)
        (dst / "adapter_config.json").write_text(json.dumps(cfg))
    if table is not None:
        w = load_file(str(dst / "adapter_model.safetensors"))
        w["prompt_embeddings"] = table
        save_file(w, str(dst / "adapter_model.safetensors"))
    return dst


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"config": {"token_dim": 48}}, "token_dim = 48, but base .* has 32"),
        ({"config": {"num_layers": 7}}, "num_layers = 7, but base .* has 3"),
        (
            {"config": {"num_virtual_tokens": 10**9}},
            r"num_virtual_tokens must be an integer in \[1, 1024\]",
        ),
        ({"config": {"num_virtual_tokens": 40}}, r"table has shape \[4, 32\].*makes it \[40, 32\]"),
        ({"table": torch.zeros(4, 4096)}, r"table has shape \[4, 4096\].*makes it \[4, 32\]"),
        (
            {"config": {"inference_fn": "os.system"}},
            "field 'inference_fn' is not a field Basin accepts",
        ),
        ({"config": {"modules_to_save": ["classifier.*"]}}, "is not a module name"),
    ],
)
def test_hostile_prompt_adapters_are_refused_before_peft_builds(
    delta_family, prompts, tmp_path, change, message
):
    bad = _hostile(prompts["a"], tmp_path / "bad", **change)
    with pytest.raises(CheckpointError, match=message):
        validate_adapter(bad, _base(delta_family), sandbox=False)


def test_prefix_projection_and_text_init_never_reach_peft(delta_family, prompts, tmp_path):
    bad = _hostile(prompts["prefix"], tmp_path / "proj", config={"prefix_projection": True})
    with pytest.raises(CheckpointError, match="prefix_projection must be one of false"):
        validate_adapter(bad, _base(delta_family), sandbox=False)
    # a TEXT init names a tokenizer peft would load: read, then built as RANDOM without it
    raw = json.loads((prompts["a"] / "adapter_config.json").read_text())
    raw.update(
        prompt_tuning_init="TEXT",
        prompt_tuning_init_text="great movie",
        tokenizer_name_or_path="/etc",
    )
    clean = clean_adapter_config(raw)
    assert clean["prompt_tuning_init"] == "RANDOM" and "tokenizer_name_or_path" not in clean
    assert "prompt_tuning_init_text" not in clean


def test_adapter_space_point_equals_peft_with_the_mixed_prompt_table(delta_family, prompts):
    root = prompts["root"]
    for k in ("a", "b"):
        if not (root / f"p_{k}").exists():
            shutil.copytree(prompts[k], root / f"p_{k}")
    if not (root / "base").exists():
        (root / "base").symlink_to(delta_family["base"], target_is_directory=True)
    shutil.copy(delta_family["data"], root / "eval.csv")
    spec = helpers.cpu_spec(
        {
            "path": {"type": "linear", "a": "p_a::base", "b": "p_b::base", "points": 3},
            "dataset": "eval.csv",
            "dtype": "float32",
            "space": "adapter",
        }
    )
    land = Landscape.open(spec, FileResolver(root))
    assert any("prompt_encoder" in n for n in land.names)
    wa, wb = (load_file(str(prompts[k] / "adapter_model.safetensors")) for k in ("a", "b"))
    mixed = {k: 0.7 * wa[k] + 0.3 * wb[k] for k in wa}
    base = BertForSequenceClassification.from_pretrained(str(delta_family["base"])).eval()
    cfg = copy.deepcopy(PeftConfig.from_pretrained(str(prompts["a"])))
    ref = get_peft_model(base, cfg).eval()
    set_peft_model_state_dict(ref, mixed)
    batch = factories.make_tokenizer("bert")(
        ["good day", "bad sad movie so bad"], padding=True, return_tensors="pt"
    )
    land.space.mix_(land.path.coeffs({"alpha": 0.3}))
    with torch.no_grad():
        torch.testing.assert_close(
            land.model(**batch).logits, ref(**batch).logits, atol=1e-5, rtol=0
        )
    land.close()
    merged = helpers.cpu_spec(
        {
            "path": {"type": "linear", "a": "p_a::base", "b": "p_b::base", "points": 3},
            "dataset": "eval.csv",
            "dtype": "float32",
        }
    )
    with pytest.raises(
        CheckpointError, match="prompt learning.*no merged checkpoint.*space: adapter"
    ):
        Landscape.open(merged, FileResolver(root))


def test_a_prefix_adapter_on_a_bert_encoder_runs_on_an_adapter_space_path(delta_family, prompts):
    """peft 0.21 refuses prefix tuning on transformers 5's BERT (its cache argument was renamed);
    Basin's injection lets the prefixes through, so a point equals peft's model (made to accept
    them the same way) with the mixed prefix table — and differs from the base without it."""
    from basin.adapters import enable_prefix

    root = prompts["root"]
    if not (root / "x_a").exists():
        shutil.copytree(prompts["prefix"], root / "x_a")
        shutil.copytree(prompts["prefix"], root / "x_b")
        w = load_file(str(root / "x_b" / "adapter_model.safetensors"))
        save_file({k: v * -2.0 + 0.5 for k, v in w.items()}, str(root / "x_b" / "adapter_model.safetensors"))
    if not (root / "base").exists():
        (root / "base").symlink_to(delta_family["base"], target_is_directory=True)
    shutil.copy(delta_family["data"], root / "eval.csv")
    spec = helpers.cpu_spec(
        {
            "path": {"type": "linear", "a": "x_a::base", "b": "x_b::base", "points": 3},
            "dataset": "eval.csv",
            "dtype": "float32",
            "space": "adapter",
        }
    )
    land = Landscape.open(spec, FileResolver(root))
    wa, wb = (load_file(str(root / k / "adapter_model.safetensors")) for k in ("x_a", "x_b"))
    mixed = {k: 0.5 * wa[k] + 0.5 * wb[k] for k in wa}
    base = BertForSequenceClassification.from_pretrained(str(delta_family["base"])).eval()
    plain = copy.deepcopy(base)
    ref = get_peft_model(base, copy.deepcopy(PeftConfig.from_pretrained(str(root / "x_a")))).eval()
    assert enable_prefix(ref)
    set_peft_model_state_dict(ref, mixed)
    batch = factories.make_tokenizer("bert")(["good day", "bad sad movie so bad"], padding=True, return_tensors="pt")
    land.space.mix_(land.path.coeffs({"alpha": 0.5}))
    with torch.no_grad():
        got = land.model(**batch).logits
        torch.testing.assert_close(got, ref(**batch).logits, atol=1e-5, rtol=0)
        assert not torch.allclose(got, plain(**batch).logits, atol=1e-4)  # the prefix acts
    # through the engine: every point is its own mix (prefix reuse must not replay the backbone)
    losses = {a: land.evaluate({"alpha": a})["loss"] for a in (0.0, 0.5, 1.0)}
    assert len(set(losses.values())) == 3, losses
    for alpha in (0.0, 0.5):  # again, after other points: the same
        assert land.evaluate({"alpha": alpha})["loss"] == pytest.approx(losses[alpha], abs=1e-6)
    assert land.prefix_summary().get("on") is False
    land.close()


def test_lora_and_prefix_adapters_on_one_adapter_space_path_are_refused_by_type(
    delta_family, prompts
):
    """LoRA ↔ prefix in adapter space has no common tensors: a clear refusal naming both types
    (it was a KeyError from peft's loader, a traceback from ``basin eval``)."""
    from basin.errors import IncompatibleCheckpoints

    base = delta_family["base"]
    shutil.copy(delta_family["data"], prompts["root"] / "eval.csv")
    spec = helpers.cpu_spec(
        {
            "path": {
                "type": "linear",
                "a": f"{delta_family['lora']}::{base}",
                "b": f"{prompts['prefix']}::{base}",
                "points": 3,
            },
            "dataset": "eval.csv",
            "dtype": "float32",
            "space": "adapter",
        }
    )
    with pytest.raises(
        IncompatibleCheckpoints,
        match="one type .* is LORA, .* is PREFIX_TUNING .*no merged weights",
    ):
        Landscape.open(spec, FileResolver(prompts["root"]))
