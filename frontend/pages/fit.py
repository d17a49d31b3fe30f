"""Fit (``/fits/<fit_id>``): a curve fit's training loss live, progress, ETA, cancel; once done,
links to the line and fitted-curve runs and one figure overlaying both (loss vs α).

The page polls ``GET /api/fits/{id}`` (a Python callback every 700 ms) until the fit has
ended and, when it is done, until both evaluation runs have ended. This module also
holds the callbacks of the run page's "Fit a curve" dialog (a finished straight-line run:
same endpoints and scope; training data — the training split beside the run's dataset,
another store dataset or a held-out split of the run's dataset —, steps, curve, bends;
evaluated on exactly the run's examples).
"""

from __future__ import annotations

import logging
from typing import Any

import dash
import dash_bootstrap_components as dbc
import plotly.graph_objects as go
from dash import Input, Output, State, callback, dcc, html, no_update

from basin import figures
from basin.status import COLOUR, TERMINAL
from frontend import api
from frontend.components import GRAPH_CONFIG

logger = logging.getLogger(__name__)

dash.register_page(__name__, path_template="/fits/<fit_id>", name="Fit", title="Basin — fit")


def loss_figure(losses: list[dict]) -> go.Figure:
    fig = go.Figure(go.Scatter(x=[p["step"] for p in losses], y=[p["loss"] for p in losses],
                               mode="lines", name="training loss", meta="loss"))
    fig.update_layout(title="Training loss", xaxis_title="step", yaxis_title="loss",
                      margin={"l": 50, "r": 20, "t": 40, "b": 40}, height=320, template="plotly_white")
    return fig


def _eta(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return ""
    return f"ETA {s:.0f} s" if s < 120 else f"ETA {s / 60:.1f} min"


def overlay(runs: dict[str, str], names: dict[str, str]) -> tuple[Any, bool]:
    """The line and the fitted curve in one figure (None until both are done), and whether both ended."""
    docs, ended = [], True
    for key in ("line", "curve"):
        if key not in runs:
            continue
        doc, status = api.run_document(runs[key])
        ended = ended and status in TERMINAL
        if doc is None or status != "done":
            return None, ended
        docs.append(doc)
    if len(docs) < 2:
        return None, ended
    fig = figures.overlay_figure(docs, "loss", names=names, labels=["straight line", "fitted curve"])
    fig.update_layout(title="Line vs fitted curve — loss along α")
    return fig, True


def _view(body: dict) -> tuple:
    status = body.get("status") or "?"
    step, total = int(body.get("step") or 0), int(body.get("total") or 0)
    pct = 100 if status == "done" else round(100 * step / total) if total else 0
    runs = body.get("runs") or {}
    links: list[Any] = []
    if runs:
        links = [html.Span("Evaluations: "),
                 html.A("straight line", href=f"/runs/{runs['line']}", id="fit-line-link", className="me-2")]
        if "curve" in runs:
            links.append(html.A("fitted curve", href=f"/runs/{runs['curve']}", id="fit-curve-link"))
    if body.get("control"):
        links += [html.Span(" · control checkpoint "), html.Code(str(body["control"])[:12], id="fit-control")]
    fig, ended = None, True
    if status == "done":
        try:  # the loss chart and links update even when the runs cannot be read yet
            fig, ended = overlay(runs, body.get("names") or {})
        except Exception:
            logger.exception("overlay of fit %s", body.get("id"))
            ended = False
    overlay_child = dcc.Graph(figure=fig, id="fit-overlay", className="border rounded", config=GRAPH_CONFIG) if fig is not None else (
        html.Div("Evaluating the line and the fitted curve…", className="text-muted") if status == "done" else "")
    stop = status in TERMINAL and ended
    return (loss_figure(body.get("losses") or []), status, COLOUR.get(status, "dark"), pct, f"{step} / {total}",
            _eta(body.get("eta_s")), body.get("error") or "", links, overlay_child, stop, status in TERMINAL)


def layout(fit_id: str | None = None, **_: Any) -> Any:
    if not fit_id:
        return dbc.Alert("No fit id in the link.", color="warning")
    r = api.get(f"/api/fits/{fit_id}")
    if not r.ok or not isinstance(r.body, dict):
        return html.Div([html.H3("Fit not found"),
                         dbc.Alert(r.error() if r.status != 404 else f"There is no fit {fit_id}.",
                                   color="warning", id="fit-error")])
    body = r.body
    spec, names = body.get("spec") or {}, body.get("names") or {}
    (fig, status, colour, pct, label, eta, error, links, overlay_child, stop, ended) = _view(body)
    title = (f"Fit ({spec.get('curve')}): {figures.short_name(str(spec.get('a')), names)} → "
             f"{figures.short_name(str(spec.get('b')), names)}")
    return html.Div([
        dcc.Store(id="fit-meta", data={"id": fit_id}),
        dcc.Interval(id="fit-interval", interval=700, disabled=stop),
        html.H3(title, id="fit-title", className="mb-1"),
        html.Div(html.Code(fit_id, className="small"), className="mb-2"),
        dbc.Card(dbc.CardBody([
            html.Div([
                dbc.Badge(status, id="fit-status", color=colour, className="me-2 fs-6"),
                html.Span(eta, id="fit-eta", className="text-muted me-3"),
                html.Span(error, id="fit-error-msg", className="text-danger"),
            ], className="mb-2"),
            dbc.Progress(id="fit-progress", value=pct, label=label, style={"height": "1.4rem"}),
            html.Div([dbc.Button("Cancel fit", id="fit-cancel", color="danger", outline=True, size="sm",
                                 disabled=ended, className="mt-2"),
                      html.Span(id="fit-cancel-msg", className="small ms-2")]),
        ]), className="mb-3"),
        dcc.Graph(id="fit-loss", figure=fig, className="border rounded mb-3", config=GRAPH_CONFIG),
        html.Div(links, id="fit-links", className="mb-3"),
        html.Div(overlay_child, id="fit-overlay-box"),
    ])


@callback(
    Output("fit-loss", "figure"), Output("fit-status", "children"), Output("fit-status", "color"),
    Output("fit-progress", "value"), Output("fit-progress", "label"), Output("fit-eta", "children"),
    Output("fit-error-msg", "children"), Output("fit-links", "children"),
    Output("fit-overlay-box", "children"), Output("fit-interval", "disabled"),
    Output("fit-cancel", "disabled"),
    Input("fit-interval", "n_intervals"), State("fit-meta", "data"),
    prevent_initial_call=True,
)
def _poll(_n: int, meta: dict):
    r = api.get(f"/api/fits/{meta['id']}")
    if not r.ok or not isinstance(r.body, dict):
        raise dash.exceptions.PreventUpdate
    return _view(r.body)


@callback(
    Output("fit-cancel-msg", "children"),
    Input("fit-cancel", "n_clicks"), State("fit-meta", "data"), State("settings-token-input", "value"),
    prevent_initial_call=True,
)
def _cancel(_n: int, meta: dict, token: str | None):
    r = api.post(f"/api/fits/{meta['id']}/cancel", token=token)
    return "cancelling…" if r.ok else r.error()


#: The training-data choice "a held-out split of this run's dataset".
HOLDOUT = "__holdout__"


def training_options(info: dict, datasets: list[dict]) -> tuple[list[dict], str]:
    """The dialog's training-data choices and the default: the store's datasets (not the run's
    own), and a held-out split of the run's dataset; by default the training split beside
    the run's dataset by name (``tweets-eval.csv`` → ``tweets-train.csv``,
    :func:`basin.fitdata.train_split_name`), else the held-out split."""
    from basin.fitdata import train_split_name

    own = (info.get("spec") or {}).get("dataset")
    by_name = {str(d.get("name")): d for d in datasets if d.get("id")}
    own_name = next((str(d.get("name")) for d in datasets if d.get("id") == own), str(own))
    options = [{"label": f"held-out split of {own_name} (train on the rows this run does not evaluate)",
                "value": HOLDOUT}]
    options += [{"label": f"{d.get('name')} ({d.get('rows', '?')} rows)", "value": d["id"]}
                for d in datasets if d.get("id") and d["id"] != own]
    split = train_split_name(own_name, by_name)
    return options, (by_name[split]["id"] if split else HOLDOUT)


def fit_body_for_run(info: dict, training: str = HOLDOUT, *, steps: int = 100, curve: str = "bezier",
                     bends: int = 1) -> dict | None:
    """The fit the run page's dialog starts: a finished linear run's endpoints and scope,
    trained on ``training`` (a dataset id, or :data:`HOLDOUT`: the run's dataset without the
    examples it evaluates) and evaluated on exactly this run's examples (dataset,
    max_examples, seed, max_length, points)."""
    spec = info.get("spec") or {}
    path = spec.get("path") or {}
    if path.get("type") != "linear" or info.get("status") != "done":
        return None
    n = spec.get("max_examples") or 512
    body = {"a": path["a"], "b": path["b"], "scope": spec.get("scope") or "all",
            "task": spec.get("task") or "classification", "max_examples": n, "eval_max_examples": n,
            "seed": spec.get("seed") or 0, "max_length": spec.get("max_length") or 128,
            "eval_points": path.get("points") or 26, "tokenizer": spec.get("tokenizer"),
            "eval_dataset": spec["dataset"], "steps": int(steps), "curve": curve}
    if curve == "polychain":
        body["bends"] = int(bends)
    if training == HOLDOUT:
        body.update(dataset=spec["dataset"], holdout=True)
    else:
        body["dataset"] = training
    return body


@callback(
    Output("run-fit-dialog", "is_open"), Output("run-fit-train", "options"), Output("run-fit-train", "value"),
    Output("run-fit-msg", "children", allow_duplicate=True),
    Input("run-fit", "n_clicks"), Input("run-fit-close", "n_clicks"),
    State("run-meta", "data"), State("settings-token-input", "value"),
    prevent_initial_call=True,
)
def _open_fit_dialog(_open: int | None, _close: int | None, meta: dict, token: str | None):
    if dash.ctx.triggered_id == "run-fit-close":
        return False, no_update, no_update, no_update
    r = api.get(f"/api/runs/{meta['id']}", token=token)
    info = r.body if r.ok and isinstance(r.body, dict) else {}
    if fit_body_for_run(info) is None:
        return False, no_update, no_update, "only a finished straight-line run can start a fit"
    ds = api.get("/api/datasets", token=token)
    options, default = training_options(info, ds.body if ds.ok and isinstance(ds.body, list) else [])
    return True, options, default, ""


@callback(Output("run-fit-bends", "disabled"), Input("run-fit-curve", "value"))
def _bends_for_polychain(curve: str | None) -> bool:
    return curve != "polychain"


@callback(
    Output("run-fit-location", "href"), Output("run-fit-dialog-msg", "children"),
    Output("run-fit-msg", "children"),
    Input("run-fit-start", "n_clicks"), State("run-meta", "data"), State("settings-token-input", "value"),
    State("run-fit-train", "value"), State("run-fit-steps", "value"), State("run-fit-curve", "value"),
    State("run-fit-bends", "value"),
    prevent_initial_call=True,
)
def _start_fit(_n: int, meta: dict, token: str | None, training: str | None, steps: Any, curve: str | None,
               bends: Any):
    r = api.get(f"/api/runs/{meta['id']}", token=token)
    try:
        steps_i, bends_i = int(steps), int(bends or 1)
    except (TypeError, ValueError):
        return no_update, "steps and bends must be whole numbers", no_update
    body = fit_body_for_run(r.body if r.ok and isinstance(r.body, dict) else {}, training or HOLDOUT,
                            steps=steps_i, curve=curve or "bezier", bends=bends_i)
    if body is None:
        return no_update, "only a finished straight-line run can start a fit", no_update
    # from_run: the fit is this run's (its link may show the fit: docs/service.md, "What a link reveals")
    created = api.post("/api/fits", json=body, token=token, params={"from_run": meta["id"]})
    if not created.ok or not isinstance(created.body, dict):
        return no_update, created.error(), no_update
    return f"/fits/{created.body['id']}", "", "fit queued"
