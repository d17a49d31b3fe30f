"""PEFT adapter uploads: stored on a base checkpoint, validated, refused with a clear 4xx."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests import factories
from tests.backend.conftest import store_state, zip_dir

ZIP = {"Content-Type": "application/octet-stream"}


def put(client, body, name, **params):
    return client.put("/api/checkpoints", params={"name": name, **params}, content=body, headers=ZIP)


def _with_config(src: Path, dest: Path, **changes) -> Path:
    shutil.copytree(src, dest)
    cfg = json.loads((dest / "adapter_config.json").read_text())
    cfg.update(changes)
    (dest / "adapter_config.json").write_text(json.dumps(cfg))
    return dest


def test_adapter_upload_on_its_base_by_name_or_by_choice(client, lora_family, tmp_path):
    base = put(client, zip_dir(lora_family["base"]), "tiny-bert").json()
    # base_model_name_or_path names the stored base: no base= needed
    named = _with_config(lora_family["lora_a"], tmp_path / "a", base_model_name_or_path="tiny-bert")
    r = put(client, zip_dir(named, prefix="lora_a/"), "lora-a", tags='{"seed": 1}')
    assert r.status_code == 201, r.text
    m = r.json()
    assert m["base"] == base["id"] and m["base_name"] == "tiny-bert"
    assert m["adapter"]["peft_type"] == "LORA" and m["adapter"]["r"] == 4
    assert m["adapter"]["target_modules"] == ["query", "value"]
    assert m["format"] == "adapter (safetensors)" and m["architecture"] == base["architecture"]
    assert m["num_parameters"] < base["num_parameters"]  # the adapter's own tensors
    detail = client.get("/api/checkpoints/lora-a").json()
    assert detail["parameters"]["tensors"] == 14  # 3 layers × (q, v) × (A, B) + classifier w, b
    # the user's choice: the config names a model the store does not hold
    r = client.post("/api/checkpoints", files={"file": ("b.zip", zip_dir(lora_family["lora_b"]))},
                    data={"name": "lora-b", "base": "tiny-bert"})
    assert r.status_code == 201, r.text
    assert r.json()["base"] == base["id"]
    # a base with adapters on it is not deleted from under them
    d = client.delete("/api/checkpoints/tiny-bert")
    assert d.status_code == 409 and "lora-a" in d.json()["detail"]
    assert store_state(client.store_root)["tmp"] == []


def test_adapter_without_a_known_base_is_refused(client, lora_family):
    r = put(client, zip_dir(lora_family["lora_a"]), "lora-a")
    assert r.status_code == 422
    assert "names no checkpoint in the store" in r.json()["detail"] and "base=" in r.json()["detail"]
    r = put(client, zip_dir(lora_family["lora_a"]), "lora-a", base="no-such-base")
    assert r.status_code == 422 and "no-such-base" in r.json()["detail"]
    assert store_state(client.store_root)["checkpoints"] == []


def test_mismatched_base_missing_modules_and_broken_files_are_refused(client, lora_family, gpt2_pair, tmp_path):
    put(client, zip_dir(lora_family["base"]), "tiny-bert")
    put(client, zip_dir(gpt2_pair["a"]), "gpt2")
    wide = factories.save(factories.init_classifier(0, hidden_size=48), tmp_path / "wide", factories.make_tokenizer())
    put(client, zip_dir(wide), "wide-bert")
    before = store_state(client.store_root)

    r = put(client, zip_dir(lora_family["lora_a"]), "on-gpt2", base="gpt2")  # no query/value modules
    assert r.status_code == 422
    assert "are not in base 'gpt2'" in r.json()["detail"] and "query" in r.json()["detail"]

    r = put(client, zip_dir(lora_family["lora_a"]), "on-wide", base="wide-bert")  # shapes do not fit
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "IncompatibleCheckpoints" and "wide-bert" in body["detail"]
    assert any("lora_A" in m["tensor"] and "[4, 32]" in m["reason"] for m in body["mismatches"])

    missing = _with_config(lora_family["lora_a"], tmp_path / "m", target_modules=["query", "no_such_proj"])
    r = put(client, zip_dir(missing), "missing", base="tiny-bert")
    assert r.status_code == 422 and "['no_such_proj'] are not in base 'tiny-bert'" in r.json()["detail"]

    cut = _with_config(lora_family["lora_a"], tmp_path / "cut")
    f = cut / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    r = put(client, zip_dir(cut), "cut", base="tiny-bert")
    assert r.status_code == 422 and "truncated" in r.json()["detail"]

    notjson = _with_config(lora_family["lora_a"], tmp_path / "nj")
    (notjson / "adapter_config.json").write_text("{not json")
    r = put(client, zip_dir(notjson), "nj", base="tiny-bert")
    assert r.status_code == 422 and "adapter_config.json" in r.json()["detail"]

    r = put(client, (lora_family["base"] / "model.safetensors").read_bytes(), "bare", base="tiny-bert",
            config="tiny-bert")
    assert r.status_code == 422 and "base= applies only to a PEFT adapter" in r.json()["detail"]
    assert store_state(client.store_root) == before
