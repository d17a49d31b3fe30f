"""Hostile ``adapter_config.json`` files (issue 24, part 1): refused by name, before ``peft``
runs any of their fields, and checked against the stored tensors in a limited process — while
the API keeps answering."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from service.settings import Settings
from tests.backend.conftest import serve, store_state, wait_for, zip_dir

ZIP = {"Content-Type": "application/octet-stream"}
#: patterns that take Python's backtracking engine seconds to forever on a module name
CATASTROPHIC = [r"(.*a){25}", r"^((\w|\.)+)+!$", r"(a|aa)+$", r"((bert|\.)*)*x$"]


def put(client, body, name, **params):
    return client.put(
        "/api/checkpoints", params={"name": name, **params}, content=body, headers=ZIP
    )


def hostile(
    src: Path, dest: Path, config: dict | None = None, raw: bytes | None = None, **changes
) -> bytes:
    """A zip of the adapter ``src`` with its config changed (or replaced by ``config`` / ``raw``)."""
    shutil.copytree(src, dest)
    cfg = json.loads((dest / "adapter_config.json").read_text())
    cfg.update(changes)
    if config is not None:
        cfg = config
    (dest / "adapter_config.json").write_bytes(raw if raw is not None else json.dumps(cfg).encode())
    return zip_dir(dest)


def variants(lora: Path) -> list[tuple[str, dict, str]]:
    """(label, config changes, what the refusal must say)."""
    out: list[
        tuple[str, dict, str]
    ] = [  # first: what the old code accepted or mis-explained at once
        ("unknown field", {"surprise": {"nested": [1, 2, 3]}}, "'surprise'"),
        ("r not the stored rank", {"r": 8}, "has shape [4, 32]"),
    ]
    for i, rx in enumerate(CATASTROPHIC):
        out.append((f"target_modules regex {i}", {"target_modules": rx}, "regular expression"))
    out += [
        (
            "a regex in the list",
            {"target_modules": ["query", CATASTROPHIC[3]]},
            "not a module name",
        ),
        ("exclude_modules regex", {"exclude_modules": CATASTROPHIC[0]}, "regular expression"),
        ("rank_pattern key regex", {"rank_pattern": {CATASTROPHIC[1]: 4}}, "not a module name"),
        ("alpha_pattern key regex", {"alpha_pattern": {CATASTROPHIC[2]: 8}}, "not a module name"),
        ("modules_to_save regex", {"modules_to_save": ["(classifier|.)+$"]}, "not a module name"),
        (
            "layers_pattern regex",
            {"layers_pattern": "(layer)+(.*)*", "layers_to_transform": [0]},
            "layers_pattern",
        ),
        ("r huge", {"r": 10**9}, "r must be an integer"),
        ("r beyond the layer", {"r": 500_000}, "larger than the layer"),
        ("rank_pattern huge", {"rank_pattern": {"query": 300_000}}, "larger than the layer"),
        ("r as text", {"r": "4"}, "r must be an integer"),
        ("alpha NaN", {"lora_alpha": float("nan")}, "numbers must be finite"),  # strict JSON refuses it first
        ("dropout out of range", {"lora_dropout": 7}, "lora_dropout"),
        ("layer_replication", {"layer_replication": [[0, 3]] * 200}, "layer_replication"),
        ("pissa init (changes the base)", {"init_lora_weights": "pissa"}, "init_lora_weights"),
        (
            "corda loads a cache file",
            {"init_lora_weights": "corda", "corda_config": {"cache_file": "/etc/passwd"}},
            "corda",
        ),
        (
            "auto_mapping",
            {"auto_mapping": {"base_model_class": "os.system", "parent_library": "os"}},
            "auto_mapping",
        ),
        (
            "trainable tokens",
            {"trainable_token_indices": list(range(5_000))},
            "trainable_token_indices",
        ),
    ]
    return out


def test_hostile_adapter_configs_are_refused_by_name_and_nothing_is_kept(
    client, lora_family, tmp_path
):
    put(client, zip_dir(lora_family["base"]), "tiny-bert")
    before = store_state(client.store_root)
    lora = lora_family["lora_a"]
    seen = []
    for i, (label, changes, says) in enumerate(variants(lora)):
        r = put(client, hostile(lora, tmp_path / f"v{i}", **changes), f"h{i}", base="tiny-bert")
        seen.append((label, r.status_code, r.json().get("detail", "")))
        assert r.status_code == 422, (label, r.text)
        assert says in r.json()["detail"], (label, r.json()["detail"])
    # types outside the allow-list: X-LoRA loads adapters from server paths, p-tuning builds a
    # prompt-encoder network of its own; the answer never tells whether a path exists
    for i, cfg in enumerate(
        [
            {
                "peft_type": "XLORA",
                "adapters": {"0": "/etc", "1": "/no/such/folder"},
                "hidden_size": 32,
            },
            {"peft_type": "P_TUNING", "num_virtual_tokens": 10**8, "task_type": "SEQ_CLS"},
            {
                "peft_type": "VBLORA",
                "num_vectors": 10**9,
                "vector_length": 10**6,
                "target_modules": ["query"],
            },
            {"peft_type": "lora", "r": 4, "target_modules": ["query"]},
        ]
    ):
        r = put(client, hostile(lora, tmp_path / f"t{i}", config=cfg), f"t{i}", base="tiny-bert")
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert "is not one Basin takes" in detail and "LORA, IA3, LOHA, LOKR" in detail, detail
        assert "/etc" not in r.text and "/no/such" not in r.text and "exist" not in detail
    # a config nested far too deeply for the parser, and one far too large
    deep = b'{"peft_type": "LORA", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = put(client, hostile(lora, tmp_path / "deep", raw=deep), "deep", base="tiny-bert")
    assert r.status_code == 422 and "adapter_config.json is" in r.json()["detail"], r.text
    pad = json.dumps(
        {**json.loads((lora / "adapter_config.json").read_text()), "pad": "x" * 300_000}
    )
    r = put(client, hostile(lora, tmp_path / "big", raw=pad.encode()), "big", base="tiny-bert")
    assert r.status_code == 422 and "larger than 256 KiB" in r.json()["detail"], r.text
    assert store_state(client.store_root) == before


@pytest.fixture
def served(make_client, redis_url, tmp_path, monkeypatch):
    """The real app under uvicorn (a thread of this process), its store, and the sandbox's
    hold folder (``BASIN_SANDBOX_HOLD``): a check in a sandbox waits there until released."""
    from backend.app.main import create_app

    hold = tmp_path / "hold"
    hold.mkdir()
    monkeypatch.setenv("BASIN_SANDBOX_HOLD", str(hold))
    settings = Settings(
        store=tmp_path / "store", api_token=None, redis_url=redis_url, allowed_hosts="127.0.0.1"
    )
    with serve(create_app(settings, with_ui=False)) as port:
        yield f"http://127.0.0.1:{port}", settings.store, hold
    (hold / "release").touch()


def test_the_api_answers_while_hostile_adapters_are_validated(served, lora_family, tmp_path):
    """A catastrophic pattern used to hold the API's GIL inside peft for minutes: now it is
    refused at once, and the check that does run peft runs in another process. While such a
    check is held in the sandbox (an event, not a clock), health answers; figure: p95."""
    url, store, hold = served
    headers = {"X-Basin-Token": ""}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as c:  # 120 s: a hang limit
        assert put(c, zip_dir(lora_family["base"]), "tiny-bert").status_code == 201
        lora = lora_family["lora_a"]
        uploads = [
            hostile(lora, tmp_path / f"rx{i}", target_modules=rx)
            for i, rx in enumerate(CATASTROPHIC)
        ]
        uploads += [
            hostile(lora, tmp_path / f"rk{i}", rank_pattern={rx: 4})
            for i, rx in enumerate(CATASTROPHIC)
        ]
        wide = hostile(
            lora, tmp_path / "r8", r=8
        )  # passes the field checks: its sizes are checked in the sandbox
        answers: dict[str, list] = {"hostile": [], "held": []}

        def send_all() -> None:
            with httpx.Client(base_url=url, headers=headers, timeout=120) as u:
                for i, body in enumerate(uploads):
                    answers["hostile"].append(put(u, body, f"rx{i}", base="tiny-bert").status_code)
                answers["held"].append(put(u, wide, "r8", base="tiny-bert"))

        idle = []  # the same requests before any upload (this machine's load), for comparison
        for _ in range(40):
            t0 = time.perf_counter()
            assert c.get("/api/health").status_code == 200
            idle.append(time.perf_counter() - t0)
        sender = threading.Thread(target=send_all)
        sender.start()
        assert wait_for(lambda: any(hold.glob("*.started")), timeout=300), (
            "no sandboxed check started"
        )
        latencies = []
        for _ in range(40):  # all of these while the check is held in its sandbox
            t0 = time.perf_counter()
            r = c.get("/api/health")
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 200
        assert not answers["held"], "the held check answered before it was released"
        (hold / "release").touch()
        sender.join(300)
    assert answers["hostile"] == [422] * len(uploads)
    r = answers["held"][0]
    assert r.status_code == 422 and "rank 8" in r.json()["detail"], r.text
    idle.sort()
    print(
        f"health idle: p50 {idle[len(idle) // 2] * 1000:.1f} ms, p95 {idle[int(0.95 * (len(idle) - 1))] * 1000:.1f} ms"
    )
    latencies.sort()
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    print(
        f"health while a hostile adapter is validated: p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
        f"p95 {p95 * 1000:.1f} ms over {len(latencies)} requests"
    )
    state = store_state(store)
    assert len(state["checkpoints"]) == 1 and state["tmp"] == []  # the base, nothing else


def test_prompt_learning_adapters_upload_checked_like_the_others(client, delta_family, tmp_path):
    """Prompt tuning is taken on its base (issue 27); one whose table or sizes do not fit the
    base, or with too many virtual tokens, is refused by name and nothing is kept."""
    put(client, zip_dir(delta_family["base"]), "tiny-init")
    r = put(client, zip_dir(delta_family["prompt"]), "prompt-ok", base="tiny-init")
    assert r.status_code in (200, 201), r.text
    before = store_state(client.store_root)
    for i, (changes, says) in enumerate([
        ({"token_dim": 48}, "token_dim = 48, but base"),
        ({"num_virtual_tokens": 10**8}, "num_virtual_tokens must be an integer in [1, 1024]"),
        ({"num_virtual_tokens": 9}, "makes it [9, 32]"),
        ({"prompt_tuning_init": "os.system"}, "prompt_tuning_init must be one of"),
    ]):
        r = put(client, hostile(delta_family["prompt"], tmp_path / f"p{i}", **changes), f"p{i}", base="tiny-init")
        assert r.status_code == 422 and says in r.json()["detail"], (changes, r.text)
    assert store_state(client.store_root) == before
