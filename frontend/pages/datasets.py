"""Datasets (``/datasets``): streaming upload (.csv / .tsv / .jsonl), list, preview of the first rows."""

from __future__ import annotations

import logging
from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, callback, dcc, html

from frontend import api
from frontend.components import upload_box

logger = logging.getLogger(__name__)

dash.register_page(__name__, path="/datasets", name="Datasets", title="Basin — datasets")


def layout(**_: Any) -> html.Div:
    return html.Div([
        dcc.Store(id="data-refresh", data=0),
        html.H3("Datasets"),
        dbc.Card([dbc.CardHeader("Upload"), dbc.CardBody([
            html.P(["A table as ", html.Code(".csv"), ", ", html.Code(".tsv"), " or ", html.Code(".jsonl"),
                    " (e.g. columns text, label)."], className="small text-muted"),
            upload_box("data", "/api/datasets", "data-refresh", ".csv,.tsv,.jsonl", keep_ext=True),
        ])], className="mb-3"),
        html.Div(id="data-list", className="mb-3"),
        dbc.Card([dbc.CardHeader("Preview"), dbc.CardBody([
            dbc.Select(id="data-preview-id", options=[], value="", className="mb-2"),
            html.Div(id="data-preview"),
        ])]),
    ])


@callback(Output("data-list", "children"), Output("data-preview-id", "options"), Input("data-refresh", "data"))
def _list(_: Any):
    r = api.get("/api/datasets")
    if not r.ok or not isinstance(r.body, list):
        return dbc.Alert(f"Could not list datasets: {r.error()}", color="danger"), []
    if not r.body:
        return dbc.Alert("No datasets stored yet.", color="info"), []
    head = html.Thead(html.Tr([html.Th(h) for h in ("name", "format", "rows", "columns", "tasks", "id")]))
    rows = [html.Tr([
        html.Td(d.get("name"), className="data-name fw-semibold"), html.Td(d.get("format", "")),
        html.Td(d.get("rows", "")), html.Td(", ".join(d.get("columns") or [])),
        html.Td(", ".join(d.get("tasks") or [])), html.Td(html.Code(str(d.get("id", ""))[:12])),
    ]) for d in r.body]
    opts = [{"label": "— preview a dataset —", "value": ""}] + [
        {"label": d.get("name", d["id"]), "value": d["id"]} for d in r.body]
    return dbc.Table([head, html.Tbody(rows)], striped=True, size="sm", id="data-table"), opts


@callback(Output("data-preview", "children"), Input("data-preview-id", "value"), prevent_initial_call=True)
def _preview(ds_id: str):
    if not ds_id:
        return ""
    r = api.get(f"/api/datasets/{ds_id}/preview?n=10")
    if not r.ok:
        return dbc.Alert(r.error(), color="danger")
    body = r.body
    rows = body.get("rows") if isinstance(body, dict) else body
    if not isinstance(rows, list) or not rows:
        return html.Div("No rows.", className="text-muted")
    cols = list(rows[0].keys()) if isinstance(rows[0], dict) else [str(i) for i in range(len(rows[0]))]
    def cell(row: Any, c: str) -> str:
        v = row.get(c) if isinstance(row, dict) else row[int(c)]
        return str(v)[:200]
    return dbc.Table([html.Thead(html.Tr([html.Th(c) for c in cols])),
                      html.Tbody([html.Tr([html.Td(cell(r_, c)) for c in cols]) for r_ in rows])],
                     size="sm", bordered=True, id="data-preview-table")
