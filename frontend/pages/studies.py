"""Studies (``/studies``): every study Redis still has — name, checkpoints, pairs, status —
each linking to its page. Fetched by a callback (``GET /api/studies``; with
``BASIN_API_TOKEN`` set it needs the token from the navbar), refreshed while one runs.
Start a study with ``POST /api/studies`` or ``basin study spec.yaml`` (docs/study.md)."""

from __future__ import annotations

from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, callback, dcc, html

from basin.status import COLOUR as STATUS_COLOUR
from basin.status import TERMINAL
from frontend import api
from frontend.components import data_attrs, fmt_time

dash.register_page(__name__, path="/studies", name="Studies", title="Basin — studies")


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            dcc.Interval(id="studies-interval", interval=3000),
            html.H3("Studies", className="mb-2"),
            html.P(
                [
                    "The barrier matrix of N checkpoints, its clusters, groups and instability. Start one with ",
                    html.Code("POST /api/studies"),
                    " or ",
                    html.Code("basin study spec.yaml"),
                    " (docs/study.md).",
                ],
                className="small text-muted",
            ),
            html.Div(id="studies-error"),
            html.Div(id="studies-table"),
        ]
    )


def studies_table(items: list[dict]) -> Any:
    if not items:
        return dbc.Alert("No studies yet.", color="info", id="studies-empty")
    rows = [
        html.Tr(
            [
                html.Td(
                    html.A(
                        x.get("name") or html.Code(str(x["id"])[:12]),
                        href=f"/studies/{x['id']}",
                        className="studies-link",
                    )
                ),
                html.Td(x.get("checkpoints")),
                html.Td(f"{x.get('runs', 0)} / {x.get('total', 0)} runs queued"),
                html.Td(
                    [
                        dbc.Badge(
                            str(x.get("status")),
                            color=STATUS_COLOUR.get(str(x.get("status")), "dark"),
                        ),
                        html.Div(x.get("error") or "", className="small text-danger"),
                    ]
                ),
                html.Td(fmt_time(x.get("created")), className="text-nowrap"),
            ],
            **data_attrs(id=str(x["id"])),
        )
        for x in items
    ]
    head = html.Thead(
        html.Tr([html.Th(h) for h in ("study", "checkpoints", "runs", "status", "created")])
    )
    return dbc.Table(
        [head, html.Tbody(rows)],
        striped=True,
        hover=True,
        size="sm",
        id="studies-list",
        className="bg-white align-middle",
    )


@callback(
    Output("studies-table", "children"),
    Output("studies-error", "children"),
    Output("studies-interval", "disabled"),
    Input("studies-interval", "n_intervals"),
    Input("settings-token-input", "value"),
)
def _load(_n: int | None, token: str | None):
    r = api.get("/api/studies", token=token)
    if api.needs_token(r):
        return "", dbc.Alert(api.NEEDS_TOKEN.format(what="studies"), color="warning"), True
    if not r.ok or not isinstance(r.body, list):
        return (
            dash.no_update,
            dbc.Alert(f"Could not list studies: {r.error()}", color="danger"),
            True,
        )
    return studies_table(r.body), None, not any(x.get("status") not in TERMINAL for x in r.body)
