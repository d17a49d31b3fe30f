"""What the dashboard says while ``basin up`` builds its demos on the first start.

``/api/health`` carries two status documents (:class:`service.demo_up.DemoStatus`):
``demo`` — the MiniLM demo, a tune job the worker trains first, before any checkpoint
exists (the banner links to its page, ``/tunes/<id>``) — and ``demo_lm`` —
the SmolLM2 pair and its ready run, built after it in the background. From the first
second the banner says what is being built, how far it is and when it will be ready, and
the home page says the checkpoints are on their way instead of "No checkpoints yet".
"""

from __future__ import annotations

from typing import Any

import dash_bootstrap_components as dbc
from dash import html

BUILDING = ("building", "registering")


def _doc(health: Any, key: str) -> dict[str, Any] | None:
    doc = health.get(key) if isinstance(health, dict) else None
    return doc if isinstance(doc, dict) else None


def eta_words(eta_s: Any) -> str:
    """Seconds left as a person reads them: "ready in about 4 min" / "under a minute"; ""
    when unknown."""
    try:
        s = float(eta_s)
    except (TypeError, ValueError):
        return ""
    if s < 60:
        return "ready in under a minute"
    return f"ready in about {round(s / 60)} min"


def _pct(doc: dict[str, Any]) -> float:
    try:
        return max(0.0, min(100.0, 100 * float(doc.get("fraction") or 0)))
    except (TypeError, ValueError):
        return 0.0


def tune_link(doc: dict[str, Any], words: str) -> list[Any]:
    """A link to the demo's tune job page (``run_url``: ``/tunes/<id>``), when the status names one."""
    url = str(doc.get("run_url") or "")
    if not url:
        return []
    return [html.A(words, href=url, id="demo-tune-link", className="alert-link")]


def members_line(doc: dict[str, Any]) -> list[Any]:
    """Each member of the demo's family with its step: "minilm-full-o1-s0 step 12/60 (running)"."""
    members = [m for m in doc.get("members") or [] if isinstance(m, dict)]
    if not members:
        return []
    parts = [
        f"{m.get('name')} {m.get('step') or 0}/{m.get('total') or '?'} ({m.get('status')})"
        for m in members
    ]
    return [html.Div("Members: " + " · ".join(parts), className="small mt-1", id="demo-members")]


def minilm_banner(health: Any) -> list[Any]:
    """The first start's banner while the MiniLM demo is built (or failed); ``[]`` otherwise.
    The demo is a tune job: the banner links to its page (``/tunes/<id>``: each member's live
    loss) and says each member's step."""
    doc = _doc(health, "demo")
    if doc is None:
        return []
    state = doc.get("state")
    if state in BUILDING:
        pct = _pct(doc)
        eta = eta_words(doc.get("eta_s")) or "estimating the time left…"
        lm = _doc(health, "demo_lm")
        after = (
            [
                html.Div(
                    [
                        html.Strong("Then: "),
                        "the LM demo — ",
                        str(lm.get("what") or "SmolLM2-135M pair"),
                        " (in the background; a banner shows its progress).",
                    ],
                    className="small mt-1",
                    id="demo-next",
                )
            ]
            if lm is not None and lm.get("state") == "waiting"
            else []
        )
        return [
            dbc.Alert(
                [
                    html.Strong("First start: building the demo. "),
                    html.Span(
                        [
                            "MiniLM demo — ",
                            str(doc.get("what") or "MiniLM fine-tuned on tweets"),
                            ". ",
                        ],
                        id="demo-what",
                    ),
                    *tune_link(doc, "Watch the family train (its tune job) →"),
                    html.Div(
                        [
                            html.Span(str(doc.get("stage") or ""), id="demo-stage"),
                            " · ",
                            html.Span(eta, id="demo-eta"),
                        ],
                        className="mt-1",
                    ),
                    dbc.Progress(
                        value=pct, label=f"{pct:.0f}%", className="mt-2", id="demo-progress"
                    ),
                    *members_line(doc),
                    html.Div(
                        "Its checkpoints appear in the pickers and on the Checkpoints page when it is ready; "
                        "you can upload or register your own meanwhile.",
                        className="small mt-1",
                    ),
                    *after,
                ],
                color="info",
                className="mb-3",
                id="demo-alert",
            )
        ]
    if state == "failed":
        return [
            dbc.Alert(
                [
                    html.Strong("The MiniLM demo could not be built. "),
                    html.Span(str(doc.get("error") or "")),
                    " ",
                    *tune_link(doc, "Its tune job →"),
                    html.Div(
                        "Upload or register your own checkpoints; the next start of basin up tries again "
                        "(log: the basin up console).",
                        className="small",
                    ),
                ],
                color="danger",
                className="mb-3",
                id="demo-alert",
            )
        ]
    return []


def empty_store_notice(health: Any) -> list[Any]:
    """The home page's line when the store has no checkpoint: the demo on its way (with its
    progress) while it builds, else "No checkpoints yet"."""
    doc = _doc(health, "demo")
    if doc is not None and doc.get("state") in BUILDING:
        eta = eta_words(doc.get("eta_s"))
        return [
            dbc.Alert(
                [
                    f"The demo checkpoints are being built ({_pct(doc):.0f}%"
                    + (f", {eta}" if eta else "")
                    + ") — they appear here when ready. Or ",
                    html.A("upload or register your own", href="/checkpoints"),
                    ".",
                ],
                color="info",
                id="newrun-empty",
            )
        ]
    return [
        dbc.Alert(
            ["No checkpoints yet — ", html.A("upload or register some", href="/checkpoints"), "."],
            color="info",
            id="newrun-empty",
        )
    ]
