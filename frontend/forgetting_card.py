"""The run page's "Forgetting" card (issue 10, 000 Q3): which examples a 1D classification
run kept with ``per_example: true`` loses along the path, where, and whether it regains them.

Built from ``GET /api/runs/{id}/forgetting`` (:func:`basin.analysis.forgetting.forgetting`):
a histogram of the α at which examples are first lost, a sortable table of the examples
correct at the start (text, label, α lost, regained, confidence at the start), a scatter of
α lost against that confidence (how easy the example was for θA), and the CSV download.
Shown once the run is done; a finished classification run without per-example results gets
one line saying how to get the card.
"""

from __future__ import annotations

from typing import Any

import dash_bootstrap_components as dbc
import plotly.graph_objects as go
from dash import dash_table, dcc, html

from basin import figures
from basin.paths import is_1d
from basin.tasks import keeps_column
from frontend import api
from frontend.components import GRAPH_CONFIG

#: The table's columns: (row key, header).
COLUMNS = (("text", "text"), ("label", "label"), ("alpha_lost", "α lost"), ("regained", "regained"),
           ("confidence_at_start", "confidence at start"))


def applies(spec: dict) -> bool:
    """Whether forgetting can be asked of this run at all: a 1D classification path."""
    return (keeps_column(spec.get("task", "classification"), "correct")
            and is_1d((spec.get("path") or {}).get("type")))


def _histogram(table: dict) -> dict:
    bins = table.get("histogram") or []
    fig = go.Figure(go.Bar(x=[b["alpha"] for b in bins], y=[b["lost"] for b in bins],
                           marker_color=figures.BARRIER_COLOUR, name="lost", meta="forgetting-histogram",
                           hovertemplate="α=%{x:.4g}<br>%{y} examples first lost<extra></extra>"))
    fig.update_layout(title="Examples first lost at α", xaxis_title="α", yaxis_title="examples",
                      height=300, margin={"l": 50, "r": 10, "t": 40, "b": 40}, template="plotly_white",
                      bargap=0.1)
    return fig.to_plotly_json()


def _scatter(table: dict) -> dict:
    lost = [r for r in table.get("rows") or []
            if r.get("alpha_lost") is not None and isinstance(r.get("confidence_at_start"), (int, float))]
    fig = go.Figure(go.Scatter(
        x=[r["confidence_at_start"] for r in lost], y=[r["alpha_lost"] for r in lost], mode="markers",
        marker={"color": [("#2a9d8f" if r.get("regained") else figures.BARRIER_COLOUR) for r in lost],
                "size": 8, "opacity": 0.8},
        customdata=[r["index"] for r in lost], text=[str(r.get("text") or "")[:80] for r in lost],
        meta="forgetting-scatter",
        hovertemplate="%{text}<br>confidence at start %{x:.3f}<br>lost at α=%{y:.4g}<extra></extra>"))
    fig.update_layout(title="α lost vs confidence at start",
                      xaxis_title="P(true label) at the start", yaxis_title="α lost", height=300,
                      margin={"l": 50, "r": 10, "t": 40, "b": 40}, template="plotly_white")
    return fig.to_plotly_json()


def _cell(key: str, v: Any) -> Any:
    if v is None:  # numeric columns stay empty (they sort as numbers), never lost: "—"
        return "—" if key == "regained" else None
    if key == "regained":
        return "yes" if v else "no"
    if isinstance(v, float):
        return round(v, 4)
    return v


def card_body(run_id: str, table: dict) -> Any:
    """The card's contents for a forgetting table (the API's JSON answer)."""
    c = table.get("counts") or {}
    rows = [{k: _cell(k, r.get(k)) for k, _ in COLUMNS} | {"index": r.get("index")}
            for r in table.get("rows") or []]
    words = (f"{c.get('correct_at_start', len(rows))} of {c.get('examples', '?')} examples are correct at "
             f"α = {table.get('start', 0):.3g}; {c.get('lost', 0)} are lost on the way to α = "
             f"{table.get('end', 1):.3g}, {c.get('regained', 0)} of them regained; "
             f"{c.get('never_lost', 0)} never lost. Scatter: green = regained later, red = not.")
    return html.Div([
        html.Div(words, className="small mb-2", id="run-forgetting-counts"),
        dbc.Row([
            dbc.Col(dcc.Graph(id="run-forgetting-histogram", figure=_histogram(table), config=GRAPH_CONFIG),
                    md=6),
            dbc.Col(dcc.Graph(id="run-forgetting-scatter", figure=_scatter(table), config=GRAPH_CONFIG), md=6),
        ], className="mb-2"),
        dash_table.DataTable(  # type: ignore[attr-defined]  # dash_table builds its classes at import
            id="run-forgetting-table", data=rows,
            columns=[{"name": h, "id": k, **({"type": "numeric"} if k in ("alpha_lost", "confidence_at_start")
                                              else {})} for k, h in COLUMNS],
            sort_action="native", page_action="none",  # every row, in a scrolling box
            style_table={"overflowX": "auto", "maxHeight": "420px", "overflowY": "auto"},
            style_cell={"fontSize": "0.85rem", "textAlign": "left", "maxWidth": "420px",
                        "whiteSpace": "normal", "height": "auto"},
            style_header={"fontWeight": "600", "cursor": "pointer"},
        ),
        html.A("CSV", href=f"/api/runs/{run_id}/forgetting?format=csv", id="run-forgetting-csv",
               className="btn btn-sm btn-outline-secondary mt-2", download=f"basin-forgetting-{run_id[:12]}.csv"),
        html.Span(" click a column header to sort", className="small text-muted ms-2"),
    ])


def card(run_id: str, spec: dict, status: str | None, token: str | None = None) -> Any:
    """The Forgetting card for a run, or ``None`` when it has none to show (not a 1D
    classification run, or not done yet)."""
    if not applies(spec) or status != "done":
        return None
    if not spec.get("per_example"):
        body: Any = html.Div("Run it again with per-example results (the new-run form's checkbox, or "
                             "per_example: true in the spec) to see which examples are forgotten along the path.",
                             className="small text-muted", id="run-forgetting-none")
    else:
        r = api.get(f"/api/runs/{run_id}/forgetting", token=token)
        if r.ok and isinstance(r.body, dict):
            from frontend.cartography_card import section

            body = html.Div([card_body(run_id, r.body), section(run_id, token)])  # + a tune member's dynamics
        else:
            body = dbc.Alert(r.error(), color="warning", className="mb-0", id="run-forgetting-error")
    return dbc.Card([dbc.CardHeader("Forgetting"), dbc.CardBody(body)], className="mb-3", id="run-forgetting-card")
