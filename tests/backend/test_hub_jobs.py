"""The ``hub`` job kind on the kernel (a real Redis, the real API over ``TestClient``, the
worker's own executor run in-process against a local Hub endpoint): a download is queued,
runs, records its progress and the pinned commit; a cancel between two files stops it with
nothing stored; an ended job refuses a cancel (409)."""

from __future__ import annotations

import redis

from basin.status import CANCELLED, DONE
from service.jobs.hub import cancel_hub_job
from service.store import Store
from tests.backend.test_jobs import worker
from tests.hubserver import HubServer


def test_a_hub_job_runs_reports_progress_and_stops_when_cancelled(
    make_client, redis_url, classifier_family, monkeypatch
):
    from workers.jobs import run_job

    red = redis.Redis.from_url(redis_url, decode_responses=True)
    client = make_client(redis_url=redis_url)
    settings = client.app.state.settings
    with HubServer() as hub:
        hub.add("org/tiny-bert", classifier_family["ft_a"])
        hub.add("org/other-bert", classifier_family["ft_b"])
        monkeypatch.setenv("HF_ENDPOINT", hub.url)

        r = client.post(
            "/api/checkpoints/hub", json={"ref": "org/tiny-bert@main", "tags": {"seed": 7}}
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert client.get(r.json()["url"]).json()["status"] == "queued"
        assert run_job("hub", job_id, worker(red, settings))["checkpoint"]
        job = client.get(f"/api/checkpoints/hub/{job_id}").json()
        assert job["status"] == DONE and job["commit"] == hub.repos["org/tiny-bert"].commit
        assert (
            job["files_done"] == job["files_total"] and job["bytes_done"] == job["bytes_total"] > 0
        )
        stored = Store(settings.store).get_checkpoint(job["checkpoint"])
        assert stored["tags"]["seed"] == 7 and stored["tags"]["hub_revision"] == job["commit"]
        assert client.post(f"/api/checkpoints/hub/{job_id}/cancel").status_code == 409

        # a cancel arriving while the first file downloads: the worker stops before the next one
        other = client.post("/api/checkpoints/hub", json={"ref": "org/other-bert"}).json()["id"]
        hub.on_download = lambda path: cancel_hub_job(red, other)
        out = run_job("hub", other, worker(red, settings))
        assert out["status"] == CANCELLED
        job = client.get(f"/api/checkpoints/hub/{other}").json()
        assert job["status"] == CANCELLED and job["files_done"] == 1 < job["files_total"]
        assert "nothing was stored" in job["error"]
        assert len(Store(settings.store).list_checkpoints()) == 1
        assert list((settings.store / "tmp").iterdir()) == []
