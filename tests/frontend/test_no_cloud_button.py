"""No control in the UI sends data off the machine (issue 28, item 5).

plotly.js 3 shows a "Share chart…" modebar button that uploads the figure to Plotly Cloud
(``showSendToCloud`` defaults to true, ``plotlyServerURL`` to cloud.plotly.com). Every
figure Basin draws — each ``dcc.Graph`` of the dashboard and the offline HTML report —
must carry Basin's config that turns it off. The browser test
(``tests/browser/test_newcomer.py``) checks the drawn modebar itself."""

from __future__ import annotations

import ast
from pathlib import Path

from basin.figures import PLOTLY_CONFIG

FRONTEND = Path(__file__).resolve().parents[2] / "frontend"


def _graph_calls() -> list[tuple[str, int, ast.Call]]:
    out = []
    for f in sorted(FRONTEND.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "Graph"
            ):
                out.append((str(f.relative_to(FRONTEND)), node.lineno, node))
    return out


def test_the_shared_config_turns_off_every_cloud_control():
    assert PLOTLY_CONFIG["showSendToCloud"] is False
    assert PLOTLY_CONFIG["plotlyServerURL"] == ""
    assert "sendChartToCloud" in PLOTLY_CONFIG["modeBarButtonsToRemove"]


def test_every_dashboard_graph_carries_the_shared_config():
    calls = _graph_calls()
    assert len(calls) >= 8, calls  # the run page, runs overlay, fit pages, cards
    missing = [
        f"{f}:{line}"
        for f, line, call in calls
        if not any(
            k.arg == "config" and isinstance(k.value, ast.Name) and k.value.id == "GRAPH_CONFIG"
            for k in call.keywords
        )
    ]
    assert not missing, (
        f"dcc.Graph without config=GRAPH_CONFIG (Plotly's cloud button shows): {missing}"
    )


def test_the_offline_report_has_no_cloud_button():
    from basin.report import render_report

    doc = {
        "spec": {"path": {"type": "linear", "a": "a", "b": "b", "points": 2}},
        "points": [
            {"index": i, "coords": {"alpha": float(i)}, "metrics": {"loss": 1.0 + i}}
            for i in range(2)
        ],
        "summary": {},
    }
    html = render_report(doc)
    assert html.count('"showSendToCloud": false') == 1  # the one figure
