"""Races and look-alikes (issue 24, part 8): no adapter outlives its base, names show what
they are, and no page can be framed."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from basin.fit import FitSpec
from basin.spec import RunSpec
from tests.backend.conftest import store_state, zip_dir

ZIP = {"Content-Type": "application/octet-stream"}

#: names that display like another name, or not at all
LOOK_ALIKES = [
    "ft_a\u200b",  # zero-width space
    "ft_\u200da",  # zero-width joiner
    "\u202eevil.exe",  # right-to-left override
    "ft_a\u2066x\u2069",  # bidi isolate
    "\u200fft_a",  # right-to-left mark
    "\ufeffft_a",  # byte-order mark
    "ft\u00ad_a",  # soft hyphen
    "ft_a\x1b[31m",  # terminal escape
    "ft\u2028_a",  # line separator
    "ft_a\x00",  # NUL
    "\u180eft_a",  # Mongolian vowel separator
    "\ue000ft_a",  # private use
]


def put(client, body, name, **params):
    return client.put(
        "/api/checkpoints", params={"name": name, **params}, content=body, headers=ZIP
    )


def test_deleting_a_base_while_an_adapter_on_it_is_checked_leaves_no_orphan(
    client, lora_family, monkeypatch
):
    """The adapter is held between its check and its commit (an event, not a clock); the base
    is deleted meanwhile; the adapter must then be refused, not stored on nothing."""
    import service.store as store_module

    base = put(client, zip_dir(lora_family["base"]), "tiny-bert").json()
    checked, go = threading.Event(), threading.Event()
    real = store_module.validate_adapter

    def held(*args, **kwargs):
        info = real(*args, **kwargs)
        checked.set()
        assert go.wait(300)
        return info

    monkeypatch.setattr(store_module, "validate_adapter", held)
    answer: dict = {}
    upload = threading.Thread(
        target=lambda: answer.update(
            r=put(client, zip_dir(lora_family["lora_a"]), "lora-a", base="tiny-bert")
        )
    )
    upload.start()
    try:
        assert checked.wait(300), "the adapter's check never finished"
        d = client.delete(f"/api/checkpoints/{base['id']}")  # nothing uses the base yet
        assert d.status_code in (200, 204), d.text
    finally:
        go.set()
        upload.join(300)
    r = answer["r"]
    assert r.status_code == 409, r.text
    assert "was deleted while the adapter was being checked" in r.json()["detail"]
    assert store_state(client.store_root)["checkpoints"] == []
    assert store_state(client.store_root)["tmp"] == []
    assert client.get("/api/checkpoints").json() == []


def test_look_alike_names_are_refused_and_names_are_normalised(client, classifier_family):
    body = zip_dir(classifier_family["ft_a"])
    r = put(client, body, "  ｆｔ＿ａ  ")  # full-width letters, surrounding spaces: NFKC + trim
    assert r.status_code == 201 and r.json()["name"] == "ft_a", r.text
    for bad in LOOK_ALIKES:
        r = put(client, zip_dir(classifier_family["ft_b"]), bad)
        assert r.status_code == 422, (repr(bad), r.text)
        assert "names may hold only visible characters" in r.json()["detail"], r.text
        r = client.patch("/api/checkpoints/ft_a", json={"name": bad})
        assert r.status_code == 422, (repr(bad), r.text)
        r = client.put(
            "/api/datasets", params={"name": bad + ".csv"}, content=b"text,label\na,1\nb,0\n"
        )
        assert r.status_code == 422, (repr(bad), r.text)
    # one name for what looks like one name: the full-width twin of a stored name is taken
    r = put(client, zip_dir(classifier_family["ft_b"]), "ｆｔ_a")
    assert r.status_code == 409, r.text
    assert [c["name"] for c in client.get("/api/checkpoints").json()] == ["ft_a"]
    assert store_state(client.store_root)["datasets"] == []


@pytest.mark.parametrize("bad", LOOK_ALIKES[:6])
def test_run_and_fit_names_are_normalised_the_same_way(bad):
    spec = {"path": {"type": "linear", "a": "x", "b": "y"}, "dataset": "d.csv"}
    with pytest.raises(ValueError, match="names may hold only visible characters"):
        RunSpec.model_validate({**spec, "name": bad})
    with pytest.raises(ValueError, match="names may hold only visible characters"):
        FitSpec.model_validate({"a": "x", "b": "y", "dataset": "d.csv", "name": bad})
    assert RunSpec.model_validate({**spec, "name": " ｍｙ run "}).name == "my run"
    assert (
        FitSpec.model_validate({"a": "x", "b": "y", "dataset": "d.csv", "name": "ｆit"}).name
        == "fit"
    )


def test_every_response_forbids_framing(make_client, tmp_path):
    """API answers, the guard's refusals, unknown routes and the dashboard's pages all carry
    X-Frame-Options: DENY and CSP frame-ancestors 'none'."""
    from backend.app.main import create_app
    from service.settings import Settings

    api = make_client(api_token="tok")
    settings = Settings(
        store=tmp_path / "ui-store",
        api_token="tok",
        redis_url="redis://127.0.0.1:1/0",
        allowed_hosts="testserver",
    )
    with TestClient(create_app(settings, with_ui=True)) as ui:
        answers = [
            api.get("/api/checkpoints", headers={"X-Basin-Token": "tok"}),  # 200
            api.put("/api/checkpoints?name=x", content=b"x"),  # 401 from the guard
            api.get("/api/no-such-route"),  # 404
            api.get("/api/checkpoints/nope", headers={"X-Basin-Token": "tok"}),  # 404 from a route
            api.get("/api/openapi.json"),
            ui.get("/"),  # a dashboard page
            ui.get("/checkpoints"),
            ui.get("/runs/abc"),  # a share link's page
        ]
    for r in answers:
        assert r.headers.get("x-frame-options") == "DENY", (
            r.request.url,
            r.status_code,
            dict(r.headers),
        )
        assert "frame-ancestors 'none'" in r.headers.get("content-security-policy", ""), (
            r.request.url
        )
        assert len(r.headers.get_list("x-frame-options")) == 1
