"""Check (``POST /api/runs/validate``) refuses what the worker would refuse before its first
point, in words that name checkpoints and suggest only what can work (issue 28, item 4)."""

from __future__ import annotations

import re

import pytest

HEX64 = re.compile(r"\b[0-9a-f]{64}\b")


@pytest.fixture
def store(reg_client, classifier_family, gpt2_pair):
    c = reg_client
    ids = {}
    for name, path in (
        ("ft_a", classifier_family["ft_a"]),
        ("ft_b", classifier_family["ft_b"]),
        ("gpt_a", gpt2_pair["a"]),
        ("gpt_b", gpt2_pair["b"]),
    ):
        r = c.post("/api/checkpoints/register", json={"path": str(path), "name": name})
        assert r.status_code in (200, 201), r.text
        ids[name] = r.json()["id"]
    for name, path in (("eval.csv", classifier_family["data"]), ("lm.jsonl", gpt2_pair["data"])):
        r = c.put(
            "/api/datasets",
            params={"name": name},
            content=path.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code in (200, 201), r.text
        ids[name] = r.json()["id"]
    return c, ids


def _check(client, **spec):
    spec.setdefault("max_examples", 8)
    r = client.post("/api/runs/validate", json=spec)
    return r.status_code, r.json()


def _line(a, b, **kw):
    return {"type": "linear", "a": a, "b": b, "points": 3, **kw}


def test_a_task_the_checkpoints_head_cannot_serve_is_refused_with_the_task_that_fits(store):
    c, ids = store
    status, body = _check(
        c, path=_line(ids["ft_a"], ids["ft_b"]), dataset="lm.jsonl", task="causal_lm"
    )
    assert status == 422, body
    assert "task 'causal_lm' needs weights that checkpoint 'ft_a' does not have" in body["detail"]
    assert "BertForSequenceClassification: for it pick task classification" in body["detail"]
    assert not HEX64.search(body["detail"])
    assert _check(c, path=_line("ft_a", "ft_b"), dataset="eval.csv")[0] == 200  # the task that fits


def test_different_architectures_are_refused_plainly_without_a_hold_hint(store):
    c, ids = store
    for hold in ("error", "hold"):
        status, body = _check(
            c, path=_line(ids["ft_a"], ids["gpt_a"]), dataset="eval.csv", on_mismatch=hold
        )
        assert status == 422, body
        d = body["detail"]
        assert (
            "'ft_a' (BertForSequenceClassification) and 'gpt_a' (GPT2LMHeadModel) are different architectures"
            in d
        )
        assert "on_mismatch" not in d and "hold" not in d and "mismatched tensor" not in d


def test_scope_head_on_a_tied_embedding_lm_says_the_head_is_the_embedding(store):
    c, _ = store
    status, body = _check(
        c, path=_line("gpt_a", "gpt_b"), dataset="lm.jsonl", task="causal_lm", scope="head"
    )
    assert status == 422, body
    assert "ties its output head to its input embedding" in body["detail"]
    assert "scope 'embeddings'" in body["detail"]
    assert (
        _check(
            c,
            path=_line("gpt_a", "gpt_b"),
            dataset="lm.jsonl",
            task="causal_lm",
            scope="embeddings",
        )[0]
        == 200
    )


def test_messages_name_checkpoints_and_read_as_words(store):
    c, ids = store
    # a plane through a repeated checkpoint, sent as ids (what the form sends)
    status, body = _check(
        c,
        path={"type": "plane", "a": ids["ft_a"], "b": ids["ft_a"], "c": ids["ft_b"]},
        dataset="eval.csv",
    )
    assert status == 422 and not HEX64.search(body["detail"]), body
    assert "'ft_a', 'ft_a', 'ft_b'" in body["detail"]
    # an empty trajectory picker: plain words, no pydantic internals
    status, body = _check(c, path={"type": "trajectory", "checkpoints": []}, dataset="eval.csv")
    assert status == 422
    assert (
        body["detail"] == "invalid spec: path.checkpoints: pick at least 2 checkpoints (none given)"
    )


@pytest.mark.parametrize(
    "labels, says",
    [
        (["joy", "anger"], "has label 'joy', which is neither an integer nor one of the model's labels"),
        ([0, 5], "has label 5, outside the model's 2 classes [0, 1]"),
    ],
)
def test_a_dataset_whose_labels_the_model_lacks_is_refused_at_check(store, labels, says):
    """The worker reads the dataset under the first checkpoint's labels before its first point;
    Check (and Run) read it the same way, so a three-emotion file on a two-class classifier is
    a 422 in words, not a run that fails in the worker."""
    c, ids = store
    rows = "".join(f"good day {i},{labels[i % 2]}\n" for i in range(6))
    r = c.put("/api/datasets", params={"name": "emotions.csv"}, content=("text,label\n" + rows).encode(),
              headers={"Content-Type": "application/octet-stream"})
    assert r.status_code in (200, 201), r.text
    status, body = _check(c, path=_line("ft_a", "ft_b"), dataset="emotions.csv")
    assert status == 422, body
    assert says in body["detail"] and "checkpoint 'ft_a'" in body["detail"], body
    assert c.post("/api/runs", json={"path": _line("ft_a", "ft_b"), "dataset": "emotions.csv",
                                     "max_examples": 8}).status_code == 422


def test_adapters_of_two_seeds_on_their_own_inits_share_an_adapter_space_path_in_the_api(
    reg_client, classifier_family, tmp_path_factory
):
    """A tune family's PEFT seeds sit on two θ0 folders that differ only in the fresh head each
    adapter replaces with its own copy (``modules_to_save``): the engine puts them on one
    adapter-space path, and Check now agrees (it refused any two stored bases). Bases that
    differ in a tensor the adapters do not replace are still refused, naming the tensor."""
    import shutil

    from safetensors.torch import load_file, save_file

    from tests.factories import build_lora

    root = tmp_path_factory.mktemp("two-inits")
    inits = {}
    for i, bump in enumerate((None, "classifier.weight", "bert.encoder.layer.0.attention.self.key.weight")):
        d = root / f"init-{i}"
        shutil.copytree(classifier_family["init"], d)
        if bump:
            sd = load_file(d / "model.safetensors")
            sd[bump] = sd[bump] + 0.5
            save_file(sd, d / "model.safetensors", metadata={"format": "pt"})
        inits[i] = d
    c = reg_client
    for i, d in inits.items():
        assert c.post("/api/checkpoints/register", json={"path": str(d), "name": f"init-{i}"}).status_code in (200, 201)
        ad = build_lora(d, root / f"lora-{i}", seed=i + 1, steps=2)
        r = c.post("/api/checkpoints/register", json={"path": str(ad), "name": f"lora-{i}", "base": f"init-{i}"})
        assert r.status_code in (200, 201), r.text
    r = c.put("/api/datasets", params={"name": "eval.csv"}, content=classifier_family["data"].read_bytes(),
              headers={"Content-Type": "application/octet-stream"})
    assert r.status_code in (200, 201), r.text

    status, body = _check(c, path=_line("lora-0", "lora-1"), dataset="eval.csv", space="adapter")
    assert status == 200, body  # only the head differs, and both adapters carry their own
    status, body = _check(c, path=_line("lora-0", "lora-2"), dataset="eval.csv", space="adapter")
    assert status == 422, body
    assert "'lora-0' is on 'init-0', 'lora-2' on 'init-2'" in body["detail"], body
    assert "a tensor the adapters do not replace: 'bert.encoder.layer.0.attention.self.key.weight'" in body["detail"]
