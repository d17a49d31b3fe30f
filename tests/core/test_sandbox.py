"""The limited process that runs third-party checks of untrusted input (basin/sandbox.py)."""

from __future__ import annotations

import json

import pytest

from basin.sandbox import Limits, SandboxLimit, run_limited


def _job(lora_family) -> dict:
    lora = lora_family["lora_a"]
    base = json.loads((lora / "adapter_config.json").read_text())["base_model_name_or_path"]
    return {"directory": str(lora), "config_dir": str(base), "where": "base 'b'"}


def test_a_check_runs_in_its_own_process_and_answers_in_json(lora_family):
    assert run_limited("adapter", _job(lora_family)) == 14  # the adapter's tensors, all expected
    with pytest.raises(ValueError, match="unknown sandbox job"):
        run_limited("os.system", {})


def test_a_check_over_its_memory_limit_is_stopped(lora_family):
    with pytest.raises(SandboxLimit, match="256 MiB"):
        run_limited("adapter", _job(lora_family), Limits(memory_bytes=256 << 20))


def test_a_check_over_its_wall_time_is_stopped(lora_family, tmp_path, monkeypatch):
    monkeypatch.setenv(
        "BASIN_SANDBOX_HOLD", str(tmp_path)
    )  # the check waits for a release that never comes
    with pytest.raises(SandboxLimit, match="took longer than 2 s"):
        run_limited("adapter", _job(lora_family), Limits(wall_seconds=2))
