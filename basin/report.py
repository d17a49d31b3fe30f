"""A result document as one standalone HTML page: figures, summary numbers, the spec.

The page inlines plotly.js once, so it opens offline and can be mailed around; the
figures come from :func:`basin.figures.report_figures`, the same builders the
dashboard uses, so the report and the live page draw the same thing.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
import yaml

from basin.analysis.barrier import barrier_sentence
from basin.analysis.trend import trend_sentence
from basin.figures import PLOTLY_CONFIG, cosine_text

logger = logging.getLogger(__name__)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1d2330;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
.lead{color:#555} table{border-collapse:collapse;margin:.5rem 0} td,th{padding:.25rem .7rem;
border-bottom:1px solid #eee;text-align:left;font-variant-numeric:tabular-nums}
th{background:#f6f7f9} pre{background:#f6f7f9;padding:1rem;overflow:auto;font-size:.85rem}
.fig{margin:1rem 0}
"""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v + 0.0:.4g}"  # + 0.0: never a negative zero
    return str(v)


def _coords(c: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in c.items())


def summarize(result: dict[str, Any]) -> str:
    """One paragraph for humans: barrier (1D) or min/max (2D) per metric, distance, time.

    Works from the points themselves so it does not depend on the summary's exact layout;
    the engine's ``summary.barrier`` is used when present.
    """
    spec = result.get("spec", {})
    points = result.get("points", [])
    path = spec.get("path", {})
    ptype = path.get("type", "?")
    metrics = list(spec.get("metrics") or [])
    if not metrics and points:
        metrics = list(points[0].get("metrics", {}))
    summary = result.get("summary") or {}
    timings = result.get("timings") or {}
    dataset = (result.get("names") or {}).get(spec.get("dataset"), spec.get("dataset", "?"))
    parts = [f"{ptype} path, {len(points)} points on {dataset}."]
    # a generation run leads with the trend of the attribute it measures, not with a perplexity barrier
    parts = [trend_sentence(m, t) + "." for m, t in (summary.get("trend") or {}).items() if isinstance(t, dict)] + parts
    gen = summary.get("generation")
    if isinstance(gen, dict) and gen.get("reference"):
        parts.append(f"Sample perplexity under {(result.get('names') or {}).get(gen['reference'], gen['reference'])}.")
    one_d = bool(points) and set(points[0].get("coords", {})) == {"alpha"}
    for m in metrics:
        vals = [(p["metrics"].get(m), p) for p in points if p.get("metrics", {}).get(m) is not None]
        vals = [(v, p) for v, p in vals if isinstance(v, (int, float)) and not math.isnan(v)]
        if not vals:
            continue
        lo_v, lo_p = min(vals, key=lambda t: t[0])
        hi_v, hi_p = max(vals, key=lambda t: t[0])
        text = f"{m}: min {_fmt(lo_v)} at {_coords(lo_p['coords'])}, max {_fmt(hi_v)} at {_coords(hi_p['coords'])}"
        if one_d:
            ordered = sorted(vals, key=lambda t: t[1]["index"])
            text += f"; endpoints {_fmt(ordered[0][0])} → {_fmt(ordered[-1][0])}"
            b = (summary.get("barrier") or {}).get(m)
            if isinstance(b, dict) and isinstance(b.get("value"), (int, float)):
                text += "; " + barrier_sentence(b, m, magnitude=max(abs(v) for v, _ in vals),
                                                path_type=ptype)
        parts.append(text + ".")
    dist = summary.get("distance")
    if isinstance(dist, dict) and "l2" in dist:
        d = f"‖θA−θB‖₂ = {_fmt(dist['l2'])}"
        if "cosine" in dist:
            d += f", cosine {cosine_text(dist['cosine'])}"
        parts.append(d + ".")
    if timings:
        t = f"Took {_fmt(timings.get('total_s', float('nan')))} s"
        extra = []
        if "load_s" in timings:
            extra.append(f"loading {_fmt(timings['load_s'])} s")
        if "points_per_s" in timings:
            extra.append(f"then {_fmt(timings['points_per_s'])} points/s")
        if "device" in timings:
            extra.append(f"on {timings['device']}")
        if extra:
            t += " (" + ", ".join(extra) + ")"
        parts.append(t + ".")
    return " ".join(parts)


def _num(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v + 0.0:.6g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def _table(rows: list[tuple[str, Any]], header: tuple[str, str] | None = None) -> str:
    head = f"<tr><th>{html.escape(header[0])}</th><th>{html.escape(header[1])}</th></tr>" if header else ""
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_num(v))}</td></tr>" for k, v in rows)
    return f"<table>{head}{body}</table>"


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested summary dict → ``[("barrier.loss.value", 0.12), ...]`` (long lists skipped)."""
    out: list[tuple[str, Any]] = []
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict):
                out.extend(_flatten(v, key))
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                continue  # tables of their own (per_tensor)
            else:
                out.append((key, v))
    return out


def _per_tensor_table(summary: dict[str, Any], top: int = 15) -> str:
    rows = (summary.get("distance") or {}).get("per_tensor") if isinstance(summary, dict) else None
    if not rows or not isinstance(rows, list):
        return ""
    rows = sorted(rows, key=lambda r: -float(r.get("scaled", r.get("l2", 0.0)) or 0.0))[:top]
    cols = [c for c in ("name", "l2", "scaled", "cosine") if c in rows[0]]
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_num(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return (f"<h3>Largest per-tensor differences (top {len(rows)} by ‖ΔW‖/√numel)</h3>"
            f"<table><tr>{head}</tr>{body}</table>")


_SAMPLE_TEXT = ("prompt", "text")


def _samples_section(result: dict[str, Any]) -> str:
    """Generated samples per α, one collapsible table each (generation runs; empty otherwise).

    The same points and columns as the run page's sample viewer: prompt, text, then each
    score labelled by the metric registry. Every string is escaped (texts are model output).
    """
    from basin.figures import metric_label, sample_points

    points = sample_points(result.get("points") or [])
    if not points:
        return ""
    out = ["<h2>Generated samples</h2>",
           f"<p>{len(points)} points of the path carry generations; open one to read them.</p>"]
    for p in points:
        samples = [s for s in p.get("samples") or [] if isinstance(s, dict)]
        scores: list[str] = []
        for s in samples:
            scores += [k for k in s if k not in _SAMPLE_TEXT and k not in scores]
        head = "".join(f"<th>{html.escape(h)}</th>" for h in ["prompt", "generated text", *map(metric_label, scores)])
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_num(s.get(k)) if k in scores else str(s.get(k) or ''))}</td>"
                             for k in [*_SAMPLE_TEXT, *scores]) + "</tr>"
            for s in samples)
        alpha = _num(p["coords"]["alpha"])
        out.append(f"<details class='samples'><summary>α = {html.escape(alpha)} · {len(samples)} samples</summary>"
                   f"<table><tr>{head}</tr>{rows}</table></details>")
    return "\n".join(out)


def render_report(result: dict[str, Any], figures: list[go.Figure] | None = None) -> str:
    """The full HTML page for ``result`` (a result document, see docs/contracts.md).

    ``figures`` defaults to :func:`basin.figures.report_figures(result)`. plotly.js is
    inlined with the first figure only.
    """
    if figures is None:
        from basin.figures import report_figures

        figures = report_figures(result)
    spec = result.get("spec", {})
    dataset = (result.get("names") or {}).get(spec.get("dataset"), spec.get("dataset", "?"))
    title = spec.get("name") or f"{spec.get('path', {}).get('type', 'run')} on {dataset}"
    figs_html = []
    for i, fig in enumerate(figures):
        figs_html.append(
            '<div class="fig">'
            + pio.to_html(fig, include_plotlyjs=(i == 0), full_html=False, default_width="100%",
                          config={**PLOTLY_CONFIG, "responsive": True})
            + "</div>"
        )
    if not figures:
        figs_html.append("<p>No figures for this result (no points?).</p>")
    summary = result.get("summary") or {}
    timings = result.get("timings") or {}
    anchors = result.get("anchors") or []
    from basin.figures import full_name

    names = result.get("names") or {}
    anchor_rows = [(full_name(str(a.get("name", "?")), names),
                    ", ".join(f"{k}={_num(v)}" for k, v in a.get("coords", {}).items()))
                   for a in anchors]
    spec_yaml = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Basin — {html.escape(str(title))}</title><style>{_CSS}</style></head><body>",
        f"<h1>Basin report — {html.escape(str(title))}</h1>",
        f"<p class='lead'>{html.escape(summarize(result))}</p>",
        "<h2>Figures</h2>",
        *figs_html,
        "<h2>Summary</h2>",
        _table(_flatten(summary), ("quantity", "value")) if summary else "<p>(none)</p>",
        _per_tensor_table(summary),
        _samples_section(result),
        "<h2>Anchors</h2>" + (_table(anchor_rows, ("checkpoint", "coordinates")) if anchor_rows else "<p>(none)</p>"),
        "<h2>Timings</h2>" + (_table(list(timings.items()), ("timing", "value")) if timings else "<p>(none)</p>"),
        "<h2>Spec</h2>",
        "<p>Re-run with <code>basin eval spec.yaml -o result.json</code>.</p>",
        f"<pre>{html.escape(spec_yaml)}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(result: dict[str, Any], path: Path) -> Path:
    """Render ``result`` and write it atomically to ``path``; returns the path."""
    page = render_report(result)
    write_atomic(Path(path), page)
    logger.info("wrote report %s (%d bytes)", path, len(page))
    return Path(path)
