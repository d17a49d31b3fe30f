"""One place per idea: path types and metrics are registries the rest of Basin asks.

A user notices when these break: a path type added as one module does not show up in
the form (``GET /api/meta``) or is refused by the CLI; the dashboard or API starts to
import torch (seconds of start-up, GBs of memory) just to validate a spec or draw a plot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from basin import metrics, paths
from basin.analysis import barriers
from basin.meta import meta
from basin.spec import parse_spec
from tests.dropin import dropped_in_path, paths_package

ROOT = Path(__file__).resolve().parents[2]
BUILTIN = ("linear", "slerp", "bezier", "polychain", "plane", "task_plane", "random_plane", "trajectory",
           "task_arithmetic", "ties", "dare", "subspace_simplex")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _python(code: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300)


# ---- the path registry ---------------------------------------------------------------------


def test_every_path_module_is_discovered_in_form_order():
    assert tuple(paths.PATHS) == BUILTIN
    for t, cls in paths.PATHS.items():
        assert cls.type == t and paths.path_class(t) is cls
        assert cls.Spec.model_fields["type"].default == t
        assert cls.Spec.model_config["frozen"] and cls.Spec.model_config["extra"] == "forbid"
    with pytest.raises(KeyError, match="unknown path type 'spiral'; choose from linear, slerp, bezier"):
        paths.path_class("spiral")


def test_is_1d_and_refs_of_work_on_stored_documents():
    assert [t for t in BUILTIN if paths.is_1d(t)] == ["linear", "slerp", "bezier", "polychain",
                                                      "task_arithmetic", "ties", "dare"]
    assert not paths.is_1d("spiral") and not paths.is_1d(None)
    assert paths.refs_of({"type": "task_plane", "a": "x", "b": "y", "origin": "o"}) == ["o", "x", "y"]
    assert paths.refs_of({"type": "bezier", "a": "x", "b": "y", "control": "c"}) == ["x", "y", "c"]
    traj = {"type": "trajectory", "checkpoints": ["s1", "s2", "s3"], "basis": "pca"}
    assert paths.refs_of(traj) == ["s1", "s2", "s3"]  # "pca" is not a checkpoint
    assert paths.refs_of({**traj, "basis": ["s0", "s1", "s3"]}) == ["s1", "s2", "s3", "s0"]
    assert paths.refs_of({"type": "spiral", "a": "x"}) == []


def test_run_spec_helpers_follow_the_path_class():
    plane = parse_spec({"path": {"type": "task_plane", "origin": "o", "a": "x", "b": "y",
                                 "resolution": [5, 7]}, "dataset": "d", "tokenizer": "tok"})
    assert plane.roles() == {"origin": "o", "a": "x", "b": "y"}
    assert plane.checkpoint_refs() == ["o", "x", "y", "tok"]
    assert (plane.is_1d, plane.shape, plane.num_points) == (False, (5, 7), 35)
    mapped = plane.map_refs(str.upper, lambda r: "ds-" + r)
    assert (mapped.path.origin, mapped.path.a, mapped.path.b, mapped.tokenizer) == ("O", "X", "Y", "TOK")
    line = parse_spec({"path": {"type": "polychain", "a": "x", "b": "y", "control": "c", "points": 9},
                       "dataset": "d"})
    assert (line.is_1d, line.shape, line.roles()) == (True, (9,), {"a": "x", "b": "y", "control": "c"})
    traj = parse_spec({"path": {"type": "trajectory", "checkpoints": ["s1", "s2"]}, "dataset": "d"})
    assert traj.roles() == {"checkpoints": ["s1", "s2"]}
    assert traj.map_refs(str.upper, str).path.basis == "pca"


# ---- the metric registry -------------------------------------------------------------------


def test_metric_table_drives_spec_defaults_and_validation():
    assert metrics.task_metrics("classification") == ("loss", "accuracy", "f1")
    assert metrics.default_metrics("seq2seq") == ("loss",)
    for task in metrics.TASKS:
        extra = {"generation": {"scorer": "s", "reference": "r"}} if task == "generation" else {}
        spec = parse_spec({"path": {"type": "linear", "a": "x", "b": "y"}, "dataset": "d", "task": task, **extra})
        assert spec.metrics == list(metrics.default_metrics(task))
    # without a scorer a generation run cannot report sentiment, nor the samples' perplexity without a
    # reference LM (a line between two fine-tunes has no θ0), so they are not defaults then
    bare = parse_spec({"path": {"type": "linear", "a": "x", "b": "y"}, "dataset": "d", "task": "generation"})
    assert bare.metrics == ["distinct_2"]
    acc = metrics.METRICS["accuracy"]
    assert (acc.axis_title, acc.scale, acc.delta_unit, acc.higher_is_better) == ("accuracy (%)", 100.0, "pts", True)
    assert metrics.METRICS["loss"].axis_title == "loss (nats)"
    assert metrics.METRICS["perplexity"].axis_title == "perplexity"


def test_every_task_has_an_evaluator_reporting_the_registry_metrics():
    from basin.evaluate import EVALUATORS

    assert set(EVALUATORS) == set(metrics.TASKS)
    for task, cls in EVALUATORS.items():
        assert cls.metrics == metrics.task_metrics(task)


def test_barriers_for_every_registered_metric_in_the_registry_direction():
    pts = [{"coords": {"alpha": a}, "metrics": {"loss": lo, "perplexity": p, "f1": f, "bleu": 1.0}}
           for a, lo, p, f in [(0.0, 1.0, 3.0, 0.8), (0.5, 2.0, 9.0, 0.5), (1.0, 1.0, 3.0, 0.6)]]
    out = barriers(pts, ["loss", "perplexity", "f1", "bleu"], 0.0, 1.0)
    assert set(out) == {"loss", "perplexity", "f1"}  # bleu: not in the registry
    assert out["loss"]["value"] == pytest.approx(1.0) and out["perplexity"]["value"] == pytest.approx(6.0)
    assert out["f1"]["value"] == pytest.approx(0.7 - 0.5)  # a drop below the chord


# ---- meta: what the form renders from --------------------------------------------------------


def test_meta_describes_every_path_task_and_metric_as_json():
    m = json.loads(json.dumps(meta()))  # JSON-serialisable as the API serves it
    assert [p["type"] for p in m["paths"]] == list(BUILTIN)
    by = {p["type"]: p for p in m["paths"]}
    assert by["linear"]["slots"] == [["a", "Checkpoint A (α = 0)"], ["b", "Checkpoint B (α = 1)"]]
    assert by["linear"]["defaults"] == {"points": 26, "range": [0.0, 1.0]}
    assert by["linear"]["params"] == [] and by["linear"]["list_slot"] is None
    assert by["ties"]["list_slot"] == ["models", "Fine-tuned models θ1…θn"]
    assert [f for f, _ in by["dare"]["params"]] == ["density", "seed", "rescale", "ties", "weights", "normalize"]
    assert by["dare"]["defaults"]["density"] == 0.5 and by["ties"]["axis_titles"] == {"alpha": "λ"}
    assert (by["linear"]["ndim"], by["linear"]["coords"]) == (1, ["alpha"])
    assert by["task_plane"]["defaults"]["range"] == [[-1.0, 2.0], [-1.0, 2.0]]
    assert by["random_plane"]["defaults"]["range"] == [[-1.0, 1.0], [-1.0, 1.0]]
    assert by["plane"]["defaults"] == {"resolution": [21, 21], "margin": 0.2}
    assert by["trajectory"]["slots"] == [] and by["trajectory"]["ref_fields"] == ["checkpoints", "basis"]
    assert by["task_plane"]["axis_titles"]["x"].startswith("α")
    assert by["bezier"]["help"].startswith("φ(t)")
    schema = by["plane"]["json_schema"]
    assert set(schema["required"]) == {"a", "b", "c"} and schema["additionalProperties"] is False
    cls = m["tasks"]["classification"]
    assert (cls["metrics"], cls["default_metrics"]) == (["loss", "accuracy", "f1"], ["loss", "accuracy"])
    # what each task supports, from its entry in basin.tasks (the form shows the rows it allows)
    assert list(m["tasks"]) == ["classification", "causal_lm", "seq2seq", "generation"]
    assert [t for t, e in m["tasks"].items() if e["ensemble"]] == ["classification", "causal_lm", "generation"]
    assert [t for t, e in m["tasks"].items() if e["per_example"]] == ["classification", "causal_lm", "seq2seq"]
    assert (m["tasks"]["generation"]["generates"], m["tasks"]["causal_lm"]["generates"]) == ("always", "with_prompts")
    assert cls["columns"] == ["text", "label"] and m["tasks"]["seq2seq"]["columns"] == ["source", "target"]
    # the run spec's JSON schema: the form's defaults and bounds
    props = m["run_spec"]["properties"]
    assert props["max_examples"]["default"] == 512 and props["max_examples"]["minimum"] == 1
    assert props["task"]["enum"] == list(m["tasks"])
    assert m["metrics"]["f1"] == {"label": "F1", "unit": "", "axis_title": "F1 (%)", "higher_is_better": True,
                                  "percent": True, "tasks": ["classification"], "barrier": True}
    assert m["metrics"]["sentiment"]["barrier"] is False  # a descriptive metric: no barrier drawn
    assert m["scope_presets"][0] == "all"
    # the form offers the stack scopes too, and says what each scope names
    assert {"rest", "encoder.upper", "decoder.lower"} <= set(m["scope_presets"])
    assert "<stack>.<third>" in m["scope_help"] and "regex" in m["scope_help"]


# ---- import weight ---------------------------------------------------------------------------


def test_validation_meta_and_figures_do_not_import_torch():
    proc = _python("""
        import sys
        import basin.spec, basin.paths, basin.figures, basin.metrics, basin.meta, basin.analysis
        basin.meta.meta()
        basin.spec.parse_spec({"path": {"type": "trajectory", "checkpoints": ["a", "b"]}, "dataset": "d"})
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers")))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ---- a path type is one module: drop one in, nothing else -------------------------------------


def _eval(spec: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "basin.cli", "eval", str(spec), "-o", str(out), "--quiet"],
                          cwd=spec.parent, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_a_path_module_dropped_in_works_end_to_end(classifier_family, tmp_path):
    common = {"dataset": str(classifier_family["data"]), "max_examples": 24, "device": "cpu",
              "metrics": ["loss", "accuracy", "f1"]}
    path = {"a": str(classifier_family["ft_a"]), "b": str(classifier_family["ft_b"]), "points": 5}
    with dropped_in_path("linear") as new_type:
        spec = tmp_path / "new.yaml"
        spec.write_text(yaml.safe_dump({"path": {"type": new_type, **path}, **common}))
        got = _eval(spec, tmp_path / "new.json")
        proc = _python(f"""
            import json
            from basin.figures import figure_for
            from basin.meta import meta
            from basin.paths import PATHS, is_1d
            from basin.spec import RunSpec
            spec = RunSpec.model_validate({{"path": {{"type": {new_type!r}, "a": "x", "b": "y"}}, "dataset": "d"}})
            doc = json.load(open({str(tmp_path / "new.json")!r}))
            fig = figure_for(doc)
            print(json.dumps({{"meta": [p["type"] for p in meta()["paths"]], "is_1d": is_1d({new_type!r}),
                               "shape": list(spec.shape), "refs": spec.checkpoint_refs(),
                               "traces": [t.meta for t in fig.data]}}))
        """)
        assert proc.returncode == 0, proc.stderr[-3000:]
        seen = json.loads(proc.stdout)
    assert not (paths_package() / f"{new_type}.py").exists()  # removed again
    want = _eval(_write(tmp_path / "linear.yaml", {"path": {"type": "linear", **path}, **common}),
                 tmp_path / "linear.json")
    assert got["points"] == want["points"]  # same coords, bit-identical metrics
    assert got["anchors"] == want["anchors"]
    assert got["summary"]["barrier"] == want["summary"]["barrier"]
    assert set(got["summary"]["barrier"]) == {"loss", "accuracy", "f1"}
    assert seen["meta"][:2] == ["linear", new_type]  # listed right after the module it copies
    assert seen["is_1d"] is True and seen["shape"] == [26] and seen["refs"] == ["x", "y"]
    assert seen["traces"][:2] == ["curve", "chord"]


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path
