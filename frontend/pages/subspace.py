"""Subspace job (``/subspaces/<job_id>``): a delta-tuning subspace fit or optimisation, live.

Polls ``GET /api/subspaces/{id}`` every 700 ms until the job ends: status, progress, cancel,
and the losses as they stream in — for a fit, the reconstruction ‖Projₜ↑(I) − θ‖² and the
task loss of each task/method (two charts, one line each); for an optimise, its task loss.
Once done: the projections' artefact id, or the decoded adapters (links to their checkpoints)
and the stage's table (task performance of each original / reconstructed / decoded solution).
"""

from __future__ import annotations

from typing import Any

import dash
import dash_bootstrap_components as dbc
import plotly.graph_objects as go
from dash import Input, Output, State, callback, dcc, html

from basin.status import COLOUR, TERMINAL
from frontend import api
from frontend.components import GRAPH_CONFIG

dash.register_page(
    __name__, path_template="/subspaces/<job_id>", name="Subspace", title="Basin — subspace"
)


def loss_figures(losses: list[dict]) -> tuple[go.Figure, go.Figure]:
    """(reconstruction, task loss) figures: one line per ``task/method`` key of the log."""
    figs = []
    for field, title, ytitle in (
        ("dist", "Reconstruction ‖Proj↑(I) − θ‖²", "squared distance"),
        ("task", "Task loss of the decoded solutions", "loss"),
    ):
        fig = go.Figure()
        rows = [p for p in losses if isinstance(p.get(field), (dict, int, float))]
        keys = sorted({k for p in rows if isinstance(p[field], dict) for k in p[field]})
        if keys:
            for k in keys:
                fig.add_trace(
                    go.Scatter(
                        x=[p["step"] for p in rows],
                        y=[p[field].get(k) for p in rows],
                        mode="lines",
                        name=k,
                        meta=k,
                    )
                )
        elif rows:
            fig.add_trace(
                go.Scatter(
                    x=[p["step"] for p in rows],
                    y=[p[field] for p in rows],
                    mode="lines",
                    name=field,
                    meta=field,
                )
            )
        fig.update_layout(
            title=title,
            xaxis_title="step",
            yaxis_title=ytitle,
            height=300,
            template="plotly_white",
            margin={"l": 50, "r": 20, "t": 40, "b": 40},
            yaxis_type="log" if field == "dist" else None,
        )
        figs.append(fig)
    return figs[0], figs[1]


def _cell(ev: Any) -> str:
    return (
        f"{ev['accuracy']:.3f} / {ev['loss']:.3f}"
        if isinstance(ev, dict) and "accuracy" in ev
        else "—"
    )


def report_table(report: dict | None) -> Any:
    """The stage's table (accuracy / loss on the held-out data) once the job is done."""
    if not report or not report.get("rows"):
        return ""
    rows = report["rows"]
    if report.get("stage") == "fit":
        head = ["task", "method", "parameters", "original", "reconstruction", "‖θ̂−θ‖/‖θ‖"]
        body = [
            [
                r["task"],
                r["method"],
                r["parameters"],
                _cell(r.get("original")),
                _cell(r.get("reconstruction")),
                f"{r['relative_distance']:.3f}",
            ]
            for r in rows
        ]
    else:
        head = ["decoded as", "accuracy / loss"]
        body = [[r["method"], _cell(r.get("eval"))] for r in rows]
    return dbc.Table(
        [
            html.Thead(html.Tr([html.Th(h) for h in head])),
            html.Tbody([html.Tr([html.Td(str(c)) for c in row]) for row in body]),
        ],
        size="sm",
        bordered=True,
        id="subspace-report",
    )


def _view(body: dict) -> tuple:
    status = body.get("status") or "?"
    step, total = int(body.get("step") or 0), int(body.get("total") or 0)
    pct = 100 if status == "done" else round(100 * step / total) if total else 0
    dist, task = loss_figures(body.get("losses") or [])
    out: list[Any] = []
    if body.get("artefact"):
        out += [
            html.Span("Projections (store artefact) "),
            html.Code(str(body["artefact"])[:12], id="subspace-art"),
        ]
    for m, cid in (body.get("adapters") or {}).items():
        out += [html.A(f"{m}", href=f"/checkpoints?id={cid}", className="me-2")]
    return (
        dist,
        task,
        status,
        COLOUR.get(status, "dark"),
        pct,
        f"{step} / {total}",
        body.get("error") or "",
        out,
        report_table(body.get("report")),
        status in TERMINAL,
        status in TERMINAL,
    )


def layout(job_id: str | None = None, **_: Any) -> Any:
    if not job_id:
        return dbc.Alert("No subspace job id in the link.", color="warning")
    r = api.get(f"/api/subspaces/{job_id}")
    if not r.ok or not isinstance(r.body, dict):
        return html.Div(
            [
                html.H3("Subspace job not found"),
                dbc.Alert(
                    r.error() if r.status != 404 else f"There is no subspace job {job_id}.",
                    color="warning",
                    id="subspace-error",
                ),
            ]
        )
    body = r.body
    (dist, task, status, colour, pct, label, error, out, table, stop, ended) = _view(body)
    stage = "fit" if (body.get("spec") or {}).get("kind") == "subspace_fit" else "optimise"
    return html.Div(
        [
            dcc.Store(id="subspace-meta", data={"id": job_id}),
            dcc.Interval(id="subspace-interval", interval=700, disabled=stop),
            html.H3(f"Delta-tuning subspace: {stage}", id="subspace-title", className="mb-1"),
            html.Div(html.Code(job_id, className="small"), className="mb-2"),
            dbc.Card(
                dbc.CardBody(
                    [
                        html.Div(
                            [
                                dbc.Badge(
                                    status,
                                    id="subspace-status",
                                    color=colour,
                                    className="me-2 fs-6",
                                ),
                                html.Span(error, id="subspace-error-msg", className="text-danger"),
                            ],
                            className="mb-2",
                        ),
                        dbc.Progress(
                            id="subspace-progress",
                            value=pct,
                            label=label,
                            style={"height": "1.4rem"},
                        ),
                        html.Div(
                            [
                                dbc.Button(
                                    "Cancel",
                                    id="subspace-cancel",
                                    color="danger",
                                    outline=True,
                                    size="sm",
                                    disabled=ended,
                                    className="mt-2",
                                ),
                                html.Span(id="subspace-cancel-msg", className="small ms-2"),
                            ]
                        ),
                    ]
                ),
                className="mb-3",
            ),
            dcc.Graph(id="subspace-dist", figure=dist, config=GRAPH_CONFIG, className="border rounded mb-3"),
            dcc.Graph(id="subspace-task", figure=task, config=GRAPH_CONFIG, className="border rounded mb-3"),
            html.Div(out, id="subspace-out", className="mb-3"),
            html.Div(table, id="subspace-table"),
        ]
    )


@callback(
    Output("subspace-dist", "figure"),
    Output("subspace-task", "figure"),
    Output("subspace-status", "children"),
    Output("subspace-status", "color"),
    Output("subspace-progress", "value"),
    Output("subspace-progress", "label"),
    Output("subspace-error-msg", "children"),
    Output("subspace-out", "children"),
    Output("subspace-table", "children"),
    Output("subspace-interval", "disabled"),
    Output("subspace-cancel", "disabled"),
    Input("subspace-interval", "n_intervals"),
    State("subspace-meta", "data"),
    prevent_initial_call=True,
)
def _poll(_n: int, meta: dict):
    r = api.get(f"/api/subspaces/{meta['id']}")
    if not r.ok or not isinstance(r.body, dict):
        raise dash.exceptions.PreventUpdate
    return _view(r.body)


@callback(
    Output("subspace-cancel-msg", "children"),
    Input("subspace-cancel", "n_clicks"),
    State("subspace-meta", "data"),
    State("settings-token-input", "value"),
    prevent_initial_call=True,
)
def _cancel(_n: int, meta: dict, token: str | None):
    r = api.post(f"/api/subspaces/{meta['id']}/cancel", token=token)
    return "cancelling…" if r.ok else r.error()
