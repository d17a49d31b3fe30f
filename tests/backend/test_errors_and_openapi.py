"""The one error mapping: a missing URL item is 404, a missing reference in the body is 422."""

from __future__ import annotations

from tests.backend.conftest import zip_dir


def test_a_missing_item_is_404_but_a_missing_reference_in_the_body_is_422(
    client, classifier_family
):
    r = client.get("/api/checkpoints/nope")
    assert r.status_code == 404
    assert r.json() == {
        "detail": "no checkpoint named or with id 'nope'",
        "error": "CheckpointNotFound",
    }
    # the same lookup, for a checkpoint the upload names in config=: the input is wrong
    weights = (classifier_family["ft_c"] / "model.safetensors").read_bytes()
    r = client.put("/api/checkpoints", params={"name": "c", "config": "nope"}, content=weights)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "UnknownReference" and "'nope'" in r.json()["detail"]


def test_a_taken_name_is_409_and_redis_down_is_503(client, classifier_family):
    body = zip_dir(classifier_family["ft_a"])
    assert client.put("/api/checkpoints", params={"name": "a"}, content=body).status_code == 201
    other = zip_dir(classifier_family["ft_b"])
    r = client.put("/api/checkpoints", params={"name": "a"}, content=other)
    assert r.status_code == 409 and r.json()["error"] == "NameTaken"
    r = client.get("/api/runs")  # the fixture's Redis URL points at a closed port
    assert r.status_code == 503
    assert r.json()["detail"].startswith("Redis is unreachable")
