"""PEFT adapter checkpoints: paths in adapter space and merged space equal models built by peft.

Adapters are made with ``peft`` in the ``lora_family`` fixture (LoRA seeds 1-3 and an
IA³ adapter on the tiny classifier ``ft_a``). Each reference model here is built by
``peft`` itself from mixed adapter tensors or mixed merged weights, independently of
Basin's engine.
"""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from peft import PeftConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import BertForSequenceClassification

from basin import FileResolver, Landscape
from basin.adapters import validate_adapter
from basin.errors import CheckpointError, IncompatibleCheckpoints, InvalidSpec
from basin.resolve import CheckpointSource
from tests import factories
from tests.core import helpers

TOL = 1e-5


def _open(fam, path, **kw) -> Landscape:
    spec = helpers.cpu_spec({"path": path, "dataset": "eval.csv", "dtype": "float32", **kw})
    return Landscape.open(spec, FileResolver(fam["data"].parent))


def _batch():
    tok = factories.make_tokenizer("bert")
    texts = [t for t, _ in factories.sentences(12, 77)]
    return tok(texts, padding=True, return_tensors="pt")


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def _peft_with(fam, weights: dict[str, torch.Tensor]):
    """peft's own model: the base with lora_a's config, loaded with ``weights`` (stored names)."""
    base = BertForSequenceClassification.from_pretrained(str(fam["base"])).eval()
    cfg = copy.deepcopy(PeftConfig.from_pretrained(str(fam["lora_a"])))
    cfg.inference_mode = True
    pm = get_peft_model(base, cfg)
    set_peft_model_state_dict(pm, weights)
    return pm.eval()


def _merged(adapter_dir, base_dir) -> dict[str, torch.Tensor]:
    base = BertForSequenceClassification.from_pretrained(str(base_dir)).eval()
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload().state_dict()


def _adapter_file(d) -> dict[str, torch.Tensor]:
    return load_file(str(d / "adapter_model.safetensors"))


@pytest.mark.parametrize("alpha", [0.3, 1.0, 1.4])
def test_adapter_space_point_equals_peft_model_of_mixed_adapters(lora_family, alpha):
    land = _open(lora_family, {"type": "linear", "a": "lora_a", "b": "lora_b", "points": 3}, space="adapter")
    # only the adapter's own tensors move: LoRA A/B and the classifier copy peft saves
    assert land.names and all(".lora_A." in n or ".lora_B." in n or ".modules_to_save." in n for n in land.names)
    assert any(".lora_A." in n for n in land.names) and any("classifier.modules_to_save" in n for n in land.names)
    wa, wb = _adapter_file(lora_family["lora_a"]), _adapter_file(lora_family["lora_b"])
    mixed = {k: (1 - alpha) * wa[k] + alpha * wb[k] for k in wa}
    reference = _peft_with(lora_family, mixed)
    batch = _batch()
    land.space.mix_(land.path.coeffs({"alpha": alpha}))
    got = _logits(land.model, batch)
    want = _logits(reference, batch)
    torch.testing.assert_close(got, want, atol=TOL, rtol=0)
    land.close()


@pytest.mark.parametrize("alpha", [0.3, 0.5, -0.2])
def test_merged_space_point_equals_mixed_merged_weights(lora_family, alpha):
    land = _open(lora_family, {"type": "linear", "a": "lora_a", "b": "lora_b", "points": 3})
    ma, mb = (_merged(lora_family[n], lora_family["base"]) for n in ("lora_a", "lora_b"))
    model = BertForSequenceClassification.from_pretrained(str(lora_family["base"])).eval()
    model.load_state_dict({k: (1 - alpha) * ma[k] + alpha * mb[k] for k in ma})
    batch = _batch()
    land.space.mix_(land.path.coeffs({"alpha": alpha}))
    torch.testing.assert_close(_logits(land.model, batch), _logits(model, batch), atol=TOL, rtol=0)
    # merged space moves only what the adapters change: the target modules and the head
    assert land.names and all(".attention.self.query." in n or ".attention.self.value." in n
                              or n.startswith("classifier.") for n in land.names)
    land.close()


def test_the_two_spaces_differ_between_their_ends_and_agree_at_them(lora_family):
    path = {"type": "linear", "a": "lora_a", "b": "lora_b", "points": 3}
    merged = _open(lora_family, path)
    adapter = _open(lora_family, path, space="adapter")
    ends = [(merged.evaluate({"alpha": a})["loss"], adapter.evaluate({"alpha": a})["loss"]) for a in (0.0, 1.0)]
    for m, ad in ends:
        assert m == pytest.approx(ad, abs=1e-5)
    mid = merged.evaluate({"alpha": 0.5})["loss"], adapter.evaluate({"alpha": 0.5})["loss"]
    assert abs(mid[0] - mid[1]) > 1e-6  # (A1+A2)/2 · (B1+B2)/2 is not the mean of B·A
    merged.close()
    adapter.close()


def test_full_checkpoint_and_adapter_share_a_merged_path(lora_family, classifier_family):
    root = lora_family["data"].parent
    full = classifier_family["ft_b"]
    land = _open(lora_family, {"type": "linear", "a": str(full), "b": "lora_a", "points": 3})
    fb = helpers.state(full)
    ma = _merged(lora_family["lora_a"], lora_family["base"])
    model = BertForSequenceClassification.from_pretrained(str(full)).eval()
    model.load_state_dict({k: 0.5 * fb[k] + 0.5 * ma[k] for k in ma}, strict=False)
    batch = _batch()
    land.space.mix_(land.path.coeffs({"alpha": 0.5}))
    torch.testing.assert_close(_logits(land.model, batch), _logits(model, batch), atol=TOL, rtol=0)
    assert len(land.names) > 40  # a full checkpoint moves every tensor
    land.close()
    with pytest.raises(InvalidSpec, match="space: merged"):
        _open(lora_family, {"type": "linear", "a": str(full), "b": "lora_a", "points": 3}, space="adapter")
    with pytest.raises(IncompatibleCheckpoints, match="full checkpoint"):
        _open(lora_family, {"type": "linear", "a": "lora_a", "b": str(full), "points": 3}, space="adapter")
    assert root.is_dir()


def test_plane_through_three_loras_in_adapter_space_passes_through_each(lora_family):
    land = _open(lora_family, {"type": "plane", "a": "lora_a", "b": "lora_b", "c": "lora_c",
                               "resolution": [3, 3]}, space="adapter")
    wc = _adapter_file(lora_family["lora_c"])
    anchor_c = next(a for a in land.anchors if a.name == "lora_c")
    land.space.mix_(land.path.coeffs(anchor_c.coords))
    batch = _batch()
    torch.testing.assert_close(_logits(land.model, batch), _logits(_peft_with(lora_family, wc), batch),
                               atol=TOL, rtol=0)
    land.close()


def test_trajectory_of_adapters_and_an_ia3_adapter_in_merged_space(lora_family):
    land = _open(lora_family, {"type": "trajectory", "checkpoints": ["lora_a", "lora_b", "lora_c", "ia3"],
                               "resolution": [3, 3]})
    assert len(land.anchors) == 4
    land.close()
    with pytest.raises(IncompatibleCheckpoints, match="adapter layout"):
        _open(lora_family, {"type": "linear", "a": "lora_a", "b": "ia3", "points": 3}, space="adapter")


def test_validate_adapter_refuses_a_base_without_its_modules_or_shapes(lora_family, gpt2_pair, tmp_path):
    base = CheckpointSource.from_path(lora_family["base"])
    info = validate_adapter(lora_family["lora_a"], base)
    assert info.peft_type == "LORA" and info.r == 4 and info.num_parameters > 0
    with pytest.raises(CheckpointError, match=r"target module\(s\) \['query', 'value'\] are not in base"):
        validate_adapter(lora_family["lora_a"], CheckpointSource.from_path(gpt2_pair["a"]))
    wide = factories.save(factories.init_classifier(0, hidden_size=48, intermediate_size=64), tmp_path / "wide")
    with pytest.raises(IncompatibleCheckpoints, match=r"does not fit base .*shape \[4, 32\].*vs \[4, 48\]"):
        validate_adapter(lora_family["lora_a"], CheckpointSource.from_path(wide))
    broken = tmp_path / "broken"
    shutil.copytree(lora_family["lora_a"], broken)
    cfg = json.loads((broken / "adapter_config.json").read_text())
    cfg["peft_type"] = "NOT_A_PEFT_TYPE"
    (broken / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="peft_type .NOT_A_PEFT_TYPE. is not one Basin takes"):
        validate_adapter(broken, base)


def test_file_resolver_names_the_base_after_the_separator_or_from_the_config(lora_family, tmp_path):
    r = FileResolver(lora_family["data"].parent)
    src = r.checkpoint("lora_a")  # base_model_name_or_path is the base's absolute path
    assert src.adapter is not None and src.config_dir == lora_family["base"].resolve()
    assert r.checkpoint(f"lora_a::{lora_family['base']}").id == src.id
    orphan = tmp_path / "orphan"
    shutil.copytree(lora_family["lora_a"], orphan)
    cfg = json.loads((orphan / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "some-org/not-here"
    (orphan / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="not a local model directory; name the base"):
        FileResolver(tmp_path).checkpoint("orphan")
