"""The Forgetting card's cartography section: when the run's start θA (else its end θB) is a
tune member's final checkpoint with a dataset cartography (issue 25), each forgotten
example on the member's training dynamics map — are the examples forgotten first the
ambiguous or hard-to-learn ones?

Built from ``GET /api/runs/{id}/cartography`` (the forgetting table joined with the
member's ``cartography.csv`` by training-file row): a scatter of confidence (mean gold-label
probability over training) against variability (its standard deviation), each example
coloured by the α at which it is first lost (grey: never lost), and a scatter of α lost
against confidence. Nothing when neither endpoint has a cartography.
"""

from __future__ import annotations

from typing import Any

import dash_bootstrap_components as dbc
import plotly.graph_objects as go
from dash import dcc, html

from frontend import api

GRAPH_CONFIG: dcc.Graph.Config = {
    "displaylogo": False,
    "toImageButtonOptions": {"format": "png", "scale": 2},
}


def map_figure(rows: list[dict]) -> dict:
    """Variability (x) against confidence (y), the dataset map's axes, coloured by α lost."""
    lost = [r for r in rows if r.get("alpha_lost") is not None]
    kept = [r for r in rows if r.get("alpha_lost") is None]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[r["variability"] for r in kept],
            y=[r["confidence"] for r in kept],
            mode="markers",
            name="never lost",
            marker={"color": "#bbbbbb", "size": 7},
            meta="cartography-kept",
            text=[str(r.get("text") or "")[:80] for r in kept],
            hovertemplate="%{text}<br>variability %{x:.3f}<br>confidence %{y:.3f}<extra>never lost</extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[r["variability"] for r in lost],
            y=[r["confidence"] for r in lost],
            mode="markers",
            name="lost at α",
            marker={
                "color": [r["alpha_lost"] for r in lost],
                "colorscale": "Viridis",
                "size": 9,
                "colorbar": {"title": "α lost"},
                "showscale": bool(lost),
            },
            meta="cartography-lost",
            text=[str(r.get("text") or "")[:80] for r in lost],
            hovertemplate="%{text}<br>variability %{x:.3f}<br>confidence %{y:.3f}<br>lost at α=%{marker.color:.3g}"
            "<extra></extra>",
        )
    )
    fig.update_layout(
        title="Training dynamics of the examples (dataset map)",
        xaxis_title="variability",
        yaxis_title="confidence",
        height=340,
        margin={"l": 50, "r": 10, "t": 40, "b": 40},
        template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig.to_plotly_json()


def alpha_figure(rows: list[dict]) -> dict:
    lost = [r for r in rows if r.get("alpha_lost") is not None]
    fig = go.Figure(
        go.Scatter(
            x=[r["confidence"] for r in lost],
            y=[r["alpha_lost"] for r in lost],
            mode="markers",
            marker={
                "color": [r["variability"] for r in lost],
                "colorscale": "Magma",
                "size": 9,
                "colorbar": {"title": "variability"},
            },
            meta="cartography-alpha",
            text=[str(r.get("text") or "")[:80] for r in lost],
            hovertemplate="%{text}<br>confidence %{x:.3f}<br>lost at α=%{y:.3g}<extra></extra>",
        )
    )
    fig.update_layout(
        title="α lost vs training confidence",
        xaxis_title="confidence over training",
        yaxis_title="α lost",
        height=340,
        margin={"l": 50, "r": 10, "t": 40, "b": 40},
        template="plotly_white",
    )
    return fig.to_plotly_json()


def section(run_id: str, token: str | None = None) -> Any:
    """The section for the run, or None when neither endpoint carries a cartography."""
    r = api.get(f"/api/runs/{run_id}/cartography", token=token)
    if not r.ok or not isinstance(r.body, dict) or not r.body.get("checkpoint"):
        return None
    body = r.body
    rows = body.get("rows") or []
    who = body.get("checkpoint_name") or str(body.get("checkpoint"))[:12]
    end = "θA" if body.get("role") == "a" else "θB"
    if not rows:
        return html.Div(
            [
                html.H6("Training dynamics"),
                html.Div(
                    f"{end} ({who}) has a dataset cartography, but none of this run's examples "
                    f"are among its training rows. {body.get('note') or ''}",
                    className="small text-muted",
                ),
            ],
            id="run-cartography",
        )
    words = (
        f"{body.get('matched')} of the {body.get('examples')} examples this run evaluated were training "
        f"rows of {end} ({who}); their training dynamics (Swayamdipta et al. 2020) against where the "
        "path loses them. Hard to learn: low confidence, low variability; ambiguous: high variability."
    )
    return html.Div(
        [
            html.H6(
                "Training dynamics: are the examples forgotten first the ambiguous / hard-to-learn ones?"
            ),
            html.Div(words, className="small mb-2"),
            dbc.Row(
                [
                    dbc.Col(
                        dcc.Graph(
                            id="run-cartography-map", figure=map_figure(rows), config=GRAPH_CONFIG
                        ),
                        md=6,
                    ),
                    dbc.Col(
                        dcc.Graph(
                            id="run-cartography-alpha",
                            figure=alpha_figure(rows),
                            config=GRAPH_CONFIG,
                        ),
                        md=6,
                    ),
                ]
            ),
        ],
        id="run-cartography",
        className="mt-3",
    )
