"""``basin tune``: families of fine-tuned / delta-tuned checkpoints (issue 25), on tiny real models.

The family (2 seeds × {full, LoRA}) is trained once through the CLI; its members are then
compared with a plain PyTorch loop written here from the recipe in
:mod:`basin.tune.train`'s docstring (same seeds: bit-identical on the CPU), loaded back
through Basin's resolver and evaluated, and its cartography recomputed by hand.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from basin.cli import main
from basin.errors import InvalidSpec
from basin.resolve import FileResolver
from basin.tune import members, parse_tune_spec
from basin.tune.cartography import dataset_map, read_map
from basin.tune.train import enable_prefix, split_rows, train_member
from tests.factories import (
    VOCAB,
    bert_config,
    build_gpt2,
    make_tokenizer,
    save,
    sentences,
    write_lm_dataset,
)

STEPS, SAVE_EVERY, BATCH, LR_FULL, LR_LORA = 6, 2, 8, 3e-3, 1e-2
LABELS = {"neg": 0, "pos": 1}


def _write_rows(path: Path, rows: list[tuple[str, int]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for t, y in rows:
            w.writerow([t, "pos" if y else "neg"])
    return path


@pytest.fixture(scope="module")
def body(tmp_path_factory) -> Path:
    """A headless "pre-trained" encoder (like MiniLM) with its tokenizer, and text-labelled data."""
    from transformers import BertModel

    root = tmp_path_factory.mktemp("tune")
    torch.manual_seed(0)
    save(BertModel(bert_config()).eval(), root / "body", make_tokenizer("bert"))
    _write_rows(root / "train.csv", sentences(40, 5))
    _write_rows(root / "eval.csv", sentences(24, 6))
    return root


def _family_spec(**kw) -> dict:
    spec = {
        "base": "body",
        "dataset": "train.csv",
        "eval_dataset": "eval.csv",
        "family": "fam",
        "seeds": [1, 2],
        "learning_rates": [LR_FULL],
        "methods": [{"name": "full"}, {"name": "lora", "r": 4, "learning_rates": [LR_LORA]}],
        "steps": STEPS,
        "batch_size": BATCH,
        "max_length": 32,
        "save_every": SAVE_EVERY,
        "cartography": True,
    }
    spec.update(kw)
    return spec


@pytest.fixture(scope="module")
def family(body: Path) -> tuple[Path, dict, str]:
    """The 2 seeds × {full, lora} family trained by ``basin tune`` (in-process)."""
    spec_path = body / "family.yaml"
    spec_path.write_text(yaml.safe_dump(_family_spec()))
    out = body / "out"
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(["tune", str(spec_path), "--out", str(out), "--quiet"])
    assert code == 0
    return out, json.loads((out / "family.json").read_text()), buf.getvalue()


# ---- the plain loop ------------------------------------------------------------------------


def _plain_member(body: Path, seed: int, method: str) -> torch.nn.Module:
    """The recipe written out by hand: θ0 with a seeded fresh head, the method, AdamW + linear
    decay + clipping over batches drawn epoch by epoch from a ``seed``-ed permutation."""
    import peft
    from transformers import AutoConfig, AutoModelForSequenceClassification, BertModel

    cfg = AutoConfig.from_pretrained(body / "body")
    cfg.num_labels, cfg.label2id, cfg.id2label = 2, dict(LABELS), {v: k for k, v in LABELS.items()}
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(cfg)
    model.bert.load_state_dict(BertModel.from_pretrained(body / "body").state_dict())
    if method == "lora":
        torch.manual_seed(seed)
        model = peft.get_peft_model(model, peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8))
    lr = LR_FULL if method == "full" else LR_LORA
    rows = list(csv.DictReader(open(body / "train.csv")))
    tok = make_tokenizer("bert")
    ids = tok([r["text"] for r in rows], truncation=True, max_length=32)["input_ids"]
    labels = [LABELS[r["label"]] for r in rows]
    params = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / STEPS))
    model.train()
    step = 0
    while step < STEPS:
        perm = torch.randperm(len(rows), generator=g).tolist()
        for s in range(0, len(rows), BATCH):
            idx = perm[s : s + BATCH]
            width = max(len(ids[i]) for i in idx)
            input_ids = torch.tensor([ids[i] + [0] * (width - len(ids[i])) for i in idx])
            mask = torch.tensor([[1] * len(ids[i]) + [0] * (width - len(ids[i])) for i in idx])
            loss = model(
                input_ids=input_ids,
                attention_mask=mask,
                labels=torch.tensor([labels[i] for i in idx]),
            ).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            if step == STEPS:
                break
    return model.eval()


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_members_equal_a_plain_training_loop(body, family, seed, method):
    out, _, _ = family
    plain = _plain_member(body, seed, method)
    final = out / f"fam-{method}-s{seed}" / "final"
    if method == "full":
        stored = load_file(final / "model.safetensors")
        own = plain.state_dict()
    else:
        import peft

        stored = load_file(final / "adapter_model.safetensors")
        own = peft.get_peft_model_state_dict(plain)
    assert set(stored) == set(own)
    differ = [k for k in own if not torch.equal(stored[k], own[k].detach())]
    assert not differ, f"{len(differ)} tensor(s) differ from the plain loop, e.g. {differ[:3]}"


def test_family_tags_and_step_checkpoints(body, family):
    out, doc, printed = family
    names = [m["name"] for m in doc["members"]]
    assert names == ["fam-full-s1", "fam-full-s2", "fam-lora-s1", "fam-lora-s2"]
    for m in doc["members"]:
        assert m["tags"]["family"] == "fam" and m["tags"]["seed"] == m["tags"]["order"]
        assert m["tags"]["method"] in m["name"] and m["tags"]["split"] is None
        assert [c["step"] for c in m["checkpoints"]] == [2, 4, STEPS]
        for c in m["checkpoints"]:
            meta = json.loads((out / c["path"] / "basin_tune.json").read_text())
            assert meta["tags"] == {**m["tags"], "step": c["step"]}
        assert 0.0 <= m["metrics"]["accuracy"] <= 1.0 and m["eval_examples"] == 24
        assert f"{m['name']}: held-out" in printed  # the CLI prints each member's held-out metrics
    # θ0 with the seeded fresh head, once per seed, is the family's step 0
    for seed in (1, 2):
        init = json.loads((out / f"init-s{seed}" / "basin_tune.json").read_text())
        assert init["tags"]["step"] == 0 and any(k.startswith("classifier.") for k in init["fresh"])
    a, b = (load_file(out / f"init-s{s}" / "model.safetensors") for s in (1, 2))
    assert not torch.equal(
        a["classifier.weight"], b["classifier.weight"]
    )  # the head follows the seed
    assert torch.equal(
        a["bert.embeddings.word_embeddings.weight"], b["bert.embeddings.word_embeddings.weight"]
    )


def test_same_spec_gives_identical_bytes(body, family, tmp_path):
    """The weight files (and a full model's config / tokenizer) are byte-identical; the
    metadata differs only by the folder it names as θ0."""
    out, _, _ = family
    spec = parse_tune_spec(_family_spec())
    again = [m for m in members(spec) if m.name in ("fam-full-s2", "fam-lora-s1")]
    for m in again:
        train_member(spec, m, FileResolver(body), tmp_path)
        for step in ("step-2", "final"):
            files = sorted((out / m.name / step).iterdir())
            assert any(f.suffix == ".safetensors" for f in files)
            for f in files:
                if f.name in ("basin_tune.json", "adapter_config.json"):
                    continue
                assert (tmp_path / m.name / step / f.name).read_bytes() == f.read_bytes(), (
                    f"{m.name}/{step}/{f.name}"
                )


def test_members_load_back_through_the_resolver_and_evaluate(body, family):
    """Every checkpoint opens through FileResolver (an adapter names θ0 as its base) and a
    linear path between two seeds of a method evaluates, ending at the member's own metrics."""
    from basin import engine
    from basin.spec import parse_spec

    out, doc, _ = family
    resolver = FileResolver(out)
    by_name = {m["name"]: m for m in doc["members"]}
    for method in ("full", "lora"):
        a, b = (by_name[f"fam-{method}-s{s}"] for s in (1, 2))
        src = resolver.checkpoint(a["final"])
        assert (src.adapter is not None) == (method == "lora")
        result = engine.run(
            parse_spec(
                {
                    "path": {"type": "linear", "a": a["final"], "b": b["final"], "points": 3},
                    "dataset": str(body / "eval.csv"),
                    "task": "classification",
                    "max_length": 32,
                    "device": "cpu",
                }
            ),
            resolver,
            progress=False,
        )
        ends = result["points"][0]["metrics"], result["points"][-1]["metrics"]
        assert ends[0]["accuracy"] == pytest.approx(a["metrics"]["accuracy"], abs=1e-9)
        assert ends[1]["loss"] == pytest.approx(b["metrics"]["loss"], rel=1e-5)


def test_peft_seeds_on_two_theta0_folders_share_an_adapter_space_path(body, family, tmp_path):
    """Two seeds' LoRA members sit on two θ0 folders (init-s1, init-s2) that differ only in the
    fresh head each member replaces with its own copy: an adapter-space path between them runs
    (it was refused, "on another base", so prefix seeds could never share a path) and ends at
    each member's own held-out metrics. A base that differs in a tensor the adapter does not
    replace is still refused, naming the tensor."""
    import shutil

    from safetensors.torch import save_file

    from basin import engine
    from basin.errors import IncompatibleCheckpoints
    from basin.spec import parse_spec

    out, doc, _ = family
    by_name = {m["name"]: m for m in doc["members"]}
    a, b = by_name["fam-lora-s1"], by_name["fam-lora-s2"]

    def run(ref_b: str):
        spec = {
            "path": {"type": "linear", "a": a["final"], "b": ref_b, "points": 3},
            "space": "adapter",
            "dataset": str(body / "eval.csv"),
            "task": "classification",
            "max_length": 32,
            "device": "cpu",
        }
        return engine.run(parse_spec(spec), FileResolver(out), progress=False)

    result = run(b["final"])
    ends = result["points"][0]["metrics"], result["points"][-1]["metrics"]
    assert ends[0]["loss"] == pytest.approx(a["metrics"]["loss"], rel=1e-5)
    assert ends[1]["loss"] == pytest.approx(b["metrics"]["loss"], rel=1e-5)
    assert ends[1]["accuracy"] == pytest.approx(b["metrics"]["accuracy"], abs=1e-9)

    bent = tmp_path / "init-s2-bent"  # θ0 of seed 2 with one body tensor moved
    shutil.copytree(out / "init-s2", bent)
    sd = load_file(bent / "model.safetensors")
    name = next(k for k in sorted(sd) if "encoder.layer.0.attention.self.key.weight" in k)
    sd[name] = sd[name] + 1e-3
    save_file(sd, bent / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(IncompatibleCheckpoints, match=f"on the same base checkpoint.*{name}"):
        run(f"{out / b['final']}::{bent}")


def test_cartography_recomputed_by_hand(body, family):
    """cartography.csv's statistics from its own p@step columns, and p@final from the final
    checkpoint's softmax on the training rows."""
    from transformers import AutoModelForSequenceClassification

    out, _, _ = family
    rows = read_map(out / "fam-full-s1" / "cartography.csv")
    assert rows[0]["steps"] == [2, 4, STEPS]
    assert len(rows) == 40 and [r["row"] for r in rows] == list(range(40))
    for r in rows:
        mu = sum(r["p"]) / 3
        assert r["confidence"] == pytest.approx(mu, abs=1e-12)
        assert r["variability"] == pytest.approx(
            math.sqrt(sum((p - mu) ** 2 for p in r["p"]) / 3), abs=1e-12
        )
        assert r["correctness"] == pytest.approx(sum(p > 0.5 for p in r["p"]) / 3, abs=1e-12)
    model = AutoModelForSequenceClassification.from_pretrained(out / "fam-full-s1" / "final").eval()
    train = list(csv.DictReader(open(body / "train.csv")))
    enc = make_tokenizer("bert")([t["text"] for t in train[:5]], padding=True, return_tensors="pt")
    with torch.no_grad():
        p = torch.softmax(model(**enc).logits, -1)
    for i in range(5):
        assert rows[i]["p"][-1] == pytest.approx(float(p[i, LABELS[train[i]["label"]]]), abs=1e-6)
    # the pure function on a hand-made table
    got = dataset_map([[0.2, 0.9], [0.6, 0.9]], [[False, True], [True, True]])
    assert got[0] == pytest.approx({"confidence": 0.4, "variability": 0.2, "correctness": 0.5})
    assert got[1] == pytest.approx({"confidence": 0.9, "variability": 0.0, "correctness": 1.0})


def test_splits_are_disjoint_and_never_the_held_out_rows():
    spec = parse_tune_spec(
        {"base": "b", "dataset": "d", "split": {"kind": "kfold", "k": 3}, "max_examples": 10**6}
    )
    parts = [split_rows(100, spec, i) for i in range(3)]
    held = parts[0][1]
    assert all(p[1] == held for p in parts) and len(held) == 20
    trains = [set(p[0]) for p in parts]
    assert (
        not (trains[0] & trains[1]) and not (trains[1] & trains[2]) and not (trains[0] & trains[2])
    )
    assert set().union(*trains) | set(held) == set(range(100)) and not set().union(*trains) & set(
        held
    )
    names = [
        m.name
        for m in members(
            parse_tune_spec(
                {
                    "base": "b",
                    "dataset": "d",
                    "split": {"kind": "halves"},
                    "seeds": [3],
                    "orders": [7, 8],
                }
            )
        )
    ]
    assert names == [
        "family-full-split0-o7-s3",
        "family-full-split0-o8-s3",
        "family-full-split1-o7-s3",
        "family-full-split1-o8-s3",
    ]


def test_every_peft_method_trains_and_reloads(body, tmp_path):
    """ia3, adapter (LoRA on the FFN output projections), prefix and prompt tuning on the
    encoder; each final adapter reloads with peft over θ0 and gives the member's held-out loss."""
    import peft
    from transformers import AutoModelForSequenceClassification

    from basin.adapters import read_adapter_config

    spec = parse_tune_spec(
        _family_spec(
            seeds=[1],
            save_every=None,
            cartography=False,
            learning_rates=[1e-2],
            methods=[
                {"name": "ia3"},
                {"name": "adapter", "r": 4},
                {"name": "prefix", "num_virtual_tokens": 4},
                {"name": "prompt", "num_virtual_tokens": 4},
            ],
        )
    )
    from basin.data import load_dataset
    from basin.evaluate import EVALUATORS

    for m in members(spec):
        r = train_member(spec, m, FileResolver(body), tmp_path)
        cfg = read_adapter_config(r.final)
        assert (
            cfg["peft_type"]
            == {
                "ia3": "IA3",
                "adapter": "LORA",
                "prefix": "PREFIX_TUNING",
                "prompt": "PROMPT_TUNING",
            }[m.method.name]
        )
        assert cfg["base_model_name_or_path"] == str((tmp_path / "init-s1").resolve())
        if m.method.name == "adapter":  # beside each FFN output projection, nowhere else
            assert sorted(cfg["target_modules"]) == [
                f"bert.encoder.layer.{i}.output.dense" for i in range(3)
            ]
        base = AutoModelForSequenceClassification.from_pretrained(cfg["base_model_name_or_path"])
        model = peft.PeftModel.from_pretrained(base, str(r.final)).eval()
        assert enable_prefix(model) == (m.method.name == "prefix")  # BERT names its cache `cache`
        data = load_dataset(
            body / "eval.csv", "classification", max_examples=512, label2id=LABELS, num_labels=2
        )
        ev = EVALUATORS["classification"](
            make_tokenizer("bert"),
            data,
            model,
            batch_size=32,
            max_length=32,
            device=torch.device("cpu"),
        )
        assert ev.evaluate(model)["loss"] == pytest.approx(r.metrics["loss"], rel=1e-6)


def test_prefix_tuning_on_a_causal_lm(tmp_path):
    build_gpt2(tmp_path / "gpt2")
    write_lm_dataset(tmp_path / "lm.jsonl", n=24)
    spec = parse_tune_spec(
        {
            "base": "gpt2",
            "dataset": "lm.jsonl",
            "task": "causal_lm",
            "steps": 3,
            "batch_size": 8,
            "methods": [{"name": "prefix", "num_virtual_tokens": 3}],
            "learning_rates": [1e-2],
        }
    )
    r = train_member(spec, members(spec)[0], FileResolver(tmp_path), tmp_path / "out")
    stored = load_file(r.final / "adapter_model.safetensors")
    assert list(stored) == ["prompt_embeddings"] and r.metrics["loss"] > 0 and len(r.losses) == 3
    assert r.init is None and r.base_ref == "gpt2"  # no head to add: the base is step 0


@pytest.mark.parametrize(
    "change, words",
    [
        ({"methods": [{"name": "bottleneck"}]}, "methods.0.name"),
        ({"methods": [{"name": "full", "r": 4}]}, "r, alpha and target_modules do not apply"),
        ({"methods": [{"name": "lora"}, {"name": "lora", "r": 2}]}, "appear more than once"),
        ({"seeds": [1, 1]}, "repeats a value"),
        ({"save_every": 6}, "save_every (6) must be below steps (6)"),
        ({"task": "causal_lm"}, "cartography"),
        ({"task": "generation", "cartography": False}, "tuning needs a task with a training loss"),
        ({"split": {"kind": "kfold", "k": 3, "index": [3]}}, "split index 3 is not a part of 3"),
        ({"learning_rates": [0.0]}, "must be in (0, 10]"),
        ({"seeds": list(range(64)), "orders": list(range(64))}, "over the limit of 1024"),
    ],
)
def test_bad_specs_are_refused_with_a_clear_message(change, words):
    with pytest.raises(InvalidSpec, match="invalid tune spec") as e:
        parse_tune_spec(_family_spec(**change))
    assert words in str(e.value)


def test_a_method_the_base_cannot_take(body, family, tmp_path, capsys):
    spec = parse_tune_spec(
        _family_spec(seeds=[1], methods=[{"name": "lora", "target_modules": ["q_proj"]}])
    )
    with pytest.raises(
        InvalidSpec,
        match=r"method lora: target module\(s\) \['q_proj'\] not found in BertForSequenceClassification; its weight layers are named \[.*'query'",
    ):
        train_member(spec, members(spec)[0], FileResolver(body), tmp_path)
    # DistilBERT's attention takes no key/value cache: peft cannot prefix-tune it
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    save(
        DistilBertForSequenceClassification(
            DistilBertConfig(
                vocab_size=len(VOCAB),
                dim=32,
                n_layers=1,
                n_heads=2,
                hidden_dim=64,
                max_position_embeddings=64,
                pad_token_id=0,
                id2label={0: "neg", 1: "pos"},
                label2id=LABELS,
            )
        ),
        tmp_path / "distil",
        make_tokenizer("bert"),
    )
    spec = parse_tune_spec(
        _family_spec(
            base="distil",
            dataset=str(body / "train.csv"),
            eval_dataset=str(body / "eval.csv"),
            seeds=[1],
            methods=[{"name": "prefix"}],
        )
    )
    with pytest.raises(
        InvalidSpec, match="method prefix does not fit DistilBertForSequenceClassification"
    ):
        train_member(spec, members(spec)[0], FileResolver(tmp_path), tmp_path / "out")
    # a folder holding θ0 of another family is not silently reused
    other = parse_tune_spec(_family_spec(seeds=[1], labels=["pos", "neg"]))
    with pytest.raises(InvalidSpec, match="holds θ0 of another family"):
        train_member(other, members(other)[0], FileResolver(body), body / "out")
    # the CLI: one line, exit 2, nothing trained
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    assert (
        main(["tune", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "cli"), "--quiet"]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("basin: error: method prefix does not fit")
    assert not (tmp_path / "cli" / "family.json").exists()


def test_should_stop_ends_the_member_cancelled_with_where_it_got_to(body, family, tmp_path):
    """A cancel between steps: status cancelled, the final checkpoint at the last step taken,
    equal to the uncancelled member's checkpoint of that step (the same trajectory)."""
    out, _, _ = family
    spec = parse_tune_spec(_family_spec(seeds=[1], methods=[{"name": "full"}]))
    steps: list[int] = []
    r = train_member(
        spec,
        members(spec)[0],
        FileResolver(body),
        tmp_path,
        on_step=lambda s, loss, n: steps.append(s),
        should_stop=lambda: len(steps) >= 4,
    )
    assert r.status == "cancelled" and steps == [1, 2, 3, 4] and len(r.losses) == 4
    assert [s for s, _ in r.checkpoints] == [2, 4, 4]  # step-2, step-4, final
    done = load_file(out / "fam-full-s1" / "step-4" / "model.safetensors")
    assert all(torch.equal(v, done[k]) for k, v in load_file(r.final / "model.safetensors").items())
