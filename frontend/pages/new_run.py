"""New run (``/``): a form that builds a RunSpec, checks it with the API, copies it, runs it."""

from __future__ import annotations

import logging
from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, State, callback, ctx, dcc, html

from frontend import api
from frontend.components import estimate_block, plural, spec_yaml
from frontend.defaults import default_base, default_dataset, default_picks, fitting
from frontend.first_start import empty_store_notice

logger = logging.getLogger(__name__)

dash.register_page(__name__, path="/", name="New run", title="Basin — new run")

#: Checkpoint pickers on the form; a path type declares up to this many ``slots``.
MAX_SLOTS = 3
CUSTOM_SCOPE = "custom"


def path_info(meta: dict[str, Any] | None, ptype: str | None) -> dict[str, Any]:
    """One path type's entry of ``GET /api/meta`` (``{}`` when unknown)."""
    for p in (meta or {}).get("paths") or []:
        if p.get("type") == ptype:
            return p
    return {}


def task_info(meta: dict[str, Any] | None, task: str | None) -> dict[str, Any]:
    """One task's entry of ``GET /api/meta``: ``{metrics, default_metrics, ensemble,
    per_example, generates, ...}`` (:mod:`basin.tasks`)."""
    return ((meta or {}).get("tasks") or {}).get(task or "") or {}


def spec_field(meta: dict[str, Any] | None, name: str, within: str | None = None) -> dict[str, Any]:
    """A run-spec field's default and bounds from the JSON schema ``GET /api/meta`` serves
    (``run_spec``), as input properties: ``{value, min, max}`` (those the schema has).

    ``within`` names a nested model's field holder (``generation``: GenerationSpec)."""
    schema = (meta or {}).get("run_spec") or {}
    props = schema.get("properties") or {}
    if within is not None:
        holder = props.get(within) or {}
        ref = next((o.get("$ref") for o in [holder, *(holder.get("anyOf") or [])] if o.get("$ref")), None)
        model = (schema.get("$defs") or {}).get(str(ref).rsplit("/", 1)[-1]) if ref else None
        props = (model or {}).get("properties") or {}
    f = props.get(name) or {}
    out: dict[str, Any] = {}
    if f.get("default") is not None:
        out["value"] = f["default"]
    for key, prop in (("minimum", "min"), ("exclusiveMinimum", "min"), ("maximum", "max")):
        if key in f:
            out[prop] = f[key]
    for o in f.get("anyOf") or []:  # an optional number: its bounds sit in the non-null branch
        for key, prop in (("minimum", "min"), ("exclusiveMinimum", "min"), ("maximum", "max")):
            if key in o:
                out.setdefault(prop, o[key])
    return out


def _bounds(schema: dict[str, Any]) -> dict[str, Any]:
    return {prop: schema[key] for key, prop in (("minimum", "min"), ("exclusiveMinimum", "min"),
                                                ("maximum", "max")) if key in schema}


def path_field(meta: dict[str, Any] | None, ptype: str, name: str, item: int | None = None) -> dict[str, Any]:
    """A path type's field default and bounds from ``GET /api/meta`` as input properties
    (``{value, min, max}``); ``item`` picks one element of a pair (``resolution``: nx, ny)."""
    info = path_info(meta, ptype)
    schema = ((info.get("json_schema") or {}).get("properties") or {}).get(name) or {}
    default = (info.get("defaults") or {}).get(name, schema.get("default"))
    if item is not None:
        schema = (schema.get("prefixItems") or [{}, {}])[item]
        default = default[item] if isinstance(default, list) and len(default) > item else None
    return ({"value": default} if default is not None else {}) | _bounds(schema)


def task_supports(meta: dict[str, Any] | None, task: str | None, what: str) -> bool:
    """Whether ``task`` supports ``what`` (``ensemble``, ``per_example``) per ``GET /api/meta``."""
    return bool(task_info(meta, task).get(what))


def generation_of(meta: dict[str, Any] | None, task: str | None) -> str:
    """How ``task`` generates: ``always`` (generation), ``with_prompts`` (causal_lm) or ``never``."""
    return str(task_info(meta, task).get("generates") or "never")


def metric_options(meta: dict[str, Any] | None, task: str | None) -> list[dict[str, str]]:
    labels = (meta or {}).get("metrics") or {}
    return [{"label": (labels.get(m) or {}).get("label", m), "value": m}
            for m in task_info(meta, task).get("metrics") or ["loss"]]


def _num(v: Any, default: float) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def _int(v: Any, default: int) -> int:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return default


def order_by_step(refs: list[str], checkpoints: list[dict]) -> list[str]:
    """Trajectory checkpoints ordered by their ``step`` tag (untagged keep their place, last)."""
    steps: dict[str, float] = {}
    for m in checkpoints:
        step = (m.get("tags") or {}).get("step")
        if not isinstance(step, (int, float, str)):
            continue
        try:
            steps[m["id"]] = float(step)
        except ValueError:
            continue
    pos = {r: i for i, r in enumerate(refs)}
    return sorted(refs, key=lambda r: (r not in steps, steps.get(r, 0.0), pos[r]))


def build_spec(v: dict[str, Any], checkpoints: list[dict] | None = None,
               meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The RunSpec dict (as the CLI accepts it) for the form values ``v``.

    What each path type needs comes from ``meta`` (``GET /api/meta``): its checkpoint
    ``slots`` (pickers 1..3), whether it is 1D (points, α range) or a grid (resolution,
    and a range or a margin when its defaults have one), a ``sequence_field`` of ordered
    checkpoints (trajectories) and a ``basis``. Keys of ``v``: type, ckpt1..3, traj
    (list), traj_by_step, basis ("pca" | "three"), basis1..3, dataset, task, metrics,
    points, lo, hi, nx, ny, xlo, xhi, ylo, yhi, margin, scope, scope_regex,
    max_examples, hold, name, ensemble, per_example, space ("merged" | "adapter"), the
    generation options gen_* (:func:`generation_spec`), and ``params`` (``{field: value}``
    of the path type's ``params``, :func:`param_values`). A ``list_slot`` (a merge's
    ``models``) is filled from ``traj``, in the order picked.
    Missing pickers are left empty so the API names them.
    """
    ptype = v.get("type") or "linear"
    info = path_info(meta, ptype)
    defaults = info.get("defaults") or {}
    path: dict[str, Any] = {"type": ptype}
    for k, (field, _) in enumerate((info.get("slots") or [])[:MAX_SLOTS]):
        path[field] = v.get(f"ckpt{k + 1}") or ""
    seq = info.get("sequence_field")
    if seq:
        refs = [r for r in (v.get("traj") or []) if r]
        if v.get("traj_by_step", True):
            refs = order_by_step(refs, checkpoints or [])
        path[seq] = refs
    elif info.get("list_slot"):  # a merge's models: the multi-picker, in the order picked
        path[info["list_slot"][0]] = [r for r in (v.get("traj") or []) if r]
    path.update(param_values(info, v.get("params") or {}))
    if "basis" in (info.get("ref_fields") or []):
        if v.get("basis") == "three":  # the plane through three chosen checkpoints
            path["basis"] = [v.get(f"basis{k}") or "" for k in (1, 2, 3)]
        else:  # top-2 PCA directions of the trajectory
            path["basis"] = "pca"
    if info.get("ndim", 1) == 1:
        lo, hi = defaults.get("range") or (0.0, 1.0)
        path["points"] = _int(v.get("points"), int(defaults.get("points", 26)))
        path["range"] = [_num(v.get("lo"), lo), _num(v.get("hi"), hi)]
    else:
        nx, ny = defaults.get("resolution") or (21, 21)
        path["resolution"] = [_int(v.get("nx"), nx), _int(v.get("ny"), ny)]
        if "range" in defaults:
            (xlo, xhi), (ylo, yhi) = defaults["range"]
            path["range"] = [[_num(v.get("xlo"), xlo), _num(v.get("xhi"), xhi)],
                             [_num(v.get("ylo"), ylo), _num(v.get("yhi"), yhi)]]
        if "margin" in defaults:
            path["margin"] = _num(v.get("margin"), float(defaults["margin"]))
    task = v.get("task") or "classification"
    scope = v.get("scope") or "all"
    if scope == CUSTOM_SCOPE:
        scope = (v.get("scope_regex") or "").strip() or "all"
    spec: dict[str, Any] = {
        "path": path,
        "dataset": v.get("dataset") or "",
        "task": task,
        "metrics": list(v.get("metrics") or task_info(meta, task).get("default_metrics") or ["loss"]),
        "max_examples": _int(v.get("max_examples"), int(spec_field(meta, "max_examples").get("value", 512))),
        "scope": scope,
    }
    if v.get("ensemble") and info.get("ndim", 1) == 1 and task_supports(meta, task, "ensemble"):
        spec["ensemble"] = True
    if v.get("per_example") and task_supports(meta, task, "per_example"):
        spec["per_example"] = True
    gen = generation_spec(v, task, generation_of(meta, task))
    if gen is not None:
        spec["generation"] = gen
        if generation_of(meta, task) == "with_prompts" and not v.get("metrics"):
            spec["metrics"] += [m for m in task_info(meta, "generation").get("default_metrics") or []
                                if m != "sentiment" or gen.get("scorer")]
        elif generation_of(meta, task) == "always" and not v.get("metrics"):
            # the defaults leave sentiment out without a scorer; a ticked one stays, and the
            # spec's own check refuses it in words ("metric 'sentiment' needs a scorer")
            spec["metrics"] = [m for m in spec["metrics"] if m != "sentiment" or gen.get("scorer")]
        if not gen.get("reference") and not any(path.get(f) for f in ("base", "origin")):
            # no reference LM and no θ0 on the path: the samples' perplexity is left out (an end of the path
            # would tilt it); picking a reference puts it back
            spec["metrics"] = [m for m in spec["metrics"] if m != "sample_perplexity"]
    if v.get("hold"):
        spec["on_mismatch"] = "hold"
    if v.get("space") == "adapter":  # PEFT adapters: mix their own tensors, not merged weights
        spec["space"] = "adapter"
    if (v.get("name") or "").strip():
        spec["name"] = v["name"].strip()
    return spec


def param_kind(schema: dict[str, Any]) -> str:
    """How the form shows a spec field, from its JSON schema: ``bool``, ``choice``, ``int``,
    ``number`` or ``numbers`` (a list of numbers, typed comma-separated); ``text`` otherwise."""
    for option in [schema, *(schema.get("anyOf") or [])]:
        if option.get("enum"):
            return "choice"
        kind = option.get("type")
        if kind == "boolean":
            return "bool"
        if kind == "integer":
            return "int"
        if kind == "number":
            return "number"
        if kind == "array" and (option.get("items") or {}).get("type") in ("number", "integer"):
            return "numbers"
    return "text"


def _schema(info: dict[str, Any], field: str) -> dict[str, Any]:
    return ((info.get("json_schema") or {}).get("properties") or {}).get(field) or {}


def param_values(info: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The path type's ``params`` fields from the form's values (``{field: raw value}``).

    Empty fields are left out (the spec's default applies); a value that does not parse
    is passed as typed, so the API's answer names it.
    """
    out: dict[str, Any] = {}
    for field, _ in info.get("params") or []:
        raw = values.get(field)
        kind = param_kind(_schema(info, field))
        if kind == "bool":
            if raw is not None:
                out[field] = bool(raw)
            continue
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        try:
            if kind == "int":
                out[field] = int(float(raw))
            elif kind == "number":
                out[field] = float(raw)
            elif kind == "numbers":
                out[field] = [float(x) for x in str(raw).replace(";", ",").split(",") if x.strip()]
            else:
                out[field] = raw
        except (TypeError, ValueError):
            out[field] = raw
    return out


def param_inputs(info: dict[str, Any]) -> list[Any]:
    """One form row per ``params`` field of the path type (ids ``{"type": "newrun-param", "field": f}``)."""
    rows = []
    defaults = info.get("defaults") or {}
    for field, label in info.get("params") or []:
        schema = _schema(info, field)
        kind = param_kind(schema)
        pid = {"type": "newrun-param", "field": field}
        default = defaults.get(field)
        if kind == "bool":
            comp: Any = dbc.Checkbox(id=pid, value=bool(default), label=schema.get("description") or "")
        elif kind == "choice":
            opts = next(o["enum"] for o in [schema, *(schema.get("anyOf") or [])] if o.get("enum"))
            comp = dbc.Select(id=pid, value=default, options=[{"label": str(o), "value": o} for o in opts])
        elif kind in ("int", "number"):
            bounds = {k: schema[s] for k, s in (("min", "minimum"), ("max", "maximum"),
                                               ("min", "exclusiveMinimum")) if s in schema}
            comp = dbc.Input(id=pid, type="number", value=default, step=1 if kind == "int" else "any", **bounds)
        elif kind == "numbers":
            comp = dbc.Input(id=pid, type="text", value=", ".join(str(x) for x in default or []),
                             placeholder="comma-separated, e.g. 1, 0.5")
        else:
            comp = dbc.Input(id=pid, type="text", value=default)
        help_ = schema.get("description") if kind != "bool" else None
        rows.append(_field(label, comp, help_=help_))
    return rows


GEN_FIELDS = {  # form key -> (spec field, kind)
    "gen_k": ("samples_per_prompt", int), "gen_tokens": ("max_new_tokens", int), "gen_top_p": ("top_p", float),
    "gen_temperature": ("temperature", float), "gen_seed": ("seed", int), "gen_prompt_tokens": ("prompt_tokens", int),
    "gen_keep": ("keep_samples", int),
}


def generation_spec(v: dict[str, Any], task: str, generates: str | None = None) -> dict[str, Any] | None:
    """The ``generation`` block for a task that always generates (generation), or for one that
    generates ``with_prompts`` (causal_lm) when a prompts dataset is picked. ``generates``: the
    task's entry in ``GET /api/meta`` (default: the built-in tasks' own)."""
    if generates is None:
        generates = {"generation": "always", "causal_lm": "with_prompts"}.get(task, "never")
    if generates != "always" and not (generates == "with_prompts" and v.get("gen_prompts")):
        return None
    gen: dict[str, Any] = {}
    if generates == "with_prompts":
        gen["prompts"] = v["gen_prompts"]
    for key, ref in (("scorer", "gen_scorer"), ("reference", "gen_reference")):
        if v.get(ref):
            gen[key] = v[ref]
    if (v.get("gen_positive") or "").strip():
        gen["positive_label"] = v["gen_positive"].strip()
    for key, (field, kind) in GEN_FIELDS.items():
        if v.get(key) not in (None, ""):
            try:
                gen[field] = kind(float(v[key])) if kind is int else float(v[key])
            except (TypeError, ValueError):
                gen[field] = v[key]  # the API names the bad value
    return gen


def _label(m: dict) -> str:
    tags = m.get("tags") or {}
    t = ", ".join(f"{k}={tags[k]}" for k in ("task", "seed", "step") if tags.get(k) not in (None, ""))
    arch = m.get("architecture") or m.get("model_type") or ""
    a = m.get("adapter")
    if isinstance(a, dict):  # a PEFT adapter: its type, rank and base
        rank = f" r={a['r']}" if a.get("r") else ""
        arch = f"{a.get('peft_type', 'adapter')}{rank} adapter on {m.get('base_name') or str(m.get('base', ''))[:10]}"
    return f"{m.get('name', m.get('id', '?')[:10])}" + (f" — {arch}" if arch else "") + (f" ({t})" if t else "")


def _field(label: str, component: Any, id_: str | None = None, help_: str | None = None) -> dbc.Row:
    ids = {"id": id_} if id_ else {}
    lab = {"id": f"{id_}-label"} if id_ else {}
    return dbc.Row(
        [dbc.Label(label, width=4, className="fw-semibold", **lab),
         dbc.Col([component] + ([dbc.FormText(help_)] if help_ else []), width=8)],
        className="mb-2", **ids,
    )


def layout(**_: Any) -> html.Div:
    mt = api.get("/api/meta")
    meta = mt.body if mt.ok and isinstance(mt.body, dict) else {"paths": [], "tasks": {}}
    ck = api.get("/api/checkpoints")
    ds = api.get("/api/datasets")
    ckpts = ck.body if ck.ok and isinstance(ck.body, list) else []
    dsets = ds.body if ds.ok and isinstance(ds.body, list) else []
    warn = []
    # With BASIN_API_TOKEN set the lists need the token, which only the browser holds:
    # _lists_with_token fills the pickers once the user has entered it.
    needs_token = api.needs_token(ck) or api.needs_token(ds)
    if not mt.ok:
        warn.append(dbc.Alert(f"Could not read what this server can run: {mt.error()}", color="warning"))
    if needs_token:
        warn.append(dbc.Alert(api.NEEDS_TOKEN.format(what="checkpoints and datasets"), color="warning",
                              id="newrun-needs-token"))
    elif not ck.ok:
        warn.append(dbc.Alert(f"Could not list checkpoints: {ck.error()}", color="warning"))
    if ck.ok and not ckpts:  # the first start's demo on its way, or "No checkpoints yet"
        warn += empty_store_notice(api.get("/api/health").body)
    copts = [{"label": _label(m), "value": m["id"]} for m in ckpts]
    dopts = [
        {"label": f"{d.get('name')} ({d.get('rows', '?')} rows)", "value": d["id"]} for d in dsets]
    picks = default_picks(ckpts)
    picker = [
        _field(f"Checkpoint {i}", dbc.Select(id=f"newrun-ckpt-{i}", options=copts, value=picks[i - 1],
                                             placeholder="— pick —"), id_=f"newrun-row-{i}")
        for i in range(1, MAX_SLOTS + 1)
    ]
    traj = _field(
        "Checkpoints (in order)",
        html.Div([
            dcc.Dropdown(id="newrun-traj", options=copts, multi=True,
                         placeholder="pick the checkpoints along training"),
            dbc.Checkbox(id="newrun-traj-bystep", value=True, label="order by their step tag"),
        ]),
        id_="newrun-row-traj",
    )
    basis = _field(
        "Plane (basis)",
        html.Div([
            dbc.RadioItems(id="newrun-basis", value="pca", inline=True, options=[
                {"label": "PCA of the trajectory", "value": "pca"},
                {"label": "through three checkpoints", "value": "three"}]),
            html.Div([dbc.Select(id=f"newrun-basis-{k}", options=copts, value="", placeholder=ph, className="mt-1")
                      for k, ph in ((1, "origin θA"), (2, "θB (first direction)"), (3, "θC (second direction)"))],
                     id="newrun-basis-pickers", style={"display": "none"}),
        ]),
        id_="newrun-row-basis",
        help_="PCA: the top-2 directions of the checkpoints' differences; else the plane through A, B, C",
    )
    form = dbc.Card(dbc.CardBody([
        _field("Path", dbc.Select(id="newrun-type", value="linear",
                                  options=[{"label": p["type"], "value": p["type"]} for p in meta["paths"]]),
               help_=None),
        html.Div(path_info(meta, "linear").get("help", ""), id="newrun-type-help",
                 className="text-muted small mb-3 ms-1"),
        *picker, traj, basis,
        html.Div(param_inputs(path_info(meta, "linear")), id="newrun-params"),
        _field("Dataset", dbc.Select(id="newrun-dataset", options=dopts, value=default_dataset(dsets),
                                     placeholder="— pick —")),
        _field("Task", dbc.Select(id="newrun-task", value="classification",
                                  options=[{"label": t, "value": t} for t in meta["tasks"]])),
        _field("Metrics", dbc.Checklist(id="newrun-metrics", inline=True,
                                        value=task_info(meta, "classification").get("default_metrics", []),
                                        options=metric_options(meta, "classification"))),
        _field("Points", dbc.Input(id="newrun-points", type="number", **path_field(meta, "linear", "points")),
               id_="newrun-row-points"),
        _field("α range", dbc.InputGroup([
            dbc.Input(id="newrun-lo", type="number", value=0.0, step="any"),
            dbc.InputGroupText("to"),
            dbc.Input(id="newrun-hi", type="number", value=1.0, step="any")]),
            id_="newrun-row-range", help_="outside [0, 1] extrapolates"),
        _field("Resolution", dbc.InputGroup([
            dbc.Input(id="newrun-nx", type="number", **path_field(meta, "plane", "resolution", 0)),
            dbc.InputGroupText("×"),
            dbc.Input(id="newrun-ny", type="number", **path_field(meta, "plane", "resolution", 1))]),
            id_="newrun-row-res"),
        _field("Grid x / y range", dbc.InputGroup([
            dbc.Input(id="newrun-xlo", type="number", value=-1.0, step="any"),
            dbc.Input(id="newrun-xhi", type="number", value=2.0, step="any"),
            dbc.InputGroupText("/"),
            dbc.Input(id="newrun-ylo", type="number", value=-1.0, step="any"),
            dbc.Input(id="newrun-yhi", type="number", value=2.0, step="any")]), id_="newrun-row-grid"),
        _field("Margin", dbc.Input(id="newrun-margin", type="number", step="any",
                                   **path_field(meta, "plane", "margin")),
               id_="newrun-row-margin", help_="around the anchors' bounding box, × its size"),
        _field("Scope", html.Div([
            dbc.Select(id="newrun-scope", value="all",
                       options=[{"label": s, "value": s}
                                for s in [*meta.get("scope_presets", ["all"]), CUSTOM_SCOPE]]),
            dbc.Input(id="newrun-scope-regex", placeholder="regex over parameter names", className="mt-1",
                      style={"display": "none"})]),
            help_="which parameters move; the rest stay at the first checkpoint"),
        _field("Output ensembling", dbc.Checkbox(id="newrun-ensemble", value=False,
                                                 label="also mix the endpoints' outputs, (1−α)·zA + α·zB"),
               id_="newrun-row-ensemble", help_="a second curve beside weight interpolation, at almost no cost"),
        _field("Per-example results", dbc.Checkbox(id="newrun-per-example", value=False,
                                                   label="keep each example's outcome at every point"),
               id_="newrun-row-per-example",
               help_="needed for the forgetting table (the barrier's 95 % interval comes without it); the result grows "
                     "by max examples × points values"),
        html.Div(_generation_fields(copts, dopts, ckpts, meta), id="newrun-row-gen", style={"display": "none"}),
        _field("Max examples", dbc.Input(id="newrun-max", type="number", **spec_field(meta, "max_examples")),
               help_="for generation: the number of prompts"),
        _field("Adapter space", dbc.Select(id="newrun-space", value="merged", options=[
            {"label": "merged weights θ_base + ΔW (adapters and full checkpoints mix)", "value": "merged"},
            {"label": "adapter tensors (LoRA A and B; adapters on one base)", "value": "adapter"}]),
            help_="for PEFT adapter checkpoints: which weights the path interpolates"),
        _field("Mismatched tensors", dbc.Checkbox(id="newrun-hold", value=False,
                                                  label="hold them at the first checkpoint")),
        _field("Name (optional)", dbc.Input(id="newrun-name", placeholder="e.g. seeds 0 vs 1")),
        html.Div([
            dbc.Button("Check", id="newrun-check", color="secondary", className="me-2"),
            dbc.Button("Copy spec", id="newrun-copy", color="secondary", outline=True, className="me-2"),
            dbc.Button("Run", id="newrun-run", color="primary"),
        ], className="mt-3"),
    ]))
    side = html.Div([
        dcc.Loading(html.Div(id="newrun-feedback", role="status"), type="dot"),
        html.Div([
            html.Div([html.Span("Spec (YAML for basin eval)", className="fw-semibold me-2"),
                      dcc.Clipboard(target_id="newrun-yaml", title="copy", style={"display": "inline-block"})]),
            html.Pre(id="newrun-yaml", className="bg-light p-2 small border rounded"),
        ], id="newrun-yaml-box", style={"display": "none"}),
    ])
    return html.Div([
        dcc.Store(id="newrun-checkpoints", data=ckpts),
        dcc.Store(id="newrun-meta", data=meta),
        dcc.Store(id="newrun-lists-need-token", data=needs_token),
        dcc.Location(id="newrun-location", refresh="callback-nav"),
        html.H3("New run"),
        html.Div(warn, id="newrun-warnings"),
        dbc.Row([dbc.Col(form, lg=7), dbc.Col(side, lg=5)]),
    ])


def _generation_fields(copts: list[dict], dopts: list[dict], ckpts: list[dict],
                       meta: dict[str, Any] | None = None) -> list[Any]:
    """Sampling and scoring options (task generation; causal_lm with a prompts dataset); defaults
    and bounds from the run spec's schema (``GET /api/meta``)."""
    scorer = next((m["id"] for m in ckpts if (m.get("tags") or {}).get("role") == "scorer"), "")

    def g(name: str) -> dict[str, Any]:
        return spec_field(meta, name, "generation")
    return [
        html.H6("Generation", className="mt-3"),
        _field("Prompts dataset", dbc.Select(id="newrun-gen-prompts", options=dopts, value="",
                                             placeholder="— none: loss only —"), id_="newrun-row-gen-prompts",
               help_="sample continuations of these prompts at every point, beside the loss"),
        _field("Sentiment scorer", dbc.Select(id="newrun-gen-scorer", options=copts, value=scorer,
                                              placeholder="— none —"),
               help_="a sentiment classifier; sentiment = mean P(positive) of the samples"),
        _field("Positive label", dbc.Input(id="newrun-gen-positive", placeholder="default: 'positive'")),
        _field("Reference LM", dbc.Select(id="newrun-gen-reference", options=copts, value="",
                                          placeholder="— the first checkpoint —"),
               help_="the perplexity of the samples is measured under it"),
        _field("Samples × tokens", dbc.InputGroup([
            dbc.Input(id="newrun-gen-k", type="number", **g("samples_per_prompt")),
            dbc.InputGroupText("samples per prompt,"),
            dbc.Input(id="newrun-gen-tokens", type="number", **g("max_new_tokens")),
            dbc.InputGroupText("new tokens")])),
        _field("top-p / temperature / seed", dbc.InputGroup([
            dbc.Input(id="newrun-gen-top-p", type="number", step="any", **g("top_p")),
            dbc.Input(id="newrun-gen-temperature", type="number", step="any", **g("temperature")),
            dbc.Input(id="newrun-gen-seed", type="number", step=1, **g("seed"))])),
        _field("Prompt tokens", dbc.Input(id="newrun-gen-prompt-tokens", type="number", **g("prompt_tokens"),
                                          placeholder="only for a dataset without a 'prompt' column"),
               help_="cut its 'text' column to the first N tokens"),
        _field("Samples kept per point", dbc.Input(id="newrun-gen-keep", type="number", **g("keep_samples"))),
    ]


PICKERS = [f"newrun-ckpt-{i}" for i in range(1, MAX_SLOTS + 1)]
BASIS_PICKERS = [f"newrun-basis-{k}" for k in (1, 2, 3)]


@callback(
    [Output(p, "options", allow_duplicate=True) for p in PICKERS]
    + [Output(p, "value", allow_duplicate=True) for p in PICKERS]
    + [Output("newrun-traj", "options", allow_duplicate=True)]
    + [Output(p, "options", allow_duplicate=True) for p in BASIS_PICKERS]
    + [Output("newrun-dataset", "options", allow_duplicate=True),
       Output("newrun-dataset", "value", allow_duplicate=True),
       Output("newrun-checkpoints", "data", allow_duplicate=True),
       Output("newrun-gen-scorer", "options", allow_duplicate=True),
       Output("newrun-gen-reference", "options", allow_duplicate=True),
       Output("newrun-gen-prompts", "options", allow_duplicate=True),
       Output("newrun-warnings", "children", allow_duplicate=True)],
    Input("newrun-lists-need-token", "data"),
    Input("settings-token-input", "value"),
    prevent_initial_call="initial_duplicate",
)
def _lists_with_token(needs: bool | None, token: str | None):
    """Fill the pickers with the token the user entered, when the page could not list
    checkpoints and datasets without it (``BASIN_API_TOKEN`` set). Otherwise nothing."""
    if not needs or not (token or "").strip():
        raise dash.exceptions.PreventUpdate
    ck = api.get("/api/checkpoints", token=token)
    ds = api.get("/api/datasets", token=token)
    if not (ck.ok and ds.ok and isinstance(ck.body, list) and isinstance(ds.body, list)):
        bad = ck if not ck.ok else ds
        text = (api.NEEDS_TOKEN.format(what="checkpoints and datasets") + " (the one entered was refused)"
                if api.needs_token(bad) else f"Could not list checkpoints and datasets: {bad.error()}")
        keep = [dash.no_update] * (2 * MAX_SLOTS + 1 + len(BASIS_PICKERS) + 6)
        return (*keep, dbc.Alert(text, color="warning", id="newrun-needs-token-alert"))
    ckpts, dsets = ck.body, ds.body
    copts = [{"label": _label(m), "value": m["id"]} for m in ckpts]
    dopts = [{"label": f"{d.get('name')} ({d.get('rows', '?')} rows)", "value": d["id"]} for d in dsets]
    picks = default_picks(ckpts)
    warn = [] if ckpts else empty_store_notice(api.get("/api/health").body)
    return (*[copts] * MAX_SLOTS, *picks[:MAX_SLOTS], copts, *[copts] * len(BASIS_PICKERS),
            dopts, default_dataset(dsets), ckpts, copts, copts, dopts, warn)


@callback(
    [Output(f"newrun-row-{i}", "style") for i in range(1, MAX_SLOTS + 1)]
    + [Output(f"newrun-row-{i}-label", "children") for i in range(1, MAX_SLOTS + 1)]
    + [Output("newrun-row-traj", "style"), Output("newrun-row-basis", "style"), Output("newrun-row-points", "style"),
       Output("newrun-row-range", "style"), Output("newrun-row-res", "style"),
       Output("newrun-row-grid", "style"), Output("newrun-row-margin", "style"),
       Output("newrun-type-help", "children"),
       Output("newrun-xlo", "value"), Output("newrun-xhi", "value"),
       Output("newrun-ylo", "value"), Output("newrun-yhi", "value"),
       Output("newrun-row-traj-label", "children"), Output("newrun-traj-bystep", "style"),
       Output("newrun-params", "children"), Output("newrun-row-range-label", "children"),
       Output("newrun-traj", "placeholder")],
    Input("newrun-type", "value"),
    State("newrun-meta", "data"),
)
def _show_fields(ptype: str, meta: dict | None):
    """Show exactly the pickers and grid fields the path type declares (``GET /api/meta``)."""
    hide: dict[str, str] = {"display": "none"}
    show: dict[str, str] = {}
    info = path_info(meta, ptype)
    defaults = info.get("defaults") or {}
    slots = (info.get("slots") or [])[:MAX_SLOTS]
    styles = [show if i < len(slots) else hide for i in range(MAX_SLOTS)]
    labels = [slots[i][1] if i < len(slots) else "" for i in range(MAX_SLOTS)]
    one_d = info.get("ndim", 1) == 1
    grid_range = not one_d and "range" in defaults
    (xlo, xhi), (ylo, yhi) = defaults["range"] if grid_range else ((-1.0, 1.0), (-1.0, 1.0))
    list_slot = info.get("list_slot")
    coord = (info.get("axis_titles") or {}).get("alpha", "α")
    return (*styles, *labels,
            show if info.get("sequence_field") or list_slot else hide,
            show if "basis" in (info.get("ref_fields") or []) else hide,
            show if one_d else hide, show if one_d else hide, hide if one_d else show,
            show if grid_range else hide, show if not one_d and "margin" in defaults else hide,
            info.get("help", ""), xlo, xhi, ylo, yhi,
            list_slot[1] if list_slot else "Checkpoints (in order)",
            hide if list_slot and not info.get("sequence_field") else show,
            param_inputs(info), f"{coord} range",
            "pick the fine-tuned models to merge" if list_slot and not info.get("sequence_field")
            else "pick the checkpoints along training")


@callback(Output("newrun-metrics", "options"), Output("newrun-metrics", "value"),
          Input("newrun-task", "value"), Input("newrun-gen-prompts", "value"), Input("newrun-gen-scorer", "value"),
          State("newrun-meta", "data"), prevent_initial_call=True)
def _metrics_for_task(task: str, prompts: str | None, scorer: str | None, meta: dict | None):
    opts = metric_options(meta, task)
    value = list(task_info(meta, task).get("default_metrics") or ["loss"])
    if generation_of(meta, task) == "with_prompts" and prompts:  # loss + the generation metrics of the prompts
        opts += metric_options(meta, "generation")
        value += task_info(meta, "generation").get("default_metrics") or []
    if not scorer:  # sentiment needs a scorer: unticked, visibly (ticking it again is refused in words)
        value = [m for m in value if m != "sentiment"]
    return opts, value


@callback(Output("newrun-row-gen", "style"), Output("newrun-row-gen-prompts", "style"),
          Output("newrun-row-ensemble", "style"),
          Input("newrun-task", "value"), Input("newrun-type", "value"), State("newrun-meta", "data"))
def _generation_rows(task: str, ptype: str, meta: dict | None):
    """Generation options for generation / causal_lm runs; ensembling for 1D paths of the tasks it has."""
    hide: dict[str, str] = {"display": "none"}
    show: dict[str, str] = {}
    one_d = path_info(meta, ptype).get("ndim", 1) == 1
    generates = generation_of(meta, task)
    return (show if generates != "never" else hide, show if generates == "with_prompts" else hide,
            show if one_d and task_supports(meta, task, "ensemble") else hide)


@callback(Output("newrun-row-per-example", "style"), Input("newrun-task", "value"), State("newrun-meta", "data"))
def _per_example_row(task: str, meta: dict | None):
    """Per-example results only for the tasks whose evaluators keep them."""
    return {} if task_supports(meta, task, "per_example") else {"display": "none"}


@callback(Output("newrun-basis-pickers", "style"), Input("newrun-basis", "value"))
def _basis_pickers(basis: str):
    return {} if basis == "three" else {"display": "none"}


@callback(Output("newrun-scope-regex", "style"), Input("newrun-scope", "value"))
def _scope_regex(scope: str):
    return {} if scope == "custom" else {"display": "none"}


FORM_STATE = {
    "type": "newrun-type", "ckpt1": "newrun-ckpt-1", "ckpt2": "newrun-ckpt-2", "ckpt3": "newrun-ckpt-3",
    "traj": "newrun-traj", "traj_by_step": "newrun-traj-bystep", "basis": "newrun-basis",
    "basis1": "newrun-basis-1", "basis2": "newrun-basis-2", "basis3": "newrun-basis-3", "dataset": "newrun-dataset",
    "task": "newrun-task", "metrics": "newrun-metrics", "points": "newrun-points", "lo": "newrun-lo",
    "hi": "newrun-hi", "nx": "newrun-nx", "ny": "newrun-ny", "xlo": "newrun-xlo", "xhi": "newrun-xhi",
    "ylo": "newrun-ylo", "yhi": "newrun-yhi", "margin": "newrun-margin", "scope": "newrun-scope",
    "scope_regex": "newrun-scope-regex", "max_examples": "newrun-max", "hold": "newrun-hold",
    "name": "newrun-name", "ensemble": "newrun-ensemble", "per_example": "newrun-per-example",
    "space": "newrun-space",
    "gen_prompts": "newrun-gen-prompts",
    "gen_scorer": "newrun-gen-scorer", "gen_positive": "newrun-gen-positive", "gen_reference": "newrun-gen-reference",
    "gen_k": "newrun-gen-k", "gen_tokens": "newrun-gen-tokens", "gen_top_p": "newrun-gen-top-p",
    "gen_temperature": "newrun-gen-temperature", "gen_seed": "newrun-gen-seed",
    "gen_prompt_tokens": "newrun-gen-prompt-tokens", "gen_keep": "newrun-gen-keep",
}


@callback(
    Output("newrun-feedback", "children"),
    Output("newrun-yaml", "children"),
    Output("newrun-yaml-box", "style"),
    Output("newrun-location", "href"),
    Input("newrun-check", "n_clicks"),
    Input("newrun-copy", "n_clicks"),
    Input("newrun-run", "n_clicks"),
    [State(cid, "value") for cid in FORM_STATE.values()],
    State("newrun-checkpoints", "data"),
    State("newrun-meta", "data"),
    State("settings-token-input", "value"),
    State({"type": "newrun-param", "field": ALL}, "value"),
    State({"type": "newrun-param", "field": ALL}, "id"),
    prevent_initial_call=True,
)
def _act(_check, _copy, _run, *values):
    """Check / Copy spec / Run: the API's answer is shown next to the form."""
    *form, ckpts, meta, token, param_vals, param_ids = values
    v = dict(zip(FORM_STATE, form, strict=True))
    v["params"] = {pid["field"]: val for pid, val in zip(param_ids or [], param_vals or [], strict=False)}
    spec = build_spec(v, ckpts, meta)
    text = spec_yaml(spec, {m["id"]: m.get("name") for m in ckpts or [] if m.get("id") and m.get("name")})
    nav = dash.no_update
    shown: dict[str, str] = {}
    if ctx.triggered_id == "newrun-copy":
        return (dbc.Alert("Spec below — save it as spec.yaml and run `basin eval spec.yaml -o result.json "
                          "--store <this server's store folder>` (the ids are the store's; or set BASIN_STORE).",
                          color="secondary", id="newrun-result"), text, shown, nav)
    if ctx.triggered_id == "newrun-check":
        r = api.post("/api/runs/validate", json=spec, token=token)
        if r.ok and isinstance(r.body, dict):
            n = r.body.get("num_points")
            est = r.body.get("estimate")
            msg = dbc.Alert([html.Div(f"OK — {plural(n, 'point') if isinstance(n, int) else '? points'}."),
                             *estimate_block(est)],
                            color="warning" if isinstance(est, dict) and est.get("warning") else "success",
                            id="newrun-result")
        else:
            msg = _error_alert(r)
        return msg, text, shown, nav
    r = api.post("/api/runs", json=spec, token=token)
    if r.ok and isinstance(r.body, dict) and r.body.get("id"):
        run_id = r.body["id"]
        return (dbc.Alert(["Run created: ", html.A(run_id[:12], href=f"/runs/{run_id}")], color="success",
                          id="newrun-result"), text, shown, f"/runs/{run_id}")
    return _error_alert(r), text, shown, nav


def _error_alert(r: api.ApiResult) -> dbc.Alert:
    body = r.body if isinstance(r.body, dict) else {}
    items: list[Any] = [html.Div(body.get("detail") if isinstance(body.get("detail"), str) else r.error(),
                      className="fw-semibold")]
    mism = body.get("mismatches") or []
    if mism:
        items.append(html.Ul([html.Li([html.Code(m.get("tensor")), f": {m.get('reason')}"]) for m in mism[:12]],
                             className="mb-0 small"))
        if len(mism) > 12:
            items.append(html.Div(f"… and {len(mism) - 12} more", className="small"))
    return dbc.Alert(items, color="danger", id="newrun-result", className="newrun-error")


@callback(Output("newrun-ckpt-1", "value", allow_duplicate=True),
          Input("newrun-type", "value"), State("newrun-checkpoints", "data"), State("newrun-meta", "data"),
          prevent_initial_call=True)
def _merge_base(ptype: str, ckpts: list | None, meta: dict | None):
    """A merge's base θ0 (its first slot, ``base``) defaults to the step-0 / init checkpoint."""
    slots = path_info(meta, ptype).get("slots") or []
    if not slots or slots[0][0] != "base":
        return dash.no_update
    return default_base(ckpts or []) or dash.no_update


@callback([Output(f"newrun-ckpt-{i}", "options", allow_duplicate=True) for i in range(1, MAX_SLOTS + 1)]
          + [Output("newrun-traj", "options", allow_duplicate=True)],
          Input("newrun-task", "value"), Input("newrun-ckpt-1", "value"), Input("newrun-type", "value"),
          Input("newrun-checkpoints", "data"), State("newrun-meta", "data"), prevent_initial_call=True)
def _fitting_pickers(task: str | None, first: str | None, ptype: str | None, ckpts: list | None,
                     meta: dict | None):
    """Pickers offer what fits: the task's heads everywhere; beside the first checkpoint, only
    checkpoints of its model type (a BERT is not offered beside a Llama)."""
    ckpts = [m for m in ckpts or [] if isinstance(m, dict) and m.get("id")]
    if not ckpts:
        return [dash.no_update] * (MAX_SLOTS + 1)
    has_slots = bool(path_info(meta, ptype).get("slots"))
    for_task = [{"label": _label(m), "value": m["id"]} for m in fitting(ckpts, task)]
    beside = [{"label": _label(m), "value": m["id"]}
              for m in fitting(ckpts, task, first if has_slots else None)]
    return [for_task, *[beside] * (MAX_SLOTS - 1), beside]
