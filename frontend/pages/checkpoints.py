"""Checkpoints (``/checkpoints``): streaming upload, register a server directory, list, tag, delete.

Files go from a plain ``<input type=file>`` straight to ``PUT /api/checkpoints`` through
``XMLHttpRequest`` (``assets/basin.js``), never through Dash callbacks.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, callback, clientside_callback, ctx, dcc, html

from frontend import api
from frontend.components import fmt_time, upload_box

logger = logging.getLogger(__name__)

dash.register_page(__name__, path="/checkpoints", name="Checkpoints", title="Basin — checkpoints")


def layout(**_: Any) -> html.Div:
    return html.Div([
        dcc.Store(id="ckpt-refresh", data=0),
        html.H3("Checkpoints"),
        dbc.Card([dbc.CardHeader("Upload"), dbc.CardBody([
            html.P(["A Hugging Face model folder as ", html.Code(".zip"), " or ", html.Code(".tar.gz"),
                    ", or a bare ", html.Code(".safetensors"), " state dict with the config of a stored checkpoint, "
                    "or a PEFT adapter folder (", html.Code("adapter_config.json"), " + ",
                    html.Code("adapter_model.safetensors"), ") as ", html.Code(".zip"), " / ", html.Code(".tar.gz"),
                    " on a stored base: the one its base_model_name_or_path names, or the one picked here."],
                   className="small text-muted"),
            upload_box("ckpt", "/api/checkpoints", "ckpt-refresh", ".zip,.tar.gz,.tgz,.safetensors",
                       config_picker=True, select="ckpt-edit-id", base_picker=True),
        ])], className="mb-3"),
        dbc.Card([dbc.CardHeader("From the Hugging Face Hub"), dbc.CardBody([
            html.P(["A model id, ", html.Code("org/name"), " or ", html.Code("org/name@revision"),
                    " (a branch, a tag or a commit; none = main). A worker downloads it once, pinned to the commit "
                    "the Hub answers, checks every file against the Hub's hashes and keeps safetensors weights "
                    "only. In a run spec, name it ", html.Code("hf:org/name@revision"), "."],
                   className="small text-muted"),
            dbc.Row([
                dbc.Col(dbc.Input(id="ckpt-hub-ref", placeholder="org/name@revision"), md=5),
                dbc.Col(dbc.Input(id="ckpt-hub-name", placeholder="name (default: name@commit)"), md=3),
                dbc.Col(dbc.Button("Fetch", id="ckpt-hub-button", color="secondary"), md="auto"),
            ], className="g-2"),
            dbc.Checkbox(id="ckpt-hub-allow-bin", value=False, className="small mt-1",
                         label="a repository with only pytorch_model.bin: read it with torch's weights-only loader "
                               "(never runs code) and store it as safetensors"),
            dcc.Store(id="ckpt-hub-job", storage_type="session"),
            dcc.Interval(id="ckpt-hub-poll", interval=700, disabled=True),
            html.Div(id="ckpt-hub-status", className="small mt-1"),
        ])], className="mb-3"),
        dbc.Card([dbc.CardHeader("Register a folder on the server"), dbc.CardBody([
            dbc.Row([
                dbc.Col(dbc.Input(id="ckpt-register-path", placeholder="/path/to/model-dir"), md=5),
                dbc.Col(dbc.Input(id="ckpt-register-name", placeholder="name"), md=3),
                dbc.Col(dbc.Button("Register", id="ckpt-register-button", color="secondary"), md="auto"),
            ], className="g-2"),
            html.Div(id="ckpt-register-status", className="small mt-1"),
        ])], className="mb-3"),
        dbc.Card([dbc.CardHeader("Tag / rename / delete"), dbc.CardBody([
            dbc.Row([
                dbc.Col(dbc.Select(id="ckpt-edit-id", options=[], value="", placeholder="— pick a checkpoint —"), md=3),
                dbc.Col(_labelled("name", dbc.Input(id="ckpt-edit-name", placeholder="new name")), md=2),
                dbc.Col(_labelled("task", dbc.Input(id="ckpt-edit-task", placeholder="e.g. sst2")), md=2),
                dbc.Col(dbc.InputGroup([
                    dbc.InputGroupText("seed"), dbc.Input(id="ckpt-edit-seed", placeholder="0"),
                    dbc.InputGroupText("step"), dbc.Input(id="ckpt-edit-step", placeholder="1000")]), md=3),
                dbc.Col([dbc.Button("Save", id="ckpt-edit-save", color="secondary", className="me-1"),
                         dbc.Button("Delete", id="ckpt-delete", color="danger", outline=True)], md="auto"),
            ], className="g-2 align-items-center"),
            html.Div("Tags order trajectories (step) and group runs; an emptied field removes its tag.",
                     className="small text-muted mt-1"),
            dcc.ConfirmDialog(id="ckpt-delete-confirm", message="Delete this checkpoint from the store?"),
            html.Div(id="ckpt-edit-status", className="small mt-1"),
        ])], className="mb-3"),
        html.Div(id="ckpt-list"),
        dcc.Store(id="ckpt-anchor"),
    ])


def _labelled(label: str, component: Any) -> dbc.InputGroup:
    return dbc.InputGroup([dbc.InputGroupText(label), component])


_HUB_TAGS = ("hub_repo", "hub_ref", "hub_revision")


def _tags(m: dict) -> str:
    """``task=…, seed=…, step=…`` first, then any other tags, empty ones left out; a Hub
    checkpoint's three origin tags as one ``hub=org/name@ref (commit[:12])``."""
    t = m.get("tags") or {}
    keys = [k for k in ("task", "seed", "step") if k in t] + sorted(
        k for k in t if k not in ("task", "seed", "step", *_HUB_TAGS))
    out = [f"{k}={t[k]}" for k in keys if t[k] not in (None, "")]
    if t.get("hub_repo"):
        out.append(f"hub={t['hub_repo']}@{t.get('hub_ref') or ''} ({str(t.get('hub_revision') or '')[:12]})")
    return ", ".join(out)


def _architecture(m: dict) -> str:
    """The architecture; for a PEFT adapter its type, rank and base (``LORA r=8 on minilm``)."""
    a = m.get("adapter")
    if isinstance(a, dict):
        rank = f" r={a['r']}" if a.get("r") else ""
        return f"{a.get('peft_type', 'adapter')}{rank} on {m.get('base_name') or str(m.get('base', ''))[:12]}"
    return m.get("architecture") or m.get("model_type") or ""


def _table(ckpts: list[dict]) -> Any:
    if not ckpts:
        return dbc.Alert("No checkpoints stored yet.", color="info", id="ckpt-empty")
    head = html.Thead(html.Tr([html.Th(h) for h in
                               ("name", "architecture", "parameters", "tags", "tokenizer", "id", "source", "created")]))
    rows = [html.Tr([
        html.Td(m.get("name"), className="ckpt-name fw-semibold"),
        html.Td(_architecture(m)),
        html.Td(f"{m['num_parameters']:,}" if isinstance(m.get("num_parameters"), int) else ""),
        html.Td(_tags(m), className="ckpt-tags"),
        html.Td("yes" if m.get("has_tokenizer") else "no"),
        html.Td(html.Code(str(m.get("id", ""))[:12])),
        html.Td(m.get("source") or "", className="text-muted"),
        html.Td(fmt_time(m.get("created")), className="text-nowrap"),
    ], **{"data-id": m.get("id", "")}) for m in ckpts]
    return dbc.Table([head, html.Tbody(rows)], striped=True, hover=True, size="sm", id="ckpt-table")


@callback(
    Output("ckpt-list", "children"),
    Output("ckpt-edit-id", "options"),
    Output("ckpt-upload-config", "options"),
    Output("ckpt-upload-base", "options"),
    Input("ckpt-refresh", "data"),
    Input("settings-token-input", "value"),
)
def _list(_: Any, token: str | None = None):
    r = api.get("/api/checkpoints", token=token)
    if api.needs_token(r):
        return (dbc.Alert(api.NEEDS_TOKEN.format(what="checkpoints"), color="warning", id="ckpt-needs-token"),
                [], [], [])
    if not r.ok or not isinstance(r.body, list):
        return dbc.Alert(f"Could not list checkpoints: {r.error()}", color="danger"), [], [], []
    opts = [{"label": f"{m.get('name')} ({str(m.get('id'))[:8]})", "value": m["id"]} for m in r.body]
    full = [o for o, m in zip(opts, r.body, strict=True) if not m.get("adapter")]
    return _table(r.body), opts, full, full


# ``/checkpoints#<id>`` (the Tune page's links to a member's final checkpoint): the list
# arrives after the browser has looked for the anchor, so once it is drawn the row whose
# ``data-id`` is the fragment is scrolled into view and highlighted.
clientside_callback(
    """function(_children) {
        const want = decodeURIComponent((window.location.hash || "").slice(1));
        if (!want) { return window.dash_clientside.no_update; }
        const row = document.querySelector('#ckpt-table tr[data-id="' + CSS.escape(want) + '"]');
        if (!row) { return window.dash_clientside.no_update; }
        row.classList.add("table-warning", "ckpt-anchored");
        row.scrollIntoView({block: "center"});
        return want;
    }""",
    Output("ckpt-anchor", "data"),
    Input("ckpt-list", "children"),
)


@callback(
    Output("ckpt-register-status", "children"),
    Output("ckpt-refresh", "data", allow_duplicate=True),
    Input("ckpt-register-button", "n_clicks"),
    State("ckpt-register-path", "value"),
    State("ckpt-register-name", "value"),
    State("settings-token-input", "value"),
    prevent_initial_call=True,
)
def _register(_: int, path: str | None, name: str | None, token: str | None):
    path = (path or "").strip()
    if not path:
        return html.Span("Give the folder's path on the server.", className="text-danger"), dash.no_update
    body = {"path": path, "name": (name or "").strip() or path.rstrip("/").split("/")[-1], "tags": {}}
    r = api.post("/api/checkpoints/register", json=body, token=token)
    if r.ok:
        return html.Span(f"Registered {r.body.get('name')}.", className="text-success"), time.time()
    return html.Span(f"Register failed: {r.error()}", className="text-danger"), dash.no_update


@callback(
    Output("ckpt-hub-job", "data"),
    Output("ckpt-hub-status", "children", allow_duplicate=True),
    Input("ckpt-hub-button", "n_clicks"),
    State("ckpt-hub-ref", "value"),
    State("ckpt-hub-name", "value"),
    State("ckpt-hub-allow-bin", "value"),
    State("settings-token-input", "value"),
    prevent_initial_call=True,
)
def _hub_fetch(_: int, ref: str | None, name: str | None, allow_bin: bool | None, token: str | None):
    ref = (ref or "").strip()
    if not ref:
        return dash.no_update, html.Span("Give a model id: org/name or org/name@revision.", className="text-danger")
    body: dict[str, Any] = {"ref": ref, "allow_bin": bool(allow_bin)}
    if name and name.strip():
        body["name"] = name.strip()
    r = api.post("/api/checkpoints/hub", json=body, token=token)
    if not r.ok or not isinstance(r.body, dict):
        return dash.no_update, html.Span(f"Fetch refused: {r.error()}", className="text-danger", id="ckpt-hub-error")
    return {"id": r.body["id"], "ref": ref}, html.Span(f"Queued {ref}…", className="text-muted")


def _mb(n: int) -> str:
    """Bytes for people: ``812 kB``, ``12.3 MB``, ``1.42 GB``."""
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.0f} kB"


def hub_progress(job: dict[str, Any]) -> tuple[Any, bool]:
    """The status line of a Hub download and whether polling stops."""
    status, ref = job.get("status"), job.get("ref")
    if status == "done":
        commit = str(job.get("commit") or "")[:12]
        verb = "Stored" if job.get("created") else "Already stored"
        return html.Span([f"{verb} {job.get('name')} — {ref} pinned to commit ", html.Code(commit), "."],
                         className="text-success", id="ckpt-hub-done"), True
    if status in ("failed", "cancelled"):
        return html.Span(f"Fetching {ref} {status}: {job.get('error') or ''}", className="text-danger",
                         id="ckpt-hub-error"), True
    total, done = int(job.get("files_total") or 0), int(job.get("files_done") or 0)
    if status == "queued" or not total:
        return html.Span(f"{ref}: {status}, waiting for a worker…" if status == "queued"
                         else f"{ref}: asking the Hub which commit and files…", className="text-muted"), False
    nb, nt = int(job.get("bytes_done") or 0), int(job.get("bytes_total") or 0)
    pct = 100 * nb / nt if nt else 100 * done / total
    return html.Div([
        html.Span(f"{ref}: downloading, {done} of {total} files ({_mb(nb)} of {_mb(nt)}), each checked "
                  "against the Hub's hash", className="text-muted"),
        dbc.Progress(value=pct, className="mt-1", style={"height": "6px"}, id="ckpt-hub-progress"),
    ]), False


@callback(
    Output("ckpt-hub-poll", "disabled"),
    Input("ckpt-hub-job", "data"),
)
def _hub_poll_on(job: dict | None):
    return not (isinstance(job, dict) and job.get("id"))


@callback(
    Output("ckpt-hub-status", "children"),
    Output("ckpt-hub-poll", "disabled", allow_duplicate=True),
    Output("ckpt-hub-job", "data", allow_duplicate=True),
    Output("ckpt-refresh", "data", allow_duplicate=True),
    Input("ckpt-hub-poll", "n_intervals"),
    State("ckpt-hub-job", "data"),
    State("settings-token-input", "value"),
    prevent_initial_call=True,
)
def _hub_poll(_: int, job: dict | None, token: str | None):
    if not isinstance(job, dict) or not job.get("id"):
        return dash.no_update, True, dash.no_update, dash.no_update
    r = api.get(f"/api/checkpoints/hub/{job['id']}", token=token)
    if not r.ok or not isinstance(r.body, dict):
        return (html.Span(f"Lost track of the download: {r.error()}", className="text-danger"), True, None,
                dash.no_update)
    line, stop = hub_progress(r.body)
    if stop:
        return line, True, None, time.time() if r.body.get("status") == "done" else dash.no_update
    return line, False, dash.no_update, dash.no_update


@callback(
    Output("ckpt-edit-name", "value"), Output("ckpt-edit-task", "value"),
    Output("ckpt-edit-seed", "value"), Output("ckpt-edit-step", "value"),
    Input("ckpt-edit-id", "value"), State("settings-token-input", "value"), prevent_initial_call=True,
)
def _fill(ckpt_id: str, token: str | None = None):
    if not ckpt_id:
        return "", "", "", ""
    r = api.get("/api/checkpoints", token=token)
    found: list[dict[str, Any]] = r.body if r.ok and isinstance(r.body, list) else []
    m = next((m for m in found if m.get("id") == ckpt_id), {})
    t = m.get("tags") or {}
    return m.get("name", ""), t.get("task") or "", str(t.get("seed", "") or ""), str(t.get("step", "") or "")


@callback(Output("ckpt-delete-confirm", "displayed"), Input("ckpt-delete", "n_clicks"), prevent_initial_call=True)
def _confirm(_: int):
    return True


def _coerce(v: str | None) -> Any:
    v = (v or "").strip()
    if not v:
        return None
    try:
        return int(v)
    except ValueError:
        return v


@callback(
    Output("ckpt-edit-status", "children"),
    Output("ckpt-refresh", "data", allow_duplicate=True),
    Input("ckpt-edit-save", "n_clicks"),
    Input("ckpt-delete-confirm", "submit_n_clicks"),
    State("ckpt-edit-id", "value"), State("ckpt-edit-name", "value"), State("ckpt-edit-task", "value"),
    State("ckpt-edit-seed", "value"), State("ckpt-edit-step", "value"), State("settings-token-input", "value"),
    prevent_initial_call=True,
)
def _edit(_save, _delete, ckpt_id, name, task, seed, step, token):
    if not ckpt_id:
        return html.Span("Pick a checkpoint first.", className="text-danger"), dash.no_update
    if ctx.triggered_id == "ckpt-delete-confirm":
        r = api.call("DELETE", f"/api/checkpoints/{ckpt_id}", token=token)
        verb, failed = "Deleted", "Delete failed"
    else:
        tags = {k: _coerce(v) for k, v in (("task", task), ("seed", seed), ("step", step))}
        body: dict[str, Any] = {"tags": tags}  # an emptied field (None) removes that tag
        if (name or "").strip():
            body["name"] = name.strip()
        r = api.call("PATCH", f"/api/checkpoints/{ckpt_id}", json=body, token=token)
        verb, failed = "Saved", "Save failed"
    if r.ok:
        return html.Span(f"{verb}.", className="text-success"), time.time()
    return html.Span(f"{failed}: {r.error()}", className="text-danger"), dash.no_update
