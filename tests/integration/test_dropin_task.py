"""A task is one module: a copy of ``basin/tasks/classification.py`` under a new name, dropped
into ``basin/tasks/`` with no other edit, works through the CLI (``basin eval``) and the API
(``GET /api/meta``, validation, a real worker evaluating it) and gives the numbers the task
it copies gives.

The CLI and the stack run in fresh processes started inside
:func:`tests.dropin.dropped_in_task` (the registry is built at import), so they discover it;
it is removed again when the module's test ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.dropin import dropped_in_task, tasks_package
from tests.stack import running_stack

ROOT = Path(__file__).resolve().parents[2]


def _eval(spec: dict, folder: Path, name: str) -> dict:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = folder / f"{name}.json"
    proc = subprocess.run(
        [sys.executable, "-m", "basin.cli", "eval", str(path), "-o", str(out), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_a_task_module_dropped_in_works_through_the_cli_and_the_api(classifier_family, tmp_path):
    common = {
        "dataset": str(classifier_family["data"]),
        "max_examples": 24,
        "device": "cpu",
        "path": {
            "type": "linear",
            "a": str(classifier_family["ft_a"]),
            "b": str(classifier_family["ft_b"]),
            "points": 5,
        },
    }
    with dropped_in_task("classification") as task:
        cli = _eval(
            {**common, "task": task, "ensemble": True, "per_example": True}, tmp_path, "new"
        )
        with running_stack(tmp_path / "store", workers=1, ui=False) as stack:
            meta = stack.request("GET", "/api/meta").json()
            for name in ("ft_a", "ft_b"):
                r = stack.request(
                    "POST",
                    "/api/checkpoints/register",
                    json={"path": str(classifier_family[name]), "name": name},
                )
                assert r.status_code in (200, 201), r.text
            r = stack.request(
                "PUT", "/api/datasets?name=eval.csv", content=classifier_family["data"].read_bytes()
            )
            assert r.status_code in (200, 201), r.text
            spec = {
                "path": {"type": "linear", "a": "ft_a", "b": "ft_b", "points": 5},
                "dataset": "eval.csv",
                "task": task,
                "max_examples": 24,
                "ensemble": True,
                "per_example": True,
            }
            r = stack.request("POST", "/api/runs", json=spec)
            assert r.status_code == 201, r.text
            doc = stack.wait_run(r.json()["id"])
            assert doc["status"] == "done", doc.get("error")
            full = stack.request("GET", f"/api/runs/{r.json()['id']}/points").json()
    assert not (tasks_package() / f"{task}.py").exists()  # removed again

    # the API lists it with what it supports, and its run spec schema offers it
    entry = meta["tasks"][task]
    assert entry["ensemble"] and entry["per_example"] and entry["columns"] == ["text", "label"]
    assert entry["metrics"] == ["loss", "accuracy", "f1"] and entry["default_metrics"] == [
        "loss",
        "accuracy",
    ]
    assert task in meta["run_spec"]["properties"]["task"]["enum"]
    assert task in meta["metrics"]["accuracy"]["tasks"]

    # the same numbers as the task it copies, from the CLI and from the worker
    want = _eval(
        {**common, "task": "classification", "ensemble": True, "per_example": True}, tmp_path, "old"
    )
    assert cli["points"] == want["points"]
    assert cli["summary"]["barrier"] == want["summary"]["barrier"]
    assert cli["spec"]["metrics"] == ["loss", "accuracy"]
    points = full["points"] if isinstance(full, dict) else full
    by_alpha = {round(p["coords"]["alpha"], 9): p["metrics"] for p in points}
    for p in want["points"]:
        got = by_alpha[round(p["coords"]["alpha"], 9)]
        assert got.keys() == p["metrics"].keys()
        for m, v in p["metrics"].items():
            assert abs(got[m] - v) < 1e-6, (m, got[m], v)
