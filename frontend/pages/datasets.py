"""Datasets (``/datasets``): streaming upload (.csv / .tsv / .jsonl), list, preview of the first rows."""

from __future__ import annotations

import logging
from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, dcc, html

from frontend import api
from frontend.components import fmt_time, upload_box

logger = logging.getLogger(__name__)

dash.register_page(__name__, path="/datasets", name="Datasets", title="Basin — datasets")


def layout(**_: Any) -> html.Div:
    return html.Div([
        dcc.Store(id="data-refresh", data=0),
        html.H3("Datasets"),
        dbc.Card([dbc.CardHeader("Upload"), dbc.CardBody([
            html.P(["A table as ", html.Code(".csv"), ", ", html.Code(".tsv"), " or ", html.Code(".jsonl"),
                    " (e.g. columns text, label)."], className="small text-muted"),
            upload_box("data", "/api/datasets", "data-refresh", ".csv,.tsv,.jsonl", keep_ext=True,
                       select="data-preview-id"),
        ])], className="mb-3"),
        html.Div(id="data-list", className="mb-3"),
        dbc.Card([dbc.CardHeader("Preview"), dbc.CardBody([
            dbc.Select(id="data-preview-id", options=[], value="", placeholder="— preview a dataset —", className="mb-2"),
            html.Div(id="data-preview"),
        ])]),
    ])


@callback(Output("data-list", "children"), Output("data-preview-id", "options"), Input("data-refresh", "data"),
          Input("settings-token-input", "value"))
def _list(_: Any, token: str | None = None):
    r = api.get("/api/datasets", token=token)
    if api.needs_token(r):
        return dbc.Alert(api.NEEDS_TOKEN.format(what="datasets"), color="warning", id="data-needs-token"), []
    if not r.ok or not isinstance(r.body, list):
        return dbc.Alert(f"Could not list datasets: {r.error()}", color="danger"), []
    if not r.body:
        return dbc.Alert("No datasets stored yet.", color="info"), []
    head = html.Thead(html.Tr([html.Th(h) for h in ("name", "format", "rows", "columns", "tasks", "id", "created")]))
    rows = [html.Tr([
        html.Td(d.get("name"), className="data-name fw-semibold"), html.Td(d.get("format", "")),
        html.Td(d.get("rows", "")), html.Td(", ".join(d.get("columns") or [])),
        html.Td(", ".join(d.get("tasks") or [])), html.Td(html.Code(str(d.get("id", ""))[:12])),
        html.Td(fmt_time(d.get("created")), className="text-nowrap"),
    ]) for d in r.body]
    opts = [{"label": d.get("name", d["id"]), "value": d["id"]} for d in r.body]
    return dbc.Table([head, html.Tbody(rows)], striped=True, size="sm", id="data-table"), opts


@callback(Output("data-preview", "children"), Input("data-preview-id", "value"),
          State("settings-token-input", "value"), prevent_initial_call=True)
def _preview(ds_id: str, token: str | None = None):
    """The first 10 rows, columns in the file's order."""
    if not ds_id:
        return ""
    r = api.get(f"/api/datasets/{ds_id}/preview?n=10", token=token)
    if not r.ok:
        return dbc.Alert(r.error(), color="danger")
    body = r.body if isinstance(r.body, dict) else {}
    rows = body.get("rows") or []
    if not rows:
        return html.Div("No rows.", className="text-muted")
    cols = [str(c) for c in body.get("columns") or rows[0].keys()]
    title = html.Div(f"{body.get('name', ds_id[:12])} — first {len(rows)} of {body.get('total', '?')} rows",
                     id="data-preview-title", className="small text-muted mb-1")
    table = dbc.Table([html.Thead(html.Tr([html.Th(c) for c in cols])),
                       html.Tbody([html.Tr([html.Td(str(row.get(c, ""))[:200]) for c in cols]) for row in rows])],
                      size="sm", bordered=True, id="data-preview-table", className="bg-white mb-0")
    return [title, table]
