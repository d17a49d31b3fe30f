"""The HDF5 export in Li et al.'s loss-landscape layout, on runs of the real engine over tiny
BERT classifiers: the file opens with h5py, its arrays are the run's points where their
``plot_2D.py`` / ``h52vtp.py`` (plane: ``[iy, ix]`` against ``meshgrid(x, y)``) and
``plot_1D.py`` (1D: ``(nx,)``) read them; the CLI writes it; what cannot be laid out is refused."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest

from basin import FileResolver, run
from basin.landscape_h5 import ExportError, save_surface_h5, surface_h5_bytes
from tests.core import helpers
from tests.core.test_cli import run_cli


@pytest.fixture(scope="module")
def plane_doc(classifier_family):
    """A 4 × 3 plane (nx ≠ ny, so a transposed layout cannot pass) through ft_a, ft_b, ft_c."""
    spec = helpers.cpu_spec(
        {
            "path": {"type": "plane", "a": "ft_a", "b": "ft_b", "c": "ft_c", "resolution": [4, 3]},
            "dataset": "eval.csv",
            "max_examples": 16,
            "batch_size": 16,
        }
    )
    return run(spec, FileResolver(classifier_family["data"].parent), progress=False)


@pytest.fixture(scope="module")
def line_doc(classifier_family):
    spec = helpers.cpu_spec(
        {
            "path": {"type": "linear", "a": "ft_a", "b": "ft_b", "points": 5},
            "dataset": "eval.csv",
            "max_examples": 16,
            "batch_size": 16,
        }
    )
    return run(spec, FileResolver(classifier_family["data"].parent), progress=False)


def _open(data: bytes, tmp_path) -> h5py.File:
    p = tmp_path / "surface.h5"
    p.write_bytes(data)
    return h5py.File(p, "r")


def test_a_plane_is_written_where_plot_2d_and_h52vtp_read_it(plane_doc, tmp_path):
    with _open(surface_h5_bytes({**plane_doc, "id": "run-xyz"}), tmp_path) as f:
        x, y = f["xcoordinates"][:], f["ycoordinates"][:]
        assert x.shape == (4,) and y.shape == (3,)
        assert f["train_loss"].shape == (3, 4)  # (len(y), len(x)): contour(meshgrid(x, y), Z)
        X, Y = np.meshgrid(x, y)
        loss, acc = f["train_loss"][:], f["train_acc"][:]
        assert len(plane_doc["points"]) == 12
        for p in plane_doc["points"]:
            # h52vtp ravels meshgrid(x, y) and the values in the same order: the point's index
            i = p["index"]
            assert X.ravel()[i] == pytest.approx(p["coords"]["x"])
            assert Y.ravel()[i] == pytest.approx(p["coords"]["y"])
            assert loss.ravel()[i] == pytest.approx(p["metrics"]["loss"])
            assert acc.ravel()[i] == pytest.approx(
                100 * p["metrics"]["accuracy"]
            )  # percent, as theirs
            assert f["accuracy"][:].ravel()[i] == pytest.approx(p["metrics"]["accuracy"])
            lo, hi = p["intervals"]["loss"]
            assert f["loss_lo"][:].ravel()[i] == pytest.approx(lo)
            assert f["loss_hi"][:].ravel()[i] == pytest.approx(hi)
        assert f.attrs["basin_run"] == "run-xyz" and f.attrs["basin_path"] == "plane"
        assert json.loads(f.attrs["basin_spec"])["path"]["resolution"] == [4, 3]


def test_a_line_gets_their_1d_layout_and_the_cli_writes_it(line_doc, tmp_path):
    result = tmp_path / "line.json"
    result.write_text(json.dumps(line_doc))
    out = tmp_path / "out" / "line.h5"
    proc = run_cli("export", str(result), "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with h5py.File(out, "r") as f:
        assert "ycoordinates" not in f  # plot_1D.py reads xcoordinates, train_loss, train_acc
        alphas = [p["coords"]["alpha"] for p in line_doc["points"]]
        assert f["xcoordinates"][:].tolist() == pytest.approx(alphas)
        assert f["train_loss"][:].tolist() == pytest.approx(
            [p["metrics"]["loss"] for p in line_doc["points"]]
        )
        assert f["train_acc"][:].tolist() == pytest.approx(
            [100 * p["metrics"]["accuracy"] for p in line_doc["points"]]
        )


def test_points_not_evaluated_are_nan_and_the_axis_still_spans_the_grid(plane_doc, tmp_path):
    kept = [p for p in plane_doc["points"] if p["index"] not in (1, 6)]  # an adaptive run's gaps
    with _open(surface_h5_bytes({**plane_doc, "points": kept}), tmp_path) as f:
        loss = f["train_loss"][:]
        assert math.isnan(loss.ravel()[1]) and math.isnan(loss.ravel()[6])
        assert np.isfinite(loss).sum() == 10
        full = {p["index"]: p["coords"]["x"] for p in plane_doc["points"]}
        assert f["xcoordinates"][:].tolist() == pytest.approx([full[i] for i in range(4)])


def test_what_cannot_be_laid_out_is_refused_and_nothing_is_written(plane_doc, tmp_path):
    with pytest.raises(ExportError, match="no evaluated points"):
        surface_h5_bytes({**plane_doc, "points": []})
    with pytest.raises(ExportError, match="unknown"):
        surface_h5_bytes({**plane_doc, "spec": {"path": {"type": "spiral"}}})
    out = tmp_path / "never.h5"
    with pytest.raises(ExportError):
        save_surface_h5({**plane_doc, "points": []}, out)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    bad = tmp_path / "empty.json"
    bad.write_text(json.dumps({**plane_doc, "points": []}))
    proc = run_cli("export", str(bad), "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 2 and "no evaluated points" in proc.stderr and not out.exists()
