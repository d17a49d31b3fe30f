"""Fits (``/fits``): every curve fit Redis still has — endpoints, curve, status, progress,
final training loss, created — each linking to its fit page, its control checkpoint and
its line / curve evaluation runs.

The list is fetched by a callback (``GET /api/fits``; with ``BASIN_API_TOKEN`` set it needs
the token from the navbar), refreshed every 3 s while a fit is queued or running. Ended
fits are forgotten with ended runs' live state (``BASIN_FINISHED_RUN_TTL_S``); their
control checkpoints and evaluation runs stay on the Checkpoints and Runs pages.
"""

from __future__ import annotations

from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, callback, dcc, html

from basin.status import COLOUR as STATUS_COLOUR
from basin.status import TERMINAL
from frontend import api
from frontend.components import data_attrs, fmt_time

dash.register_page(__name__, path="/fits", name="Fits", title="Basin — fits")



def layout(**_: Any) -> html.Div:
    return html.Div([
        dcc.Interval(id="fits-interval", interval=3000),
        html.Div([
            html.H3("Fits", className="me-3 mb-0"),
            dbc.Button("Refresh", id="fits-refresh", color="secondary", outline=True, size="sm"),
        ], className="d-flex align-items-center mb-2"),
        html.P(["Curve fits between two checkpoints (a trained Bezier or polychain control point). "
                "Start one from a finished straight-line run's page (", html.Em("Fit a curve"),
                ") or with ", html.Code("POST /api/fits"), "."], className="small text-muted"),
        html.Div(id="fits-error"),
        dcc.Loading(html.Div(id="fits-table"), type="dot", delay_show=400),
    ])


def _curve(x: dict) -> str:
    c = str(x.get("curve") or "?")
    bends = x.get("bends")
    return f"{c} ({bends} bends)" if c == "polychain" and isinstance(bends, int) and bends > 1 else c


def _loss(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else ""


def fits_table(fits: list[dict]) -> Any:
    """The table of fits (newest first, as the API lists them)."""
    if not fits:
        return dbc.Alert(["No fits yet — open a finished straight-line run from ",
                          html.A("Runs", href="/runs"), " and press Fit a curve."],
                         color="info", id="fits-empty")
    head = html.Thead(html.Tr([html.Th(h) for h in (
        "fit", "endpoints", "curve", "status", "steps", "final loss", "results", "created")]))
    rows = []
    for x in fits:
        status = str(x.get("status") or "?")
        runs = x.get("runs") or {}
        results: list[Any] = []
        if runs.get("line"):
            results.append(html.A("line", href=f"/runs/{runs['line']}", className="fits-line me-2"))
        if runs.get("curve"):
            results.append(html.A("curve", href=f"/runs/{runs['curve']}", className="fits-curve me-2"))
        if x.get("control"):
            results.append(html.Span(["control ", html.Code(str(x["control"])[:12], className="fits-control")],
                                     className="small"))
        rows.append(html.Tr([
            html.Td(html.A(html.Code(str(x["id"])[:12]), href=f"/fits/{x['id']}", className="fits-link")),
            html.Td(f"{x.get('a_name') or x.get('a')} → {x.get('b_name') or x.get('b')}", className="fits-ends"),
            html.Td(_curve(x), className="fits-curve-type"),
            html.Td([dbc.Badge(status, color=STATUS_COLOUR.get(status, "dark")),
                     html.Div(x.get("error") or "", className="small text-danger fits-error")],
                    className="fits-status"),
            html.Td(f"{x.get('step', 0)} / {x.get('total', '?')}"),
            html.Td(_loss(x.get("final_loss")), className="fits-loss"),
            html.Td(results),
            html.Td(fmt_time(x.get("created")), className="text-nowrap"),
        ], **data_attrs(id=str(x["id"]))))
    return dbc.Table([head, html.Tbody(rows)], striped=True, hover=True, size="sm", id="fits-list",
                     className="bg-white align-middle")


@callback(
    Output("fits-table", "children"), Output("fits-error", "children"), Output("fits-interval", "disabled"),
    Input("fits-refresh", "n_clicks"), Input("fits-interval", "n_intervals"),
    Input("settings-token-input", "value"),
)
def _load(_clicks: int | None, _n: int | None, token: str | None):
    r = api.get("/api/fits", token=token)
    if api.needs_token(r):
        alert = dbc.Alert(api.NEEDS_TOKEN.format(what="fits"), color="warning", id="fits-needs-token")
        return "", alert, True
    if not r.ok or not isinstance(r.body, list):
        return dash.no_update, dbc.Alert(f"Could not list fits: {r.error()}", color="danger"), True
    live = any(x.get("status") not in TERMINAL for x in r.body)
    return fits_table(r.body), None, not live
