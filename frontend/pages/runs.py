"""Runs (``/runs``): every run with type, checkpoints, status, created; filter by checkpoint;
several 1D runs overlaid in one figure."""

from __future__ import annotations

import logging
from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, callback, dcc, html

from basin import figures
from frontend import api

logger = logging.getLogger(__name__)

dash.register_page(__name__, path="/runs", name="Runs", title="Basin — runs")


def _refs(spec: dict) -> list[str]:
    p = spec.get("path") or {}
    out = [p[k] for k in ("a", "b", "c", "control", "origin", "center") if isinstance(p.get(k), str)]
    return out + list(p.get("checkpoints") or [])


def layout(**_: Any) -> html.Div:
    r = api.get("/api/runs")
    runs = r.body if r.ok and isinstance(r.body, list) else []
    c = api.get("/api/checkpoints")
    names = {m["id"]: m.get("name", m["id"][:10]) for m in c.body} if c.ok and isinstance(c.body, list) else {}
    used = sorted({ref for run in runs for ref in _refs(run.get("spec") or {})})
    err = [] if r.ok else [dbc.Alert(f"Could not list runs: {r.error()}", color="danger")]
    return html.Div([
        dcc.Store(id="runs-all", data=runs),
        dcc.Store(id="runs-names", data=names),
        html.H3("Runs"),
        *err,
        dbc.Row([
            dbc.Col(dbc.Select(id="runs-filter", value="", options=[{"label": "all checkpoints", "value": ""}] + [
                {"label": figures.short_name(u, names), "value": u} for u in used]), md=4),
        ], className="mb-2"),
        html.Div(id="runs-table"),
        dbc.Card([dbc.CardHeader("Overlay 1D runs"), dbc.CardBody([
            dbc.Row([
                dbc.Col(dcc.Dropdown(id="runs-overlay", multi=True, placeholder="pick finished 1D runs"), md=8),
                dbc.Col(dbc.Select(id="runs-overlay-metric", value="loss", options=[
                    {"label": m, "value": m} for m in ("loss", "accuracy", "f1", "perplexity")]), md=2),
            ], className="g-2 mb-2"),
            dcc.Graph(id="runs-overlay-graph", style={"display": "none"}),
        ])], className="mt-3"),
    ])


@callback(
    Output("runs-table", "children"), Output("runs-overlay", "options"),
    Input("runs-filter", "value"), Input("runs-all", "data"), Input("runs-names", "data"),
)
def _table(ref: str, runs: list[dict], names: dict[str, str]):
    runs = [x for x in runs or [] if not ref or ref in _refs(x.get("spec") or {})]
    if not runs:
        return dbc.Alert(["No runs yet — ", html.A("start one", href="/"), "."], color="info"), []
    head = html.Thead(html.Tr([html.Th(h) for h in ("run", "type", "checkpoints", "status", "points", "created")]))
    rows = []
    opts = []
    for x in runs:
        spec = x.get("spec") or {}
        ptype = (spec.get("path") or {}).get("type", "?")
        label = spec.get("name") or " · ".join(figures.short_name(r, names) for r in _refs(spec))
        rows.append(html.Tr([
            html.Td(html.A(str(x["id"])[:12], href=f"/runs/{x['id']}")), html.Td(ptype), html.Td(label),
            html.Td(x.get("status", "")), html.Td(f"{x.get('done', '?')} / {x.get('total', '?')}"),
            html.Td(str(x.get("created", ""))[:19]),
        ]))
        if ptype in figures.ONE_D:
            opts.append({"label": f"{label} ({str(x['id'])[:8]})", "value": x["id"]})
    return dbc.Table([head, html.Tbody(rows)], striped=True, hover=True, size="sm", id="runs-list"), opts


@callback(
    Output("runs-overlay-graph", "figure"), Output("runs-overlay-graph", "style"),
    Input("runs-overlay", "value"), Input("runs-overlay-metric", "value"), Input("runs-names", "data"),
    prevent_initial_call=True,
)
def _overlay(ids: list[str] | None, metric: str, names: dict[str, str]):
    if not ids:
        return dash.no_update, {"display": "none"}
    docs = []
    for run_id in ids:
        r = api.get(f"/api/runs/{run_id}/export?format=json")
        if r.ok and isinstance(r.body, dict):
            docs.append(r.body)
    return figures.overlay_figure(docs, metric or "loss", names=names), {}
