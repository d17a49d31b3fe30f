"""Hostile requests of issue 24, parts 2, 3, 6 and 7, against the real stack (API + dashboard,
a worker, Redis), several variants per class; each variant must get the answer written next to
it, and the counts per class go to ``test-artifacts/reliability.json`` (``hostile_http``).

- ``body_cap`` (part 2): every route has a body cap — the dashboard's callback route, its
  pages, unknown routes, GETs with a body — by ``Content-Length`` before reading and while a
  chunked body streams; uploads keep their own larger cap, checked by length up front.
- ``internal_client`` (part 3): a ``Host`` naming another local port (where a bait server
  answers with a secret) never makes the dashboard's server-side client call that port, and
  no upstream body is echoed.
- ``strict_numbers`` / ``nesting`` (part 6, in): NaN, ±Infinity and overflowing numbers in
  specs, tags and fit specs, and deep nesting in specs, safetensors headers, JSONL lines,
  adapter configs and dashboard callbacks are 422 with a reason, never 500 or accepted.
- ``diverged`` (part 6, out): a run whose range extrapolates a real tiny model until its loss
  is NaN finishes, and its detail, points, SSE, JSON/CSV exports, HTML report and stored
  document answer 200 in strict JSON (``null`` for the diverged metric).
- ``streams``, ``names``, ``error_sizes``, ``dataset_lines`` (part 7): event streams beyond
  ``BASIN_MAX_STREAMS`` are 503 with ``Retry-After`` and hold no Redis connection; run names
  are bounded; an error about a huge safetensors header stays small; an over-long CSV/TSV/
  JSONL line is refused while streaming.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections import Counter, defaultdict
from typing import Any

import httpx
import pytest

from tests.reliability import hostile_http as hh
from tests.reliability.conftest import FULL, TOKEN, count, linear_spec
from tests.reliability.test_bad_inputs import peak_rss_mb
from tests.stack import Stack, running_stack

MAX_STREAMS = 3
JSON = {"Content-Type": "application/json"}


def strict_loads(text: str | bytes) -> Any:
    """A parser as strict as a browser's ``JSON.parse``: no NaN, no Infinity."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} in the answer")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def hstack(tmp_path_factory, classifier_family) -> Stack:
    """API *with the dashboard*, one worker with the hook, a token, ``BASIN_MAX_STREAMS=3``."""
    from service.store import Store

    root = tmp_path_factory.mktemp("hostile-http") / "store"
    store = Store(root)
    for name in ("ft_a", "ft_b", "ft_c"):
        store.add_checkpoint_dir(classifier_family[name], name=name, tags={"task": "sentiment"})
    store.add_dataset(classifier_family["data"], name="eval.csv")
    with running_stack(
        root,
        workers=1,
        token=TOKEN,
        ui=True,
        env={"BASIN_MAX_STREAMS": str(MAX_STREAMS)},
        seam=root.parent / "seam",
    ) as s:
        yield s


@pytest.fixture(scope="module")
def tally(figures) -> Any:
    """Statuses by class and variant, into ``figures["hostile_http"]`` at the end."""
    out: dict[str, Counter] = defaultdict(Counter)
    variants: dict[str, dict[str, Any]] = defaultdict(dict)
    yield out, variants
    figures["hostile_http"] = {
        "by_class": {k: dict(v) for k, v in sorted(out.items())},
        "variants": {k: v for k, v in sorted(variants.items())},
        "total": sum(sum(c.values()) for c in out.values()),
        "five_xx": sum(
            n for c in out.values() for s, n in c.items() if str(s).isdigit() and int(s) >= 500
        ),
    }


def note(tally, cls: str, variant: str, got: Any, want: Any) -> None:
    """Record one answer; the test asserts ``got == want`` for all of them at its end."""
    counts, variants = tally
    counts[cls][str(got)] += 1
    variants[cls][variant] = got


def check(tally, cls: str, expected: dict[str, Any]) -> None:
    got = tally[1][cls]
    wrong = {k: (got.get(k), want) for k, want in expected.items() if got.get(k) != want}
    assert not wrong, f"{cls}: variant → (got, wanted): {wrong}"


def port_of(stack: Stack) -> int:
    return int(stack.base_url.rsplit(":", 1)[1])


# ---- part 2 --------------------------------------------------------------------------------


def test_every_route_has_a_body_cap(hstack, tally):
    port = port_of(hstack)
    host = f"Host: 127.0.0.1:{port}\r\n"
    tok = f"X-Basin-Token: {TOKEN}\r\n"
    dash_cap = 16 << 20  # BASIN_MAX_DASHBOARD_BODY_BYTES's default
    json_cap = 1 << 20
    want: dict[str, Any] = {}

    def raw(variant: str, head: str, chunks: list[bytes] = (), expect: Any = 413) -> None:
        note(tally, "body_cap", variant, hh.status_of(hh.raw_request(port, head, chunks)), expect)
        want[variant] = expect

    # the dashboard's callback route: 200 MB declared, never sent — answered unread
    raw(
        "dash_declared_200MB",
        "POST /_dash-update-component HTTP/1.1\r\n"
        + host
        + "Content-Type: application/json\r\nContent-Length: 200000000\r\n\r\n",
    )
    raw(
        "dash_chunked_over_cap",
        "POST /_dash-update-component HTTP/1.1\r\n"
        + host
        + "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        hh.chunked(dash_cap + (1 << 20)),
    )
    raw(
        "page_post_2MB",
        "POST / HTTP/1.1\r\n" + host + "Content-Type: text/plain\r\n"
        f"Content-Length: {2 * json_cap}\r\n\r\n",
    )
    raw(
        "unknown_route_chunked",
        "POST /no/such/route HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n",
        hh.chunked(2 * json_cap, piece=1 << 18),
    )
    raw(
        "api_get_with_body",
        "GET /api/health HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n",
        hh.chunked(2 * json_cap, piece=1 << 18),
    )
    raw(
        "api_write_chunked",
        "POST /api/runs/validate HTTP/1.1\r\n"
        + host
        + tok
        + "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        hh.chunked(2 * json_cap, piece=1 << 18),
    )
    raw(
        "report_post",
        "POST /reports/abcdefgh12345678.html HTTP/1.1\r\n"
        + host
        + f"Content-Length: {10 * json_cap}\r\n\r\n",
    )
    # uploads keep their larger cap (BASIN_MAX_UPLOAD_BYTES, 4 GiB), by length before reading
    raw(
        "upload_declared_5GiB",
        "PUT /api/checkpoints?name=x HTTP/1.1\r\n"
        + host
        + tok
        + "Content-Type: application/octet-stream\r\nContent-Length: 5368709120\r\n\r\n",
    )
    # what is under the caps still works: a dashboard callback, and an upload over 1 MiB
    r = httpx.post(
        hstack.base_url + "/_dash-update-component",
        timeout=120,
        json=hh.dash_callback("supervisor-banner.children", "supervisor-poll.n_intervals"),
    )
    note(tally, "body_cap", "dash_callback_under_cap", r.status_code, 200)
    want["dash_callback_under_cap"] = 200
    big_csv = b"text,label\n" + b"".join(
        b"row %d with words,%d\n" % (i, i % 2) for i in range(70_000)
    )
    assert len(big_csv) > json_cap
    r = hstack.request(
        "PUT", "/api/datasets", params={"name": "big.csv"}, content=big_csv, timeout=120
    )
    note(tally, "body_cap", "upload_over_json_cap", r.status_code, 201)
    want["upload_over_json_cap"] = 201
    check(tally, "body_cap", want)
    assert hstack.request("GET", "/api/health").status_code == 200


# ---- part 3 --------------------------------------------------------------------------------


def test_the_dashboards_client_calls_only_its_own_address(hstack, tally):
    port = port_of(hstack)
    want: dict[str, Any] = {}
    with hh.Bait() as bait:
        # a real run, so the report of a real id works through the spoofed Host too
        r = hstack.request("POST", "/api/runs", json=linear_spec(2, seed=3))
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        hstack.wait_run(run_id, timeout=300)
        leaked: list[str] = []

        def get(variant: str, path: str, host: str, expect: int, **kw: Any) -> None:
            method = "POST" if "json" in kw else "GET"
            resp = httpx.request(
                method, f"http://127.0.0.1:{port}{path}", timeout=120, headers={"Host": host}, **kw
            )
            note(tally, "internal_client", variant, resp.status_code, expect)
            want[variant] = expect
            if bait.secret in resp.text:
                leaked.append(variant)

        get("report_unknown_run", "/reports/abcdefgh12345678.html", f"127.0.0.1:{bait.port}", 404)
        get(
            "report_localhost_port", "/reports/abcdefgh12345678.html", f"localhost:{bait.port}", 404
        )
        get("report_real_run", f"/reports/{run_id}.html", f"127.0.0.1:{bait.port}", 200)
        get("report_ipv6_loopback", f"/reports/{run_id}.html", f"[::1]:{bait.port}", 200)
        get(
            "dash_supervisor_banner",
            "/_dash-update-component",
            f"127.0.0.1:{bait.port}",
            200,
            json=hh.dash_callback("supervisor-banner.children", "supervisor-poll.n_intervals"),
        )
        get(
            "dash_demo_banner",
            "/_dash-update-component",
            f"localhost:{bait.port}",
            200,
            json=hh.dash_callback("demo-lm-banner.children", "demo-lm-poll.n_intervals"),
        )
        hits = list(bait.hits)
    note(tally, "internal_client", "bait_requests", len(hits), 0)
    note(tally, "internal_client", "bodies_echoing_the_bait", len(leaked), 0)
    assert not hits, f"the dashboard called the port a Host header named: {hits}"
    assert not leaked, f"an upstream body was echoed: {leaked}"
    check(tally, "internal_client", want)


# ---- part 6 --------------------------------------------------------------------------------


def test_numbers_must_be_finite_everywhere_in(hstack, tally):
    want: dict[str, Any] = {}
    spec = json.dumps(linear_spec(3))

    def send(variant: str, method: str, path: str, expect: int = 422, **kw: Any) -> None:
        r = hstack.request(method, path, timeout=120, **kw)
        note(tally, "strict_numbers", variant, r.status_code, expect)
        want[variant] = expect
        if r.status_code == 422:
            assert r.json().get("detail"), r.text

    def spec_with(old: str, new: str) -> str:
        assert old in spec
        return spec.replace(old, new, 1)

    rng = '"points": 3'
    for variant, value in [
        ("nan_range", "[0, NaN]"),
        ("inf_range", "[0, Infinity]"),
        ("neg_inf_range", "[-Infinity, 1]"),
        ("overflow_range", "[0, 1e999]"),
    ]:
        send(
            variant,
            "POST",
            "/api/runs",
            content=spec_with(rng, f'{rng}, "range": {value}'),
            headers=JSON,
        )
    send(
        "nan_seed_validate",
        "POST",
        "/api/runs/validate",
        content=spec_with('"seed": 0', '"seed": NaN'),
        headers=JSON,
    )
    send(
        "nan_spec_text_plain",
        "POST",
        "/api/runs",
        content=spec_with(rng, f'{rng}, "range": [NaN, 1]'),
        headers={"Content-Type": "text/plain"},
    )
    ft_a = hstack.request("GET", "/api/checkpoints/ft_a").json()["id"]
    send(
        "nan_tag_patch",
        "PATCH",
        f"/api/checkpoints/{ft_a}",
        content='{"tags": {"lr": NaN}}',
        headers=JSON,
    )
    send(
        "inf_tag_patch",
        "PATCH",
        f"/api/checkpoints/{ft_a}",
        content='{"tags": {"lr": -Infinity}}',
        headers=JSON,
    )
    send(
        "nan_tag_upload_query",
        "PUT",
        "/api/checkpoints",
        params={"name": "n", "config": "ft_a", "tags": '{"x": NaN}'},
        content=b"\0" * 16,
    )
    send(
        "nan_fit_lr",
        "POST",
        "/api/fits",
        headers=JSON,
        content='{"a": "ft_a", "b": "ft_b", "dataset": "eval.csv", "lr": NaN}',
    )
    check(tally, "strict_numbers", want)


def test_deep_nesting_is_422_everywhere(hstack, tally, lora_family):
    want: dict[str, Any] = {}

    def send(variant: str, method: str, path: str, expect: int = 422, **kw: Any) -> None:
        r = hstack.request(method, path, timeout=120, **kw)
        note(tally, "nesting", variant, r.status_code, expect)
        want[variant] = expect
        if r.status_code == 422:
            assert r.json().get("detail"), r.text

    send("spec_100k_objects", "POST", "/api/runs", content=hh.nested_object(100_000), headers=JSON)
    send(
        "spec_400k_arrays",
        "POST",
        "/api/runs/validate",
        content=hh.nested_array(400_000),
        headers=JSON,
    )
    spec = linear_spec(3)
    spec["name"] = "n"
    deep_tag = json.dumps(spec).replace('"name": "n"', '"name": ' + hh.nested_array(70))
    send("spec_70_levels", "POST", "/api/runs", content=deep_tag, headers=JSON)
    send(
        "safetensors_header",
        "PUT",
        "/api/checkpoints",
        params={"name": "deep-st", "config": "ft_a"},
        content=hh.safetensors_with_header(hh.nested_object(50_000, key="w")),
    )
    send(
        "jsonl_line",
        "PUT",
        "/api/datasets",
        params={"name": "deep.jsonl"},
        content=b'{"text": "a", "label": 1}\n' + hh.nested_object(50_000).encode() + b"\n",
    )
    adapter = lora_family["lora_a"]
    files = {p.name: p.read_bytes() for p in adapter.iterdir() if p.is_file()}
    files["adapter_config.json"] = hh.nested_object(50_000, key="peft_type").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    send(
        "adapter_config",
        "PUT",
        "/api/checkpoints",
        params={"name": "deep-adapter"},
        content=buf.getvalue(),
    )
    r = httpx.post(
        hstack.base_url + "/_dash-update-component",
        timeout=120,
        content=hh.nested_array(100_000),
        headers=JSON,
    )
    note(tally, "nesting", "dash_callback", r.status_code, 422)
    want["dash_callback"] = 422
    check(tally, "nesting", want)


def test_a_diverged_point_is_null_out_everywhere(hstack, tally):
    """A real run whose range extrapolates the tiny models to α = 1e30: the weights are
    ~1e30, LayerNorm's variance overflows and the loss is NaN — a run that diverged."""
    want: dict[str, Any] = {}
    spec = linear_spec(3, seed=5)
    spec["path"]["range"] = [0.0, 1e30]
    r = hstack.request("POST", "/api/runs", json=spec)
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    detail = hstack.wait_run(run_id, timeout=300)
    note(tally, "diverged", "run_status", detail["status"], "done")
    want["run_status"] = "done"
    doc = hstack.wait_stored(run_id, timeout=120)

    def get(variant: str, path: str, **kw: Any) -> httpx.Response:
        resp = hstack.request("GET", path, timeout=120, **kw)
        note(tally, "diverged", variant, resp.status_code, 200)
        want[variant] = 200
        return resp

    detail = get("detail", f"/api/runs/{run_id}")
    points = strict_loads(get("points", f"/api/runs/{run_id}/points").text)["points"]
    exported = strict_loads(get("export_json", f"/api/runs/{run_id}/export").text)
    csv_text = get("export_csv", f"/api/runs/{run_id}/export", params={"format": "csv"}).text
    report = get("report_html", f"/reports/{run_id}.html")
    with httpx.stream("GET", f"{hstack.base_url}/api/runs/{run_id}/events", timeout=120) as s:
        note(tally, "diverged", "events", s.status_code, 200)
        want["events"] = 200
        sse = "".join(s.iter_text())
    strict_loads(detail.text)
    losses = {p["index"]: p["metrics"]["loss"] for p in points}
    assert losses[0] is not None and losses[0] == losses[0], losses  # α = 0: a real loss
    diverged = [i for i, v in losses.items() if v is None]
    note(tally, "diverged", "points_null", len(diverged), 2)
    want["points_null"] = 2
    assert [p["metrics"]["loss"] for p in exported["points"]] == [losses[i] for i in sorted(losses)]
    for line in sse.splitlines():
        if line.startswith("data: "):
            strict_loads(line[6:])
    assert "NaN" not in sse and "Infinity" not in sse
    assert len(csv_text.splitlines()) == 1 + len(losses), csv_text[:500]
    assert "<title>Basin" in report.text and "linear on eval.csv" in report.text, report.text[:300]
    stored = (hstack.store / "runs" / f"{run_id}.json").read_text()
    strict_loads(stored)
    assert {p["index"] for p in doc["points"]} == set(losses)
    check(tally, "diverged", want)


# ---- part 7 --------------------------------------------------------------------------------


def test_streams_have_a_budget_and_hold_no_redis_client_beyond_it(hstack, tally):
    want: dict[str, Any] = {}
    hold = hstack.seam.hold()  # the run stays open: its streams stay open
    streams: list[Any] = []
    clients: list[httpx.Client] = []
    readers: list[Any] = []
    try:
        r = hstack.request("POST", "/api/runs", json=linear_spec(3, seed=21))
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        before = len(hstack.redis().client_list())

        def open_stream() -> httpx.Response:
            c = httpx.Client(base_url=hstack.base_url, timeout=120)
            clients.append(c)
            cm = c.stream("GET", f"/api/runs/{run_id}/events")
            resp = cm.__enter__()
            streams.append(cm)
            return resp

        opened = [open_stream() for _ in range(MAX_STREAMS)]
        for i, resp in enumerate(opened):
            note(tally, "streams", f"within_budget_{i}", resp.status_code, 200)
            want[f"within_budget_{i}"] = 200
            lines = resp.iter_lines()  # kept: a dropped iterator closes its stream
            readers.append(lines)
            first = next(lines)  # ": connected": the stream is being served
            assert first.startswith(":"), first
        extra = count(5, 150)
        refused = [open_stream() for _ in range(extra)]
        codes = Counter(x.status_code for x in refused)
        note(tally, "streams", f"beyond_budget_x{extra}", dict(codes), {503: extra})
        want[f"beyond_budget_x{extra}"] = {503: extra}
        assert all(x.headers.get("retry-after", "").isdigit() for x in refused)
        grown = len(hstack.redis().client_list()) - before
        tally[1]["streams"]["redis_clients_added"] = grown
        assert grown <= MAX_STREAMS, f"{3 + extra} streams added {grown} Redis clients"
        # one stream closes: its slot is free again
        streams.pop(0).__exit__(None, None, None)
        reopened = open_stream()
        note(tally, "streams", "after_one_closed", reopened.status_code, 200)
        want["after_one_closed"] = 200
    finally:
        hstack.seam.unhold(hold)
        hstack.seam.release()
        for cm in streams:
            try:
                cm.__exit__(None, None, None)
            except httpx.HTTPError:
                pass
        for c in clients:
            c.close()
    check(tally, "streams", want)


def test_run_names_are_bounded(hstack, tally):
    want: dict[str, Any] = {}
    for variant, name, expect in [
        ("name_200", "n" * 200, 200),
        ("name_201", "n" * 201, 422),
        ("name_100k", "n" * 100_000, 422),
        ("name_emoji_300", "😀" * 300, 422),
    ]:
        r = hstack.request("POST", "/api/runs/validate", json={**linear_spec(2), "name": name})
        note(tally, "names", variant, r.status_code, expect)
        want[variant] = expect
        if (
            expect == 422
        ):  # the spec's own bound (basin.names) or the server's, named with its limit
            detail = r.json()["detail"]
            assert "name" in detail and (
                "BASIN_MAX_NAME_LENGTH" in detail or "limit is 200" in detail
            ), r.text
    check(tally, "names", want)


def test_errors_about_huge_headers_stay_small(hstack, tally):
    want: dict[str, Any] = {}
    n = count(20_000, 120_000)  # headers of ~2 MB / ~12 MB
    for variant, body in [
        (f"tensors_x{n}", hh.safetensors_many_tensors(n)),
        ("shape_of_1M_dims", hh.safetensors_huge_shape(count(200_000, 1_000_000))),
        ("name_of_1MB", hh.safetensors_long_name(1 << 20)),
    ]:
        r = hstack.request(
            "PUT",
            "/api/checkpoints",
            params={"name": "huge", "config": "ft_a"},
            content=body,
            timeout=300,
        )
        note(tally, "error_sizes", variant, (r.status_code, len(r.content) < 16_384), (422, True))
        want[variant] = (422, True)
        if variant.startswith("tensors"):
            body_json = r.json()
            assert len(body_json["mismatches"]) <= 50
            assert body_json["mismatch_count"] > n, body_json["mismatch_count"]
    check(tally, "error_sizes", want)


def test_over_long_dataset_lines_are_refused_while_streaming(hstack, tally):
    want: dict[str, Any] = {}
    size = (20 if FULL else 4) << 20
    rss_before = peak_rss_mb(hstack.api_proc.pid)
    for variant, name, body in [
        ("csv_line_of_commas", "commas.csv", b"text,label\n" + b"," * size + b"\n"),
        ("tsv_line_of_tabs", "tabs.tsv", b"text\tlabel\n" + b"\t" * size + b"\n"),
        ("csv_header_of_commas", "header.csv", b"," * size + b"\n"),
        ("jsonl_long_line", "long.jsonl", b'{"text": "' + b"a" * size + b'", "label": 1}\n'),
        ("csv_5000_columns", "wide.csv", b",".join(b"c%d" % i for i in range(5000)) + b"\n"),
    ]:
        r = hstack.request("PUT", "/api/datasets", params={"name": name}, content=body, timeout=300)
        note(tally, "dataset_lines", variant, r.status_code, 422)
        want[variant] = 422
        assert r.status_code != 422 or r.json()["detail"], r.text
    tally[1]["dataset_lines"]["api_peak_rss_mb_growth"] = round(
        peak_rss_mb(hstack.api_proc.pid) - rss_before, 1
    )
    check(tally, "dataset_lines", want)


# ---- the job kinds added since round three (tune, study, subspace, Hub, artefacts) --------

TUNE = {"base": "ft_a", "dataset": "eval.csv", "steps": 2, "max_examples": 16, "batch_size": 8}
STUDY = {
    "checkpoints": ["ft_a", "ft_b", "ft_c"],
    "dataset": "eval.csv",
    "path": {"points": 5, "levels": 1, "budget": 5},
    "max_examples": 16,
    "batch_size": 16,
}


def _job_counts(stack: Stack) -> dict[str, int]:
    return {
        k: len(stack.request("GET", f"/api/{k}").json())
        for k in ("tunes", "studies", "subspaces", "fits", "runs")
    }


def test_job_kinds_read_bodies_like_every_route(hstack, tally):
    """Part 6 and 7 on the new kinds' routes: a body in another encoding (a UTF-8 byte-order
    mark, UTF-16) is JSON to the routes' parser, so it is checked as JSON (it was a 500 when it
    nested, and NaN got past the guard); errors quote a client's value briefly; nothing is
    queued."""
    want: dict[str, Any] = {}
    before = _job_counts(hstack)
    deep = hh.nested_array(100_000)
    routes = {
        "tunes": "/api/tunes",
        "studies": "/api/studies",
        "subspaces": "/api/subspaces",
        "hub": "/api/checkpoints/hub",
        "runs": "/api/runs",
        "fits": "/api/fits",
    }
    for short, path in routes.items():
        for variant, body, cls in [
            (f"{short}_bom_100k_deep", hh.bom_json(deep), "nesting"),
            (f"{short}_utf16be_100k_deep", hh.utf16be_json(deep), "nesting"),
            (
                f"{short}_utf16_nan",
                '{"steps": NaN, "tags": {"x": NaN}}'.encode("utf-16"),
                "strict_numbers",
            ),
            (f"{short}_bom_infinity", hh.bom_json('{"lr": -Infinity}'), "strict_numbers"),
        ]:
            r = hstack.request("POST", path, content=body, headers=JSON, timeout=120)
            note(tally, cls, variant, r.status_code, 422)
            want.setdefault(cls, {})[variant] = 422
            if r.status_code == 422:
                assert r.json()["error"] == "InvalidJson", r.text
    # a 900 KB value in a field a model bounds: FastAPI's 422 echoed it whole
    for variant, path, body in [
        ("hub_ref_900KB", "/api/checkpoints/hub", {"ref": "a" * 900_000}),
        ("hub_unknown_field_900KB", "/api/checkpoints/hub", {"ref": "a/b", "x": "q" * 900_000}),
        ("register_path_900KB", "/api/checkpoints/register", {"path": "q" * 900_000}),
        ("tune_seeds_200k", "/api/tunes", {**TUNE, "seeds": [[1]] * 200_000}),
    ]:
        r = hstack.request("POST", path, json=body, timeout=120)
        got = (r.status_code, len(r.content) < 16_384)
        note(tally, "error_sizes", variant, got, (422, True))
        want.setdefault("error_sizes", {})[variant] = (422, True)
    for cls, expected in want.items():
        check(tally, cls, expected)
    assert _job_counts(hstack) == before


def test_tune_yaml_is_read_strictly(hstack, tally):
    """``POST /api/tunes`` takes YAML: safe tags only, no aliases (an alias bomb standing for
    387 million items held the API 48 s writing one error), bounded nesting (deep YAML was a
    500), finite numbers and JSON's types; nothing is queued."""
    want: dict[str, Any] = {}
    before = _job_counts(hstack)
    good = "base: ft_a\ndataset: eval.csv\nsteps: 2\nmax_examples: 16\nbatch_size: 8\n"
    variants = {
        "alias_bomb_in_seeds": (hh.yaml_alias_bomb(field="seeds"), "alias"),
        "alias_bomb_in_name": (hh.yaml_alias_bomb(field="name"), "alias"),
        "alias_bomb_unknown_field": (hh.yaml_alias_bomb(field="extra"), "alias"),
        "merge_key": (good + "split: {<<: {k: 2}}\n", "merge keys"),
        "python_tag": (
            "!!python/object/apply:os.system ['touch /tmp/basin-pwned']\n",
            "constructor",
        ),
        "python_name_tag": (good + "name: !!python/name:os.system\n", "constructor"),
        "set_tag": (good.replace("steps: 2", "seeds: !!set {1, 2}\nsteps: 2"), "constructor"),
        "binary_tag": (good + "name: !!binary aGVsbG8=\n", "constructor"),
        "nested_100k_flow": (hh.yaml_nested(100_000), "deeper than"),
        "nested_5k_maps": (good + "x: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n", "deeper than"),
        "nan": (good + "learning_rates: [.nan]\n", "finite"),
        "infinity": (good.replace("steps: 2", "steps: .inf"), "finite"),
        "int_of_5000_digits": (good.replace("steps: 2", "steps: " + "9" * 5000), "cannot be read"),
        "nul_byte": (good + "\x00", "not YAML"),
        "two_documents": (good + "---\n" + good, "single document"),
        "zero_width_name": (good + 'name: "fam\\u200b"\n', "invisible"),
        "not_a_mapping": ("- base\n- ft_a\n", "JSON object"),
    }
    for variant, (text, says) in variants.items():
        t0 = time.perf_counter()
        r = hstack.request(
            "POST",
            "/api/tunes",
            content=text.encode(),
            headers={"Content-Type": "application/yaml"},
            timeout=300,
        )
        note(tally, "yaml", variant, r.status_code, 422)
        want[variant] = 422
        assert says in r.json().get("detail", ""), (variant, r.text[:300])
        assert time.perf_counter() - t0 < 60, f"{variant} held the API"  # a hang limit
    r = hstack.request(
        "POST",
        "/api/tunes",
        content=b"\xff\xfe" + good.encode("utf-16-le"),
        headers={"Content-Type": "application/yaml"},
    )
    note(tally, "yaml", "utf16_document", r.status_code, 422)
    want["utf16_document"] = 422
    check(tally, "yaml", want)
    assert not (hstack.store.parent / "basin-pwned").exists()
    assert _job_counts(hstack) == before


def test_every_job_kind_gets_the_shared_limits_and_names(hstack, tally):
    """Part 4 and 8 on the new kinds: over a cap, each kind is 422 naming the setting, before
    anything is queued; look-alike names are refused in every kind's names."""
    want: dict[str, Any] = {}
    before = _job_counts(hstack)
    sol = {f"m{j}": "ft_a" for j in range(8)}
    for variant, path, body, setting in [
        ("tune_steps_200k", "/api/tunes", {**TUNE, "steps": 200_000}, "BASIN_MAX_TRAIN_STEPS"),
        (
            "tune_max_examples_1M",
            "/api/tunes",
            {**TUNE, "max_examples": 1_000_000},
            "BASIN_MAX_EXAMPLES",
        ),
        (
            "tune_eval_examples_1M",
            "/api/tunes",
            {**TUNE, "eval_max_examples": 1_000_000},
            "BASIN_MAX_EXAMPLES",
        ),
        ("tune_length_8192", "/api/tunes", {**TUNE, "max_length": 8192}, "BASIN_MAX_LENGTH"),
        ("tune_batch_4096", "/api/tunes", {**TUNE, "batch_size": 4096}, "BASIN_MAX_BATCH_SIZE"),
        (
            "tune_members_128",
            "/api/tunes",
            {**TUNE, "seeds": list(range(64)), "learning_rates": [1e-4, 2e-4]},
            "BASIN_MAX_TUNE_MEMBERS",
        ),
        (
            "study_examples_1M",
            "/api/studies",
            {**STUDY, "max_examples": 1_000_000},
            "BASIN_MAX_EXAMPLES",
        ),
        ("study_batch_4096", "/api/studies", {**STUDY, "batch_size": 4096}, "BASIN_MAX_BATCH_SIZE"),
        (
            "subspace_solutions_256",
            "/api/subspaces",
            {
                "kind": "subspace_fit",
                "tasks": {f"t{i}": {"train": "eval.csv", "solutions": sol} for i in range(32)},
                "steps": 2,
            },
            "BASIN_MAX_CHECKPOINTS",
        ),
        (
            "subspace_examples_1M",
            "/api/subspaces",
            {
                "kind": "subspace_fit",
                "tasks": {"t": {"train": "eval.csv", "solutions": {"m": "ft_a"}}},
                "train_examples": 1_000_000,
            },
            "BASIN_MAX_EXAMPLES",
        ),
    ]:
        r = hstack.request("POST", path, json=body, timeout=120)
        note(tally, "job_limits", variant, r.status_code, 422)
        want[variant] = 422
        assert setting in r.text, (variant, r.text[:300])
    check(tally, "job_limits", want)
    names: dict[str, Any] = {}
    for bad in ("fam\u200b", "\u202eevil", "s\u2066x\u2069", "a\x1b[2J", "\ufeffs"):
        for variant, path, body in [
            ("tune_name", "/api/tunes", {**TUNE, "name": bad}),
            ("study_name", "/api/studies", {**STUDY, "name": bad}),
            (
                "study_label",
                "/api/studies",
                {**STUDY, "checkpoints": [{"ref": "ft_a", "name": bad}, "ft_b"]},
            ),
            ("hub_name", "/api/checkpoints/hub", {"ref": "org/model", "name": bad}),
        ]:
            r = hstack.request("POST", path, json=body, timeout=120)
            key = f"{variant}_{bad.encode('unicode_escape').decode()}"
            note(tally, "names", key, r.status_code, 422)
            names[key] = 422
    check(tally, "names", names)
    assert _job_counts(hstack) == before


def test_a_study_pair_runs_link_reveals_that_run_only(hstack, tally):
    """Part 5 on studies: a study's pair run is an ordinary run, shared by its own link; that
    link names its two checkpoints and its dataset — not the study's other checkpoints (the
    pair runs stored the whole study's names). The new kinds' lists need the token; their
    own links (a study's, a tune's) open that job only."""
    want: dict[str, Any] = {}
    hold = hstack.seam.hold()  # no pair run evaluates anything: the study is cancelled
    try:
        r = hstack.request("POST", "/api/studies", json=STUDY)
        assert r.status_code == 201, r.text
        study_id = r.json()["id"]
        detail = hstack.request("GET", f"/api/studies/{study_id}").json()
        run_ids = list(detail["runs"].values())  # {pair key: run id}
        assert run_ids, detail
        leaked = []
        for run_id in run_ids:
            open_detail = httpx.get(f"{hstack.base_url}/api/runs/{run_id}", timeout=60)
            note(tally, "share", "pair_run_open", open_detail.status_code, 200)
            want["pair_run_open"] = 200
            body = open_detail.json()
            mine = {body["spec"]["path"]["a"], body["spec"]["path"]["b"], body["spec"]["dataset"]}
            leaked += [n for n in body.get("names", {}) if n not in mine]
            carto = httpx.get(f"{hstack.base_url}/api/runs/{run_id}/cartography", timeout=60)
            note(tally, "share", "pair_run_cartography_open", carto.status_code, 200)
            want["pair_run_cartography_open"] = 200
            assert carto.json()["checkpoint"] is None  # no tune member: nothing more
        note(tally, "share", "other_checkpoints_named_by_a_pair_link", len(leaked), 0)
        want["other_checkpoints_named_by_a_pair_link"] = 0
        study_open = httpx.get(f"{hstack.base_url}/api/studies/{study_id}", timeout=60)
        note(tally, "share", "study_own_link_open", study_open.status_code, 200)
        want["study_own_link_open"] = 200
        for path in (
            "/api/studies",
            "/api/tunes",
            "/api/subspaces",
            "/api/artefacts",
            "/api/checkpoints/hub/abcdefghijklmnop",
        ):
            r = httpx.get(hstack.base_url + path, timeout=60)
            variant = "list_" + path.split("/")[2] + ("_hub_job" if "hub" in path else "")
            note(tally, "share", variant, r.status_code, 401)
            want[variant] = 401
        c = hstack.request("POST", f"/api/studies/{study_id}/cancel")
        assert c.status_code in (200, 409), c.text  # 409: it ended (a release let it run)
    finally:
        hstack.seam.unhold(hold)
        hstack.seam.release()
    for run_id in run_ids:
        hstack.wait_run(run_id, timeout=300)
    check(tally, "share", want)
    assert not leaked, f"a pair run's link names other checkpoints: {leaked}"


def test_a_runs_link_names_no_job_that_made_its_checkpoints(hstack, tally):
    """Part 5 again: a tune member's checkpoints carry their family's id in the store tag
    ``tune`` (a fit's control ``fit``, a decoded adapter ``subspace_job``), and a run copies its
    checkpoints' store tags. Those ids are capabilities — ``/api/tunes/{id}`` opens the whole
    family — so a run's link (detail, stored document, export) must not carry them."""
    want: dict[str, Any] = {}
    ids = {c["name"]: c["id"] for c in hstack.request("GET", "/api/checkpoints").json()}
    secret = {"tune": "T" * 22, "fit": "F" * 22, "subspace_job": "S" * 22}
    r = hstack.request(
        "PATCH", f"/api/checkpoints/{ids['ft_c']}", json={"tags": {**secret, "seed": 3}}
    )
    assert r.status_code == 200, r.text
    hold = hstack.seam.hold()
    try:
        spec = linear_spec(3, seed=41)
        spec["path"] = {"type": "linear", "a": "ft_c", "b": "ft_b", "points": 3}
        r = hstack.request("POST", "/api/runs", json=spec)
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        seen: dict[str, str] = {}
        detail = httpx.get(f"{hstack.base_url}/api/runs/{run_id}", timeout=60)
        seen["detail"] = detail.text
        assert detail.json()["tags"][ids["ft_c"]].get("seed") == 3  # the other tags stay
        hstack.request("POST", f"/api/runs/{run_id}/cancel")
    finally:
        hstack.seam.unhold(hold)
        hstack.seam.release()
        hstack.request(
            "PATCH", f"/api/checkpoints/{ids['ft_c']}", json={"tags": {"task": "sentiment"}}
        )
    hstack.wait_run(run_id, timeout=300)
    hstack.wait_stored(run_id, timeout=120)
    seen["stored_detail"] = httpx.get(f"{hstack.base_url}/api/runs/{run_id}", timeout=60).text
    seen["export_json"] = httpx.get(f"{hstack.base_url}/api/runs/{run_id}/export", timeout=60).text
    seen["report"] = httpx.get(f"{hstack.base_url}/reports/{run_id}.html", timeout=60).text
    # a document stored before runs left these tags out: its export leaves them out too
    stored = hstack.store / "runs" / f"{run_id}.json"
    doc = json.loads(stored.read_text())
    doc["tags"][ids["ft_c"]] = {**doc["tags"].get(ids["ft_c"], {}), **secret}
    stored.write_text(json.dumps(doc))
    seen["older_document_export"] = httpx.get(
        f"{hstack.base_url}/api/runs/{run_id}/export", timeout=60
    ).text
    for where, text in seen.items():
        named = sorted(k for k, v in secret.items() if v in text)
        note(tally, "share", f"job_ids_in_run_{where}", named, [])
        want[f"job_ids_in_run_{where}"] = []
    check(tally, "share", want)
