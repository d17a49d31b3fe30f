"""The run page's "Fitted curve" card: a straight-line run A→B whose endpoints a curve fit
joined (here or from the API) shows the fit's result where a user arriving at the line
sees it — a figure overlaying this line and the fitted curve (loss along α), both
barriers in words (:func:`basin.analysis.barrier.barrier_sentence`: "linearly connected"
for the line, "connected along this curve" for the curve) and links to the fit, the
curve's run and its control checkpoint.

Built from ``GET /api/runs/{id}/fitted`` when the page opens. The curve is overlaid on
this run when the curve's run evaluated the same data (dataset, examples, length, scope,
task, seed); otherwise on the fit's own straight-line evaluation (same data as the
curve by construction), and the card says so. A fit still queued or running gets a
line with its link.
"""

from __future__ import annotations

import logging
from typing import Any

import dash_bootstrap_components as dbc
from dash import dcc, html

from basin import figures
from basin.analysis.barrier import barrier_sentence
from frontend import api
from frontend.components import GRAPH_CONFIG

logger = logging.getLogger(__name__)



def _barrier_words(doc: dict) -> str:
    b = ((doc.get("summary") or {}).get("barrier") or {}).get("loss")
    if not isinstance(b, dict) or not isinstance(b.get("value"), (int, float)):
        return "no loss barrier (an endpoint was not evaluated)"
    vals = [abs(p["metrics"]["loss"]) for p in doc.get("points") or []
            if isinstance((p.get("metrics") or {}).get("loss"), (int, float))]
    return barrier_sentence(b, "loss", magnitude=max(vals, default=1.0),
                            path_type=((doc.get("spec") or {}).get("path") or {}).get("type"))


def _links(e: dict) -> list[Any]:
    out: list[Any] = []
    if e.get("fit"):
        out += [html.A("the fit", href=f"/fits/{e['fit']}", id="run-fitted-fit-link"), html.Span(" · ")]
    if e.get("curve_run"):
        out += [html.A(f"the fitted {e.get('curve')} run", href=f"/runs/{e['curve_run']}",
                       id="run-fitted-curve-link")]
    if e.get("control"):
        out += [html.Span(" · control checkpoint "),
                html.Code(e.get("control_name") or str(e["control"])[:12], id="run-fitted-control")]
    return out


def card(run_id: str, info: dict, points: list[dict], *, names: dict[str, str] | None = None) -> Any:
    """The card for a straight-line run (``None`` when no fit joined its endpoints, or the
    run is not a finished straight line)."""
    spec = info.get("spec") or {}
    if (spec.get("path") or {}).get("type") != "linear" or info.get("status") != "done":
        return None
    r = api.get(f"/api/runs/{run_id}/fitted")
    fits = (r.body or {}).get("fits") if r.ok and isinstance(r.body, dict) else None
    if not fits:
        return None
    done = [e for e in fits if e.get("curve_run") and e.get("curve_status") == "done"]
    body: list[Any] = []
    if done:
        e = done[0]
        try:
            body += _overlay(run_id, info, points, e, names or {})
        except Exception:  # a run that cannot be read: the links still help
            logger.exception("fitted-curve overlay of run %s", run_id)
        body.append(html.Div(_links(e), className="small"))
    pending = [e for e in fits if e.get("status") in ("queued", "running")]
    for e in pending[:1]:
        body.append(html.Div([html.Span(f"A {e.get('curve')} fit between these endpoints is {e['status']}: "),
                              html.A("follow it", href=f"/fits/{e['fit']}", id="run-fitted-pending")],
                             className="small text-muted mt-1"))
    if not body:
        return None
    more = len(done) - 1
    if more > 0:
        body.append(html.Div(f"{more} earlier fitted curve{'s' if more > 1 else ''} for these endpoints: "
                             "see Fits.", className="small text-muted"))
    return dbc.Card([dbc.CardHeader("Fitted curve"), dbc.CardBody(body)], className="mb-3", id="run-fitted-card")


def _overlay(run_id: str, info: dict, points: list[dict], e: dict, names: dict[str, str]) -> list[Any]:
    curve, status = api.run_document(e["curve_run"])
    if curve is None or status != "done":
        return []
    line: dict | None = api.as_document(info, points)
    note = ""
    if not e.get("same_data"):
        line = None
        if e.get("line_run") and e["line_run"] != run_id:
            line, lstatus = api.run_document(e["line_run"])
            line = line if lstatus == "done" else None
        note = ("The curve was evaluated on other data than this run (dataset, examples, length, scope or "
                "seed), so it is drawn with the fit's own straight-line evaluation." if line is not None else
                "The curve was evaluated on other data than this run; its own page has its figures.")
    out: list[Any] = []
    if line is not None:
        fig = figures.overlay_figure([line, curve], "loss", names=names,
                                     labels=["straight line", f"fitted {e.get('curve')}"])
        fig.update_layout(title="Straight line vs fitted curve — loss along α", height=380)
        out.append(dcc.Graph(figure=fig, id="run-fitted-overlay", config=GRAPH_CONFIG))
        out.append(html.Ul([html.Li(f"straight line: {_barrier_words(line)}", id="run-fitted-line-barrier"),
                            html.Li(f"fitted {e.get('curve')}: {_barrier_words(curve)}",
                                    id="run-fitted-curve-barrier")], className="small mb-1"))
    if note:
        out.append(html.Div(note, className="small text-muted", id="run-fitted-note"))
    return out
