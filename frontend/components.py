"""Shared layout pieces of the dashboard pages (not a page itself)."""

from __future__ import annotations

import dash_bootstrap_components as dbc
from dash import html


def upload_box(prefix: str, endpoint: str, refresh: str, accept: str, *, config_picker: bool = False,
               keep_ext: bool = False, name_placeholder: str = "name (default: the file name)") -> html.Div:
    """The upload row: file input, name, (config), button, progress bar, status line."""
    extra = []
    if config_picker:
        extra.append(dbc.Col(dbc.Select(id=f"{prefix}-upload-config", className="basin-upload-config",
                                        options=[{"label": "config from… (bare .safetensors only)", "value": ""}],
                                        value=""), md=3))
    return html.Div(
        [
            dbc.Row([
                # Dash has no file <input>; assets/basin.js puts a plain one into this slot.
                dbc.Col(html.Div(className="basin-file-slot", id=f"{prefix}-upload-file-slot",
                                 **{"data-input-id": f"{prefix}-upload-file", "data-accept": accept}), md=4),
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
        **{"data-upload-endpoint": endpoint, "data-refresh": refresh, "data-keep-ext": "1" if keep_ext else "0"},
    )
