"""Fit (``/fits/<fit_id>``): a curve fit's training loss live, progress, ETA, cancel; once done,
links to the line and fitted-curve runs and one figure overlaying both (loss vs α).

The page polls ``GET /api/fits/{id}`` (a Python callback every 700 ms) until the fit has
ended and, when it is done, until both evaluation runs have ended. This module also
holds the run page's "Fit a curve" button's callback (a finished straight-line run:
same endpoints, dataset and scope; a 100-step Bezier fit).
"""

from __future__ import annotations

import logging
from typing import Any

import dash
import dash_bootstrap_components as dbc
import plotly.graph_objects as go
from dash import Input, Output, State, callback, dcc, html, no_update

from basin import figures
from basin.status import COLOUR, TERMINAL
from frontend import api

logger = logging.getLogger(__name__)

dash.register_page(__name__, path_template="/fits/<fit_id>", name="Fit", title="Basin — fit")

#: What the run page's "Fit a curve" button asks for.
DEFAULT_FIT = {"curve": "bezier", "steps": 100}


def loss_figure(losses: list[dict]) -> go.Figure:
    fig = go.Figure(go.Scatter(x=[p["step"] for p in losses], y=[p["loss"] for p in losses],
                               mode="lines", name="training loss", meta="loss"))
    fig.update_layout(title="Training loss", xaxis_title="step", yaxis_title="loss",
                      margin={"l": 50, "r": 20, "t": 40, "b": 40}, height=320, template="plotly_white")
    return fig


def _eta(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return ""
    return f"ETA {s:.0f} s" if s < 120 else f"ETA {s / 60:.1f} min"


def overlay(runs: dict[str, str], names: dict[str, str]) -> tuple[Any, bool]:
    """The line and the fitted curve in one figure (None until both are done), and whether both ended."""
    docs, ended = [], True
    for key in ("line", "curve"):
        if key not in runs:
            continue
        doc, status = api.run_document(runs[key])
        ended = ended and status in TERMINAL
        if doc is None or status != "done":
            return None, ended
        docs.append(doc)
    if len(docs) < 2:
        return None, ended
    fig = figures.overlay_figure(docs, "loss", names=names, labels=["straight line", "fitted curve"])
    fig.update_layout(title="Line vs fitted curve — loss along α")
    return fig, True


def _view(body: dict) -> tuple:
    status = body.get("status") or "?"
    step, total = int(body.get("step") or 0), int(body.get("total") or 0)
    pct = 100 if status == "done" else round(100 * step / total) if total else 0
    runs = body.get("runs") or {}
    links: list[Any] = []
    if runs:
        links = [html.Span("Evaluations: "),
                 html.A("straight line", href=f"/runs/{runs['line']}", id="fit-line-link", className="me-2")]
        if "curve" in runs:
            links.append(html.A("fitted curve", href=f"/runs/{runs['curve']}", id="fit-curve-link"))
    if body.get("control"):
        links += [html.Span(" · control checkpoint "), html.Code(str(body["control"])[:12], id="fit-control")]
    fig, ended = None, True
    if status == "done":
        try:  # the loss chart and links update even when the runs cannot be read yet
            fig, ended = overlay(runs, body.get("names") or {})
        except Exception:
            logger.exception("overlay of fit %s", body.get("id"))
            ended = False
    overlay_child = dcc.Graph(figure=fig, id="fit-overlay", className="border rounded") if fig is not None else (
        html.Div("Evaluating the line and the fitted curve…", className="text-muted") if status == "done" else "")
    stop = status in TERMINAL and ended
    return (loss_figure(body.get("losses") or []), status, COLOUR.get(status, "dark"), pct, f"{step} / {total}",
            _eta(body.get("eta_s")), body.get("error") or "", links, overlay_child, stop, status in TERMINAL)


def layout(fit_id: str | None = None, **_: Any) -> Any:
    if not fit_id:
        return dbc.Alert("No fit id in the link.", color="warning")
    r = api.get(f"/api/fits/{fit_id}")
    if not r.ok or not isinstance(r.body, dict):
        return html.Div([html.H3("Fit not found"),
                         dbc.Alert(r.error() if r.status != 404 else f"There is no fit {fit_id}.",
                                   color="warning", id="fit-error")])
    body = r.body
    spec, names = body.get("spec") or {}, body.get("names") or {}
    (fig, status, colour, pct, label, eta, error, links, overlay_child, stop, ended) = _view(body)
    title = (f"Fit ({spec.get('curve')}): {figures.short_name(str(spec.get('a')), names)} → "
             f"{figures.short_name(str(spec.get('b')), names)}")
    return html.Div([
        dcc.Store(id="fit-meta", data={"id": fit_id}),
        dcc.Interval(id="fit-interval", interval=700, disabled=stop),
        html.H3(title, id="fit-title", className="mb-1"),
        html.Div(html.Code(fit_id, className="small"), className="mb-2"),
        dbc.Card(dbc.CardBody([
            html.Div([
                dbc.Badge(status, id="fit-status", color=colour, className="me-2 fs-6"),
                html.Span(eta, id="fit-eta", className="text-muted me-3"),
                html.Span(error, id="fit-error-msg", className="text-danger"),
            ], className="mb-2"),
            dbc.Progress(id="fit-progress", value=pct, label=label, style={"height": "1.4rem"}),
            html.Div([dbc.Button("Cancel fit", id="fit-cancel", color="danger", outline=True, size="sm",
                                 disabled=ended, className="mt-2"),
                      html.Span(id="fit-cancel-msg", className="small ms-2")]),
        ]), className="mb-3"),
        dcc.Graph(id="fit-loss", figure=fig, className="border rounded mb-3"),
        html.Div(links, id="fit-links", className="mb-3"),
        html.Div(overlay_child, id="fit-overlay-box"),
    ])


@callback(
    Output("fit-loss", "figure"), Output("fit-status", "children"), Output("fit-status", "color"),
    Output("fit-progress", "value"), Output("fit-progress", "label"), Output("fit-eta", "children"),
    Output("fit-error-msg", "children"), Output("fit-links", "children"),
    Output("fit-overlay-box", "children"), Output("fit-interval", "disabled"),
    Output("fit-cancel", "disabled"),
    Input("fit-interval", "n_intervals"), State("fit-meta", "data"),
    prevent_initial_call=True,
)
def _poll(_n: int, meta: dict):
    r = api.get(f"/api/fits/{meta['id']}")
    if not r.ok or not isinstance(r.body, dict):
        raise dash.exceptions.PreventUpdate
    return _view(r.body)


@callback(
    Output("fit-cancel-msg", "children"),
    Input("fit-cancel", "n_clicks"), State("fit-meta", "data"), State("settings-token-input", "value"),
    prevent_initial_call=True,
)
def _cancel(_n: int, meta: dict, token: str | None):
    r = api.post(f"/api/fits/{meta['id']}/cancel", token=token)
    return "cancelling…" if r.ok else r.error()


def fit_body_for_run(info: dict) -> dict | None:
    """The fit the run page's button starts: a finished linear run's endpoints, dataset and scope."""
    spec = info.get("spec") or {}
    path = spec.get("path") or {}
    if path.get("type") != "linear" or info.get("status") != "done":
        return None
    return {"a": path["a"], "b": path["b"], "dataset": spec["dataset"], "scope": spec.get("scope") or "all",
            "task": spec.get("task") or "classification", "max_examples": spec.get("max_examples") or 512,
            "max_length": spec.get("max_length") or 128, "eval_points": path.get("points") or 26,
            "tokenizer": spec.get("tokenizer"), **DEFAULT_FIT}


@callback(
    Output("run-fit-location", "href"), Output("run-fit-msg", "children"),
    Input("run-fit", "n_clicks"), State("run-meta", "data"), State("settings-token-input", "value"),
    prevent_initial_call=True,
)
def _start_fit(_n: int, meta: dict, token: str | None):
    r = api.get(f"/api/runs/{meta['id']}")
    body = fit_body_for_run(r.body if r.ok and isinstance(r.body, dict) else {})
    if body is None:
        return no_update, "only a finished straight-line run can start a fit"
    # from_run: the fit is this run's (its link may show the fit: docs/service.md, "What a link reveals")
    created = api.post("/api/fits", json=body, token=token, params={"from_run": meta["id"]})
    if not created.ok or not isinstance(created.body, dict):
        return no_update, created.error()
    return f"/fits/{created.body['id']}", "fit queued"
