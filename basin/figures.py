"""Pure plotly figure builders over Basin *result documents*.

A result document is ``{spec, points: [{index, coords, metrics}], anchors, summary}``
(see ``docs/contracts.md``). Every builder also accepts a *partial* document — a spec
plus the points that have arrived so far, in any order — so the dashboard can draw a
run while it is in progress and ``basin plot`` can draw a finished one with the same
code.

Everything that depends on the path type or the metric (1D or 2D, checkpoint fields,
axis titles, metric labels, percent scaling, the barrier's direction) comes from the
registries :mod:`basin.paths` and :mod:`basin.metrics`.

- 1D paths (``ndim == 1``: linear, bezier, polychain): :func:`line_figure` — metric vs α (or the
  curve parameter t), points sorted by α, both endpoints marked with their checkpoint
  names, the chord ``(1−α)·m(θA) + α·m(θB)`` and the barrier annotated.
- Planes (plane, task_plane, random_plane): :func:`plane_figure` — a ``ny × nx`` grid
  ``z[iy][ix]`` filled from flat indices ``index = iy·nx + ix``; missing points are
  ``None`` so the picture fills in as the coarse-to-fine grid refines.
- Trajectories (a path type with a ``sequence_field``): the plane figure plus the
  projected path through the checkpoints.
- Adaptive runs (``spec.refine``) hold a subset of their fine grid: a 1D curve is drawn
  through the measured points (whatever their spacing); a plane's missing nodes are filled
  by bilinear interpolation inside each refined cell (:func:`basin.refine.interpolate_2d`)
  and the measured nodes are marked (trace ``meta="measured"``).

Only plotly (and the pure-Python registries) is imported here: no torch, no dash, no
web code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from basin.analysis.barrier import barrier_text, chord_barrier, is_no_barrier
from basin.metrics import metric as _metric
from basin.paths import PATHS, refs_of
from basin.paths import is_1d as _type_is_1d
from basin.refine import interpolate_2d

__all__ = [
    "LABEL_MAX",
    "ellipsize",
    "figure_for",
    "full_name",
    "grid_axes",
    "has_ensemble",
    "has_samples",
    "grid_matrix",
    "interval_matrix",
    "line_figure",
    "metric_label",
    "metric_scale",
    "overlay_figure",
    "plane_figure",
    "report_figures",
    "short_name",
]

# Anchor marker colours, in anchor order (A, B, C/control, ...).
ANCHOR_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
CURVE_COLOUR = "#1d2330"
ENSEMBLE_COLOUR = "#e377c2"
BAND_COLOUR = "rgba(29,35,48,0.14)"  # the 95 % interval around a curve
CHORD_COLOUR = "#888888"
BARRIER_COLOUR = "#d62728"
_HEX = re.compile(r"^[0-9a-f]{16,}$")
#: Longest checkpoint label drawn on a figure; longer names end in "…" (full name on hover).
LABEL_MAX = 24
#: Characters per title line before it wraps (a figure is 700-1100 px wide).
TITLE_WRAP = 80


# ---- small helpers ---------------------------------------------------------------------


def metric_label(metric: str) -> str:
    """Axis title with units (registry): ``loss (nats)``, ``accuracy (%)``, else the metric name."""
    m = _metric(metric)
    return m.axis_title if m is not None else metric


def metric_name(metric: str) -> str:
    """The metric as a person reads it, short (registry ``label`` without its parenthesis):
    ``perplexity of samples`` for ``sample_perplexity``, ``distinct-2`` for ``distinct_2``;
    else the id itself."""
    m = _metric(metric)
    return m.label.split(" (")[0] if m is not None else metric


def metric_scale(metric: str) -> float:
    """Display factor (registry): fractions (accuracy, F1) are drawn in percent, the rest as stored."""
    m = _metric(metric)
    return m.scale if m is not None else 1.0


def _higher_is_better(metric: str) -> bool:
    m = _metric(metric)
    return m is not None and m.higher_is_better


def _has_barrier(metric: str) -> bool:
    """Whether a barrier means something for ``metric``: the registry knows it and does not
    say ``barrier=False`` (sentiment, distinct-n, length have none)."""
    m = _metric(metric)
    return m is not None and bool(getattr(m, "barrier", True))


def _with_doc_names(result: Mapping[str, Any], names: Mapping[str, str] | None) -> dict[str, str]:
    """The document's own ``names`` (store id → name, written by the service), then ``names``."""
    return {**(result.get("names") or {}), **(names or {})}


def ellipsize(text: str, limit: int = LABEL_MAX) -> str:
    """``text`` cut to ``limit`` characters, the last one "…" when cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 1)] + "…"


def full_name(name: str, names: Mapping[str, str] | None = None) -> str:
    """The whole readable name of a checkpoint reference (what hovering a label shows).

    ``names`` maps store ids to human names (the service's document, the dashboard's
    checkpoint list); a mapping of an id to itself (documents written before names were
    recorded for runs made by id) is ignored. Otherwise a sha256 id is cut to 10 hex
    digits and a path to its last component.
    """
    mapped = (names or {}).get(name)
    if mapped and mapped != name and not (_HEX.match(mapped) and len(mapped) > 16):
        return mapped
    if _HEX.match(name):
        return name[:10]
    if "/" in name:
        return name.rstrip("/").rsplit("/", 1)[-1] or name
    return name


#: The modebar config of every figure Basin draws (dashboard and offline report): no control
#: that sends data off the machine. plotly.js 3 shows "Share chart…" (upload to Plotly Cloud,
#: ``showSendToCloud`` defaults to true) unless told not to; the server URL is emptied too.
PLOTLY_CONFIG: dict[str, Any] = {
    "displaylogo": False,
    "showSendToCloud": False,
    "plotlyServerURL": "",
    "modeBarButtonsToRemove": ["sendChartToCloud"],
    "toImageButtonOptions": {"format": "png", "scale": 2},
}


def cosine_text(c: Any) -> str:
    """A cosine with the digits that tell it from 1: ``0.999957`` (not ``1``), ``0.8123``."""
    if not isinstance(c, (int, float)) or math.isnan(c):
        return "nan"
    gap = 1.0 - abs(float(c))
    if gap <= 0:
        return f"{float(c):.4f}"
    digits = max(4, -math.floor(math.log10(gap)) + 1)
    return f"{float(c):.{min(digits, 12)}f}"


def short_name(name: str, names: Mapping[str, str] | None = None, limit: int = LABEL_MAX) -> str:
    """A label for a checkpoint reference: :func:`full_name`, cut to ``limit`` characters."""
    return ellipsize(full_name(name, names), limit)


def wrap_title(text: str, width: int = TITLE_WRAP) -> str:
    """``text`` broken into lines of at most ``width`` characters (at spaces when it can), joined
    with ``<br>``: a long title takes more lines instead of running over the legend."""
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        while len(word) > width:  # one unbreakable run (an id): cut it
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:width])
            word = word[width:]
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line or not lines:
        lines.append(line)
    return "<br>".join(lines)


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else v


def _spec(result: Mapping[str, Any]) -> dict[str, Any]:
    return dict(result.get("spec") or {})


def _path(result: Mapping[str, Any]) -> dict[str, Any]:
    return dict(_spec(result).get("path") or {})


def _metrics(result: Mapping[str, Any]) -> list[str]:
    m = list(_spec(result).get("metrics") or [])
    if not m:
        for p in result.get("points") or []:
            m = list((p.get("metrics") or {}).keys())
            if m:
                break
    return m


def _is_1d(result: Mapping[str, Any]) -> bool:
    ptype = _path(result).get("type")
    if ptype in PATHS:
        return _type_is_1d(ptype)
    pts = result.get("points") or []
    return bool(pts) and "alpha" in (pts[0].get("coords") or {})


def _title(result: Mapping[str, Any], metric: str, names: Mapping[str, str] | None) -> str:
    spec = _spec(result)
    path = _path(result)
    ptype = path.get("type", "?")
    label = " · ".join(short_name(r, names) for r in refs_of(path))
    seq = _sequence_field(result)
    if seq:  # a trajectory: too many checkpoints to name them all
        label = f"{len(path.get(seq) or [])} {seq}"
    head = spec.get("name") or (f"{ptype}: {label}" if label else str(ptype))
    return f"{head} — {metric_name(metric)}"


def _sequence_field(result: Mapping[str, Any]) -> str | None:
    """The path's field listing checkpoints to draw joined in order (trajectory), if any."""
    cls = PATHS.get(str(_path(result).get("type")))
    return cls.sequence_field if cls is not None else None


def _axis_titles(result: Mapping[str, Any]) -> Mapping[str, str]:
    """The path type's axis titles (registry); plain ``α`` / ``x`` / ``y`` for unknown types."""
    cls = PATHS.get(str(_path(result).get("type")))
    return cls.axis_titles if cls is not None else {"alpha": "α", "x": "x", "y": "y"}


def _layout(fig: go.Figure, title: str) -> go.Figure:
    """Title on its own lines at the top (wrapped), the legend in a row of its own between the
    title and the plot: neither runs over the other nor over the plot, however long the names."""
    wrapped = wrap_title(title)
    lines = wrapped.count("<br>") + 1
    fig.update_layout(
        title={"text": wrapped, "x": 0.01, "xanchor": "left", "font": {"size": 15},
               "yref": "container", "y": 1.0, "yanchor": "top", "pad": {"t": 10}},
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 38 + 20 * lines, "b": 50},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
        uirevision="basin",  # keep zoom / camera while points stream in
    )
    return fig


# ---- 1D ----------------------------------------------------------------------------------


def _series(result: Mapping[str, Any], metric: str, key: str = "metrics") -> list[tuple[float, float, int]]:
    """``[(alpha, value, index)]`` sorted by α; points without the metric are skipped.
    ``key="ensemble"``: the output ensemble's values at each point instead."""
    out = []
    for p in result.get("points") or []:
        a = _num((p.get("coords") or {}).get("alpha"))
        v = _num((p.get(key) or {}).get(metric))
        if a is not None and v is not None:
            out.append((a, v, int(p.get("index", -1))))
    out.sort(key=lambda t: (t[0], t[2]))
    return out


def _band(result: Mapping[str, Any], metric: str) -> tuple[list[float], list[float], list[float]]:
    """``(alphas, lo, hi)`` of the points whose record has ``intervals[metric]``, sorted by α."""
    out = []
    for p in result.get("points") or []:
        a = _num((p.get("coords") or {}).get("alpha"))
        iv = (p.get("intervals") or {}).get(metric)
        if a is None or not isinstance(iv, Sequence) or len(iv) != 2:
            continue
        lo, hi = _num(iv[0]), _num(iv[1])
        if lo is not None and hi is not None:
            out.append((a, lo, hi))
    out.sort()
    return [t[0] for t in out], [t[1] for t in out], [t[2] for t in out]


def _band_trace(result: Mapping[str, Any], metric: str, scale: float) -> go.Scatter | None:
    """The 95 % interval of every point as one filled polygon (``meta="band"``) drawn under the
    curve (``zorder=-1``), or ``None`` when the points carry no intervals (older documents)."""
    xs, lo, hi = _band(result, metric)
    if len(xs) < 2:
        return None
    return go.Scatter(
        x=xs + xs[::-1], y=[v * scale for v in hi] + [v * scale for v in lo[::-1]], mode="lines",
        fill="toself", fillcolor=BAND_COLOUR, line={"width": 0}, name="95 % interval",
        hoverinfo="skip", meta="band", zorder=-1,
    )


def _anchors_1d(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Anchors with an α coordinate; falls back to the spec's endpoints (α = 0 and 1)."""
    out = [
        {"name": str(a.get("name", "?")), "alpha": float(a["coords"]["alpha"])}
        for a in result.get("anchors") or []
        if _num((a.get("coords") or {}).get("alpha")) is not None
    ]
    if not out:
        path = _path(result)
        if isinstance(path.get("a"), str) and isinstance(path.get("b"), str):
            out = [{"name": path["a"], "alpha": 0.0}, {"name": path["b"], "alpha": 1.0}]
    return out


def _value_at(series: Sequence[tuple[float, float, int]], alpha: float) -> float | None:
    for a, v, _ in series:
        if abs(a - alpha) <= 1e-9 * max(1.0, abs(alpha)):
            return v
    return None


def has_ensemble(result: Mapping[str, Any]) -> bool:
    """Whether a run carries output ensembling: its spec asks for it, or a point has values."""
    return bool(_spec(result).get("ensemble")) or any(
        p.get("ensemble") for p in result.get("points") or [])


def has_samples(result: Mapping[str, Any]) -> bool:
    """Whether a run's points carry generated samples (a generation run)."""
    spec = _spec(result)
    return spec.get("task") == "generation" or bool(spec.get("generation")) or any(
        p.get("samples") for p in result.get("points") or [])


def sample_points(points: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The points that carry generated samples, sorted by α (ties by index)."""
    out = [p for p in points if p.get("samples") and isinstance((p.get("coords") or {}).get("alpha"), (int, float))]
    return sorted(out, key=lambda p: (p["coords"]["alpha"], p.get("index", 0)))


def line_figure(
    result: Mapping[str, Any], metric: str, *, names: Mapping[str, str] | None = None
) -> go.Figure:
    """Metric vs α for a 1D path.

    Traces, in order: ``curve`` (lines+markers, points sorted by α; named "weight
    interpolation" when the run has output ensembling, else after the metric), then, when
    the run has output ensembling (:func:`has_ensemble`), ``ensemble`` (dashed, "output
    ensemble": each point's ``ensemble[metric]``, sorted by α; present from the first
    draw, empty until values arrive, so the dashboard patches it live), ``chord`` (dashed
    straight line between the endpoints' values, when both are evaluated), one marker
    trace per anchor (``meta="anchor"``, text = checkpoint name), ``barrier`` (a dotted
    vertical segment from the chord to the curve at the barrier's α), and last ``band``
    (the points' 95 % intervals, ``intervals[metric]``, filled and drawn beneath the curves
    with ``zorder=-1``; only when the points carry them). The barrier
    annotation reads e.g. ``barrier 0.123 nats at α = 0.50`` (``partial-range barrier (chord
    α = 0.2 → 0.6) …`` when the range excludes α = 0 or 1 and the chord joins the range's
    ends instead of the checkpoints); it comes from
    ``summary.barrier[metric]`` when present, else
    :func:`basin.analysis.barrier.chord_barrier` on the points between the endpoints.
    Accuracy / F1 are drawn in percent.
    """
    names = _with_doc_names(result, names)
    scale = metric_scale(metric)
    series = _series(result, metric)
    anchors = _anchors_1d(result)
    # endpoints off the α grid (e.g. 26 points on [-0.5, 1.5]) come evaluated in the summary
    off_grid = [(float(e["alpha"]), float(e["metrics"][metric]), -1)
                for e in (result.get("summary") or {}).get("endpoints") or []
                if metric in (e.get("metrics") or {})]
    fig = go.Figure()
    ensemble = has_ensemble(result)
    fig.add_trace(
        go.Scatter(
            x=[a for a, _, _ in series],
            y=[v * scale for _, v, _ in series],
            mode="lines+markers",
            name="weight interpolation" if ensemble else metric,
            line={"color": CURVE_COLOUR, "width": 2},
            marker={"size": 6},
            customdata=[i for _, _, i in series],
            hovertemplate="α=%{x:.4g}<br>" + metric + "=%{y:.4g}<br>point %{customdata}<extra></extra>",
            meta="curve",
        )
    )
    if ensemble:
        ens = _series(result, metric, key="ensemble")
        fig.add_trace(
            go.Scatter(
                x=[a for a, _, _ in ens],
                y=[v * scale for _, v, _ in ens],
                mode="lines+markers",
                name="output ensemble",
                line={"color": ENSEMBLE_COLOUR, "width": 2, "dash": "dash"},
                marker={"size": 5, "symbol": "circle-open"},
                customdata=[i for _, _, i in ens],
                hovertemplate="output ensemble<br>α=%{x:.4g}<br>" + metric
                + "=%{y:.4g}<br>point %{customdata}<extra></extra>",
                meta="ensemble",
            )
        )
    # ((α, value) of the first anchor, of the second) when both values are known
    chord_ends: tuple[tuple[float, float], tuple[float, float]] | None = None
    ends = [(float(a["alpha"]), _value_at([*series, *off_grid], a["alpha"])) for a in anchors[:2]]
    if len(ends) == 2:
        (xa, va), (xb, vb) = ends
        if va is not None and vb is not None:
            chord_ends = ((xa, va), (xb, vb))
    if chord_ends is not None:
        (xa, va), (xb, vb) = chord_ends
        fig.add_trace(
            go.Scatter(
                x=[xa, xb],
                y=[va * scale, vb * scale],
                mode="lines",
                name="chord",
                line={"color": CHORD_COLOUR, "dash": "dash", "width": 1.5},
                hoverinfo="skip",
                meta="chord",
            )
        )
    for k, anc in enumerate(anchors):
        v = _value_at([*series, *off_grid], anc["alpha"])
        if v is None:
            continue
        label = short_name(anc["name"], names)
        lo_x = min(a for a, _, _ in series) if series else anc["alpha"]
        hi_x = max(a for a, _, _ in series) if series else anc["alpha"]
        # labels at the ends of the curve lean inwards, so they are not cut at the axes
        where = "top right" if anc["alpha"] <= lo_x else "top left" if anc["alpha"] >= hi_x else "top center"
        fig.add_trace(
            go.Scatter(
                x=[anc["alpha"]],
                y=[v * scale],
                mode="markers+text",
                name=label,
                text=[label],
                hovertext=[full_name(anc["name"], names)],  # the whole name; the label may be cut
                textposition=where,
                marker={"size": 13, "symbol": "diamond", "color": ANCHOR_COLOURS[k % len(ANCHOR_COLOURS)],
                        "line": {"width": 1, "color": "white"}},
                hovertemplate=f"%{{hovertext}}<br>α=%{{x:.4g}}<br>{metric}=%{{y:.4g}}<extra></extra>",
                meta="anchor",
                showlegend=False,  # labelled on the plot; the legend keeps to short fixed names
            )
        )
    entry: dict[str, Any] | None = None  # {value, alpha?, start?, end?, partial?}
    stored = ((result.get("summary") or {}).get("barrier") or {}).get(metric)
    if not _has_barrier(metric):
        pass  # no barrier for this metric (registry): the chord alone
    elif isinstance(stored, Mapping) and _num(stored.get("value")) is not None:
        entry = dict(stored)  # "partial-range barrier (...)" when the range excludes 0 or 1
    elif chord_ends is not None:
        found = chord_barrier([(a, v) for a, v, _ in series], *chord_ends,
                              higher_is_better=_higher_is_better(metric))
        if found is not None:
            entry = {**found, "start": chord_ends[0][0], "end": chord_ends[1][0]}
    if entry is not None:
        ba = _num(entry.get("alpha"))
        magnitude = max((abs(v) for _, v, _ in [*series, *off_grid]), default=1.0)
        text = barrier_text(entry, metric, magnitude=magnitude)
        vb_curve = _value_at(series, ba) if ba is not None else None
        if is_no_barrier(float(entry["value"]), magnitude):  # zero within its precision: said plainly
            fig.add_annotation(xref="paper", yref="paper", x=0.99, y=0.02, xanchor="right",
                               text=text, showarrow=False, font={"color": CHORD_COLOUR},
                               name="barrier")
        elif ba is not None and vb_curve is not None and chord_ends is not None:
            (xa, va), (xb, vb) = chord_ends
            chord = va + (ba - xa) / (xb - xa) * (vb - va)
            fig.add_trace(
                go.Scatter(
                    x=[ba, ba], y=[chord * scale, vb_curve * scale], mode="lines", name="barrier",
                    line={"color": BARRIER_COLOUR, "dash": "dot", "width": 2}, hoverinfo="skip",
                    meta="barrier", showlegend=False,
                )
            )
            # label the middle of the gap between chord and curve: the space there is empty,
            # whereas next to the curve's extreme the text would sit on the curve
            # ... on the side of the wider half of the plot, so the text stays inside it
            right = ba <= (min(xa, xb) + max(xa, xb)) / 2
            fig.add_annotation(x=ba, y=(chord + vb_curve) / 2 * scale, text=text, showarrow=True,
                               arrowhead=2, ax=45 if right else -45, ay=0,
                               xanchor="left" if right else "right",
                               font={"color": BARRIER_COLOUR}, bgcolor="rgba(255,255,255,0.8)",
                               name="barrier")
        else:
            fig.add_annotation(xref="paper", yref="paper", x=0.99, y=0.02, xanchor="right",
                               text=text, showarrow=False, font={"color": BARRIER_COLOUR},
                               name="barrier")
    band = _band_trace(result, metric, scale)  # last, so no other trace moves; drawn beneath (zorder)
    if band is not None:
        fig.add_trace(band)
    fig.update_xaxes(title_text=_axis_titles(result).get("alpha", "α"), zeroline=False)
    fig.update_yaxes(title_text=metric_label(metric))
    return _layout(fig, _title(result, metric, names))


def overlay_figure(
    results: Sequence[Mapping[str, Any]], metric: str, *, names: Mapping[str, str] | None = None,
    labels: Sequence[str] | None = None,
) -> go.Figure:
    """Several 1D runs in one figure: one ``lines+markers`` trace per run (sorted by α),
    its endpoints marked. ``labels`` names the runs (default: spec name or ``A → B``).

    Runs of different path types (linear vs SLERP vs TIES on the same checkpoints) are
    compared on one axis — each type's own coordinate, α / t / λ, the x axis titled with
    all of them — and each legend entry starts with its method (``slerp: A → B``)."""
    fig = go.Figure()
    scale = metric_scale(metric)
    types = list(dict.fromkeys(str(_path(res).get("type", "?")) for res in results))
    for k, res in enumerate(results):
        series = _series(res, metric)
        path = _path(res)
        label = (labels[k] if labels and k < len(labels) else None) or _spec(res).get("name") or (
            f"{short_name(str(path.get('a', '?')), names)} → {short_name(str(path.get('b', '?')), names)}"
        )
        if len(types) > 1 and not label.startswith(str(path.get("type", "?"))):  # not when its name says it
            label = f"{path.get('type', '?')}: {label}"
        colour = ANCHOR_COLOURS[k % len(ANCHOR_COLOURS)]
        fig.add_trace(go.Scatter(
            x=[a for a, _, _ in series], y=[v * scale for _, v, _ in series], mode="lines+markers",
            name=label, line={"color": colour, "width": 2}, marker={"size": 5}, meta="curve",
        ))
        ex, ey = [], []
        for anc in _anchors_1d(res)[:2]:
            v = _value_at(series, anc["alpha"])
            if v is not None:
                ex.append(anc["alpha"])
                ey.append(v * scale)
        if ex:
            fig.add_trace(go.Scatter(
                x=ex, y=ey, mode="markers", name=f"{label} endpoints", showlegend=False,
                marker={"size": 11, "symbol": "diamond", "color": colour,
                        "line": {"width": 1, "color": "white"}}, meta="anchor",
            ))
    coords = list(dict.fromkeys(_axis_titles(res).get("alpha", "α") for res in results)) or ["α"]
    fig.update_xaxes(title_text=" / ".join(coords))
    fig.update_yaxes(title_text=metric_label(metric))
    return _layout(fig, f"{len(results)} runs — {metric}")


# ---- planes --------------------------------------------------------------------------------


def _resolution(result: Mapping[str, Any]) -> tuple[int, int]:
    res = _path(result).get("resolution")
    if isinstance(res, Sequence) and len(res) == 2:
        return int(res[0]), int(res[1])
    idx = [int(p["index"]) for p in result.get("points") or []]
    n = int(math.isqrt(max(idx) + 1)) if idx else 1
    return n, n


def _axis(known: dict[int, float], n: int, fallback: tuple[float, float] | None) -> list[float]:
    """Values of one grid axis, ``n`` nodes, from the coordinates seen so far.

    The grid is regular, so two distinct known nodes fix it: ``v(i) = v(i0) + (i−i0)·step``.
    With fewer, use the spec's range (``fallback``), else the node number itself.
    """
    if len(known) >= 2:
        (i0, v0), (i1, v1) = min(known.items()), max(known.items())
        step = (v1 - v0) / (i1 - i0)
        return [known.get(i, v0 + (i - i0) * step) for i in range(n)]
    if fallback is not None:
        lo, hi = fallback
        return [lo + (hi - lo) * i / (n - 1) if n > 1 else lo for i in range(n)]
    if known:
        i0, v0 = next(iter(known.items()))
        return [v0 + (i - i0) for i in range(n)]
    return [float(i) for i in range(n)]


def grid_axes(result: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    """``(xs, ys)``: coordinates of the ``nx`` columns and ``ny`` rows of a plane's grid."""
    nx, ny = _resolution(result)
    kx: dict[int, float] = {}
    ky: dict[int, float] = {}
    for p in result.get("points") or []:
        c = p.get("coords") or {}
        i = int(p.get("index", -1))
        if i < 0:
            continue
        x, y = _num(c.get("x")), _num(c.get("y"))
        if x is not None:
            kx.setdefault(i % nx, x)
        if y is not None:
            ky.setdefault(i // nx, y)
    rng = _path(result).get("range")
    fx = fy = None
    if isinstance(rng, Sequence) and len(rng) == 2 and isinstance(rng[0], Sequence):
        fx, fy = (float(rng[0][0]), float(rng[0][1])), (float(rng[1][0]), float(rng[1][1]))
    return _axis(kx, nx, fx), _axis(ky, ny, fy)


def grid_matrix(result: Mapping[str, Any], metric: str) -> list[list[float | None]]:
    """``z[iy][ix]`` (shape ``ny × nx``) from flat indices ``index = iy·nx + ix``.

    Nodes not evaluated yet (or out of range) are ``None``; values are in display units
    (:func:`metric_scale`).
    """
    nx, ny = _resolution(result)
    scale = metric_scale(metric)
    z: list[list[float | None]] = [[None] * nx for _ in range(ny)]
    for p in result.get("points") or []:
        i = int(p.get("index", -1))
        v = _num((p.get("metrics") or {}).get(metric))
        if 0 <= i < nx * ny and v is not None:
            z[i // nx][i % nx] = v * scale
    return z


def interval_matrix(result: Mapping[str, Any], metric: str) -> list[list[str]] | None:
    """``c[iy][ix]`` = the node's 95 % interval as text (``"[lo, hi]"`` in display units, ``""``
    where unknown), for a plane's hover; ``None`` when no point carries an interval."""
    nx, ny = _resolution(result)
    scale = metric_scale(metric)
    c = [[""] * nx for _ in range(ny)]
    found = False
    for p in result.get("points") or []:
        i = int(p.get("index", -1))
        iv = (p.get("intervals") or {}).get(metric)
        if 0 <= i < nx * ny and isinstance(iv, Sequence) and len(iv) == 2:
            lo, hi = _num(iv[0]), _num(iv[1])
            if lo is not None and hi is not None:
                c[i // nx][i % nx] = f"[{lo * scale:.4g}, {hi * scale:.4g}]"
                found = True
    return c if found else None


def _anchors_2d(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for a in result.get("anchors") or []:
        c = a.get("coords") or {}
        x, y = _num(c.get("x")), _num(c.get("y"))
        if x is not None and y is not None:
            out.append({"name": str(a.get("name", "?")), "x": x, "y": y, "step": a.get("step")})
    return out


def _trajectory_anchors(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The trajectory's checkpoints in training order (the spec's ``checkpoints`` list)."""
    anchors = _anchors_2d(result)
    seq = _sequence_field(result)
    order = list(_path(result).get(seq) or []) if seq else []
    if not order:
        return anchors
    by_name: dict[str, dict[str, Any]] = {}
    for a in anchors:
        by_name.setdefault(a["name"], a)
    picked = [by_name[n] for n in order if n in by_name]
    return picked or anchors


def _nearest(xs: Sequence[float], v: float) -> int:
    return min(range(len(xs)), key=lambda i: abs(xs[i] - v))


def _z_at(z: list[list[float | None]], xs: list[float], ys: list[float], x: float, y: float) -> float | None:
    return z[_nearest(ys, y)][_nearest(xs, x)] if xs and ys else None


def equal_axes_default(result: Mapping[str, Any]) -> bool:
    """Whether a plane is drawn with equal axis scales by default: its path type's
    ``equal_axes`` (planes in parameter units, where distances and angles mean something)."""
    cls = PATHS.get(str(_path(result).get("type")))
    return bool(getattr(cls, "equal_axes", False))


def plane_figure(
    result: Mapping[str, Any], metric: str, kind: str = "contour", *,
    names: Mapping[str, str] | None = None, trajectory: bool | None = None,
    equal: bool | None = None,
) -> go.Figure:
    """A plane's metric over its ``nx × ny`` grid, as ``contour``, ``heatmap`` or 3D ``surface``.

    Trace 0 (``meta="grid"``) holds ``z[iy][ix]`` from :func:`grid_matrix` with ``None``
    holes for points not evaluated yet, and ``x``/``y`` from :func:`grid_axes`; when the points
    carry ``intervals``, its ``customdata`` holds each node's 95 % interval as text
    (:func:`interval_matrix`) and the hover shows it. Colours:
    Viridis with low loss dark (for accuracy / F1, high values dark) so basins show as
    dark valleys. Each anchor is a labelled marker trace (``meta="anchor"``). For
    ``trajectory`` runs (default: when the path type has a ``sequence_field``) the checkpoints are
    joined in order by a ``lines+markers+text`` trace (``meta="trajectory"``) labelled
    with their training step.

    ``equal`` (default: :func:`equal_axes_default`) draws one unit of x as long as one unit
    of y (``yaxis.scaleanchor = "x"``; for ``surface`` the scene's aspect ratio), so the
    distances and angles between the anchors read true; ``False`` fills the box instead.
    """
    names = _with_doc_names(result, names)
    if kind not in ("contour", "surface", "heatmap"):
        raise ValueError(f"kind must be 'contour', 'surface' or 'heatmap', got {kind!r}")
    xs, ys = grid_axes(result)
    z = grid_matrix(result, metric)
    refine = _spec(result).get("refine")
    measured: list[tuple[float, float]] = []
    if isinstance(refine, Mapping):  # adaptive: fill the refined cells, mark what was measured
        measured = [(xs[ix], ys[iy]) for iy, row in enumerate(z) for ix, v in enumerate(row) if v is not None]
        z = interpolate_2d((len(xs), len(ys)), int(refine.get("levels") or 1), z)
    reverse = _higher_is_better(metric)
    cbar = {"title": {"text": metric_label(metric), "side": "right"}}
    common = {"x": xs, "y": ys, "z": z, "colorscale": "Viridis", "reversescale": reverse,
              "colorbar": cbar, "name": metric, "meta": "grid"}
    if trajectory is None:
        trajectory = _sequence_field(result) is not None
    tip = "x=%{x:.3g}<br>y=%{y:.3g}<br>" + metric + "=%{z:.4g}"
    ivs = interval_matrix(result, metric)
    if ivs is not None:  # each node's 95 % interval on hover (filled in when the figure is rebuilt)
        common["customdata"] = ivs
        tip += "<br>95 % %{customdata}"
    tip += "<extra></extra>"
    fig = go.Figure()
    if kind == "surface":
        fig.add_trace(go.Surface(**common, connectgaps=False, hovertemplate=tip))
    elif kind == "heatmap":
        fig.add_trace(go.Heatmap(**common, hoverongaps=False, hovertemplate=tip))
    else:
        extra = {"hovertemplate": tip} if ivs is not None else {}
        fig.add_trace(go.Contour(**common, connectgaps=False, ncontours=20,
                                 contours={"coloring": "heatmap", "showlines": True},
                                 line={"width": 0.5, "color": "rgba(255,255,255,0.4)"}, **extra))
    if measured and kind != "surface":
        fig.add_trace(go.Scatter(
            x=[x for x, _ in measured], y=[y for _, y in measured], mode="markers", name="measured points",
            marker={"size": 3, "color": "rgba(255,255,255,0.7)"}, hoverinfo="skip", meta="measured",
            showlegend=False,
        ))
    anchors = _anchors_2d(result)
    path_anchors = _trajectory_anchors(result) if trajectory else []
    lowest = min((v for row in z for v in row if v is not None), default=0.0)

    def zval(a: dict[str, Any]) -> float:
        v = _z_at(z, xs, ys, a["x"], a["y"])
        return lowest if v is None else v

    if trajectory and path_anchors:
        steps = [a["step"] if a.get("step") is not None else k for k, a in enumerate(path_anchors)]
        text = [f"step {s}" for s in steps]
        line = {"color": "#ff7f0e", "width": 3}
        hover = [f"{short_name(a['name'], names)} (step {s})" for a, s in zip(path_anchors, steps, strict=True)]
        if kind == "surface":
            fig.add_trace(go.Scatter3d(
                x=[a["x"] for a in path_anchors], y=[a["y"] for a in path_anchors],
                z=[zval(a) for a in path_anchors], mode="lines+markers+text", text=text,
                hovertext=hover, hoverinfo="text", line=line, marker={"size": 4, "color": "#ff7f0e"},
                name="trajectory", meta="trajectory",
            ))
        else:
            fig.add_trace(go.Scatter(
                x=[a["x"] for a in path_anchors], y=[a["y"] for a in path_anchors],
                mode="lines+markers+text", text=text, textposition="top right", hovertext=hover,
                hoverinfo="text", line=line, marker={"size": 8, "color": "#ff7f0e"},
                textfont={"color": "white"}, name="trajectory", meta="trajectory",
            ))
    if anchors and kind != "surface" and getattr(PATHS.get(str(_path(result).get("type"))), "outline", False):
        ring = [*anchors, anchors[0]]  # the simplex's edges (subspace_simplex)
        fig.add_trace(go.Scatter(x=[a["x"] for a in ring], y=[a["y"] for a in ring], mode="lines",
                                 line={"color": "white", "width": 2, "dash": "dot"}, hoverinfo="skip",
                                 name="simplex", meta="outline", showlegend=False))
    if not trajectory:
        for k, a in enumerate(anchors):
            label = short_name(a["name"], names)
            full = full_name(a["name"], names)
            colour = ANCHOR_COLOURS[k % len(ANCHOR_COLOURS)]
            if kind == "surface":
                fig.add_trace(go.Scatter3d(
                    x=[a["x"]], y=[a["y"]], z=[zval(a)], mode="markers+text", text=[label],
                    hovertext=[full], hoverinfo="text",
                    marker={"size": 6, "color": colour, "symbol": "diamond"}, name=label, meta="anchor",
                    showlegend=False,
                ))
            else:
                fig.add_trace(go.Scatter(
                    x=[a["x"]], y=[a["y"]], mode="markers+text", text=[label], textposition="top center",
                    hovertext=[full], hoverinfo="text",
                    textfont={"color": "white", "size": 13},
                    marker={"size": 13, "symbol": "diamond", "color": colour,
                            "line": {"width": 1.5, "color": "white"}},
                    name=label, meta="anchor", showlegend=False,
                ))
    titles = _axis_titles(result)
    xl, yl = titles.get("x", "x"), titles.get("y", "y")
    if equal is None:
        equal = equal_axes_default(result)
    dx = (max(xs) - min(xs)) if xs else 0.0
    dy = (max(ys) - min(ys)) if ys else 0.0
    if kind == "surface":
        scene: dict[str, Any] = {"xaxis_title": xl, "yaxis_title": yl, "zaxis_title": metric_label(metric),
                                 "camera": {"eye": {"x": 1.25, "y": -1.25, "z": 0.95}},
                                 "domain": {"x": [0, 1], "y": [0, 1]}}
        # a 3D scene needs height to read, and margins so its axis titles are not clipped
        fig.update_layout(height=640)
        if equal and dx > 0 and dy > 0:
            big = max(dx, dy)
            scene.update(aspectmode="manual", aspectratio={"x": dx / big, "y": dy / big, "z": 0.6})
        fig.update_layout(scene=scene)
    else:
        fig.update_xaxes(title_text=xl, range=[min(xs), max(xs)] if xs else None,
                         constrain="domain" if equal else None)
        fig.update_yaxes(title_text=yl, range=[min(ys), max(ys)] if ys else None,
                         scaleanchor="x" if equal else None, scaleratio=1 if equal else None,
                         constrain="domain" if equal else None)
    fig.update_layout(meta={"equal_axes": bool(equal)})
    return _layout(fig, _title(result, metric, names))


# ---- dispatch ------------------------------------------------------------------------------


def figure_for(
    result: Mapping[str, Any], metric: str | None = None, kind: str = "auto", *,
    names: Mapping[str, str] | None = None, equal: bool | None = None,
) -> go.Figure:
    """The natural figure for a result: :func:`line_figure` for 1D paths, else
    :func:`plane_figure` (``kind="auto"`` → contour). ``metric`` defaults to the spec's first."""
    metrics = _metrics(result)
    metric = metric or (metrics[0] if metrics else "loss")
    if _is_1d(result):
        if kind not in ("auto", "line"):
            raise ValueError(f"a 1D path is drawn as a line, not {kind!r}")
        return line_figure(result, metric, names=names)
    return plane_figure(result, metric, "contour" if kind == "auto" else kind, names=names, equal=equal)


def distance_figure(result: Mapping[str, Any]) -> go.Figure | None:
    """Per-layer distances between the endpoints (001 Fig. 9; 002's ``calculate_dist``): for each
    group of the module tree in model order (embeddings, each block of each stack, head, rest),
    ‖ΔW‖₂/√numel as bars and the cosine of θA and θB over its tensors as a line on a second axis.
    ``None`` when the summary has no per-layer distances (planes; documents from before them)."""
    dist = (result.get("summary") or {}).get("distance") or {}
    rows = [r for r in dist.get("per_layer") or [] if isinstance(r, Mapping)]
    if not rows:
        return None
    stacks = {r.get("stack") for r in rows if r.get("stack")}
    labels = [f"{r['stack']} {r['name']}" if len(stacks) > 1 and r.get("stack") else str(r["name"]) for r in rows]
    tip = [f"{lab}<br>‖ΔW‖₂ = {r.get('l2', float('nan')):.4g}<br>‖ΔW‖₂/√n = {r.get('scaled', float('nan')):.4g}"
           f"<br>cosine = {cosine_text(r.get('cosine', float('nan')))}<br>n = {r.get('numel', 0):,}"
           for lab, r in zip(labels, rows, strict=True)]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=labels, y=[_num(r.get("scaled")) for r in rows], name="‖ΔW‖₂ / √numel",
                         marker_color="#4c72b0", hovertext=tip, hoverinfo="text", meta="distance"))
    fig.add_trace(go.Scatter(x=labels, y=[_num(r.get("cosine")) for r in rows], name="cosine(θA, θB)",
                             mode="lines+markers", yaxis="y2", line={"color": "#dd8452"}, hovertext=tip,
                             hoverinfo="text", meta="cosine"))
    total = f"‖θA−θB‖₂ = {dist['l2']:.4g}, cosine {cosine_text(dist['cosine'])}" if isinstance(dist.get("l2"), (int, float)) \
        and isinstance(dist.get("cosine"), (int, float)) else ""
    fig.update_layout(
        template="plotly_white", height=320, margin={"l": 60, "r": 60, "t": 60, "b": 60},
        title={"text": "distance between the endpoints per layer" + (f"<br><sup>{total}</sup>" if total else ""),
               "font": {"size": 14}},
        yaxis={"title": "‖ΔW‖₂ / √numel", "rangemode": "tozero"},
        yaxis2={"title": "cosine", "overlaying": "y", "side": "right", "range": [min(0.0, *[
            _num(r.get("cosine")) or 0.0 for r in rows]), 1.0], "showgrid": False},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"}, bargap=0.2,
        # 30 block labels (SmolLM2) must not overlap: slanted, smaller, the margin grows to fit
        xaxis={"tickangle": -50 if len(labels) > 10 else 0, "automargin": True,
               "tickfont": {"size": 10 if len(labels) > 20 else 12}},
    )
    return fig


def report_figures(
    result: Mapping[str, Any], *, names: Mapping[str, str] | None = None
) -> list[go.Figure]:
    """Every figure of a report: per metric a line (1D), or a contour AND a 3D surface
    (planes; trajectories with their path drawn on both), then the per-layer distances
    between the endpoints (1D). Empty without points."""
    if not result.get("points"):
        return []
    out: list[go.Figure] = []
    for m in _metrics(result):
        if _is_1d(result):
            out.append(line_figure(result, m, names=names))
        else:
            out.append(plane_figure(result, m, "contour", names=names))
            out.append(plane_figure(result, m, "surface", names=names))
    dist = distance_figure(result)
    if dist is not None:
        out.append(dist)
    return out
