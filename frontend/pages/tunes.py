"""Tune (``/tunes``): train a family of fine-tuned checkpoints, and the tune jobs Redis still has.

The form builds a :class:`basin.tune.TuneSpec` (base checkpoint, training dataset, methods,
seeds, learning rate, steps, checkpoints every N steps, cartography); a YAML spec pasted
below it is sent instead when it is not empty (``POST /api/tunes`` with
``Content-Type: application/yaml``: the API parses it). A created job opens its page
(``/tunes/<id>``, :mod:`frontend.pages.tune`). The list is fetched by a callback
(``GET /api/tunes``), refreshed every 3 s while a job is queued or running.
"""

from __future__ import annotations

from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, dcc, html, no_update

from basin.status import COLOUR as STATUS_COLOUR
from basin.status import TERMINAL
from frontend import api
from frontend.components import data_attrs, fmt_time

dash.register_page(__name__, path="/tunes", name="Tune", title="Basin — tune")

METHODS = [
    ("full fine-tuning", "full"),
    ("LoRA", "lora"),
    ("IA³", "ia3"),
    ("prefix tuning", "prefix"),
    ("bottleneck adapter", "adapter"),
]

EXAMPLE_YAML = """# a family: 2 seeds × {full, LoRA}, a checkpoint every 10 steps
base: my-base-checkpoint
dataset: my-train.csv
methods: [{name: full}, {name: lora, learning_rates: [0.001]}]
seeds: [0, 1]
steps: 50
save_every: 10
batch_size: 16
cartography: true
"""


def _field(label: str, control: Any, width: int = 3) -> Any:
    return dbc.Col([dbc.Label(label, className="small mb-0"), control], md=width)


def layout(**_: Any) -> html.Div:
    form = dbc.Card(
        dbc.CardBody(
            [
                html.H5("New family", className="card-title"),
                dbc.Row(
                    [
                        _field(
                            "base checkpoint",
                            dcc.Dropdown(id="tune-base", placeholder="a stored checkpoint"),
                            4,
                        ),
                        _field(
                            "training dataset",
                            dcc.Dropdown(id="tune-dataset", placeholder="a stored dataset"),
                            4,
                        ),
                        _field(
                            "family name", dbc.Input(id="tune-family", value="family", size="sm"), 4
                        ),
                    ],
                    className="g-2 mb-2",
                ),
                dbc.Row(
                    [
                        _field(
                            "methods",
                            dbc.Checklist(
                                id="tune-methods",
                                options=[{"label": a, "value": b} for a, b in METHODS],
                                value=["full"],
                                inline=True,
                            ),
                            6,
                        ),
                        _field(
                            "seeds (comma-separated)",
                            dbc.Input(id="tune-seeds", value="0, 1", size="sm"),
                            3,
                        ),
                        _field(
                            "learning rate", dbc.Input(id="tune-lr", value="1e-4", size="sm"), 3
                        ),
                    ],
                    className="g-2 mb-2",
                ),
                dbc.Row(
                    [
                        _field(
                            "steps",
                            dbc.Input(id="tune-steps", type="number", value=100, min=1, size="sm"),
                            2,
                        ),
                        _field(
                            "checkpoint every",
                            dbc.Input(id="tune-every", type="number", value=20, min=1, size="sm"),
                            2,
                        ),
                        _field(
                            "batch size",
                            dbc.Input(id="tune-batch", type="number", value=16, min=1, size="sm"),
                            2,
                        ),
                        _field(
                            "training examples",
                            dbc.Input(
                                id="tune-examples", type="number", value=2048, min=1, size="sm"
                            ),
                            2,
                        ),
                        _field(
                            "",
                            dbc.Checkbox(
                                id="tune-cartography", label="dataset cartography", value=True
                            ),
                            4,
                        ),
                    ],
                    className="g-2 mb-2",
                ),
                dbc.Label(
                    [
                        "or a YAML spec (sent as it is when not empty; its fields: ",
                        html.Code("docs/tune.md"),
                        ")",
                    ],
                    className="small mb-0",
                ),
                dbc.Textarea(
                    id="tune-yaml",
                    placeholder=EXAMPLE_YAML,
                    rows=6,
                    className="font-monospace small mb-2",
                ),
                dbc.Button("Start tuning", id="tune-start", color="primary", size="sm"),
                html.Div(id="tune-create-msg", className="small text-danger mt-2"),
                dcc.Location(id="tune-location", refresh=True),
            ]
        ),
        className="mb-3",
    )
    return html.Div(
        [
            dcc.Interval(id="tunes-interval", interval=3000),
            html.H3("Tune"),
            html.P(
                [
                    "Train a family of checkpoints from one base: the product of the seeds, methods and learning "
                    "rates you pick, each member on any free worker, its checkpoints stored with tags (",
                    html.Code("family, seed, order, split, method, lr, step"),
                    ') so paths, planes and studies can pick "same everything but X".',
                ],
                className="small text-muted",
            ),
            form,
            html.Div(id="tunes-error"),
            html.Div(id="tunes-table"),
        ]
    )


def tune_body(
    base: str | None,
    dataset: str | None,
    family: str | None,
    methods: list[str] | None,
    seeds: str | None,
    lr: str | None,
    steps: Any,
    every: Any,
    batch: Any,
    examples: Any,
    cartography: bool | None,
) -> dict[str, Any]:
    """The spec the form describes; ``ValueError`` saying which field is wrong."""
    if not base or not dataset:
        raise ValueError("pick a base checkpoint and a training dataset")
    try:
        seed_list = [int(s) for s in (seeds or "").replace(";", ",").split(",") if s.strip()]
    except ValueError:
        raise ValueError("seeds: whole numbers separated by commas") from None
    try:
        rate = float(lr or "")
    except ValueError:
        raise ValueError("learning rate: a number such as 1e-4") from None
    body: dict[str, Any] = {
        "base": base,
        "dataset": dataset,
        "family": (family or "family").strip(),
        "methods": [{"name": m} for m in (methods or [])],
        "seeds": seed_list or [0],
        "learning_rates": [rate],
        "cartography": bool(cartography),
    }
    for key, v in (
        ("steps", steps),
        ("save_every", every),
        ("batch_size", batch),
        ("max_examples", examples),
    ):
        if v not in (None, ""):
            try:
                body[key] = int(v)
            except (TypeError, ValueError):
                raise ValueError(f"{key}: a whole number") from None
    return body


@callback(
    Output("tune-base", "options"),
    Output("tune-dataset", "options"),
    Input("settings-token-input", "value"),
)
def _options(token: str | None):
    ck = api.get("/api/checkpoints", token=token)
    ds = api.get("/api/datasets", token=token)
    cks = [
        c for c in (ck.body if ck.ok and isinstance(ck.body, list) else []) if not c.get("adapter")
    ]
    dss = ds.body if ds.ok and isinstance(ds.body, list) else []
    return (
        [{"label": str(c.get("name")), "value": str(c.get("name"))} for c in cks],
        [{"label": str(d.get("name")), "value": str(d.get("name"))} for d in dss],
    )


@callback(
    Output("tune-location", "href"),
    Output("tune-create-msg", "children"),
    Input("tune-start", "n_clicks"),
    State("tune-base", "value"),
    State("tune-dataset", "value"),
    State("tune-family", "value"),
    State("tune-methods", "value"),
    State("tune-seeds", "value"),
    State("tune-lr", "value"),
    State("tune-steps", "value"),
    State("tune-every", "value"),
    State("tune-batch", "value"),
    State("tune-examples", "value"),
    State("tune-cartography", "value"),
    State("tune-yaml", "value"),
    State("settings-token-input", "value"),
    prevent_initial_call=True,
)
def _start(
    _n: int,
    base,
    dataset,
    family,
    methods,
    seeds,
    lr,
    steps,
    every,
    batch,
    examples,
    carto,
    text: str | None,
    token: str | None,
):
    if text and text.strip():
        r = api.post(
            "/api/tunes",
            content=text.encode(),
            headers={"Content-Type": "application/yaml"},
            token=token,
        )
    else:
        try:
            body = tune_body(
                base, dataset, family, methods, seeds, lr, steps, every, batch, examples, carto
            )
        except ValueError as e:
            return no_update, str(e)
        r = api.post("/api/tunes", json=body, token=token)
    if not r.ok or not isinstance(r.body, dict):
        return no_update, r.error()
    return f"/tunes/{r.body['id']}", ""


def tunes_table(tunes: list[dict]) -> Any:
    """The table of tune jobs (newest first, as the API lists them)."""
    if not tunes:
        return dbc.Alert("No tune jobs yet.", color="info", id="tunes-empty")
    head = html.Thead(
        html.Tr([html.Th(h) for h in ("job", "name", "status", "members", "steps", "created")])
    )
    rows = []
    for x in tunes:
        status = str(x.get("status") or "?")
        rows.append(
            html.Tr(
                [
                    html.Td(
                        html.A(
                            html.Code(str(x["id"])[:12]),
                            href=f"/tunes/{x['id']}",
                            className="tunes-link",
                        )
                    ),
                    html.Td(str(x.get("name") or "")),
                    html.Td(
                        [
                            dbc.Badge(status, color=STATUS_COLOUR.get(status, "dark")),
                            html.Div(x.get("error") or "", className="small text-danger"),
                        ]
                    ),
                    html.Td(f"{x.get('done_members', 0)} done / {x.get('members', '?')}"),
                    html.Td(str(x.get("steps") or "")),
                    html.Td(fmt_time(x.get("created")), className="text-nowrap"),
                ],
                **data_attrs(id=str(x["id"])),
            )
        )
    return dbc.Table(
        [head, html.Tbody(rows)],
        striped=True,
        hover=True,
        size="sm",
        id="tunes-list",
        className="bg-white align-middle",
    )


@callback(
    Output("tunes-table", "children"),
    Output("tunes-error", "children"),
    Output("tunes-interval", "disabled"),
    Input("tunes-interval", "n_intervals"),
    Input("settings-token-input", "value"),
)
def _load(_n: int | None, token: str | None):
    r = api.get("/api/tunes", token=token)
    if api.needs_token(r):
        return "", dbc.Alert(api.NEEDS_TOKEN.format(what="tune jobs"), color="warning"), True
    if not r.ok or not isinstance(r.body, list):
        return no_update, dbc.Alert(f"Could not list tune jobs: {r.error()}", color="danger"), True
    live = any(x.get("status") not in TERMINAL for x in r.body)
    return tunes_table(r.body), None, not live
