"""Runs (``/runs``): every run with type, checkpoints (by name), status, created; filter by
checkpoint; finished 1D runs overlaid in one figure.

The list is fetched by a callback (not at layout time) so **Refresh** and the automatic
refresh (every 5 s while a run is queued or running) show new runs and statuses.
"""

from __future__ import annotations

import logging
from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, dcc, html
from dash.development.base_component import Component

from basin import figures
from basin.compare import like_for_like
from basin.paths import PATHS, is_1d, refs_of
from basin.status import COLOUR as STATUS_COLOUR
from basin.status import TERMINAL
from frontend import api
from frontend.components import GRAPH_CONFIG, data_attrs, fmt_time, ref_label

logger = logging.getLogger(__name__)

dash.register_page(__name__, path="/runs", name="Runs", title="Basin — runs")

OVERLAY_METRICS = ("loss", "accuracy", "f1", "perplexity")
ALL = "*"  # the filter's "all checkpoints" (dbc.Select keeps "" for its hidden placeholder)


def _refs(run: dict) -> list[str]:
    """Checkpoint references of a run entry, in anchor order (the API's ``checkpoints``)."""
    if isinstance(run.get("checkpoints"), list):
        return [str(r) for r in run["checkpoints"]]
    return refs_of((run.get("spec") or {}).get("path") or {})


def _type(run: dict) -> str:
    return str(run.get("type") or ((run.get("spec") or {}).get("path") or {}).get("type") or "?")


def layout(**_: Any) -> html.Div:
    return html.Div([
        dcc.Store(id="runs-all", data=None),
        dcc.Store(id="runs-names", data={}),
        dcc.Interval(id="runs-interval", interval=5000),
        html.Div([
            html.H3("Runs", className="me-3 mb-0"),
            dbc.Button("Refresh", id="runs-refresh", color="secondary", outline=True, size="sm"),
            html.A("Curve fits →", href="/fits", id="runs-fits-link", className="small ms-3"),
        ], className="d-flex align-items-center mb-2"),
        html.Div(id="runs-error"),
        dbc.Row([
            dbc.Col(dbc.InputGroup([
                dbc.InputGroupText("checkpoint"),
                dbc.Select(id="runs-filter", value=ALL, options=[{"label": "all checkpoints", "value": ALL}]),
            ], size="sm"), md=5),
            dbc.Col(html.Span(id="runs-count", className="small text-muted"), className="align-self-center"),
        ], className="mb-2"),
        dcc.Loading(html.Div(id="runs-table"), type="dot", delay_show=400),
        dbc.Card([dbc.CardHeader("Overlay finished 1D runs"), dbc.CardBody([
            dbc.Row([
                dbc.Col(dcc.Dropdown(id="runs-overlay", multi=True, value=[],
                                     placeholder="pick finished 1D runs: linear, SLERP, merges (TIES, DARE…)"), md=8),
                dbc.Col(dbc.Select(id="runs-overlay-metric", value="loss", options=[
                    {"label": m, "value": m} for m in OVERLAY_METRICS]), md=2),
            ], className="g-2 mb-2"),
            html.Div(id="runs-overlay-msg", className="small"),
            dcc.Graph(id="runs-overlay-graph", style={"display": "none"},
                      config=GRAPH_CONFIG),
        ])], className="mt-3"),
    ])


@callback(
    Output("runs-all", "data"), Output("runs-names", "data"), Output("runs-error", "children"),
    Output("runs-interval", "disabled"),
    Input("runs-refresh", "n_clicks"), Input("runs-interval", "n_intervals"),
    Input("settings-token-input", "value"),
)
def _load(_clicks: int | None, _n: int | None, token: str | None):
    """The run list and the store's names (checkpoints and datasets) for labels.

    With ``BASIN_API_TOKEN`` set, the list needs the token the user entered in the navbar."""
    r = api.get("/api/runs", token=token)
    if api.needs_token(r):
        alert = dbc.Alert(api.NEEDS_TOKEN.format(what="runs"), color="warning", id="runs-needs-token")
        return [], {}, alert, True
    if not r.ok or not isinstance(r.body, list):
        return [], dash.no_update, dbc.Alert(f"Could not list runs: {r.error()}", color="danger"), True
    names: dict[str, str] = {}
    for kind in ("checkpoints", "datasets"):
        c = api.get(f"/api/{kind}", token=token)
        if c.ok and isinstance(c.body, list):
            names.update({m["id"]: m.get("name") or m["id"][:10] for m in c.body if m.get("id")})
    live = any(x.get("status") not in TERMINAL for x in r.body)
    return r.body, names, None, not live


def run_label(run: dict, names: dict[str, str]) -> str:
    """``name`` if the run has one, else its checkpoints' names joined by ``→`` / ``·``."""
    if (run.get("spec") or {}).get("name") or run.get("name"):
        return str(run.get("name") or run["spec"]["name"])
    refs = [ref_label(r, names, run.get("names")) for r in _refs(run)]
    return _sep(run).join(refs) if len(refs) <= 4 else f"{len(refs)} checkpoints"


def _sep(run: dict) -> str:
    """``A → B`` along a 1D path, ``θ0 + θ1 + θ2`` for a merge (a base and its models), else ``·``."""
    cls = PATHS.get(_type(run))
    if cls is not None and cls.list_slot is not None:
        return " + "
    return " → " if is_1d(_type(run)) else " · "


@callback(
    Output("runs-table", "children"), Output("runs-overlay", "options"), Output("runs-filter", "options"),
    Output("runs-count", "children"),
    Input("runs-filter", "value"), Input("runs-all", "data"), State("runs-names", "data"),
)
def _table(ref: str, runs: list[dict] | None, names: dict[str, str] | None):
    if runs is None:
        raise dash.exceptions.PreventUpdate
    names = names or {}
    used: dict[str, str] = {}
    for x in runs:
        for r_ in _refs(x):
            used.setdefault(r_, ref_label(r_, names, x.get("names")))
    filt = [{"label": "all checkpoints", "value": ALL}] + [
        {"label": lab, "value": r_} for r_, lab in sorted(used.items(), key=lambda t: t[1].lower())]
    overlay = [{"label": f"{run_label(x, names)} · {_type(x)} · {fmt_time(x.get('created'))}",
                "value": x["id"]}
               for x in runs if is_1d(_type(x)) and x.get("status") == "done"]
    ref = "" if ref == ALL else ref or ""
    shown = [x for x in runs if not ref or ref in _refs(x)]
    count = f"{len(shown)} of {len(runs)} runs" if ref else f"{len(runs)} runs"
    if not shown:
        msg = ("No run uses this checkpoint." if ref else
               ["No runs yet — ", html.A("start one", href="/"), "."])
        return dbc.Alert(msg, color="info", id="runs-empty"), overlay, filt, count
    head = html.Thead(html.Tr([html.Th(h) for h in
                               ("run", "type", "checkpoints", "dataset", "status", "points", "created")]))
    rows = []
    for x in shown:
        status = str(x.get("status") or "?")
        ckpts = [ref_label(r_, names, x.get("names")) for r_ in _refs(x)]
        title = (x.get("spec") or {}).get("name") or x.get("name")
        ds = x.get("dataset") or (x.get("spec") or {}).get("dataset")
        rows.append(html.Tr([
            html.Td([html.A(title or str(x["id"])[:12], href=f"/runs/{x['id']}", className="runs-link"),
                     html.Div(html.Code(str(x["id"])[:12]), className="small") if title else None]),
            html.Td(_type(x), className="runs-type"),
            html.Td(_sep(x).join(ckpts) if is_1d(_type(x)) else ", ".join(ckpts),
                    className="runs-ckpts"),
            html.Td(ref_label(ds, names, x.get("names")) if ds else "", className="runs-dataset"),
            html.Td(dbc.Badge(status, color=STATUS_COLOUR.get(status, "dark")), className="runs-status",
                    title=x.get("error") or ""),
            html.Td(f"{x.get('done', '?')} / {x.get('total', '?')}"),
            html.Td(fmt_time(x.get("created")), className="runs-created text-nowrap"),
        ], **data_attrs(id=str(x["id"]))))
    table = dbc.Table([head, html.Tbody(rows)], striped=True, hover=True, size="sm", id="runs-list",
                      className="bg-white align-middle")
    return table, overlay, filt, count


@callback(
    Output("runs-overlay-graph", "figure"), Output("runs-overlay-graph", "style"),
    Output("runs-overlay-msg", "children"),
    Input("runs-overlay", "value"), Input("runs-overlay-metric", "value"),
    State("runs-names", "data"), State("runs-all", "data"),
    prevent_initial_call=True,
)
def _overlay(ids: list[str] | None, metric: str, names: dict[str, str] | None, runs: list[dict] | None):
    """One curve per picked run (its result document from ``/api/runs/<id>/export``)."""
    if not ids:
        return dash.no_update, {"display": "none"}, ""
    by_id = {x["id"]: x for x in runs or []}
    docs, labels, doc_ids, problems = [], [], [], []
    for run_id in ids:
        r = api.get(f"/api/runs/{run_id}/export?format=json")
        if r.ok and isinstance(r.body, dict):
            docs.append(r.body)
            doc_ids.append(run_id)
            labels.append(run_label(by_id.get(run_id) or {"spec": r.body.get("spec") or {}}, names or {}))
        else:
            problems.append(f"{run_id[:8]}: {r.error()}")
    # two runs of one method over the same checkpoints: tell them apart (runs of different
    # methods are: the figure names each curve's method)
    keys = [(((d.get("spec") or {}).get("path") or {}).get("type"), lab) for d, lab in zip(docs, labels, strict=True)]
    for k, key in enumerate(keys):
        if keys.count(key) > 1:
            labels[k] = f"{labels[k]} ({doc_ids[k][:6]})"
    metric = metric or "loss"
    missing = [lab for d, lab in zip(docs, labels, strict=True)
               if metric not in ((d.get("spec") or {}).get("metrics") or [])]
    if missing:
        problems.append(f"no {metric} in: {', '.join(missing)}")
    # like for like: the same examples, scored the same way (basin.compare); else refuse or warn, naming it
    refuse, unlike = like_for_like([d.get("spec") or {} for d in docs], labels)
    msg: Component | str = html.Span("; ".join(problems), className="text-danger") if problems else ""
    if unlike:
        msg = html.Div([html.Div(unlike, id="runs-overlay-unlike", className="text-warning-emphasis"), msg])
    if not docs or refuse:
        return dash.no_update, {"display": "none"}, msg
    fig = figures.overlay_figure(docs, metric, names=names or {}, labels=labels)
    fig.update_layout(height=460)
    if unlike:
        fig.update_layout(title_text=f"{len(docs)} runs — {metric} (not like for like: see the note)")
    return fig, {}, msg
