"""The delta-tuning subspace (Yi et al. 2022) on tiny real models.

The ``delta_family`` fixture holds one task's solutions of three methods made with peft on
the tiny ``init`` classifier: an FFN LoRA (``adapter``), prompt tuning (``prompt``) and a
query/value LoRA (``lora``). The reference loop below is written here from the paper's
formulas with peft's own models, independently of :mod:`basin.subspace`.
"""

from __future__ import annotations

import copy
import json
import math
import shutil

import pytest
import torch
from peft import PeftConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from torch import nn
from torch.func import functional_call
from transformers import AutoTokenizer, BertForSequenceClassification

from basin.adapters import validate_adapter
from basin.checkpoints import load_state_dict
from basin.data import load_dataset
from basin.errors import IncompatibleCheckpoints, InvalidSpec
from basin.resolve import CheckpointSource, FileResolver
from basin.subspace.core import FitSettings, Subspace, fit, sampler
from basin.subspace.methods import Layout, Method
from basin.subspace.run import run_fit, run_optimise, run_transfer
from basin.subspace.spec import FitSpec, OptimiseSpec, TransferSpec

METHODS = ("adapter", "prompt", "lora")


def _src(fam, name) -> CheckpointSource:
    return CheckpointSource.of_adapter(fam[name], CheckpointSource.from_path(fam["base"]))


def _peft(fam, name):
    base = BertForSequenceClassification.from_pretrained(str(fam["base"])).eval()
    cfg = copy.deepcopy(PeftConfig.from_pretrained(str(fam[name])))
    cfg.inference_mode = False
    pm = get_peft_model(base, cfg).eval()
    return pm


def _param(key: str) -> str:
    """peft's stored adapter name → its parameter name in the model (written out by hand)."""
    if key == "prompt_embeddings":
        return "prompt_encoder.default.embedding.weight"
    if key.endswith((".lora_A.weight", ".lora_B.weight")):
        return key[: -len(".weight")] + ".default.weight"
    head, _, leaf = key.rpartition(".")
    return f"{head}.modules_to_save.default.{leaf}"


def _flat(fam, name) -> tuple[list[str], list[torch.Size], torch.Tensor]:
    w = load_file(str(fam[name] / "adapter_model.safetensors"))
    keys = sorted(w)
    return keys, [w[k].shape for k in keys], torch.cat([w[k].reshape(-1) for k in keys])


def _loss(pm, keys, shapes, vec, batch):
    params, i = {}, 0
    for k, s in zip(keys, shapes, strict=True):
        n = math.prod(s)
        params[_param(k)] = vec[i : i + n].view(s)
        i += n
    return functional_call(pm, params, args=(), kwargs=dict(batch), strict=False).loss


@pytest.fixture(scope="module")
def live(delta_family):
    """The three methods as Basin builds them, their solution vectors, a batch drawer."""
    from basin.checkpoints import load_state_dict

    fam = delta_family
    base_sd = load_state_dict(CheckpointSource.from_path(fam["base"]))
    methods = {m: Method.from_adapter(m, _src(fam, m), base_sd) for m in METHODS}
    vectors = {"s": {m: methods[m].flatten(_src(fam, m)) for m in METHODS}}
    tok = AutoTokenizer.from_pretrained(str(fam["base"]))
    data = load_dataset(fam["train"], "classification", max_examples=1000)
    return methods, vectors, tok, data


def test_fit_equals_the_papers_loop_written_here(delta_family, live):
    methods, vectors, tok, data = live
    settings = FitSettings(y=2, hidden=8, steps=4, lr=1e-2, batch_size=8, max_length=32, seed=3)
    draw = {"s": sampler(tokenizer=tok, data=data, batch_size=8, max_length=32)}
    sub, hist = fit(methods, vectors, draw, settings)

    # the reference: α ~ U[0,1], β ~ U[0,1−α], I = α·I_A + β·I_P + (1−α−β)·I_L, every up-projection,
    # Σ ‖Proj↑(I) − θ‖² + L_task(Proj↑(I) | θ0), Adam on the projections only
    flats = {m: _flat(delta_family, m) for m in METHODS}
    models = {m: _peft(delta_family, m) for m in METHODS}
    for pm in models.values():
        pm.requires_grad_(False)
    torch.manual_seed(3)
    proj = {}
    for m in METHODS:
        n = flats[m][2].numel()
        proj[m] = (
            nn.Sequential(nn.Linear(n, 8), nn.Tanh(), nn.Linear(8, 2)),
            nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, n)),
        )
    opt = torch.optim.Adam(
        [p for m in METHODS for part in proj[m] for p in part.parameters()], lr=1e-2
    )
    g = torch.Generator().manual_seed(3)
    texts, labels = data.columns["text"], data.columns["label"]
    for step in range(4):
        u = torch.rand(2, generator=g)
        alpha, beta = u[0], u[1] * (1 - u[0])
        idx = torch.randint(len(texts), (8,), generator=g).tolist()
        enc = tok(
            [texts[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=32,
            return_tensors="pt",
        )
        enc["labels"] = torch.tensor([labels[i] for i in idx])
        ints = [proj[m][0](flats[m][2]) for m in METHODS]
        mix = alpha * ints[0] + beta * ints[1] + (1 - alpha - beta) * ints[2]
        total = 0.0
        for m in METHODS:
            theta = proj[m][1](mix)
            dist = ((theta - flats[m][2]) ** 2).sum()
            task = _loss(models[m], flats[m][0], flats[m][1], theta, enc)
            assert hist[step]["dist"][f"s/{m}"] == pytest.approx(float(dist), rel=1e-4)
            assert hist[step]["task"][f"s/{m}"] == pytest.approx(float(task), rel=1e-4, abs=1e-6)
            total = total + dist + task
        opt.zero_grad()
        total.backward()
        opt.step()
    for m in METHODS:
        got = sub.projections[m].state_dict()
        want = {
            **{f"down.{k}": v for k, v in proj[m][0].state_dict().items()},
            **{f"up.{k}": v for k, v in proj[m][1].state_dict().items()},
        }
        for k in want:
            torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=1e-4)


def test_fit_reconstructs_each_solution_and_its_task_loss(delta_family, tmp_path):
    spec = FitSpec(
        tasks={
            "s": {
                "train": "train.csv",
                "eval": "eval.csv",
                "solutions": {m: f"{m}::base" for m in METHODS},
            }
        },
        y=2,
        hidden=16,
        steps=120,
        lr=1e-2,
        batch_size=8,
        max_length=32,
    )
    root = delta_family["train"].parent
    (root / "base").exists() or (root / "base").symlink_to(
        delta_family["base"], target_is_directory=True
    )
    report = run_fit(spec, FileResolver(root), tmp_path / "fit")
    for row in report["rows"]:
        assert row["relative_distance"] < 0.05, row
        assert row["reconstruction"]["loss"] == pytest.approx(row["original"]["loss"], abs=0.02), (
            row
        )
    # the artefact: safetensors + JSON, read back to the same decode
    sub = Subspace.load(tmp_path / "fit" / "projections")
    meta = json.loads((tmp_path / "fit" / "projections" / "projections.json").read_text())
    assert (
        meta["methods"] == list(METHODS) and meta["y"] == 2 and set(meta["configs"]) == set(METHODS)
    )
    _, _, theta = _flat(delta_family, "lora")
    recon = sub.decode("lora", sub.intrinsic["s"]["lora"])
    assert float((recon - theta).norm() / theta.norm()) == pytest.approx(
        next(r for r in report["rows"] if r["method"] == "lora")["relative_distance"], rel=1e-5
    )


@pytest.fixture(scope="module")
def fitted(delta_family, tmp_path_factory):
    root = delta_family["train"].parent
    (root / "base").exists() or (root / "base").symlink_to(
        delta_family["base"], target_is_directory=True
    )
    out = tmp_path_factory.mktemp("subfit")
    spec = FitSpec(
        tasks={"s": {"train": "train.csv", "solutions": {m: f"{m}::base" for m in METHODS}}},
        y=2,
        hidden=8,
        steps=3,
        lr=1e-2,
        batch_size=8,
        max_length=32,
    )
    run_fit(spec, FileResolver(root), out)
    return FileResolver(root), out / "projections"


def _hand_decode(sub: Subspace, method: str, intrinsic: torch.Tensor) -> dict[str, torch.Tensor]:
    vec = sub.projections[method].up(intrinsic)
    lay = sub.layouts[method]
    out, i = {}, 0
    for k, s in zip(lay["names"], lay["shapes"], strict=True):
        n = math.prod(s)
        out[k] = vec[i : i + n].view(*s)
        i += n
    return out


def test_optimise_and_transfer_write_adapters_equal_to_a_hand_decode(
    delta_family, fitted, tmp_path
):
    resolver, projections = fitted
    spec = OptimiseSpec(
        projections=str(projections),
        base="base",
        method="lora",
        train="train.csv",
        eval="eval.csv",
        steps=3,
        batch_size=8,
        max_length=32,
    )
    report = run_optimise(spec, resolver, tmp_path / "opt")
    sub = Subspace.load(projections)
    intrinsic = load_file(str(tmp_path / "opt" / "intrinsic.safetensors"))["intrinsic"]
    assert intrinsic.tolist() == pytest.approx(report["intrinsic"])
    batch = AutoTokenizer.from_pretrained(str(delta_family["base"]))(
        ["good movie", "bad sad day"], padding=True, return_tensors="pt"
    )
    assert [r["method"] for r in report["rows"]] == list(METHODS)
    for row in report["rows"]:
        folder = tmp_path / "opt" / "adapters" / row["method"]
        stored = load_file(str(folder / "adapter_model.safetensors"))
        want = _hand_decode(sub, row["method"], intrinsic)
        assert set(stored) == set(want)
        for k in want:
            torch.testing.assert_close(stored[k], want[k], atol=1e-6, rtol=0)
        # peft loads it, and so does Basin's resolver + validation (its base named in the config)
        base = BertForSequenceClassification.from_pretrained(str(delta_family["base"])).eval()
        pm = PeftModel.from_pretrained(base, str(folder)).eval()
        ref = _peft(delta_family, row["method"])
        set_peft_model_state_dict(ref, want)
        with torch.no_grad():
            torch.testing.assert_close(pm(**batch).logits, ref(**batch).logits, atol=1e-5, rtol=0)
        src = FileResolver().checkpoint(str(folder))
        assert src.adapter == folder.resolve()
        validate_adapter(folder, src.base_source(), sandbox=False)
        how = json.loads((folder / "subspace.json").read_text())
        assert how["made_by"] == "subspace optimise" and how["optimised_with"] == "lora"
        assert how["decoded_with"] == row["method"]

    tr = run_transfer(
        TransferSpec(projections=str(projections), base="base", source="prompt", decode=["lora"]),
        resolver,
        tmp_path / "tr",
    )
    assert [r["method"] for r in tr["rows"]] == ["lora"]
    stored = load_file(str(tmp_path / "tr" / "adapters" / "lora" / "adapter_model.safetensors"))
    want = _hand_decode(sub, "lora", sub.intrinsic["s"]["prompt"])
    for k in want:
        torch.testing.assert_close(stored[k], want[k], atol=1e-6, rtol=0)


def test_bad_input_is_refused_with_what_is_wrong(delta_family, lora_family, fitted, tmp_path):
    root = delta_family["train"].parent
    resolver = FileResolver(root)
    sols = {m: f"{m}::base" for m in METHODS}

    def spec(**kw):
        return FitSpec(
            **{"tasks": {"s": {"train": "train.csv", "solutions": sols}}, "steps": 1, **kw}
        )

    with pytest.raises(InvalidSpec, match="one method only"):
        run_fit(
            spec(tasks={"s": {"train": "train.csv", "solutions": {"lora": "lora::base"}}}),
            resolver,
            tmp_path,
        )
    with pytest.raises(InvalidSpec, match="tasks have different methods"):
        run_fit(
            spec(
                tasks={
                    "s": {"train": "train.csv", "solutions": sols},
                    "t": {
                        "train": "train.csv",
                        "solutions": {"lora": "lora::base", "prompt": "prompt::base"},
                    },
                }
            ),
            resolver,
            tmp_path,
        )
    other = f"{lora_family['lora_a']}::{lora_family['base']}"  # a LoRA on another base (ft_a)
    with pytest.raises(IncompatibleCheckpoints, match="different bases"):
        run_fit(
            spec(tasks={"s": {"train": "train.csv", "solutions": {**sols, "lora": other}}}),
            resolver,
            tmp_path,
        )
    with pytest.raises(InvalidSpec, match="evaluation examples are also training examples"):
        run_fit(
            spec(tasks={"s": {"train": "train.csv", "eval": "train.csv", "solutions": sols}}),
            resolver,
            tmp_path,
        )
    with pytest.raises(InvalidSpec, match="y = 200 is not smaller than method 'prompt'"):
        run_fit(spec(y=200), resolver, tmp_path)
    with pytest.raises(IncompatibleCheckpoints, match="layout of the method's first solution"):
        run_fit(
            spec(
                tasks={
                    "s": {"train": "train.csv", "solutions": sols},
                    "t": {"train": "train.csv", "solutions": {**sols, "lora": "adapter::base"}},
                }
            ),
            resolver,
            tmp_path,
        )
    _, projections = fitted
    with pytest.raises(InvalidSpec, match="no method 'prefix'"):
        run_optimise(
            OptimiseSpec(
                projections=str(projections),
                base="base",
                method="prefix",
                train="train.csv",
                steps=1,
            ),
            resolver,
            tmp_path / "o",
        )
    with pytest.raises(IncompatibleCheckpoints, match="fitted on base"):
        run_optimise(
            OptimiseSpec(
                projections=str(projections),
                base=str(lora_family["base"]),
                method="lora",
                train="train.csv",
                steps=1,
            ),
            resolver,
            tmp_path / "o",
        )
    broken = tmp_path / "broken"
    shutil.copytree(projections, broken)
    (broken / "projections.safetensors").write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(InvalidSpec, match="not readable"):
        Subspace.load(broken)


def test_simplex_path_point_equals_the_hand_decoded_mix(delta_family, fitted):
    """subspace_simplex at (α, β) is the model with Proj↑_lora(α·I_A + β·I_P + (1−α−β)·I_L)."""
    from basin import Landscape
    from tests.core import helpers

    resolver, projections = fitted
    root = delta_family["train"].parent
    shutil.copy(delta_family["data"], root / "eval_s.csv")
    spec = helpers.cpu_spec(
        {
            "path": {
                "type": "subspace_simplex",
                "projections": str(projections),
                "decode": "lora",
                "a": "lora_2::base",
                "resolution": [4, 4],
            },
            "dataset": "eval_s.csv",
            "dtype": "float32",
            "space": "adapter",
            "max_examples": 16,
        }
    )
    land = Landscape.open(spec, resolver)
    sub = Subspace.load(projections)
    ints = sub.intrinsic["s"]
    base = CheckpointSource.from_path(delta_family["base"])
    method = Method.from_config(
        "lora",
        sub.meta["configs"]["lora"],
        Layout.from_dict(sub.layouts["lora"]),
        base,
        load_state_dict(base),
    )
    batch = AutoTokenizer.from_pretrained(str(delta_family["base"]))(
        ["good movie", "bad sad day so bad"], padding=True, return_tensors="pt"
    )
    for alpha, beta in ((1.0, 0.0), (0.2, 0.5), (-0.25, 1.25)):
        mix = alpha * ints["adapter"] + beta * ints["prompt"] + (1 - alpha - beta) * ints["lora"]
        with torch.no_grad():
            want = method.forward(sub.decode("lora", mix), batch).logits
            land.space.mix_(land.path.coeffs({"x": alpha, "y": beta}))
            got = land.model(**batch).logits
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert [a.coords for a in land.anchors] == [
        {"x": 1.0, "y": 0.0},
        {"x": 0.0, "y": 1.0},
        {"x": 0.0, "y": 0.0},
    ]
    metrics = land.evaluate({"x": 0.0, "y": 0.0})
    assert metrics["loss"] > 0
    land.close()
    # merged space has no adapter tensors to decode into
    merged = helpers.cpu_spec({**spec.model_dump(mode="json"), "space": "merged"})
    with pytest.raises((IncompatibleCheckpoints, InvalidSpec), match="space: adapter"):
        Landscape.open(merged, resolver).close()


def test_cli_runs_the_stages_from_yaml_and_says_what_is_wrong(delta_family, tmp_path, capsys):
    import yaml

    from basin.cli import main

    root = delta_family["train"].parent
    (root / "base").exists() or (root / "base").symlink_to(
        delta_family["base"], target_is_directory=True
    )
    fit_yaml = root / "cli-fit.yaml"
    fit_yaml.write_text(
        yaml.safe_dump(
            {
                "tasks": {
                    "s": {"train": "train.csv", "solutions": {m: f"{m}::base" for m in METHODS}}
                },
                "y": 2,
                "hidden": 8,
                "steps": 2,
                "batch_size": 8,
                "max_length": 32,
            }
        )
    )
    assert main(["subspace", "fit", str(fit_yaml), "-o", str(tmp_path / "fit"), "-q"]) == 0
    assert (tmp_path / "fit" / "projections" / "projections.safetensors").is_file()
    tr_yaml = root / "cli-tr.yaml"
    tr_yaml.write_text(
        yaml.safe_dump(
            {
                "projections": str(tmp_path / "fit" / "projections"),
                "base": "base",
                "source": "adapter",
                "decode": ["prompt"],
            }
        )
    )
    assert main(["subspace", "transfer", str(tr_yaml), "-o", str(tmp_path / "tr"), "-q"]) == 0
    assert (tmp_path / "tr" / "adapters" / "prompt" / "adapter_model.safetensors").is_file()
    capsys.readouterr()
    bad = root / "cli-bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {"tasks": {"s": {"train": "train.csv", "solutions": {"lora": "lora::base"}}}}
        )
    )
    assert main(["subspace", "fit", str(bad), "-o", str(tmp_path / "bad")]) == 2
    assert "one method only" in capsys.readouterr().err


def test_the_simplex_plane_is_drawn_with_its_triangle_and_corners():
    from basin import figures

    path = {
        "type": "subspace_simplex",
        "projections": "p",
        "decode": "lora",
        "a": "x",
        "resolution": [3, 3],
        "margin": 0.0,
    }
    axis = [0.0, 0.5, 1.0]
    pts = [
        {
            "index": iy * 3 + ix,
            "coords": {"x": axis[ix], "y": axis[iy]},
            "metrics": {"loss": 0.1 * (ix + iy)},
        }
        for iy in range(3)
        for ix in range(3)
    ]
    anchors = [
        {"name": "adapter (I₁)", "coords": {"x": 1.0, "y": 0.0}},
        {"name": "prompt (I₂)", "coords": {"x": 0.0, "y": 1.0}},
        {"name": "lora (I₃)", "coords": {"x": 0.0, "y": 0.0}},
    ]
    doc = {"spec": {"path": path}, "points": pts, "anchors": anchors, "summary": {}}
    fig = figures.plane_figure(doc, "loss", kind="heatmap")
    outline = [t for t in fig.data if t.meta == "outline"]
    assert len(outline) == 1
    assert list(outline[0].x) == [1.0, 0.0, 0.0, 1.0] and list(outline[0].y) == [0.0, 1.0, 0.0, 0.0]
    assert sorted(t.name for t in fig.data if t.meta == "anchor") == [
        "adapter (I₁)",
        "lora (I₃)",
        "prompt (I₂)",
    ]
    # other planes get no outline
    doc["spec"]["path"] = {"type": "plane", "a": "a", "b": "b", "c": "c"}
    assert not [
        t for t in figures.plane_figure(doc, "loss", kind="heatmap").data if t.meta == "outline"
    ]


def test_a_stop_request_ends_the_fit_between_two_steps(live):
    from basin.subspace.core import Stopped

    methods, vectors, tok, data = live
    seen: list[int] = []
    draw = {"s": sampler(tokenizer=tok, data=data, batch_size=4, max_length=16)}
    with pytest.raises(Stopped, match="after 2 of 50 steps"):
        fit(
            methods,
            vectors,
            draw,
            FitSettings(y=2, hidden=4, steps=50, batch_size=4, max_length=16),
            on_step=lambda rec: seen.append(rec["step"]),
            should_stop=lambda: len(seen) >= 2,
        )
    assert seen == [1, 2]
