"""Hostile third-party configs and look-alike names against the real stack (issue 24, parts 1
and 8), several variants per class, counted in ``test-artifacts/reliability.json``.

- adapter configs whose fields ``peft`` would run as regexes, use as sizes, or load files
  from; adapter types outside the allow-list; configs nested or padded to break a parser.
  Every one is refused with a 422 and a reason, nothing is kept, and the API answers
  ``/api/health`` all along (p50/p95 recorded while the uploads are validated);
- an adapter made hostile *after* it was stored (its config edited in the store): a run
  over it fails with the reason, the worker is not caught in it;
- look-alike names (zero-width, bidi, control, format characters) for checkpoints, datasets,
  runs and renames: refused; every answer carries the anti-framing headers.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

from tests.backend.conftest import zip_dir
from tests.reliability.conftest import (
    count,
    ensure_worker,
    linear_spec,
    percentile,
    store_tmp_leftovers,
)
from tests.reliability.test_bad_inputs import Tally, send

SEED = 24
REGEXES = [
    r"(.*a){25}",
    r"^((\w|\.)+)+!$",
    r"(a|aa)+$",
    r"((bert|\.)*)*x$",
    r"(?:(?:\w+)+)+#",
    r"(x+x+)+y",
]


def regex_variants(rng: random.Random) -> dict:
    rx = rng.choice(REGEXES)
    return rng.choice(
        [
            {"target_modules": rx},
            {"target_modules": ["query", rx]},
            {"exclude_modules": rx},
            {"exclude_modules": [rx]},
            {"rank_pattern": {rx: 4}},
            {"alpha_pattern": {rx: 8}},
            {"modules_to_save": [rx]},
            {"layers_pattern": rx, "layers_to_transform": [0]},
            {"layers_pattern": [rx], "layers_to_transform": 0},
        ]
    )


def size_variants(rng: random.Random) -> dict:
    return rng.choice(
        [
            {"r": 10**9},
            {"r": 2**20},
            {"r": rng.randrange(33, 2**20)},  # passes the field bounds, not the layer's
            {"r": rng.choice([2, 3, 5, 8, 16])},  # not the stored rank
            {"rank_pattern": {"query": rng.randrange(33, 2**20)}},
            {"rank_pattern": {"value": 10**12}},
            {"r": -1},
            {"r": 0},
            {"r": 4.5},
            {"lora_alpha": 1e308 * 10},
            {"layers_to_transform": list(range(100_000))},
            {"layer_replication": [[0, 3]] * rng.randrange(10, 1000)},
            {"trainable_token_indices": list(range(rng.randrange(100, 5000)))},
        ]
    )


def type_variants(rng: random.Random) -> dict:
    return rng.choice(
        [
            {
                "peft_type": "XLORA",
                "adapters": {"0": "/etc", "1": "/no/such/folder", "2": "/root/.ssh"},
                "hidden_size": 32,
            },
            {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 10**8, "task_type": "SEQ_CLS"},
            {
                "peft_type": "MULTITASK_PROMPT_TUNING",
                "prompt_tuning_init_state_dict_path": "/etc/passwd",
            },
            {
                "peft_type": "VBLORA",
                "num_vectors": 10**9,
                "vector_length": 10**6,
                "target_modules": ["query"],
            },
            {"peft_type": "FOURIERFT", "n_frequency": 10**9, "target_modules": ["query"]},
            {"peft_type": "lora", "r": 4, "target_modules": ["query"]},
            {"peft_type": "LORA\u200b", "r": 4, "target_modules": ["query"]},
            {"peft_type": "A" * 10_000},
            {"peft_type": 7},
            {"peft_type": None},
        ]
    )


def path_variants(rng: random.Random) -> dict:
    return rng.choice(
        [
            {
                "init_lora_weights": "corda",
                "corda_config": {"cache_file": "/etc/passwd", "covariance_file": "/x"},
            },
            {"init_lora_weights": "eva", "eva_config": {"rho": 2.0}},
            {"init_lora_weights": "loftq", "loftq_config": {"loftq_bits": 4, "loftq_iter": 10**6}},
            {"init_lora_weights": "pissa_niter_1000000"},
            {"init_lora_weights": "olora"},
            {"auto_mapping": {"base_model_class": "os.system", "parent_library": "os"}},
            {"megatron_config": {"tensor_model_parallel_size": 1}, "megatron_core": "os"},
            {"arrow_config": {"top_k": 3}},
            {"revision": "../../../../etc/passwd\n"},
        ]
    )


def nesting_variants(rng: random.Random) -> bytes | dict:
    depth = rng.choice([5_000, 50_000, 100_000])
    return rng.choice(
        [
            b'{"peft_type": "LORA", "x": ' + b"[" * depth + b"]" * depth + b"}",
            b'{"peft_type": "LORA", "r": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}",
            json.dumps(
                {"peft_type": "LORA", "target_modules": ["query"], "pad": "x" * 300_000}
            ).encode(),
            b"[]",
            b"null",
            b'"LORA"',
            b"\xff\xfe{",
            {"target_modules": [["query"]]},
            {"rank_pattern": {"query": {"r": [4] * 1000}}},
            {"target_modules": [f"m{i}" for i in range(10_000)]},
        ]
    )


CLASSES = {
    "adapter_regex": (regex_variants, (9, 40)),
    "adapter_sizes": (size_variants, (9, 40)),
    "adapter_types": (type_variants, (6, 30)),
    "adapter_paths_and_init": (path_variants, (6, 30)),
    "adapter_nesting": (nesting_variants, (6, 30)),
}

LOOK_ALIKES = [
    "ft_a\u200b",
    "ft_\u200ca",
    "ft_\u200da",
    "\u202eevil",
    "ft_a\u2066x\u2069",
    "\u200fft_a",
    "\u200eft_a",
    "\ufeffft_a",
    "ft\u00ad_a",
    "ft_a\x1b[2J",
    "ft\u2028_a",
    "ft\u2029_a",
    "ft_a\x00",
    "\u180eft_a",
    "\ue000ft_a",
    "ft\u061c_a",
    "ft_a\u034f" + "\u2063",
    "ft\x7f_a",
]


def hostile_adapter(lora: Path, dest: Path, change: bytes | dict) -> bytes:
    dest.mkdir(parents=True)
    for p in lora.iterdir():
        (dest / p.name).write_bytes(p.read_bytes())
    if isinstance(change, bytes):
        (dest / "adapter_config.json").write_bytes(change)
    else:
        cfg = json.loads((lora / "adapter_config.json").read_text())
        if (
            "peft_type" in change
            and "target_modules" not in change
            and change.get("peft_type") != "LORA"
        ):
            cfg = {}
        cfg.update(change)
        (dest / "adapter_config.json").write_text(json.dumps(cfg))
    return zip_dir(dest)


def test_hostile_adapter_configs_and_look_alike_names(rstack, lora_family, tmp_path, figures):
    stack = rstack
    ensure_worker(stack)
    rng = random.Random(SEED)
    tally = Tally()
    lora = lora_family["lora_a"]
    before = {c["id"] for c in stack.request("GET", "/api/checkpoints").json()}

    baseline: list[float] = []  # the same requests with no upload going (this machine's load)
    for _ in range(count(60, 200)):
        t0 = time.perf_counter()
        r = send(stack, "GET", "/api/health")
        baseline.append(time.perf_counter() - t0)
        tally.add("health_idle", r, refuse=False, what="GET /api/health")
    latencies: list[float] = []
    stop = threading.Event()

    def poll_health() -> None:  # a user's requests while the hostile uploads are validated
        while not stop.is_set():
            t0 = time.perf_counter()
            r = send(stack, "GET", "/api/health")
            latencies.append(time.perf_counter() - t0)
            tally.add("health_during_uploads", r, refuse=False, what="GET /api/health")

    poller = threading.Thread(target=poll_health)
    poller.start()
    variants: dict[str, list[str]] = {}
    try:
        n = 0
        for cls, (build, counts) in CLASSES.items():
            for _ in range(count(*counts)):
                change = build(rng)
                body = hostile_adapter(lora, tmp_path / f"h{n}", change)
                n += 1
                r = send(
                    stack,
                    "PUT",
                    "/api/checkpoints",
                    params={"name": f"hostile-{n}", "base": "ft_a"},
                    content=body,
                    headers={"Content-Type": "application/octet-stream"},
                )
                shown = (
                    change[:40].decode("latin-1")
                    if isinstance(change, bytes)
                    else json.dumps(change)[:80]
                )
                tally.add(cls, r, refuse=True, what=shown)
                variants.setdefault(cls, []).append(shown)
                if r is not None and r.status_code != 422:
                    tally.problems.append(f"{cls}: {r.status_code} (not 422) for {shown}")
                if r is not None and any(
                    p in r.text for p in ("/etc", "/root", "/no/such", "No such file")
                ):
                    tally.problems.append(f"{cls}: the answer names a server path: {r.text[:200]}")
    finally:
        stop.set()
        poller.join(120)

    # look-alike names, everywhere a name is given
    for bad in LOOK_ALIKES:
        for what, (method, path, kw) in {
            "checkpoint": (
                "PUT",
                "/api/checkpoints",
                {"params": {"name": bad}, "content": zip_dir(lora_family["base"])},
            ),
            "rename": ("PATCH", "/api/checkpoints/ft_c", {"json": {"name": bad}}),
            "dataset": (
                "PUT",
                "/api/datasets",
                {"params": {"name": bad + ".csv"}, "content": b"text,label\na,1\nb,0\n"},
            ),
            "run": ("POST", "/api/runs", {"json": linear_spec(2, name=bad)}),
        }.items():
            r = send(stack, method, path, **kw)
            tally.add(f"look_alike_{what}", r, refuse=True, what=repr(bad))
            if r is not None and r.status_code != 422:
                tally.problems.append(
                    f"look_alike_{what}: {r.status_code} for {bad!r}: {r.text[:120]}"
                )
            if r is not None and (
                r.headers.get("x-frame-options") != "DENY"
                or "frame-ancestors 'none'" not in r.headers.get("content-security-policy", "")
            ):
                tally.problems.append(f"no anti-framing headers on {method} {path}")

    # an adapter made hostile after it was stored: a run over it fails with the reason
    ok = stack.request(
        "PUT",
        "/api/checkpoints",
        params={"name": "lora-rel", "base": "ft_a"},
        content=zip_dir(lora),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert ok.status_code in (200, 201), ok.text
    stored = Path(ok.json().get("path") or stack.store / "checkpoints" / ok.json()["id"])
    cfg_path = stored / "adapter_config.json"
    good_cfg = cfg_path.read_text()
    run_outcomes = {}
    for label, change, says in [
        ("regex target_modules", {"target_modules": REGEXES[1]}, "regular expression"),
        ("rank beyond the layer", {"r": 500_000}, "larger than the layer"),
        (
            "path-loading type",
            {"peft_type": "XLORA", "adapters": {"0": "/etc"}},
            "is not one Basin takes",
        ),
    ]:
        cfg = {**json.loads(good_cfg), **change}
        cfg_path.write_text(json.dumps(cfg))
        r = stack.request(
            "POST",
            "/api/runs",
            json=linear_spec(2, path={"type": "linear", "a": "lora-rel", "b": "ft_a", "points": 2}),
        )
        if r.status_code == 422:  # refused at submission: as good
            run_outcomes[label] = f"422 at submission: {r.json()['detail'][:120]}"
            assert says in r.json()["detail"], r.text
            continue
        assert r.status_code == 201, r.text
        detail = stack.wait_run(r.json()["id"], timeout=600)
        run_outcomes[label] = f"{detail['status']}: {str(detail.get('error'))[:160]}"
        assert detail["status"] == "failed", detail
        assert says in json.dumps(detail), detail
    cfg_path.write_text(good_cfg)
    stack.request("DELETE", "/api/checkpoints/lora-rel")
    # the worker is free: a normal run completes
    r = stack.request("POST", "/api/runs", json=linear_spec(2, seed=31))
    assert r.status_code == 201, r.text
    assert stack.wait_run(r.json()["id"], timeout=600)["status"] == "done"

    after = {c["id"] for c in stack.request("GET", "/api/checkpoints").json()}
    leftovers = store_tmp_leftovers(stack.store)
    figures["hostile_configs"] = {
        "total": tally.total,
        "by_class": {k: dict(v) for k, v in sorted(tally.by_class.items())},
        "variants": {k: sorted(set(v)) for k, v in variants.items()},
        "look_alike_names": [repr(x) for x in LOOK_ALIKES],
        "stored_adapter_made_hostile": run_outcomes,
        "health_during_uploads": {
            "requests": len(latencies),
            "p50_ms": round(percentile(latencies, 50) * 1000, 1),
            "p95_ms": round(percentile(latencies, 95) * 1000, 1),
            "max_ms": round(max(latencies, default=0) * 1000, 1),
        },
        "health_idle": {
            "requests": len(baseline),
            "p50_ms": round(percentile(baseline, 50) * 1000, 1),
            "p95_ms": round(percentile(baseline, 95) * 1000, 1),
        },
        "five_xx": tally.five_xx,
        "tmp_leftovers": len(leftovers),
        "problems": tally.problems[:100],
    }
    assert after == before, "a hostile upload was kept"
    assert not leftovers, leftovers[:10]
    assert latencies and tally.five_xx == 0 and not tally.problems, "\n".join(tally.problems[:40])
