"""Run (``/runs/<run_id>``, the share link): live figures, progress, summary, exports.

The page is rendered from two API calls (the run's detail, which names its checkpoints,
and its points' views); then the browser polls only the points after the last cursor
(``assets/basin.js: basin.poll``, one call a tick) and patches the figures. Python
rebuilds the figures (anchors, chord, barrier, trajectory) when the status changes, when
the grid refines by about a factor of two, or when the view is toggled, from the API
again: the browser's point store is never sent back to the server.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import dash
import dash_bootstrap_components as dbc
import flask
from dash import (
    ALL,
    ClientsideFunction,
    Input,
    Output,
    State,
    callback,
    clientside_callback,
    dcc,
    html,
)

from basin import figures
from basin.analysis.barrier import barrier_sentence
from basin.analysis.trend import trend_sentence
from basin.paths import is_1d, refs_of
from basin.status import COLOUR as STATUS_COLOUR
from basin.status import TERMINAL
from basin.tasks import keeps_column
from frontend import api, fitted_card, forgetting_card
from frontend.components import GRAPH_CONFIG, data_attrs, estimate_block, plural, spec_yaml

logger = logging.getLogger(__name__)

dash.register_page(__name__, path_template="/runs/<run_id>", name="Run", title="Basin — run")



def _names(info: dict) -> dict[str, str]:
    """Store id → what the page calls it: the run detail's ``labels`` (the name in the store
    now, else the name when the run was made), so no listing of the whole store is needed."""
    names = {k: v for k, v in (info.get("labels") or {}).items() if isinstance(v, str)}
    for ident, written in (info.get("names") or {}).items():  # a server without labels
        if written != ident:
            names.setdefault(ident, written)
    return names


def build_figures(info: dict, points: list[dict], kind: str, names: dict[str, str],
                  equal: bool | None = None) -> list[dict]:
    """One figure per metric of the run (plotly JSON dicts). Planes: ``equal`` axis scales
    (default: the path type's, :func:`basin.figures.equal_axes_default`) or fill the box."""
    doc = api.as_document(info, points)
    spec = doc["spec"]
    live = info.get("status") not in TERMINAL
    out = []
    for m in spec.get("metrics") or ["loss"]:
        if is_1d(spec.get("path", {}).get("type")):
            fig = figures.line_figure(doc, m, names=names)
        else:
            fig = figures.plane_figure(doc, m, kind or "heatmap", names=names, equal=equal)
        if kind == "surface" and not is_1d(spec.get("path", {}).get("type")):
            # a 3D scene needs room: tall, with small margins so the axis titles are not clipped
            fig.update_layout(height=680, margin={"l": 10, "r": 10, "b": 10})
        else:
            fig.update_layout(height=430 if len(spec.get("metrics") or []) > 1 else 520)
        out.append(_with_band_slot(fig.to_plotly_json(), spec, live, points, m))
    return out


def _with_band_slot(fig: dict, spec: dict, live: bool, points: list[dict], metric: str) -> dict:
    """A 1D figure's 95 % band trace (``meta="band"``, drawn by :func:`basin.figures.line_figure`
    once two points carry intervals) moved just after the curve(s), and for a live run always
    present (the intervals so far; the same polygon: upper limits by α, then the lower ones
    back), so that ``basin.poll`` finds it at the same index before and after a rebuild."""
    data = fig.get("data") or []
    if not is_1d((spec.get("path") or {}).get("type")):
        return fig
    # At a fixed index, right after the curve (and the ensemble's curve): a rebuild adds anchors,
    # chord and barrier, and a poll's patch computed on the figure before it must still find it.
    at = 1 + max((i for i, t in enumerate(data) if t.get("meta") in ("curve", "ensemble")), default=0)
    band = [t for t in data if t.get("meta") == "band"]
    if band or not live:
        fig["data"] = [t for t in data[:at] if t.get("meta") != "band"] + band + [
            t for t in data[at:] if t.get("meta") != "band"]
        return fig
    scale = figures.metric_scale(metric)
    iv = sorted((float(p["coords"]["alpha"]), float(lims[0]) * scale, float(lims[1]) * scale)
                for p in points
                if isinstance(lims := (p.get("intervals") or {}).get(metric), list) and len(lims) == 2
                and all(isinstance(v, (int, float)) for v in lims)
                and isinstance((p.get("coords") or {}).get("alpha"), (int, float)))
    back = iv[::-1]
    data.insert(at, {"type": "scatter", "x": [t[0] for t in iv] + [t[0] for t in back],
                 "y": [t[2] for t in iv] + [t[1] for t in back], "mode": "lines", "fill": "toself",
                 "fillcolor": figures.BAND_COLOUR, "line": {"width": 0}, "name": "95 % interval",
                 "hoverinfo": "skip", "meta": "band", "zorder": -1})
    fig["data"] = data
    return fig


# ---- the sample viewer (generation runs) ---------------------------------------------------

#: Sample fields that are not scores: shown as text columns first.
_TEXT_FIELDS = ("prompt", "text")


def _slider_marks(alphas: list[float]) -> dict[float, str]:
    """One mark per sampled α (the slider snaps to them); about eight of them labelled."""
    every = max(1, math.ceil(len(alphas) / 8))
    return {a: (f"{a + 0.0:.3g}" if k % every == 0 or k == len(alphas) - 1 else "")
            for k, a in enumerate(alphas)}


def sample_table(point: Mapping[str, Any]) -> Any:
    """A point's generations: prompt, text, then each score (labelled by the metric registry)."""
    samples = [s for s in point.get("samples") or [] if isinstance(s, dict)]
    scores: list[str] = []
    for s in samples:
        scores += [k for k in s if k not in _TEXT_FIELDS and k not in scores]
    head = html.Thead(html.Tr([html.Th("prompt"), html.Th("generated text"),
                               *[html.Th(figures.metric_label(k)) for k in scores]]))

    def cell(v: Any) -> str:
        return _fmt(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v or "")

    rows = [html.Tr([html.Td(str(s.get("prompt", "")), className="run-sample-prompt text-muted"),
                     html.Td(str(s.get("text", "")), className="run-sample-text"),
                     *[html.Td(cell(s.get(k)), className=f"run-sample-score run-sample-{k}") for k in scores]],
                    className="run-sample-row")
            for s in samples]
    return dbc.Table([head, html.Tbody(rows)], size="sm", hover=True, className="mb-0 small",
                     id="run-sample-rows")


def _samples_card() -> Any:
    return dbc.Card([
        dbc.CardHeader("Samples: pick a point (click it on a curve, or slide α)"),
        dbc.CardBody([
            html.Div("No samples yet.", id="run-sample-point", className="small text-muted mb-1"),
            dcc.Slider(id="run-sample-alpha", min=0, max=1, step=None, marks={}, value=None, included=False,
                       allow_direct_input=False, updatemode="mouseup", className="mb-2"),
            html.Div(id="run-sample-table", style={"maxHeight": "420px", "overflow": "auto"}),
        ]),
    ], id="run-samples", className="mb-3")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v + 0.0:.4g}"  # never a negative zero
    return str(v)


def summary_rows(info: dict, points: list[dict]) -> list[tuple[str, str]]:
    """Summary numbers shown on the page: barrier, distance, min/max per metric."""
    spec = info.get("spec") or {}
    summary = info.get("summary") or {}
    rows: list[tuple[str, str]] = []
    # a generation run leads with the trend of its attribute (basin.analysis.trend), then the rest
    for m, t in (summary.get("trend") or {}).items():
        if isinstance(t, dict) and "start" in t:
            rows.append((f"{figures.metric_name(m)} trend", trend_sentence(m, t)))
    gen = summary.get("generation")
    if isinstance(gen, dict) and gen.get("reference"):
        ref = str(gen["reference"])
        rows.append(("perplexity reference LM", str((info.get("names") or {}).get(ref, ref))))
    for m, b in (summary.get("barrier") or {}).items():
        if isinstance(b, dict) and isinstance(b.get("value"), (int, float)):
            vals = [abs(p["metrics"][m]) for p in points if isinstance((p.get("metrics") or {}).get(m), (int, float))]
            # "barrier 0.12 nats at α = 0.50", or "no barrier" when it is zero within its precision
            # with its 95 % interval and the calibrated verdict in words (linear or curve)
            text = barrier_sentence(b, m, magnitude=max(vals, default=1.0),
                                    path_type=(spec.get("path") or {}).get("type"))
            rows.append((figures.metric_name(m), text))  # "perplexity of samples", not sample_perplexity
    dist = summary.get("distance") or {}
    if isinstance(dist, dict) and dist.get("l2") is not None:
        rows.append(("‖θA − θB‖₂", _fmt(dist["l2"])))
        if dist.get("cosine") is not None:
            rows.append(("cosine(θA, θB)", figures.cosine_text(dist["cosine"])))
    ev = (summary.get("trajectory") or {}).get("explained_variance") if isinstance(summary.get("trajectory"), dict) else None
    if ev:
        rows.append(("explained variance (2 dims)", ", ".join(_fmt(v) for v in ev)))
    for m in spec.get("metrics") or []:
        vals = [(p["metrics"][m], p["coords"]) for p in points
                if isinstance((p.get("metrics") or {}).get(m), (int, float))]
        if vals:
            lo = min(vals, key=lambda t: t[0])
            hi = max(vals, key=lambda t: t[0])
            where = lambda c: ", ".join(f"{k}={_fmt(v)}" for k, v in c.items())  # noqa: E731
            rows.append((f"{figures.metric_name(m)} min / max", f"{_fmt(lo[0])} ({where(lo[1])}) / {_fmt(hi[0])} ({where(hi[1])})"))
    return rows


def _summary_table(info: dict, points: list[dict]) -> Any:
    rows = summary_rows(info, points)
    if not rows:
        return html.Div("No numbers yet.", className="text-muted")
    return dbc.Table([html.Tbody([html.Tr([html.Th(k, className="fw-normal text-muted"), html.Td(v)])
                                  for k, v in rows])], size="sm", className="mb-0", id="run-summary-table")


def _distance_card(info: dict) -> list[Any]:
    """Per-layer distances between a 1D run's endpoints (once its summary exists), or nothing."""
    fig = figures.distance_figure({"summary": info.get("summary") or {}})
    if fig is None:
        return []
    fig.update_layout(height=340, margin={"l": 50, "r": 50, "t": 30, "b": 40}, title=None)
    return [dbc.Card([dbc.CardHeader("Distance per layer"), dbc.CardBody(
        dcc.Graph(id="run-distance", figure=fig, config=GRAPH_CONFIG), className="p-1")], className="mb-3")]


def _fit_button(ptype: str, spec: dict | None = None) -> list[Any]:
    """A straight-line run can start a curve fit between its endpoints: the button opens a
    dialog (training data, steps, curve type, bends) whose callbacks are in
    ``frontend/pages/fit.py``. Not for a generation run (a fit trains on a loss); shown only
    once the run is done and the viewer may start a fit (:func:`_fit_allowed`)."""
    spec = spec or {}
    if ptype != "linear" or spec.get("task") == "generation" or spec.get("generation"):
        return []
    dialog = dbc.Modal([
        dbc.ModalHeader(dbc.ModalTitle("Fit a curve between these endpoints")),
        dbc.ModalBody([
            html.Div("Trained on training data, evaluated on this run's examples (held out from the fit).",
                     className="small text-muted mb-2"),
            dbc.Label("Training data", html_for="run-fit-train"),
            dcc.Dropdown(id="run-fit-train", clearable=False, className="mb-2"),
            dbc.Row([
                dbc.Col([dbc.Label("Steps", html_for="run-fit-steps"),
                         dbc.Input(id="run-fit-steps", type="number", min=1, step=1, value=100)]),
                dbc.Col([dbc.Label("Curve", html_for="run-fit-curve"),
                         dbc.Select(id="run-fit-curve", value="bezier",
                                    options=[{"label": "quadratic Bezier", "value": "bezier"},
                                             {"label": "polychain", "value": "polychain"}])]),
                dbc.Col([dbc.Label("Bends", html_for="run-fit-bends"),
                         dbc.Input(id="run-fit-bends", type="number", min=1, max=16, step=1, value=1,
                                   disabled=True)]),
            ], className="mb-1"),
            html.Div("Bends: polychain only (one bend is evaluated; more are fitted and saved).",
                     className="small text-muted"),
            html.Div(id="run-fit-dialog-msg", className="small text-danger mt-2"),
        ]),
        dbc.ModalFooter([dbc.Button("Cancel", id="run-fit-close", color="secondary", outline=True, size="sm"),
                         dbc.Button("Start fit", id="run-fit-start", color="primary", size="sm")]),
    ], id="run-fit-dialog", is_open=False)
    return [html.Div([html.Hr(), dbc.Button(
                "Fit a curve", id="run-fit", color="primary", outline=True, size="sm",
                title="train a curve's control point between these endpoints on training "
                      "data, then evaluate the line and the curve on this run's examples")],
                     id="run-fit-box", style={"display": "none"}),
            html.Span(id="run-fit-msg", className="small ms-2"), dialog,
            dcc.Location(id="run-fit-location", refresh="callback-nav")]


def duration(s: Any) -> str:
    """Seconds in words: ``about 40 s`` / ``about 12 min`` / ``about 1.5 h``."""
    s = float(s)
    if s < 90:
        return f"about {max(1, round(s))} s"
    if s < 5400:
        return f"about {round(s / 60)} min"
    return f"about {s / 3600:.1f} h"


def cost_and_queue(info: dict[str, Any]) -> list[Any]:
    """While unfinished: the estimate of the points left; while queued: its place in the queue
    (position, what runs before it, workers, estimated start)."""
    if info.get("status") in TERMINAL:
        return []
    out: list[Any] = []
    q = info.get("queue")
    if isinstance(q, dict):
        ahead = q.get("ahead") or []
        workers = int(q.get("workers") or 0)
        start = q.get("start_in_s")
        when = ("no worker is alive: it starts when one joins" if not workers
                else "it starts next" if not ahead
                else f"estimated start in {duration(start)}" if isinstance(start, (int, float))
                else "its start cannot be estimated yet")
        items = [html.Li(f"{a.get('name') or 'a run'} — {plural(int(a.get('points_left') or 0), 'point')} left"
                         + (f", {duration(a['eta_s'])}" if isinstance(a.get("eta_s"), (int, float)) else "")
                         + (" (running)" if a.get("status") == "running" else "")
                         + (" · background demo work" if a.get("background") else ""))
                 for a in ahead[:8]]
        out.append(html.Div([
            html.Strong(f"Queued: position {q.get('position', '?')}"),
            html.Span(f" · {plural(workers, 'worker')} · {when}."),
            *([html.Div("Ahead of it:", className="mt-1"), html.Ul(items, className="mb-0")] if items else []),
            *([html.Div("Background demo work: it yields to any run a person submits.", className="small")]
              if q.get("background") else []),
        ], className="small mb-2", id="run-queue"))
    out += estimate_block(info.get("estimate"), prefix="run")
    return out


def layout(run_id: str | None = None, **_: Any) -> html.Div:
    if not run_id:
        return dbc.Alert("No run id in the link.", color="warning")
    r = api.get(f"/api/runs/{run_id}")
    if not r.ok or not isinstance(r.body, dict):
        return html.Div([html.H3("Run not found"),
                         dbc.Alert(r.error() if r.status != 404 else f"There is no run {run_id}.",
                                   color="warning", id="run-error")])
    info = r.body
    spec = info.get("spec") or {}
    path = spec.get("path") or {}
    ptype = path.get("type", "?")
    is1d = is_1d(ptype)
    metrics = spec.get("metrics") or ["loss"]
    samples = is1d and figures.has_samples({"spec": spec, "points": []})
    points, cursor = api.all_points(run_id, samples=samples)
    status = info.get("status", "?")
    names = _names(info)
    kind = "heatmap"
    figs = build_figures(info, points, kind, names)
    nx, ny = (path.get("resolution") or [1, 1]) if not is1d else (0, 0)
    rng = path.get("range") if not is1d else None
    meta = {
        "id": run_id, "metrics": metrics, "is1d": is1d, "nx": nx, "ny": ny,
        "total": info.get("total") or 0, "task": spec.get("task"), "per_example": bool(spec.get("per_example")),
        "adaptive": bool(spec.get("refine")), "samples": bool(samples),
        "scales": {m: figures.metric_scale(m) for m in metrics},
        "xrange": rng[0] if rng and isinstance(rng[0], list) else None,
        "yrange": rng[1] if rng and isinstance(rng[0], list) else None,
    }
    total = info.get("total") or 0
    done = max(len(points), info.get("done") or 0)
    host = flask.request.host_url.rstrip("/") if flask.has_request_context() else ""
    share = f"{host}/runs/{run_id}"
    refs = refs_of(path)
    title = spec.get("name") or f"{ptype}: " + " · ".join(figures.short_name(x, names) for x in refs)
    graphs: list[Any] = [dcc.Graph(id={"type": "run-graph", "index": i}, figure=f, config=GRAPH_CONFIG,
                        className="run-graph border rounded mb-3")
              for i, f in enumerate(figs)]
    if status in ("failed", "cancelled") and not points:  # nothing to draw: no empty charts
        graphs = [html.Div(f"This run {status} before its first point: nothing to draw.",
                           className="text-muted p-3 border rounded", id="run-no-figures")]
    equal = figures.equal_axes_default({"spec": spec})
    controls = [html.Div([  # hidden for 1D paths; present so the rebuild callback has its inputs
        dbc.RadioItems(
            id="run-kind", value=kind, inline=True, className="me-4",
            options=[{"label": "heatmap", "value": "heatmap"}, {"label": "contour", "value": "contour"},
                     {"label": "3D surface", "value": "surface"}]),
        html.Span(dbc.Switch(id="run-equal", value=equal, label="equal axis scales", className="mb-0"),
                  title="one unit of x as long as one of y (distances and angles read true); "
                        "off: fill the box"),
    ], id="run-plane-controls", className="d-none" if is1d else "d-flex align-items-center mb-2")]
    header = dbc.Card(dbc.CardBody([
        html.Div([
            dbc.Badge(status, id="run-status", color=STATUS_COLOUR.get(status, "dark"), className="me-2 fs-6"),
            html.Span(plural(len(points), "point"), id="run-count", className="me-3 fw-semibold"),
            html.Span("", id="run-extra", className="text-muted me-3"),
            html.Span(info.get("error") or "", className="text-danger", id="run-error-text"),
        ], className="mb-2"),
        html.Div(cost_and_queue(info), id="run-cost"),
        dcc.Interval(id="run-cost-poll", interval=5000, disabled=status in TERMINAL),
        dbc.Progress(id="run-progress", value=100 if status == "done" else round(100 * done / total) if total else 0,
                     label=f"{done} / {total}", style={"height": "1.4rem"},
                     animated=status not in TERMINAL, striped=status not in TERMINAL),
    ]), className="mb-3")
    side = [
        dbc.Card([dbc.CardHeader("Summary"),
                  dbc.CardBody(_summary_table(info, points), id="run-summary")], className="mb-3"),
        dbc.Card([dbc.CardHeader("Share & export"), dbc.CardBody([
            dbc.InputGroup([dbc.Input(id="run-share-link", value=share, readonly=True, size="sm"),
                            dbc.InputGroupText(dcc.Clipboard(target_id="run-share-link", title="copy link",
                                                             id="run-copy-link"))], size="sm",
                           className="mb-2"),
            html.Div([
                html.A("JSON", href=f"/api/runs/{run_id}/export?format=json", id="run-export-json",
                       className="btn btn-sm btn-outline-secondary me-1", download=f"basin-{run_id[:12]}.json"),
                html.A("CSV", href=f"/api/runs/{run_id}/export?format=csv", id="run-export-csv",
                       className="btn btn-sm btn-outline-secondary me-1", download=f"basin-{run_id[:12]}.csv"),
                html.A("HTML report", href=f"/reports/{run_id}.html", id="run-export-html",
                       className="btn btn-sm btn-outline-secondary me-1"),
                html.A("HDF5", href=f"/api/runs/{run_id}/export?format=h5", id="run-export-h5",
                       className="btn btn-sm btn-outline-secondary me-1", download=f"basin-{run_id[:12]}.h5",
                       title="the surface in the HDF5 layout of Li et al.'s loss-landscape scripts "
                             "(plot_2D.py, plot_1D.py, h52vtp.py for ParaView)"),
            ]),
            html.Div("PNG: the camera icon above each figure.", className="small text-muted mt-1"),
            html.Hr(),
            dbc.Button("Cancel run", id="run-cancel", color="danger", outline=True, size="sm",
                       disabled=status in TERMINAL),
            html.Span(id="run-cancel-msg", className="small ms-2"),
            *_fit_button(ptype, spec),
        ])], className="mb-3"),
        html.Div(_distance_card(info), id="run-distance-box"),  # filled when the summary comes
        dbc.Card([dbc.CardHeader("Spec"), dbc.CardBody(html.Pre(
            spec_yaml(spec, names), id="run-spec",
            className="small mb-0", style={"maxHeight": "360px", "overflow": "auto"}))]),
    ]
    return html.Div([
        dcc.Store(id="run-meta", data=meta),
        dcc.Store(id="run-points", data={"points": points, "cursor": cursor, "status": status}),
        dcc.Store(id="run-rebuild", data=f"{status}:init"),
        dcc.Interval(id="run-interval", interval=500, disabled=status in TERMINAL and done >= total),
        html.H3(title, className="mb-1", id="run-title"),
        html.Div([html.Code(run_id, className="small")], className="mb-2"),
        header,
        dbc.Row([
            dbc.Col([*controls, html.Div(graphs, id="run-graphs", **data_attrs(points=str(len(points)))),
                     # finished straight lines whose endpoints a curve fit joined: the curve overlaid
                     html.Div(fitted_card.card(run_id, info, points, names=names), id="run-fitted"),
                     # only for runs with samples: its callback then never runs for other runs
                     *([_samples_card()] if samples else []),
                     # 1D classification runs: filled once the run is done (here, or by _forgetting)
                     html.Div(forgetting_card.card(run_id, spec, status), id="run-forgetting")], lg=8),
            dbc.Col(side, lg=4),
        ]),
    ])


clientside_callback(
    ClientsideFunction(namespace="basin", function_name="poll"),
    Output("run-points", "data"),
    Output({"type": "run-graph", "index": ALL}, "figure"),
    Output("run-count", "children"),
    Output("run-progress", "value"),
    Output("run-progress", "label"),
    Output("run-status", "children"),
    Output("run-rebuild", "data"),
    Output("run-interval", "disabled"),
    Output("run-extra", "children"),
    Output("run-progress", "animated", allow_duplicate=True),
    Output("run-progress", "striped", allow_duplicate=True),
    Input("run-interval", "n_intervals"),
    State("run-points", "data"),
    State("run-meta", "data"),
    State({"type": "run-graph", "index": ALL}, "figure"),
    prevent_initial_call=True,
)

clientside_callback(
    ClientsideFunction(namespace="basin", function_name="cancel"),
    Output("run-cancel-msg", "children"),
    Input("run-cancel", "n_clicks"),
    State("run-meta", "data"),
    prevent_initial_call=True,
)


@callback(
    Output({"type": "run-graph", "index": ALL}, "figure", allow_duplicate=True),
    Output("run-summary", "children"),
    Output("run-status", "color"),
    Output("run-progress", "animated"),
    Output("run-progress", "striped"),
    Output("run-cancel", "disabled"),
    Output("run-distance-box", "children"),
    Input("run-rebuild", "data"),
    Input("run-kind", "value"),
    Input("run-equal", "value"),
    State("run-meta", "data"),
    prevent_initial_call=True,
)
def _rebuild(_key: str, kind: str | None, equal: bool | None, meta: dict):
    """Full figures (anchors, chord, barrier annotation): the run and its points from the API
    (two calls, server to server). The browser never sends its point store back."""
    r = api.get(f"/api/runs/{meta['id']}")
    info = r.body if r.ok and isinstance(r.body, dict) else {}
    if not info.get("spec"):
        raise dash.exceptions.PreventUpdate
    points, _ = api.all_points(meta["id"])
    status = str(info.get("status") or "")
    names = _names(info)
    figs = build_figures(info, points, kind or "heatmap", names, bool(equal))
    running = status not in TERMINAL
    return (figs, _summary_table(info, points), STATUS_COLOUR.get(status or "", "dark"), running, running,
            not running, _distance_card(info))


@callback(
    Output("run-samples", "style"),
    Output("run-sample-alpha", "min"),
    Output("run-sample-alpha", "max"),
    Output("run-sample-alpha", "marks"),
    Output("run-sample-alpha", "value"),
    Output("run-sample-point", "children"),
    Output("run-sample-table", "children"),
    Input("run-count", "children"),
    Input("run-sample-alpha", "value"),
    Input({"type": "run-graph", "index": ALL}, "clickData"),
    State("run-meta", "data"),
)
def _samples(_count: str | None, alpha: float | None, clicks: list, meta: dict | None):
    """The sample viewer: follows the points as they arrive (the point count), the α slider,
    and clicks on any curve (the curve's and the ensemble's ``customdata`` is the point's
    index). Shown once a point carries samples; the samples come from the API
    (``?samples=true``), not from the browser's point store."""
    if not meta or not meta.get("is1d") or not meta.get("samples"):
        raise dash.exceptions.PreventUpdate
    pts = figures.sample_points(api.all_points(meta["id"], samples=True)[0])
    if not pts:
        return ({}, dash.no_update, dash.no_update, dash.no_update, dash.no_update, "No samples yet.", None)
    alphas = [float(p["coords"]["alpha"]) for p in pts]
    chosen: Mapping[str, Any] | None = None
    trigger = dash.ctx.triggered_id
    if isinstance(trigger, dict) and trigger.get("type") == "run-graph":
        click = (clicks or [None] * (trigger["index"] + 1))[trigger["index"]] or {}
        first = (click.get("points") or [{}])[0]
        by_index = {p.get("index"): p for p in pts}
        if first.get("customdata") in by_index:
            chosen = by_index[first["customdata"]]
        elif isinstance(first.get("x"), (int, float)):
            alpha = float(first["x"])
    if chosen is None:
        target = alpha if isinstance(alpha, (int, float)) else alphas[0]
        chosen = min(pts, key=lambda p: abs(float(p["coords"]["alpha"]) - target))
    a = float(chosen["coords"]["alpha"])
    n = len(chosen.get("samples") or [])
    label = f"α = {a + 0.0:.4g} (point {chosen.get('index')}): {n} sample{'s' if n != 1 else ''}"
    return ({}, alphas[0], alphas[-1], _slider_marks(alphas), a, label, sample_table(chosen))


@callback(
    Output("run-forgetting", "children"),
    Input("run-status", "children"),
    State("run-forgetting", "children"),
    State("run-meta", "data"),
    State("settings-token-input", "value"),
    prevent_initial_call=True,
)
def _forgetting(status: str | None, shown: Any, meta: dict | None, token: str | None = None):
    """The Forgetting card, once a 1D classification run watched live is done (once only)."""
    if (shown or not meta or status != "done" or not meta.get("is1d")
            or not keeps_column(meta.get("task"), "correct")):
        raise dash.exceptions.PreventUpdate
    spec = {"task": meta.get("task"), "per_example": meta.get("per_example"), "path": {"type": "linear"}}
    return forgetting_card.card(meta["id"], spec, status, token=token)


@callback(
    Output("run-cost", "children"),
    Output("run-cost-poll", "disabled"),
    Input("run-cost-poll", "n_intervals"),
    Input("run-rebuild", "data"),  # a status change (started, done) at once, not at the next tick
    State("run-meta", "data"),
    prevent_initial_call=True,
)
def _cost(_n: int | None, _key: str | None, meta: dict | None):
    """The queue place and the estimate, every few seconds until the run ends."""
    if not meta:
        return dash.no_update, True
    r = api.get(f"/api/runs/{meta['id']}")
    if not r.ok or not isinstance(r.body, dict):
        return dash.no_update, False
    return cost_and_queue(r.body), r.body.get("status") in TERMINAL


@callback(
    Output("run-fit-box", "style"),
    Input("run-rebuild", "data"), Input("settings-token-input", "value"),
    State("run-meta", "data"),
)
def _fit_allowed(key: str | None, token: str | None, meta: dict | None):
    """"Fit a curve" once the run is done, for a viewer who may start one: a server without a
    token, or the token entered (a share link alone reads, it does not train)."""
    hide = {"display": "none"}
    if not meta or not str(key or "").startswith("done:"):
        return hide
    return hide if api.needs_token(api.get("/api/fits", token=token)) else {}
