"""``python -m bench.scale`` (the GPU benchmark, ``make bench-gpu``) runs on the CPU with ``--small``:
every column is measured, the methods agree, and the vmapped curve equals the one-at-a-time one.

No GPU figure comes from this test; it keeps the one-command GPU benchmark working.
"""

from __future__ import annotations

import json

import pytest

from bench import scale


def test_the_scale_benchmark_runs_small_on_the_cpu_and_its_methods_agree(tmp_path, monkeypatch):
    out = tmp_path / "scale.json"
    monkeypatch.setattr(scale.torch, "set_num_threads", lambda n: None)
    assert scale.main(["--device", "cpu", "--small", "--reps", "1", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["models"]) == {"lm", "minilm"}
    lm, cls = r["models"]["lm"], r["models"]["minilm"]
    assert lm["task"] == "causal_lm" and cls["task"] == "classification"
    for m in (lm, cls):
        assert (
            m["widths"] == [1, 2] and m["auto_points_per_pass"] == 1
        )  # auto: one point a pass on the CPU
        assert {"plain", "engine_k1", "engine_k2", "naive"} <= set(m["methods"])
        for row in m["methods"].values():
            assert row["s"] > 0 and row["points_per_s"] == pytest.approx(
                m["points"] / row["s"], rel=0.01
            )
            assert row["mfu"] is None  # no peak for a CPU unless given
        assert m["methods"]["plain"]["over_plain"] == 1.0
        assert m["agreement"]["ok"], m["agreement"]
        assert m["flops_per_point"] > 2 * m["matmul_params"] * m["examples"]  # ≥ one token per row


def test_the_lm_has_smollm2_135m_shape_and_its_tied_head_counts_as_a_matmul():
    import transformers

    with scale.torch.device("meta"):  # no memory for the weights
        m = transformers.LlamaForCausalLM(transformers.LlamaConfig(**scale.SMOL_SHAPE))
    params = sum(p.numel() for p in m.parameters())  # tied: the head is the embedding
    assert params == pytest.approx(134.5e6, rel=0.005)
    # 30 × (q, k, v, o, gate, up, down) + the 49 152 × 576 head: everything but the norms
    assert scale.matmul_params(m) == pytest.approx(params - 30 * 2 * 576 - 576, rel=1e-9)


def test_mfu_uses_the_datasheet_peak_of_the_card_or_the_override(monkeypatch):
    cuda = scale.torch.device("cuda")
    monkeypatch.setattr(scale.torch.cuda, "get_device_name", lambda d=None: "NVIDIA H100 80GB HBM3")
    assert scale.peak_flops(cuda, "bf16", None) == (989e12, "H100 bf16 dense datasheet")
    assert scale.peak_flops(cuda, "fp32", 100.0) == (100e12, "--peak-tflops")
    monkeypatch.setattr(scale.torch.cuda, "get_device_name", lambda d=None: "Some GPU")
    assert scale.peak_flops(cuda, "bf16", None)[0] is None
