"""The dashboard with ``BASIN_API_TOKEN`` set: its Python callbacks forward the token the
user entered to the listings, and say plainly when the server needs one.

The real API runs under uvicorn on 127.0.0.1 (an allowed host by default, as in
``basin up``); the callbacks reach it through ``BASIN_API_INTERNAL``, as in compose.
"""

from __future__ import annotations

import httpx
import pytest

from backend.app.main import create_app
from service.settings import Settings
from tests.backend.conftest import TOKEN, redis_url, serve, zip_dir  # noqa: F401 (fixture)

AUTH = {"X-Basin-Token": TOKEN}


@pytest.fixture(scope="module")
def pages():
    """The dashboard's page modules (registered by building the Dash app once)."""
    from frontend.app import create_dash_app

    create_dash_app()
    from frontend.pages import checkpoints, datasets, new_run, runs

    return {"checkpoints": checkpoints, "datasets": datasets, "new_run": new_run, "runs": runs}


def _serve(tmp_path, monkeypatch, **settings):
    app = create_app(Settings(store=tmp_path / "store", reap_seconds=0, **settings), with_ui=False)
    ctx = serve(app)
    port = ctx.__enter__()
    monkeypatch.setenv("BASIN_API_INTERNAL", f"http://127.0.0.1:{port}")
    return ctx, f"http://127.0.0.1:{port}"


@pytest.fixture
def api_with_token(tmp_path, monkeypatch, redis_url, classifier_family):  # noqa: F811
    """A served API with a token, holding ft_a, ft_b, eval.csv and one queued run."""
    ctx, base = _serve(tmp_path, monkeypatch, api_token=TOKEN, redis_url=redis_url)
    try:
        for name in ("ft_a", "ft_b"):
            r = httpx.put(f"{base}/api/checkpoints", params={"name": name}, headers=AUTH,
                          content=zip_dir(classifier_family[name]), timeout=60)
            assert r.status_code == 201, r.text
        r = httpx.put(f"{base}/api/datasets", params={"name": "eval.csv"}, headers=AUTH,
                      content=classifier_family["data"].read_bytes(), timeout=60)
        assert r.status_code == 201, r.text
        spec = {"path": {"type": "linear", "a": "ft_a", "b": "ft_b", "points": 3},
                "dataset": "eval.csv", "max_examples": 8}
        run = httpx.post(f"{base}/api/runs", json=spec, headers=AUTH, timeout=60)
        assert run.status_code == 201, run.text
        yield run.json()["id"]
    finally:
        ctx.__exit__(None, None, None)


def _text(component) -> str:
    return str(component.to_plotly_json() if hasattr(component, "to_plotly_json") else component)


def test_listing_pages_say_the_server_needs_the_token_then_list_with_it(pages, api_with_token):
    run_id = api_with_token
    runs, _names, alert, _stop = pages["runs"]._load(None, None, None)
    assert runs == [] and alert.id == "runs-needs-token"
    assert "This server needs the API token to list runs" in _text(alert)
    runs, names, alert, _stop = pages["runs"]._load(None, None, TOKEN)
    assert alert is None and [r["id"] for r in runs] == [run_id]
    assert set(names.values()) >= {"ft_a", "ft_b", "eval.csv"}

    table, opts, _, bases = pages["checkpoints"]._list(0, None)
    assert table.id == "ckpt-needs-token" and opts == [] and bases == []
    assert "needs the API token to list checkpoints" in _text(table)
    table, opts, _, bases = pages["checkpoints"]._list(0, TOKEN)
    assert table.id == "ckpt-table" and len(opts) == 2 and len(bases) == 2  # no adapters: all can be bases

    table, opts = pages["datasets"]._list(0, None)
    assert table.id == "data-needs-token"
    table, opts = pages["datasets"]._list(0, TOKEN)
    assert table.id == "data-table" and [o["label"] for o in opts] == ["eval.csv"]
    preview = pages["datasets"]._preview(opts[0]["value"], TOKEN)
    assert "first 10 of 64 rows" in _text(preview)


def test_the_new_run_form_fills_its_pickers_once_the_token_is_entered(pages, api_with_token):
    new_run = pages["new_run"]
    page = _text(new_run.layout())
    assert "needs the API token to list checkpoints and datasets" in page
    out = new_run._lists_with_token(True, TOKEN)
    n = new_run.MAX_SLOTS
    ckpt_options, picks = out[:n], out[n:2 * n]
    assert {o["label"].split(" ")[0] for o in ckpt_options[0]} == {"ft_a", "ft_b"}
    assert sorted(p for p in picks if p) == sorted(o["value"] for o in ckpt_options[0])
    dataset_value = out[-3]
    assert dataset_value and out[-1] == []  # warnings cleared
    refused = new_run._lists_with_token(True, "wrong-token")
    assert len(refused) == len(out) == 2 * n + 1 + 3 + 4 + 3  # one value per output (+ the generation pickers)
    assert out[-2] == out[2 * n + 1 + 3]  # the prompts picker lists the datasets too
    assert "the one entered was refused" in _text(refused[-1])


def test_writes_from_the_dashboard_pass_the_csrf_guard(pages, tmp_path, monkeypatch):
    """With no token set, a body-less write from a callback carries the header: 404, not 403."""
    from frontend import api

    ctx, _ = _serve(tmp_path, monkeypatch, redis_url="redis://127.0.0.1:1/0")
    try:
        r = api.call("DELETE", "/api/checkpoints/nope")
        assert r.status == 404, r.body
    finally:
        ctx.__exit__(None, None, None)


def test_a_share_link_page_names_its_checkpoints_from_two_api_calls(pages, api_with_token, monkeypatch):
    """Someone with only the share link (no token) opens a run of a token server: the page
    names its checkpoints from the run's own detail, in two API calls (the run, its points)
    — no listing of the store, which needs the token (issue 22: a page made 5-10 calls)."""
    from frontend import api
    from frontend.pages import run as run_page

    run_id = api_with_token
    asked: list[str] = []
    real = api.httpx.request

    def counting(method, url, **kw):  # the real request, counted
        asked.append(f"{method} {url.split('/api/', 1)[-1]}")
        return real(method, url, **kw)

    monkeypatch.setattr(api.httpx, "request", counting)
    page = _text(run_page.layout(run_id=run_id))
    assert asked == [f"GET runs/{run_id}", f"GET runs/{run_id}/points"], asked
    assert "ft_a" in page and "ft_b" in page and "eval.csv" in page
