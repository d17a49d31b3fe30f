"""The dataset registry API: uploads (raw and multipart), validation, preview, rename, delete."""

from __future__ import annotations

import json

from tests import factories
from tests.backend.conftest import TOKEN, store_state

EMPTY = {"checkpoints": [], "datasets": [], "tmp": []}


def put(client, body: bytes, name: str, **params):
    return client.put("/api/datasets", params={"name": name, **params}, content=body)


def test_csv_upload_preview_and_dedup(client, classifier_family):
    body = classifier_family["data"].read_bytes()
    r = put(client, body, "eval.csv")
    assert r.status_code == 201, r.text
    m = r.json()
    assert m["format"] == "csv" and m["columns"] == ["text", "label"] and m["rows"] == 64
    assert m["tasks"] == ["classification", "causal_lm"]

    p = client.get(f"/api/datasets/{m['id'][:12]}/preview", params={"n": 3})
    assert p.status_code == 200
    rows = p.json()["rows"]
    first_line = body.decode().splitlines()[1]
    assert len(rows) == 3 and rows[0]["text"] == first_line.rsplit(",", 1)[0]
    assert p.json()["total"] == 64
    assert len(client.get("/api/datasets/eval.csv/preview").json()["rows"]) == 10

    again = put(client, body, "eval-copy.csv")
    assert again.status_code == 200 and again.json()["id"] == m["id"]
    assert store_state(client.store_root)["datasets"] == [m["id"]]


def test_jsonl_tsv_and_multipart(client, tmp_path, gpt2_pair, t5_pair):
    lm = put(client, gpt2_pair["data"].read_bytes(), "lm.jsonl")
    assert lm.status_code == 201 and lm.json()["tasks"] == ["causal_lm"]
    s2s = put(client, t5_pair["data"].read_bytes(), "s2s.jsonl", task="seq2seq")
    assert s2s.status_code == 201 and s2s.json()["tasks"] == ["seq2seq"]
    assert s2s.json()["task"] == "seq2seq"
    tsv = factories.write_classification_dataset(tmp_path / "d.tsv", n=5, seed=1)
    r = client.post(
        "/api/datasets", files={"file": ("d.tsv", tsv.read_bytes(), "text/tab-separated-values")}
    )
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "d.tsv" and r.json()["format"] == "tsv" and r.json()["rows"] == 5
    names = [d["name"] for d in client.get("/api/datasets").json()]
    assert names == ["d.tsv", "s2s.jsonl", "lm.jsonl"]  # newest first


def test_columns_allowing_no_task_are_refused_naming_them(client):
    body = "".join(
        json.dumps({"question": f"q{i}", "answer": "a"}) + "\n" for i in range(3)
    ).encode()
    r = put(client, body, "qa.jsonl")
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "question, answer" in detail and "classification needs text + label" in detail
    assert store_state(client.store_root) == EMPTY


def test_task_the_columns_do_not_allow_is_refused(client, gpt2_pair):
    r = put(client, gpt2_pair["data"].read_bytes(), "lm.jsonl", task="classification")
    assert r.status_code == 422 and "label" in r.json()["detail"]
    assert store_state(client.store_root) == EMPTY


def test_unparseable_datasets_are_refused(client):
    cases = {
        "bad.jsonl": b'{"text": "fine"}\n{"text": broken\n',
        "ragged.csv": b"text,label\nhello,1\nworld,0,extra\n",
        "empty.csv": b"text,label\n",
        "quote.csv": b'text,label\nok,1\n"unterminated,1\n',
    }
    expect = {
        "bad.jsonl": "line 2",
        "ragged.csv": "3 fields",
        "empty.csv": "no rows",
        "quote.csv": "line 3 has 1 fields",
    }
    for name, body in cases.items():
        r = put(client, body, name)
        assert r.status_code == 422, (name, r.text)
        assert expect[name] in r.json()["detail"], (name, r.json())
    assert store_state(client.store_root) == EMPTY


def test_latin1_text_is_read_like_the_engine_reads_it(client):
    body = "text,label\ncafé très bien,1\n".encode("latin-1")
    r = put(client, body, "tweets.csv")
    assert r.status_code == 201, r.text
    assert (
        client.get("/api/datasets/tweets.csv/preview").json()["rows"][0]["text"] == "café très bien"
    )


def test_dataset_over_cap_is_413(make_client, classifier_family):
    client = make_client(max_upload_bytes=1000)
    r = put(client, classifier_family["data"].read_bytes(), "eval.csv")
    assert r.status_code == 413
    assert store_state(client.store_root) == EMPTY


def test_patch_delete_and_unknown(client, classifier_family):
    m = put(client, classifier_family["data"].read_bytes(), "eval.csv").json()
    p = client.patch(
        f"/api/datasets/{m['id']}", json={"name": "tweets.csv", "task": "classification"}
    )
    assert (
        p.status_code == 200
        and p.json()["name"] == "tweets.csv"
        and p.json()["task"] == "classification"
    )
    bad = client.patch("/api/datasets/tweets.csv", json={"task": "seq2seq"})
    assert bad.status_code == 422 and "seq2seq" in bad.json()["detail"]
    assert client.get("/api/datasets/eval.csv").status_code == 404
    assert client.delete("/api/datasets/tweets.csv").status_code == 204
    r = client.get("/api/datasets/tweets.csv/preview")
    assert r.status_code == 404 and "no dataset named or with id 'tweets.csv'" in r.json()["detail"]
    assert store_state(client.store_root)["datasets"] == []


def test_token_required_for_dataset_writes(make_client, classifier_family):
    client = make_client(api_token=TOKEN)
    body = classifier_family["data"].read_bytes()
    assert put(client, body, "eval.csv").status_code == 401
    assert client.post("/api/datasets", files={"file": ("e.csv", body)}).status_code == 401
    assert store_state(client.store_root)["datasets"] == []
    ok = client.put(
        "/api/datasets", params={"name": "eval.csv"}, content=body, headers={"X-Basin-Token": TOKEN}
    )
    assert ok.status_code == 201
    # with a token set, listing, preview and download need it too
    for path in ("/api/datasets", "/api/datasets/eval.csv/preview", "/api/datasets/eval.csv/file"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers={"X-Basin-Token": TOKEN}).status_code == 200, path
    assert client.delete("/api/datasets/eval.csv").status_code == 401
