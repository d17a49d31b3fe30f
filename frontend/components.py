"""Shared layout pieces of the dashboard pages (not a page itself)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import dash_bootstrap_components as dbc
import yaml
from dash import dcc, html

from basin.figures import PLOTLY_CONFIG, short_name

#: Every dcc.Graph's ``config``: Basin's modebar (no "Share chart…" to Plotly Cloud, no logo).
GRAPH_CONFIG: dcc.Graph.Config = cast("dcc.Graph.Config", PLOTLY_CONFIG)


def data_attrs(**attrs: str) -> dict[str, Any]:
    """HTML ``data-*`` attributes for a Dash component, to pass as ``**data_attrs(...)``
    (``data_attrs(input_id="x")`` → ``{"data-input-id": "x"}``). Dash types its components'
    keyword arguments; these ride on its catch-all ``**kwargs``."""
    return {"data-" + k.replace("_", "-"): v for k, v in attrs.items()}


def upload_box(prefix: str, endpoint: str, refresh: str, accept: str, *, config_picker: bool = False,
               keep_ext: bool = False, name_placeholder: str = "name (default: the file name)",
               select: str | None = None, base_picker: bool = False) -> html.Div:
    """The upload row: file input, name, (config), (adapter base), button, progress bar, status line.

    After a successful upload ``assets/basin.js`` bumps the ``refresh`` store and, when
    ``select`` names a component, sets its ``value`` to the new item's id.
    """
    extra = []
    if config_picker:
        extra.append(dbc.Col(dbc.Select(id=f"{prefix}-upload-config", className="basin-upload-config",
                                        options=[], value="", placeholder="config from… (bare .safetensors)"), md=3))
    if base_picker:
        extra.append(dbc.Col(dbc.Select(id=f"{prefix}-upload-base", className="basin-upload-base",
                                        options=[], value="", placeholder="base of… (PEFT adapter)"), md=2))
    return html.Div(
        [
            dbc.Row([
                # Dash has no file <input>; assets/basin.js puts a plain one into this slot.
                dbc.Col(html.Div(className="basin-file-slot", id=f"{prefix}-upload-file-slot",
                                 **data_attrs(input_id=f"{prefix}-upload-file", accept=accept)), md=4),
                dbc.Col(dbc.Input(id=f"{prefix}-upload-name", className="basin-upload-name",
                                  placeholder=name_placeholder), md=3),
                *extra,
                dbc.Col(html.Button("Upload", id=f"{prefix}-upload-button", type="button",
                                    className="btn btn-primary basin-upload-button"), md="auto"),
            ], className="g-2 align-items-center"),
            html.Div(html.Div(className="progress-bar", role="progressbar", style={"width": "0%"}),
                     className="progress basin-upload-progress mt-2", style={"height": "1.1rem"}),
            html.Div(id=f"{prefix}-upload-status", className="basin-upload-status small mt-1"),
        ],
        id=f"{prefix}-upload-box",
        **data_attrs(upload_endpoint=endpoint, refresh=refresh, keep_ext="1" if keep_ext else "0",
                     select=select or ""),
    )


def fmt_time(ts: float | str | None) -> str:
    """Unix seconds (or an ISO string) as ``YYYY-MM-DD HH:MM UTC``; ``""`` when unknown."""
    if ts in (None, ""):
        return ""
    try:
        t = datetime.fromisoformat(ts) if isinstance(ts, str) else datetime.fromtimestamp(float(ts), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return str(ts)[:19]
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def ref_label(ref: str, names: dict[str, str] | None, run_names: dict[str, str] | None = None) -> str:
    """A checkpoint / dataset reference as a person reads it.

    The store's current name first; then the reference as the run's author wrote it
    (``run_names``: id → ref, kept by the API even if the checkpoint was deleted since);
    else ``short_name`` (10 hex digits of an id, last part of a path).
    """
    if names and ref in names:
        return names[ref]
    written = (run_names or {}).get(ref)
    if written and written != ref:
        return short_name(written)
    return short_name(ref)


def spec_yaml(spec: dict, names: dict[str, str]) -> str:
    """The spec as YAML (ids kept, so it reproduces the run) with each id's name as a comment.

    ``a: 3f2a…c9  # ft_a`` — a line whose value (or list item) is a known id gets
    ``# <name>``; the text still parses to exactly ``spec``.
    """
    out = []
    for line in yaml.safe_dump(spec, sort_keys=False, allow_unicode=True).splitlines():
        value = line.split(":", 1)[1].strip() if ":" in line and not line.lstrip().startswith("- ") else (
            line.lstrip()[2:].strip() if line.lstrip().startswith("- ") else "")
        name = names.get(value.strip("'\""))
        out.append(f"{line}  # {name}" if name and name != value else line)
    return "\n".join(out) + "\n"


def plural(n: int, word: str) -> str:
    """``1 point`` / ``2 points``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def estimate_block(est: Any, *, prefix: str = "newrun") -> list[Any]:
    """The cost estimate (``estimate`` of the validate answer or a run's detail): one line,
    and above ~10 minutes a warning with the cheaper variants."""
    if not isinstance(est, dict) or not est.get("words"):
        return []
    out: list[Any] = [html.Div(["Estimated time: ", html.Span(str(est["words"]), id=f"{prefix}-estimate")],
                               className="small mt-1")]
    if est.get("warning"):
        tips = [html.Li(str(s)) for s in est.get("suggestions") or []]
        out.append(html.Div([html.Strong(str(est["warning"])),
                             *([html.Div("Cheaper:"), html.Ul(tips, className="mb-0")] if tips else [])],
                            className="alert alert-warning small mt-2 mb-0", id=f"{prefix}-estimate-warning"))
    return out
