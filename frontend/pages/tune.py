"""Tune job (``/tunes/<tune_id>``): a family training live — each member's training loss (one
line per member), the family's progress and ETA, cancel; the members with their tags,
status, attempt, held-out accuracy and links to their stored checkpoints.

The page polls ``GET /api/tunes/{id}`` (a Python callback every 700 ms) until the job has ended.
"""

from __future__ import annotations

from typing import Any

import dash
import dash_bootstrap_components as dbc
import plotly.graph_objects as go
from dash import Input, Output, State, callback, dcc, html

from basin.status import COLOUR, TERMINAL
from frontend import api
from frontend.components import GRAPH_CONFIG, data_attrs

dash.register_page(
    __name__, path_template="/tunes/<tune_id>", name="Tune job", title="Basin — tune job"
)


def loss_figure(members: list[dict]) -> go.Figure:
    """One line per member: its training loss (mean over each logged stride) against the step."""
    fig = go.Figure()
    for m in members:
        losses = m.get("losses") or []
        fig.add_trace(
            go.Scatter(
                x=[p["step"] for p in losses],
                y=[p["loss"] for p in losses],
                mode="lines",
                name=str(m.get("name") or m.get("index")),
                meta=f"loss-{m.get('index')}",
            )
        )
    fig.update_layout(
        title="Training loss per member",
        xaxis_title="step",
        yaxis_title="loss",
        margin={"l": 50, "r": 20, "t": 40, "b": 40},
        height=360,
        template="plotly_white",
        legend={"font": {"size": 10}},
    )
    return fig


def _eta(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return ""
    return f"ETA {s:.0f} s" if s < 120 else f"ETA {s / 60:.1f} min"


def _acc(m: dict) -> str:
    metrics = m.get("metrics") or {}
    for key in ("accuracy", "eval_accuracy", "heldout_accuracy"):
        v = metrics.get(key)
        if isinstance(v, (int, float)):
            return f"{v:.3f}"
    v = metrics.get("loss")
    return f"loss {v:.3g}" if isinstance(v, (int, float)) else ""


def members_table(members: list[dict]) -> Any:
    head = html.Thead(
        html.Tr(
            [
                html.Th(h)
                for h in (
                    "member",
                    "method",
                    "seed",
                    "lr",
                    "status",
                    "step",
                    "attempt",
                    "held-out accuracy",
                    "checkpoints",
                )
            ]
        )
    )
    rows = []
    for m in members:
        status = str(m.get("status") or "?")
        tags = m.get("tags") or {}
        links: list[Any] = []
        if m.get("final"):
            links.append(
                html.A(
                    ["final ", html.Code(str(m["final"])[:12])],
                    href=f"/checkpoints#{m['final']}",
                    className="tune-final me-2",
                )
            )
        steps = [c for c in m.get("checkpoints") or [] if c.get("id")]
        if steps:
            links.append(
                html.Span(
                    f"{len(steps)} step checkpoints",
                    className="small text-muted",
                    title=", ".join(f"step {c['step']}: {str(c['id'])[:12]}" for c in steps),
                )
            )
        attempt = int(m.get("attempt") or 1)
        rows.append(
            html.Tr(
                [
                    html.Td(str(m.get("name") or m.get("index"))),
                    html.Td(str(tags.get("method") or "")),
                    html.Td(str(tags.get("seed") if tags.get("seed") is not None else "")),
                    html.Td(str(tags.get("lr") or "")),
                    html.Td(
                        [
                            dbc.Badge(status, color=COLOUR.get(status, "dark")),
                            html.Div(m.get("error") or "", className="small text-danger"),
                        ]
                    ),
                    html.Td(f"{m.get('step', 0)} / {m.get('total', '?')}"),
                    html.Td(
                        str(attempt)
                        + (
                            f" (worker {m.get('lost_worker')} lost)"
                            if attempt > 1 and m.get("lost_worker")
                            else ""
                        )
                    ),
                    html.Td(_acc(m), className="tune-acc"),
                    html.Td(links),
                ],
                **data_attrs(member=str(m.get("index")), status=status),
            )
        )
    return dbc.Table(
        [head, html.Tbody(rows)],
        size="sm",
        striped=True,
        id="tune-members",
        className="bg-white align-middle",
    )


def _view(body: dict) -> tuple:
    status = str(body.get("status") or "?")
    done, total = int(body.get("steps_done") or 0), int(body.get("steps_total") or 0)
    pct = 100 if status == "done" else round(100 * done / total) if total else 0
    members = body.get("member_list") or []
    label = f"{body.get('done_members', 0)} of {body.get('members', 0)} members done · {done} / {total} steps"
    return (
        loss_figure(members),
        status,
        COLOUR.get(status, "dark"),
        pct,
        label,
        _eta(body.get("eta_s")),
        body.get("error") or "",
        members_table(members),
        status in TERMINAL,
        status in TERMINAL,
    )


def layout(tune_id: str | None = None, **_: Any) -> Any:
    if not tune_id:
        return dbc.Alert("No tune job id in the link.", color="warning")
    r = api.get(f"/api/tunes/{tune_id}")
    if not r.ok or not isinstance(r.body, dict):
        return html.Div(
            [
                html.H3("Tune job not found"),
                dbc.Alert(
                    r.error() if r.status != 404 else f"There is no tune job {tune_id}.",
                    color="warning",
                    id="tune-error",
                ),
            ]
        )
    body = r.body
    spec, names = body.get("spec") or {}, body.get("names") or {}
    (fig, status, colour, pct, label, eta, error, table, stop, ended) = _view(body)
    return html.Div(
        [
            dcc.Store(id="tune-meta", data={"id": tune_id}),
            dcc.Interval(id="tune-interval", interval=700, disabled=stop),
            html.H3(f"Tune: {body.get('name')}", id="tune-title", className="mb-1"),
            html.Div(
                [
                    html.Code(tune_id, className="small me-2"),
                    html.Span(
                        f"base {names.get(spec.get('base'), spec.get('base'))} · dataset "
                        f"{names.get(spec.get('dataset'), spec.get('dataset'))} · {spec.get('steps')} steps "
                        "per member",
                        className="small text-muted",
                    ),
                ],
                className="mb-2",
            ),
            dbc.Card(
                dbc.CardBody(
                    [
                        html.Div(
                            [
                                dbc.Badge(
                                    status, id="tune-status", color=colour, className="me-2 fs-6"
                                ),
                                html.Span(eta, id="tune-eta", className="text-muted me-3"),
                                html.Span(error, id="tune-error-msg", className="text-danger"),
                            ],
                            className="mb-2",
                        ),
                        dbc.Progress(
                            id="tune-progress", value=pct, label=label, style={"height": "1.4rem"}
                        ),
                        html.Div(
                            [
                                dbc.Button(
                                    "Cancel tune job",
                                    id="tune-cancel",
                                    color="danger",
                                    outline=True,
                                    size="sm",
                                    disabled=ended,
                                    className="mt-2",
                                ),
                                html.Span(id="tune-cancel-msg", className="small ms-2"),
                            ]
                        ),
                    ]
                ),
                className="mb-3",
            ),
            dcc.Graph(id="tune-loss", figure=fig, config=GRAPH_CONFIG, className="border rounded mb-3"),
            html.Div(table, id="tune-members-box"),
        ]
    )


@callback(
    Output("tune-loss", "figure"),
    Output("tune-status", "children"),
    Output("tune-status", "color"),
    Output("tune-progress", "value"),
    Output("tune-progress", "label"),
    Output("tune-eta", "children"),
    Output("tune-error-msg", "children"),
    Output("tune-members-box", "children"),
    Output("tune-interval", "disabled"),
    Output("tune-cancel", "disabled"),
    Input("tune-interval", "n_intervals"),
    State("tune-meta", "data"),
    prevent_initial_call=True,
)
def _poll(_n: int, meta: dict):
    r = api.get(f"/api/tunes/{meta['id']}")
    if not r.ok or not isinstance(r.body, dict):
        raise dash.exceptions.PreventUpdate
    return _view(r.body)


@callback(
    Output("tune-cancel-msg", "children"),
    Input("tune-cancel", "n_clicks"),
    State("tune-meta", "data"),
    State("settings-token-input", "value"),
    prevent_initial_call=True,
)
def _cancel(_n: int, meta: dict, token: str | None):
    r = api.post(f"/api/tunes/{meta['id']}/cancel", token=token)
    return "cancelling…" if r.ok else r.error()
