"""``GET /api/runs/{id}/export?format=h5`` on the real stack: the surface file of a finished
plane opens with h5py and holds the run's own points in Li et al.'s layout."""

from __future__ import annotations

import io

import h5py
import numpy as np
import pytest

from tests.integration.conftest import plane_spec


def test_the_h5_export_holds_the_runs_points(stack):
    spec = plane_spec(res=3, max_examples=16)
    spec["path"]["resolution"] = [3, 2]  # nx ≠ ny: a transposed file cannot pass
    run_id = stack.request("POST", "/api/runs", json=spec).json()["id"]
    assert stack.wait_run(run_id)["status"] == "done"
    doc = stack.request("GET", f"/api/runs/{run_id}/export").json()
    r = stack.request("GET", f"/api/runs/{run_id}/export?format=h5")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-hdf5"
    assert f"basin-run-{run_id}.h5" in r.headers["content-disposition"]
    with h5py.File(io.BytesIO(r.content), "r") as f:
        assert f["train_loss"].shape == (2, 3) and f.attrs["basin_run"] == run_id
        X, Y = np.meshgrid(f["xcoordinates"][:], f["ycoordinates"][:])
        for p in doc["points"]:
            i = p["index"]
            assert (X.ravel()[i], Y.ravel()[i]) == pytest.approx(
                (p["coords"]["x"], p["coords"]["y"])
            )
            assert f["train_loss"][:].ravel()[i] == pytest.approx(p["metrics"]["loss"])
            assert f["train_acc"][:].ravel()[i] == pytest.approx(100 * p["metrics"]["accuracy"])
    bad = stack.request("GET", f"/api/runs/{run_id}/export?format=xlsx")
    assert bad.status_code == 422
