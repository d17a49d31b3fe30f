"""Barriers and distances on constructed cases."""

from __future__ import annotations

import math

import pytest
import torch

from basin.analysis import barrier, barriers, distances
from basin.space import param_group, select_scope


def test_loss_barrier_constructed():
    # L(α) = chord + bump of height 0.3 at α = 0.5 between L(0) = 1 and L(1) = 2
    curve = [(a / 4, (1 - a / 4) * 1.0 + (a / 4) * 2.0 + (0.3 if a == 2 else 0.0)) for a in range(5)]
    b = barrier(curve, lo=0.0, hi=1.0)
    assert b["value"] == pytest.approx(0.3) and b["alpha"] == 0.5
    # endpoints inside a wider range are α = 0 and 1; points outside [0, 1] do not count
    wide = [(-0.5, 9.0), (0.0, 1.0), (0.5, 1.0), (1.0, 1.0), (1.5, 9.0)]
    assert barrier(wide, lo=-0.5, hi=1.5) == {"value": 0.0, "alpha": 0.0, "start": 0.0, "end": 1.0}
    # a range without 0 and 1 uses its own ends
    inner = barrier([(0.2, 1.0), (0.4, 2.0), (0.6, 1.0)], lo=0.2, hi=0.6)
    assert inner["value"] == pytest.approx(1.0) and (inner["start"], inner["end"]) == (0.2, 0.6)


def test_accuracy_barrier_is_drop_below_chord():
    results = [{"coords": {"alpha": a}, "metrics": {"loss": 0.1, "accuracy": acc}}
               for a, acc in [(0.0, 0.9), (0.5, 0.5), (1.0, 0.8)]]
    out = barriers(results, ["loss", "accuracy"], 0.0, 1.0)
    assert out["accuracy"]["value"] == pytest.approx(0.85 - 0.5) and out["accuracy"]["alpha"] == 0.5
    assert out["loss"]["value"] == pytest.approx(0.0)


def test_distances():
    a = {"layer.0.w": torch.ones(2, 2), "classifier.bias": torch.tensor([1.0, 0.0])}
    b = {"layer.0.w": torch.ones(2, 2) * 3, "classifier.bias": torch.tensor([0.0, 1.0])}
    d = distances(a, b, list(a))
    assert d["l2"] == pytest.approx(math.sqrt(16 + 2))
    t = {x["name"]: x for x in d["per_tensor"]}
    assert t["layer.0.w"]["scaled"] == pytest.approx(2.0) and t["layer.0.w"]["cosine"] == pytest.approx(1.0)
    assert t["classifier.bias"]["cosine"] == pytest.approx(0.0)
    assert [g["name"] for g in d["per_layer"]] == ["layer 0", "head"]


def test_layer_names_and_thirds():
    assert param_group("encoder.block.3.layer.1.DenseReluDense.wi.weight") == "layer 3"
    assert param_group("transformer.h.11.attn.c_attn.weight") == "layer 11"
    assert param_group("model.layers.2.mlp.up_proj.weight") == "layer 2"
    assert param_group("shared.weight") == "embeddings" and param_group("lm_head.weight") == "head"
    names = [f"m.layers.{i}.w" for i in range(12)]
    assert select_scope("lower", names) == names[:4]
    assert select_scope("middle", names) == names[4:8]
    assert select_scope("upper", names) == names[8:]
