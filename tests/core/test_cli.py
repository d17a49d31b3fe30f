"""The real ``basin`` command in a subprocess, on tiny real BERT checkpoints.

Covers the headless workflow a user runs (``basin eval`` → ``basin plot``) and the
contract for bad input: exit code 2 and exactly one ``basin: error: ...`` line that
names the problem, no traceback, nothing written.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file, save_file

from tests import factories

BASIN = Path(sys.executable).with_name("basin")


def run_cli(*args: str, cwd: Path, use_script: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [str(BASIN)] if use_script else [sys.executable, "-m", "basin.cli"]
    return subprocess.run([*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def write_spec(path: Path, spec: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def assert_one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{proc.stderr}"
    line = lines[0]
    assert line.startswith("basin: error: "), line
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n.lower() in line.lower(), f"{n!r} not in {line!r}"
    return line


@pytest.fixture(scope="module")
def family_root(classifier_family) -> Path:
    return classifier_family["init"].parent


@pytest.fixture(scope="module")
def linear_run(family_root, tmp_path_factory):
    """``basin eval`` of a 26-point linear spec with paths relative to the spec's folder."""
    spec = write_spec(family_root / "cli-specs" / "linear.yaml", {
        "path": {"type": "linear", "a": "../ft_a", "b": "../ft_b"},
        "dataset": "../eval.csv",
    })
    work = tmp_path_factory.mktemp("cli-work")  # cwd differs from the spec's folder on purpose
    out = work / "out" / "result.json"
    proc = run_cli("eval", str(spec), "-o", str(out), "--device", "cpu", cwd=work, use_script=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text()), out, work


def test_eval_writes_result_document(linear_run):
    _, result, _, _ = linear_run
    pts = result["points"]
    assert [p["index"] for p in pts] == list(range(26))
    alphas = [p["coords"]["alpha"] for p in pts]
    assert alphas[0] == pytest.approx(0.0) and alphas[-1] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(alphas, alphas[1:], strict=False))
    for p in pts:
        assert set(p["metrics"]) >= {"loss", "accuracy"}
        assert p["metrics"]["loss"] > 0 and 0.0 <= p["metrics"]["accuracy"] <= 1.0
    # the endpoints are fine-tuned on the synthetic task: better than chance
    assert pts[0]["metrics"]["accuracy"] > 0.6 and pts[-1]["metrics"]["accuracy"] > 0.6
    # the summary's loss barrier is the max excess over the chord between the endpoints
    l0, l1 = pts[0]["metrics"]["loss"], pts[-1]["metrics"]["loss"]
    excess = [p["metrics"]["loss"] - ((1 - a) * l0 + a * l1) for p, a in zip(pts, alphas, strict=True)]
    assert result["summary"]["barrier"]["loss"]["value"] == pytest.approx(max(excess), abs=1e-9)
    spec = result["spec"]
    assert spec["path"]["points"] == 26 and list(spec["path"]["range"]) == [0.0, 1.0]
    assert spec["metrics"] == ["loss", "accuracy"] and spec["max_examples"] == 512
    assert spec["device"] == "cpu"
    assert [a["coords"]["alpha"] for a in result["anchors"]] == [0.0, 1.0]
    assert "total_s" in result["timings"]


def test_eval_prints_summary_and_progress(linear_run):
    proc, result, out, _ = linear_run
    assert "26/26" in proc.stderr and "basin eval" in proc.stderr  # tqdm bar with counts
    assert "<" in proc.stderr and "pt/s" in proc.stderr  # elapsed<ETA and rate
    assert "linear path, 26 points" in proc.stdout
    lo = min(p["metrics"]["loss"] for p in result["points"])
    assert f"{lo:.4g}" in proc.stdout
    assert str(out) in proc.stderr


def test_eval_overrides_and_quiet(family_root, tmp_path):
    spec = family_root / "cli-specs" / "linear.yaml"
    out = tmp_path / "r.json"
    proc = run_cli("eval", str(spec), "-o", str(out), "--max-examples", "8", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "26/26" not in proc.stderr and proc.stdout == ""
    assert json.loads(out.read_text())["spec"]["max_examples"] == 8


def test_plot_writes_standalone_html(linear_run):
    _, result, out, work = linear_run
    html_path = work / "report.html"
    proc = run_cli("plot", str(out), "-o", str(html_path), cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(html_path)
    page = html_path.read_text()
    assert "plotly.js v" in page and not re.search(r"<script[^>]*\bsrc=", page)  # inlined: offline
    assert page.count("Plotly.newPlot") >= 1
    assert "type: linear" in page and "../ft_a" in page  # the spec as YAML
    assert "linear path, 26 points" in page  # the summary numbers
    from basin.figures import report_figures

    assert page.count("Plotly.newPlot") == len(report_figures(result))


def test_plot_rejects_non_result(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"hello": 1}))
    proc = run_cli("plot", str(bad), "-o", str(tmp_path / "x.html"), cwd=tmp_path)
    assert_one_error_line(proc, "not a Basin result document")
    assert not (tmp_path / "x.html").exists()


# ---- bad input: one line, exit 2, nothing written ----------------------------------------


def test_unknown_path_type(family_root, tmp_path):
    spec = write_spec(tmp_path / "s.yaml", {"path": {"type": "spiral", "a": "x", "b": "y"}, "dataset": "d"})
    proc = run_cli("eval", str(spec), "-o", str(tmp_path / "r.json"), cwd=tmp_path)
    assert_one_error_line(proc, "unknown path type 'spiral'", "linear")
    assert not (tmp_path / "r.json").exists()


def test_missing_spec_file(tmp_path):
    proc = run_cli("eval", str(tmp_path / "nope.yaml"), "-o", str(tmp_path / "r.json"), cwd=tmp_path)
    assert_one_error_line(proc, "nope.yaml")


def test_missing_checkpoint(family_root, tmp_path):
    spec = write_spec(tmp_path / "s.yaml", {
        "path": {"type": "linear", "a": str(family_root / "ft_a"), "b": "no-such-ckpt"},
        "dataset": str(family_root / "eval.csv"),
    })
    proc = run_cli("eval", str(spec), "-o", str(tmp_path / "r.json"), cwd=tmp_path)
    assert_one_error_line(proc, "no-such-ckpt")
    assert not (tmp_path / "r.json").exists()


def test_missing_dataset(family_root, tmp_path):
    spec = write_spec(tmp_path / "s.yaml", {
        "path": {"type": "linear", "a": str(family_root / "ft_a"), "b": str(family_root / "ft_b")},
        "dataset": "missing.csv",
    })
    proc = run_cli("eval", str(spec), "-o", str(tmp_path / "r.json"), cwd=tmp_path)
    assert_one_error_line(proc, "missing.csv")


def test_mismatched_checkpoints_name_the_tensor(family_root, tmp_path):
    three = factories.save(factories.init_classifier(0, num_labels=3), tmp_path / "three-labels",
                           factories.make_tokenizer("bert"))
    spec = write_spec(tmp_path / "s.yaml", {
        "path": {"type": "linear", "a": str(family_root / "ft_a"), "b": str(three)},
        "dataset": str(family_root / "eval.csv"),
    })
    proc = run_cli("eval", str(spec), "-o", str(tmp_path / "r.json"), cwd=tmp_path)
    assert_one_error_line(proc, "classifier.weight")
    assert not (tmp_path / "r.json").exists()


def test_dataset_without_label_column(family_root, tmp_path):
    data = tmp_path / "nolabel.csv"
    data.write_text("text,sentiment\ngood day,1\nbad day,0\n")
    spec = write_spec(tmp_path / "s.yaml", {
        "path": {"type": "linear", "a": str(family_root / "ft_a"), "b": str(family_root / "ft_b")},
        "dataset": "nolabel.csv",
    })
    proc = run_cli("eval", str(spec), "-o", str(tmp_path / "r.json"), cwd=tmp_path)
    assert_one_error_line(proc, "label")


def test_collinear_plane(family_root, tmp_path):
    # c = (a + b) / 2 lies on the line through a and b: no second direction.
    a = load_file(family_root / "ft_a" / "model.safetensors")
    b = load_file(family_root / "ft_b" / "model.safetensors")
    mid = tmp_path / "mid"
    mid.mkdir()
    save_file({k: ((a[k].double() + b[k].double()) / 2).to(a[k].dtype).contiguous() for k in a},
              mid / "model.safetensors", metadata={"format": "pt"})
    for f in (family_root / "ft_a").iterdir():
        if f.name != "model.safetensors":
            (mid / f.name).write_bytes(f.read_bytes())
    spec = write_spec(tmp_path / "s.yaml", {
        "path": {"type": "plane", "a": str(family_root / "ft_a"), "b": str(family_root / "ft_b"),
                 "c": str(mid), "resolution": [3, 3]},
        "dataset": str(family_root / "eval.csv"),
    })
    proc = run_cli("eval", str(spec), "-o", str(tmp_path / "r.json"), cwd=tmp_path)
    line = assert_one_error_line(proc)
    assert any(w in line.lower() for w in ("degenerate", "collinear", "linearly dependent")), line
    assert not (tmp_path / "r.json").exists()

