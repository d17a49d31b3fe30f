"""The one error mapping (a missing URL item is 404, a missing reference in the body is
422) and the OpenAPI page: the create body is a RunSpec, the run answers are typed."""

from __future__ import annotations

from basin.paths import PATHS
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


def _resolve(doc: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_openapi_documents_the_run_spec_body_and_the_run_answers(client):
    doc = client.get("/api/openapi.json").json()
    schemas = doc["components"]["schemas"]

    body = doc["paths"]["/api/runs"]["post"]["requestBody"]["content"]["application/json"]
    spec = _resolve(doc, body["schema"])
    assert {"path", "dataset"} <= set(spec["required"])
    path = spec["properties"]["path"]
    variants = [_resolve(doc, s) for s in path.get("oneOf") or path.get("anyOf")]
    types = {v["properties"]["type"].get("const") or v["properties"]["type"]["enum"][0]
             for v in variants}
    assert types == set(PATHS)
    validate = doc["paths"]["/api/runs/validate"]["post"]["requestBody"]
    assert validate["content"]["application/json"]["schema"] == body["schema"]

    def answer(path: str, method: str = "get", code: str = "200") -> dict:
        content = doc["paths"][path][method]["responses"][code]["content"]
        return content["application/json"]["schema"]

    assert answer("/api/runs/{run_id}") == {"$ref": "#/components/schemas/RunPublic"}
    assert answer("/api/runs/{run_id}/points") == {"$ref": "#/components/schemas/PointsPage"}
    assert answer("/api/runs", "post", "201") == {"$ref": "#/components/schemas/RunCreated"}
    assert answer("/api/runs")["items"] == {"$ref": "#/components/schemas/RunListItem"}
    assert answer("/api/runs/validate", "post")["$ref"].endswith("/RunValidated")
    assert {"spec", "status", "done", "total", "progress", "eta_s", "anchors", "workers",
            "warning", "source"} <= set(schemas["RunPublic"]["properties"])
    assert {"points", "cursor", "status", "done", "total", "eta_s", "workers", "warning", "error",
            "reset"} == set(schemas["PointsPage"]["properties"])
    # a page of point views: no per-example columns (those are in the export)
    view = _resolve(doc, schemas["PointsPage"]["properties"]["points"]["items"])
    assert set(view["properties"]) == {"index", "coords", "metrics", "intervals", "ensemble", "samples"}
    # errors are documented with the one body every error answer has
    err = answer("/api/runs/{run_id}", code="404")
    assert err == {"$ref": "#/components/schemas/ErrorPublic"}
    assert {"detail", "error", "mismatches", "mismatch_count"} == set(
        schemas["ErrorPublic"]["properties"]
    )
