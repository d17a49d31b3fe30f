"""The family matrix: every transformers family Basin supports gets the right numbers.

For BERT, RoBERTa, DistilBERT, GPT-2 (LM and sequence classifier), GPT-NeoX, Llama
(tied and untied), T5 and BART (encoder and decoder stacks of different depths), each
built tiny and saved with ``save_pretrained``:

- the linear path at α = 0.3 equals a freshly built model from the mixed state dict;
- every scope preset at α = 1 equals θB on exactly the modules the family's table
  names and θA elsewhere;
- filter-normalised random directions give each output neuron its weights' norm;
- bf16 paths (basis held in bf16, mixed in fp32) are the fp32 path within the held rounding;
- one seed gives one plane for the safetensors, sharded and ``.bin`` copies;
- (decoder classifier) the loss is the same at batch size 1 and 7.
"""

from __future__ import annotations

import pytest
import torch

from basin import FileResolver, Landscape
from basin.errors import InvalidSpec
from tests.core import families, helpers
from tests.core.families import FAMILIES

TOL = 1e-5
NAMES = list(FAMILIES)


@pytest.fixture(scope="module", params=NAMES)
def fam(request, tmp_path_factory):
    f = FAMILIES[request.param]
    return f, families.build_family(f, tmp_path_factory.mktemp(f.name))


def open_land(f, dirs, path, **kw) -> Landscape:
    spec = {"path": path, "dataset": dirs["data"].name, "task": f.task, "dtype": "float32", **kw}
    return Landscape.open(helpers.cpu_spec(spec), FileResolver(dirs["data"].parent))


LINEAR = {"type": "linear", "a": "A", "b": "B", "points": 3}


def test_linear_path_equals_a_fresh_model_from_the_mixed_state_dict(fam):
    f, dirs = fam
    land = open_land(f, dirs, LINEAR)
    got = land.evaluate({"alpha": 0.3})
    ref = families.mixed(f, dirs["A"], dirs["B"], 0.3)
    live = land.model.state_dict()
    for k, want in ref.state_dict().items():
        if want.is_floating_point():
            torch.testing.assert_close(live[k], want, atol=TOL, rtol=0, msg=f"{f.name}: {k}")
    assert got["loss"] == pytest.approx(families.loss(f, ref, dirs["data"]), abs=TOL)
    land.close()


def test_every_scope_preset_moves_exactly_its_modules(fam):
    f, dirs = fam
    a = families.reference(f, dirs["A"]).state_dict()
    b = families.reference(f, dirs["B"]).state_dict()
    floats = [k for k, v in a.items() if v.is_floating_point()]
    for scope in f.scopes:
        moved = [k for k in floats if f.moves(scope, k)]
        if not moved:  # e.g. "head" of a model whose only head is its tied embeddings
            with pytest.raises(InvalidSpec, match="matches no parameter"):
                open_land(f, dirs, LINEAR, scope=scope)
            continue
        land = open_land(f, dirs, LINEAR, scope=scope)
        land.evaluate({"alpha": 1.0})
        live = land.model.state_dict()
        for k in floats:
            want = b[k] if k in moved else a[k]
            torch.testing.assert_close(live[k], want, atol=TOL, rtol=0,
                                       msg=f"{f.name} scope {scope}: {k} should be θ{'B' if k in moved else 'A'}")
        land.close()


def test_filter_normalised_directions_give_each_output_neuron_its_norm(fam):
    f, dirs = fam
    land = open_land(f, dirs, {"type": "random_plane", "center": "A", "resolution": [2, 2], "seed": 3})
    w = land.space.current()
    checked = 0
    for d_list in land.space.directions:
        for name, d in zip(land.names, d_list, strict=True):
            if d.dim() < 2:
                assert not d.any(), f"{name}: ignore: biasbn zeroes 1-D directions"
                continue
            # GPT-2's Conv1D stores (in, out): its output neurons are the columns
            axis = 1 if f.conv1d and "transformer.h." in name and name.endswith(".weight") and d.dim() == 2 else 0
            dn = d.movedim(axis, 0).reshape(d.shape[axis], -1).norm(dim=1)
            wn = w[name].movedim(axis, 0).reshape(d.shape[axis], -1).norm(dim=1)
            torch.testing.assert_close(dn, wn, rtol=1e-4, atol=1e-6, msg=f"{f.name}: {name}")
            checked += 1
    assert checked > 0
    land.close()


def test_bf16_path_is_the_fp32_path_within_the_held_rounding(fam):
    f, dirs = fam
    l32 = open_land(f, dirs, LINEAR)
    l16 = open_land(f, dirs, LINEAR, dtype="bfloat16")
    m32 = l32.evaluate({"alpha": 0.3})
    m16 = l16.evaluate({"alpha": 0.3})
    t32, t16 = l32.space.current(), l16.space.current()
    u = 2.0 ** -8  # bf16's unit roundoff (8 significant bits)
    for i, k in enumerate(l32.names):
        assert t16[k].dtype == torch.bfloat16
        # θA and θB − θA held in bf16 (each rounded once), mixed in fp32, cast once (basin.holding)
        held = l32.space.origin[i].abs() + 0.3 * l32.space.directions[0][i].abs()
        err = (t16[k].float() - t32[k]).abs()
        assert (err <= u * t32[k].abs() + (u + u * u + 2.0 ** -20) * held + 1e-30).all(), f"{f.name}: {k}"
    assert m16["loss"] == pytest.approx(m32["loss"], rel=0.05)
    l32.close()
    l16.close()


def test_one_seed_gives_one_plane_whatever_the_file_layout(fam):
    f, dirs = fam
    planes = []
    for copy in ("A", "A_bin", "A_sharded"):
        land = open_land(f, dirs, {"type": "random_plane", "center": copy, "resolution": [2, 2], "seed": 11})
        planes.append((copy, land.names, land.space.directions))
        land.close()
    (_, names0, dirs0), *others = planes
    for copy, names, ds in others:
        assert names == names0, copy
        for d0, d in zip(dirs0, ds, strict=True):
            for n, x0, x in zip(names0, d0, d, strict=True):
                assert torch.equal(x0, x), f"{f.name}: direction for {n} differs in the {copy} copy"


def test_files_store_the_names_transformers_saves(fam):
    from basin.checkpoints import inspect_checkpoint

    f, dirs = fam
    # one model, three layouts: the same parameter count (a .bin's tied aliases counted once)
    counts = {c: inspect_checkpoint(dirs[c]).num_parameters for c in ("A", "A_bin", "A_sharded")}
    assert len(set(counts.values())) == 1, counts
    if f.name == "gpt_neox":  # save_pretrained writes the head as embed_out; Basin loads it as lm_head
        from basin.checkpoints import tensor_meta

        assert "embed_out.weight" in tensor_meta(dirs["A"])
    if f.name in ("gpt2_lm", "llama_tied"):  # the .bin copy stores both aliases of the tied tensor
        from basin.checkpoints import load_state_dict

        assert "lm_head.weight" in load_state_dict(dirs["A_bin"])


@pytest.mark.parametrize("name", ["gpt2_cls"])
def test_decoder_classifier_loss_does_not_depend_on_the_batch_size(name, tmp_path):
    f = FAMILIES[name]
    dirs = families.build_family(f, tmp_path)
    one = open_land(f, dirs, LINEAR, batch_size=1)
    seven = open_land(f, dirs, LINEAR, batch_size=7)
    l1, l7 = one.evaluate({"alpha": 0.3}), seven.evaluate({"alpha": 0.3})
    assert l1["loss"] == pytest.approx(l7["loss"], abs=TOL)
    assert l1["accuracy"] == l7["accuracy"]
    assert l7["loss"] == pytest.approx(families.loss(f, families.mixed(f, dirs["A"], dirs["B"], 0.3), dirs["data"]),
                                       abs=TOL)
    one.close()
    seven.close()
    # without config.pad_token_id a padded row cannot be pooled right: refused, batch 1 still works
    import json

    for d in (dirs["A"], dirs["B"]):
        cfg = json.loads((d / "config.json").read_text())
        cfg["pad_token_id"] = None
        (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InvalidSpec, match="pad_token_id"):
        open_land(f, dirs, LINEAR, batch_size=7)
    land = open_land(f, dirs, LINEAR, batch_size=1)
    assert land.evaluate({"alpha": 0.3})["loss"] == pytest.approx(l1["loss"], abs=TOL)
    land.close()
