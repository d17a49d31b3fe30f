"""The Dash dashboard: an app shell (navbar, settings) around the pages in ``frontend/pages``.

``create_dash_app()`` is mounted by the backend at ``/`` with a2wsgi, after the API
routes, so the pages and ``/api`` share one origin. Browser code fetches ``/api/...``
directly (live points, uploads); Python callbacks use :mod:`frontend.api`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import dash
import dash_bootstrap_components as dbc
import flask
from dash import Input, Output, dcc, html

from basin.status import TERMINAL
from frontend import api
from frontend.components import data_attrs
from frontend.first_start import eta_words, minilm_banner

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent

#: Supervisor events (``/api/health``) younger than this are shown in the banner.
BANNER_WINDOW_S = 3600.0


def supervisor_banner(health: Any, now: float | None = None) -> list[Any]:
    """The banner's content: recent restarts by ``basin up``'s supervisor, newest first
    (``[]`` when there is none, or the health answer has no events)."""
    now = time.time() if now is None else now
    sup = health.get("supervisor") if isinstance(health, dict) else None
    events = (sup.get("events") if isinstance(sup, dict) else None) or []
    recent = [e for e in events if isinstance(e, dict)
              and now - float(e.get("restarted_at") or 0) < BANNER_WINDOW_S]
    if not recent:
        return []
    lines = [html.Div(e.get("message") or f"the {e.get('service')} was restarted")
             for e in recent[:3]]
    return [dbc.Alert(
        [html.Strong("Service restarted. "), *lines,
         html.Div("Runs in progress go on from their last recorded point.", className="small")],
        color="warning", className="mb-3", id="supervisor-alert",
    )]


def demo_lm_banner(health: Any, now: float | None = None) -> list[Any]:
    """The LM demo's banner (``demo_lm`` of ``/api/health``): a progress bar while ``basin up``
    builds it, the error when it failed, a link to the ready run for an hour after it ended
    (``[]`` otherwise)."""
    now = time.time() if now is None else now
    doc = health.get("demo_lm") if isinstance(health, dict) else None
    if not isinstance(doc, dict):
        return []
    state = doc.get("state")
    stage = str(doc.get("stage") or "")
    if state in ("building", "registering"):
        pct = max(0.0, min(100.0, 100 * float(doc.get("fraction") or 0)))
        return [dbc.Alert(
            [html.Strong("Building the LM demo "),
             html.Span("(SmolLM2-135M fine-tuned on negative and on positive tweets; the rest of "
                       "the dashboard works meanwhile): "),
             html.Span(stage, id="demo-lm-stage"),
             html.Span(" · " + eta_words(doc.get("eta_s")) if eta_words(doc.get("eta_s")) else ""),
             dbc.Progress(value=pct, label=f"{pct:.0f}%", className="mt-2", id="demo-lm-progress")],
            color="info", className="mb-3", id="demo-lm-alert",
        )]
    if state == "failed":
        return [dbc.Alert(
            [html.Strong("The LM demo could not be built. "), html.Span(str(doc.get("error") or "")),
             html.Div("Everything else works; the next start of basin up tries again "
                      "(log: the basin up console).", className="small")],
            color="danger", className="mb-3", id="demo-lm-alert",
        )]
    if state == "done" and now - float(doc.get("updated") or 0) < BANNER_WINDOW_S:
        run_id = doc.get("run_id")
        body: list[Any] = [html.Strong("The LM demo is ready: ")]
        if run_id:
            body += [html.Span("its run "), html.A("sentiment per α", href=f"/runs/{run_id}",
                                                   id="demo-lm-run-link"),
                     html.Span(" is on the runs page.")]
        else:
            body += [html.Span("the checkpoints smollm2-negative and smollm2-positive are registered; "
                               "its ready run was not submitted: "),
                     html.Span(str(doc.get("warning") or ""))]
        return [dbc.Alert(body, color="success", className="mb-3", id="demo-lm-alert")]
    return []


def _navbar() -> dbc.Navbar:
    links = [
        ("New run", "/"),
        ("Runs", "/runs"),
        ("Fits", "/fits"),
        ("Tune", "/tunes"),
        ("Studies", "/studies"),
        ("Checkpoints", "/checkpoints"),
        ("Datasets", "/datasets"),
    ]
    return dbc.Navbar(
        dbc.Container(
            [
                dbc.NavbarBrand("Basin", href="/", className="fw-bold"),
                dbc.Nav([dbc.NavItem(dbc.NavLink(t, href=h, id=f"nav-{t.split()[-1].lower()}"))
                         for t, h in links], className="me-auto"),
                dbc.InputGroup(
                    [
                        dbc.InputGroupText("API token", className="small"),
                        dbc.Input(id="settings-token-input", type="password", size="sm",
                                  placeholder="only if the server asks", debounce=True,
                                  persistence=True, persistence_type="local"),
                    ],
                    size="sm", style={"maxWidth": "300px"},
                ),
            ],
            fluid=True,
        ),
        color="dark", dark=True, className="mb-3",
    )


def _report_route(server: flask.Flask) -> None:
    """``/reports/<run_id>.html``: the run as a standalone HTML page (plotly inlined)."""

    @server.route("/reports/<run_id>.html")
    def _report(run_id: str):  # noqa: ANN202 - Flask view
        from basin.report import render_report

        r = api.get(f"/api/runs/{run_id}/export?format=json")
        if not r.ok or not isinstance(r.body, dict):
            return flask.Response(api.error_text(r.status, r.body), status=r.status if r.status >= 400 else 502,
                                  mimetype="text/plain")
        resp = flask.Response(render_report(r.body), mimetype="text/html")
        resp.headers["Content-Disposition"] = f'attachment; filename="basin-{run_id[:12]}.html"'
        return resp


def create_dash_app(api_base: str = "") -> dash.Dash:
    """Build the dashboard. ``api_base`` prefixes browser-side API calls ("" = same origin)."""
    app = dash.Dash(
        __name__,
        use_pages=True,
        pages_folder=str(HERE / "pages"),
        assets_folder=str(HERE / "assets"),
        requests_pathname_prefix="/",
        # Bootstrap 5.3 CSS is vendored in assets/ (no CDN: the dashboard must work offline).
        suppress_callback_exceptions=True,
        title="Basin",
        update_title="",  # the tab title stays while callbacks run
    )
    app.layout = html.Div(
        [
            dcc.Store(id="settings-api-base", data=api_base),
            _navbar(),
            dcc.Interval(id="supervisor-poll", interval=15000),
            dbc.Container(html.Div(id="supervisor-banner"), fluid=True),
            dcc.Interval(id="demo-lm-poll", interval=5000),
            dbc.Container(html.Div(id="demo-lm-banner"), fluid=True),
            dbc.Container(dash.page_container, fluid=True, className="pb-5"),
        ],
        **data_attrs(api_base=api_base, terminal=",".join(TERMINAL)),  # basin.status, one vocabulary
        id="basin-root",
    )
    _report_route(app.server)

    @app.callback(Output("supervisor-banner", "children"), Input("supervisor-poll", "n_intervals"))
    def _banner(_n: int | None) -> list[Any]:
        r = api.get("/api/health")
        return supervisor_banner(r.body if isinstance(r.body, dict) else None)

    @app.callback(Output("demo-lm-banner", "children"), Input("demo-lm-poll", "n_intervals"))
    def _demo_lm(_n: int | None) -> list[Any]:
        r = api.get("/api/health")
        health = r.body if isinstance(r.body, dict) else None
        return minilm_banner(health) + demo_lm_banner(health)

    return app
