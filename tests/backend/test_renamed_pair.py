"""One compatibility check: a renamed pair gets the same answer from ``basin eval`` and the API.

Two checkpoints of one model can store the same tensors under different names:
transformers' loading renames them (a ``BertModel`` file has no ``bert.`` prefix; a
``.bin`` stores a tied embedding twice, as ``transformer.wte.weight`` and
``lm_head.weight``). The engine compares tensors under the model's own names, so
``basin eval`` mixes such a pair; the API used to compare the raw stored names and
refused it with a 422. Here both go through the real CLI (``basin.cli.main``) and the
real app (``POST /api/runs`` over a private redis-server, which queues the run, and
``/api/runs/validate``), and must agree — and on a truly incompatible pair both refuse
with one message.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from basin import cli
from tests.backend.conftest import zip_dir
from tests.backend.test_checkpoints import put


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def renamed(tmp_path_factory, classifier_family, gpt2_pair) -> dict[str, Path]:
    """``ft_a`` and ``ft_b_noprefix`` (ft_b's weights without the ``bert.`` prefix);
    ``lm_a`` (safetensors, tied embedding stored once) and ``lm_b_bin`` (a ``.bin`` holding
    the tied pair under both names); ``narrow`` (ft_b with a 3-label head: incompatible)."""
    from tests import factories

    root = tmp_path_factory.mktemp("renamed")
    out = {
        "ft_a": classifier_family["ft_a"],
        "lm_a": gpt2_pair["a"],
        "data": classifier_family["data"],
        "lm_data": gpt2_pair["data"],
    }
    d = _copy(classifier_family["ft_b"], root / "ft_b_noprefix")
    sd = load_file(d / "model.safetensors")
    save_file(
        {k.removeprefix("bert."): v for k, v in sd.items()},
        d / "model.safetensors",
        metadata={"format": "pt"},
    )
    out["ft_b_noprefix"] = d

    d = _copy(gpt2_pair["b"], root / "lm_b_bin")
    model = factories.GPT2LMHeadModel.from_pretrained(d)
    (d / "model.safetensors").unlink()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert (
        "lm_head.weight" in state and "transformer.wte.weight" in state
    )  # the tied alias, stored twice
    torch.save(state, d / "pytorch_model.bin")
    out["lm_b_bin"] = d

    out["narrow"] = factories.save(
        factories.init_classifier(0, num_labels=3),
        root / "narrow",
        factories.make_tokenizer("bert"),
    )
    return out


def _cli(tmp_path: Path, spec: dict, capsys) -> tuple[int, str]:
    """``basin eval`` of ``spec`` (paths absolute): exit code and its error line ('' on success)."""
    path = tmp_path / f"spec-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "result.json"
    capsys.readouterr()
    rc = cli.main(["eval", str(path), "-o", str(out), "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    if rc == 0:
        assert json.loads(out.read_text())["status"] == "done"
    line = next((ln for ln in err.splitlines() if ln.startswith("basin: error: ")), "")
    return rc, line.removeprefix("basin: error: ")


def _api(
    client, pair: tuple[str, str], ckpts: dict[str, Path], dataset: Path, task: str
) -> tuple[int, dict]:
    for name in pair:
        assert put(client, zip_dir(ckpts[name]), name=name).status_code in (201, 200)
    r = client.put(
        "/api/datasets",
        params={"name": dataset.name},
        content=dataset.read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code in (200, 201), r.text
    spec = {
        "path": {"type": "linear", "a": pair[0], "b": pair[1], "points": 3},
        "dataset": dataset.name,
        "task": task,
        "max_examples": 8,
    }
    r = client.post("/api/runs/validate", json=spec)
    return r.status_code, r.json()


@pytest.mark.parametrize(
    ("pair", "task", "data"),
    [
        (("ft_a", "ft_b_noprefix"), "classification", "data"),
        (("lm_a", "lm_b_bin"), "causal_lm", "lm_data"),
    ],
    ids=["base-model-prefix", "tied-alias-in-bin"],
)
def test_a_renamed_pair_passes_the_cli_and_the_api(
    renamed, client, tmp_path, capsys, pair, task, data
):
    spec = {
        "path": {
            "type": "linear",
            "a": str(renamed[pair[0]]),
            "b": str(renamed[pair[1]]),
            "points": 3,
        },
        "dataset": str(renamed[data]),
        "task": task,
        "max_examples": 8,
    }
    rc, err = _cli(tmp_path, spec, capsys)
    assert rc == 0, err
    status, body = _api(client, pair, renamed, renamed[data], task)
    assert status == 200, (
        body
    )  # the old API: 422, "N mismatched tensor(s): bert.embeddings...: missing in ..."
    assert body["num_points"] == 3


def test_an_incompatible_pair_gets_one_message_from_the_cli_and_the_api(
    renamed, client, tmp_path, capsys
):
    spec = {
        "path": {
            "type": "linear",
            "a": str(renamed["ft_a"]),
            "b": str(renamed["narrow"]),
            "points": 3,
        },
        "dataset": str(renamed["data"]),
        "max_examples": 8,
    }
    rc, err = _cli(tmp_path, spec, capsys)
    assert rc == 2
    status, body = _api(client, ("ft_a", "narrow"), renamed, renamed["data"], "classification")
    assert status == 422 and body["error"] == "IncompatibleCheckpoints"
    assert {m["tensor"] for m in body["mismatches"]} == {"classifier.weight", "classifier.bias"}
    # one message: the same words, the checkpoints named as each caller wrote them
    as_cli = err.replace(str(renamed["ft_a"]), "ft_a").replace(str(renamed["narrow"]), "narrow")
    assert as_cli == " ".join(body["detail"].split())
    assert "checkpoints 'ft_a' and 'narrow' are incompatible" in body["detail"]
