"""Study (``/studies/<study_id>``, the share link): the barrier matrix of N checkpoints drawn live.

The page polls ``GET /api/studies/{id}`` (every second until the study has ended): an N × N
heatmap of the loss (or accuracy) barrier with each cell's verdict (✓ connected, ✗ not
connected, ? inconclusive, … not measured yet), its rows and columns in the order of the
hierarchical clustering with the dendrogram above; a click on a cell opens that pair's run
page. Beside it the clusters (members, mean metrics per dataset), the within- vs
between-group barriers per tag, the instability curve (barrier vs spawn step), exports and
cancel. HTTP to the API only (:mod:`frontend.api`).
"""

from __future__ import annotations

from typing import Any

import dash
import dash_bootstrap_components as dbc
import flask
import plotly.graph_objects as go
from dash import Input, Output, State, callback, dcc, html, no_update
from plotly.subplots import make_subplots

from basin.status import COLOUR, TERMINAL
from frontend import api
from frontend.components import GRAPH_CONFIG

dash.register_page(
    __name__, path_template="/studies/<study_id>", name="Study", title="Basin — study"
)

MARK = {"connected": "✓", "not connected": "✗", "inconclusive": "?"}


def _fmt(v: Any, metric: str) -> str:
    if not isinstance(v, (int, float)):
        return ""
    return f"{100 * v:.1f}" if metric == "accuracy" else f"{v:.3f}"


def matrix_figure(result: dict, metric: str) -> go.Figure:
    """The heatmap in the clustering's leaf order, the dendrogram above it (once complete)."""
    names = [c["name"] for c in result.get("checkpoints", [])]
    n = len(names)
    order = result.get("order") or list(range(n))
    mat = (result.get("matrix") or {}).get(metric) or {}
    runs: dict[tuple[int, int], str] = {}
    for p in result.get("pairs", []):
        if p.get("run"):
            runs[(p["a"], p["b"])] = runs[(p["b"], p["a"])] = p["run"]
    for key, pr in (result.get("progress") or {}).items():
        a, b = (int(x) for x in key.split(":"))
        runs.setdefault((a, b), pr["run"])
        runs.setdefault((b, a), pr["run"])
    z, text, custom = [], [], []
    for i in order:
        zr, tr, cr = [], [], []
        for j in order:
            v = (mat.get("value") or [[None] * n] * n)[i][j]
            verdict = (mat.get("verdict") or [[None] * n] * n)[i][j]
            zr.append(v)
            tr.append(
                ""
                if i == j
                else (f"{_fmt(v, metric)} {MARK.get(verdict, '')}" if v is not None else "…")
            )
            cr.append(runs.get((i, j), ""))
        z.append(zr)
        text.append(tr)
        custom.append(cr)
    labels = [names[i] for i in order]
    den = result.get("dendrogram")
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.25, 0.75], vertical_spacing=0.02
    )
    unit = "points" if metric == "accuracy" else "nats"
    fig.add_trace(
        go.Heatmap(
            z=[
                [None if v is None else (100 * v if metric == "accuracy" else v) for v in row]
                for row in z
            ],
            x=list(range(n)),
            y=list(range(n)),
            text=text,
            texttemplate="%{text}",
            customdata=custom,
            colorscale="Reds",
            zmin=0,
            colorbar={"title": f"{metric} barrier ({unit})", "len": 0.7, "y": 0.37},
            hovertemplate="%{text}<extra></extra>",
            name="barrier",
            meta="matrix",
        ),
        row=2,
        col=1,
    )
    if den:
        for xs, ys in zip(den["icoord"], den["dcoord"], strict=True):
            fig.add_trace(
                go.Scatter(
                    x=[(x - 5) / 10 for x in xs],
                    y=ys,
                    mode="lines",
                    line={"color": "#555"},
                    hoverinfo="skip",
                    showlegend=False,
                    meta="dendrogram",
                ),
                row=1,
                col=1,
            )
    fig.update_xaxes(tickvals=list(range(n)), ticktext=labels, row=2, col=1)
    fig.update_yaxes(tickvals=list(range(n)), ticktext=labels, autorange="reversed", row=2, col=1)
    fig.update_yaxes(title_text="linkage", row=1, col=1)
    fig.update_layout(
        height=260 + 48 * n,
        margin={"l": 90, "r": 20, "t": 30, "b": 60},
        template="plotly_white",
        title=f"{metric} barrier (✓ connected · ✗ not connected · ? inconclusive; click a cell "
        "for its run)",
        title_font_size=13,
    )
    return fig


def instability_figure(rows: list[dict]) -> go.Figure | None:
    pts = [r for r in rows if isinstance(r.get("value"), (int, float))]
    if not pts:
        return None
    fig = go.Figure(
        go.Scatter(
            x=[r["step"] for r in pts],
            y=[r["value"] for r in pts],
            mode="markers+lines",
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [(r["ci"] or [0, 0])[1] - r["value"] for r in pts],
                "arrayminus": [r["value"] - (r["ci"] or [0, 0])[0] for r in pts],
            },
            text=[r.get("verdict") for r in pts],
            name="barrier",
            meta="instability",
        )
    )
    fig.update_layout(
        title="Instability: barrier between twins vs spawn step (95 % intervals)",
        xaxis_title="step",
        yaxis_title="barrier",
        height=300,
        template="plotly_white",
        margin={"l": 50, "r": 20, "t": 40, "b": 40},
    )
    return fig


def clusters_table(result: dict) -> Any:
    rows = []
    for c in result.get("clusters", []):
        mets = "; ".join(
            f"{ds}: " + ", ".join(f"{m} {_fmt(v, m)}" for m, v in sorted(by.items()))
            for ds, by in (c.get("metrics") or {}).items()
        )
        rows.append(
            html.Tr(
                [
                    html.Td(c["id"]),
                    html.Td(", ".join(c["names"]), className="study-members"),
                    html.Td(mets, className="small"),
                ]
            )
        )
    if not rows:
        return html.Div(
            "Clusters appear once every pair is measured.", className="text-muted small"
        )
    return dbc.Table(
        [
            html.Thead(html.Tr([html.Th("cluster"), html.Th("members"), html.Th("mean metrics")])),
            html.Tbody(rows),
        ],
        size="sm",
        id="study-clusters",
        className="bg-white",
    )


def groups_table(result: dict) -> Any:
    rows = []
    for tag, g in (result.get("groups") or {}).items():
        for side in ("within", "between"):
            s = g[side]
            v = s["verdicts"]
            rows.append(
                html.Tr(
                    [
                        html.Td(tag),
                        html.Td(side),
                        html.Td(s["n"]),
                        html.Td(_fmt(s["mean"], "loss")),
                        html.Td(_fmt(s["median"], "loss")),
                        html.Td(f"✓{v['connected']} ✗{v['not connected']} ?{v['inconclusive']}"),
                    ]
                )
            )
    if not rows:
        return html.Div("No tags to group by.", className="text-muted small")
    return dbc.Table(
        [
            html.Thead(
                html.Tr([html.Th(h) for h in ("tag", "pairs", "n", "mean", "median", "verdicts")])
            ),
            html.Tbody(rows),
        ],
        size="sm",
        id="study-groups",
        className="bg-white",
    )


def _view(body: dict, metric: str) -> tuple:
    result = body.get("result") or {}
    status = body.get("status") or "?"
    prog = result.get("progress") or {}
    done = sum(1 for p in prog.values() if p.get("status") == "done")
    n = len(result.get("checkpoints") or [])
    total = n * (n - 1) // 2
    ev = result.get("evaluations") or {}
    words = f"{done} / {total} pairs"
    if ev.get("full_runs"):
        words += (
            f" · {ev.get('performed', 0)} points evaluated ({ev.get('performed', 0) / ev['full_runs']:.0%} "
            f"of {ev['full_runs']} for full runs)"
        )
    inst = instability_figure(result.get("instability") or [])
    return (
        matrix_figure(result, metric),
        status,
        COLOUR.get(status, "dark"),
        words,
        100 if status == "done" else round(100 * done / total) if total else 0,
        body.get("error") or "",
        clusters_table(result),
        groups_table(result),
        dcc.Graph(figure=inst, id="study-instability", config=GRAPH_CONFIG) if inst else "",
        status in TERMINAL,
    )


def layout(study_id: str | None = None, **_: Any) -> Any:
    if not study_id:
        return dbc.Alert("No study id in the link.", color="warning")
    r = api.get(f"/api/studies/{study_id}")
    if not r.ok or not isinstance(r.body, dict):
        return html.Div(
            [
                html.H3("Study not found"),
                dbc.Alert(
                    r.error() if r.status != 404 else f"There is no study {study_id}.",
                    color="warning",
                    id="study-error",
                ),
            ]
        )
    body = r.body
    metrics = (body.get("result") or {}).get("metrics") or ["loss"]
    metric = "loss" if "loss" in metrics else metrics[0]
    fig, status, colour, words, pct, error, clusters, groups, inst, ended = _view(body, metric)
    host = flask.request.host_url.rstrip("/") if flask.has_request_context() else ""
    share = f"{host}/studies/{study_id}"
    exports = [
        html.A(
            t,
            href=f"/api/studies/{study_id}/export?table={q}",
            id=f"study-export-{q}",
            className="btn btn-sm btn-outline-secondary me-1",
        )
        for t, q in (
            ("JSON", "json"),
            ("matrix CSV", "matrix"),
            ("clusters CSV", "clusters"),
            ("groups CSV", "groups"),
        )
    ]
    return html.Div(
        [
            dcc.Store(id="study-meta", data={"id": study_id}),
            dcc.Location(id="study-go", refresh=True),
            dcc.Interval(id="study-interval", interval=1000, disabled=ended),
            html.H3(
                (body.get("spec") or {}).get("name") or "Study", id="study-title", className="mb-1"
            ),
            html.Div(html.Code(study_id, className="small"), className="mb-2"),
            dbc.Card(
                dbc.CardBody(
                    [
                        html.Div(
                            [
                                dbc.Badge(
                                    status, id="study-status", color=colour, className="me-2 fs-6"
                                ),
                                html.Span(words, id="study-count", className="me-3"),
                                html.Span(error, id="study-error-msg", className="text-danger"),
                            ],
                            className="mb-2",
                        ),
                        dbc.Progress(id="study-progress", value=pct, style={"height": "1rem"}),
                        html.Div(
                            [
                                dbc.Button(
                                    "Cancel study",
                                    id="study-cancel",
                                    color="danger",
                                    outline=True,
                                    size="sm",
                                    disabled=ended,
                                    className="mt-2",
                                ),
                                html.Span(id="study-cancel-msg", className="small ms-2"),
                            ]
                        ),
                    ]
                ),
                className="mb-3",
            ),
            dbc.Row(
                [
                    dbc.Col(
                        [
                            dbc.RadioItems(
                                id="study-metric",
                                value=metric,
                                inline=True,
                                className="mb-1",
                                options=[{"label": m, "value": m} for m in metrics],
                            ),
                            dcc.Graph(
                                id="study-matrix",
                                figure=fig,
                                config=GRAPH_CONFIG,
                                className="border rounded mb-3",
                            ),
                            html.Div(inst, id="study-instability-box"),
                        ],
                        lg=8,
                    ),
                    dbc.Col(
                        [
                            dbc.Card(
                                [
                                    dbc.CardHeader("Clusters"),
                                    dbc.CardBody(clusters, id="study-clusters-box"),
                                ],
                                className="mb-3",
                            ),
                            dbc.Card(
                                [
                                    dbc.CardHeader("Groups: within vs between"),
                                    dbc.CardBody(groups, id="study-groups-box"),
                                ],
                                className="mb-3",
                            ),
                            dbc.Card(
                                [
                                    dbc.CardHeader("Share & export"),
                                    dbc.CardBody(
                                        [
                                            dbc.InputGroup(
                                                [
                                                    dbc.Input(
                                                        id="study-share-link",
                                                        value=share,
                                                        readonly=True,
                                                        size="sm",
                                                    ),
                                                    dbc.InputGroupText(
                                                        dcc.Clipboard(
                                                            target_id="study-share-link",
                                                            title="copy link",
                                                        )
                                                    ),
                                                ],
                                                size="sm",
                                                className="mb-2",
                                            ),
                                            html.Div(exports),
                                        ]
                                    ),
                                ]
                            ),
                        ],
                        lg=4,
                    ),
                ]
            ),
        ]
    )


@callback(
    Output("study-matrix", "figure"),
    Output("study-status", "children"),
    Output("study-status", "color"),
    Output("study-count", "children"),
    Output("study-progress", "value"),
    Output("study-error-msg", "children"),
    Output("study-clusters-box", "children"),
    Output("study-groups-box", "children"),
    Output("study-instability-box", "children"),
    Output("study-interval", "disabled"),
    Output("study-cancel", "disabled"),
    Output("study-metric", "options"),
    Input("study-interval", "n_intervals"),
    Input("study-metric", "value"),
    State("study-meta", "data"),
    prevent_initial_call=True,
)
def _poll(_n: int | None, metric: str, meta: dict):
    r = api.get(f"/api/studies/{meta['id']}")
    if not r.ok or not isinstance(r.body, dict):
        return (no_update,) * 12
    out = _view(r.body, metric or "loss")
    metrics = (r.body.get("result") or {}).get("metrics") or ["loss"]
    return (*out, out[-1], [{"label": m, "value": m} for m in metrics])


@callback(Output("study-go", "href"), Input("study-matrix", "clickData"), prevent_initial_call=True)
def _open(click: dict | None):
    pts = (click or {}).get("points") or []
    run = pts[0].get("customdata") if pts else None
    return f"/runs/{run}" if run else no_update


@callback(
    Output("study-cancel-msg", "children"),
    Input("study-cancel", "n_clicks"),
    State("study-meta", "data"),
    State("settings-token-input", "value"),
    prevent_initial_call=True,
)
def _cancel(_n: int | None, meta: dict, token: str | None):
    r = api.post(f"/api/studies/{meta['id']}/cancel", token=token)
    return "cancelled" if r.ok else r.error()
