"""The request guard and the spec checks, as an attacker would try them.

Token before body, JSON cap, Host allow-list, CSRF guard, listings behind the token while
a run's link stays open, run ids and cursors that cannot reach Redis, scope regexes in
linear time and the configurable spec caps. Runs need a Redis: a real ``redis-server``
is started for this module (no Celery worker: a created run stays queued, which is all
these tests read).
"""

from __future__ import annotations

import contextlib
import socket
import time

import pytest

from tests.backend.conftest import TOKEN, serve, zip_dir

JSON = {"Content-Type": "application/json"}
AUTH = {"X-Basin-Token": TOKEN}
HOSTILE = r"^((\w|\.)+)+!$"


def spec(**kw) -> dict:
    """A linear run over the checkpoints and dataset :func:`fill` stores."""
    body = {"path": {"type": "linear", "a": "ft_a", "b": "ft_b", "points": 3},
            "dataset": "eval.csv", "max_examples": 8, "batch_size": 4}
    body.update(kw)
    return body


def fill(client, family, headers=None) -> None:
    """Store ft_a, ft_b and eval.csv through the API."""
    for name in ("ft_a", "ft_b"):
        r = client.put("/api/checkpoints", params={"name": name}, content=zip_dir(family[name]),
                       headers=headers or {})
        assert r.status_code == 201, r.text
    r = client.put("/api/datasets", params={"name": "eval.csv"},
                   content=family["data"].read_bytes(), headers=headers or {})
    assert r.status_code == 201, r.text


def bare(client):
    """The client without the dashboard's write header (as a cross-site form would post)."""
    client.headers.pop("X-Basin-Token", None)
    return client


# ---- token before body ---------------------------------------------------------------------


def test_without_the_token_invalid_json_is_401_not_422(make_client):
    client = make_client(api_token=TOKEN)
    for path in ("/api/runs", "/api/runs/validate"):
        r = client.post(path, content=b"{not json", headers=JSON)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "TokenRequired" and "X-Basin-Token" in r.json()["detail"]
        assert r.headers["www-authenticate"].startswith("Bearer")
        wrong = client.post(path, content=b"{not json", headers={**JSON, "X-Basin-Token": "nope"})
        assert wrong.status_code == 401 and "wrong" in wrong.json()["detail"]
        # with the token the body is read, and its fault named
        ok = client.post(path, content=b"{not json", headers={**JSON, **AUTH})
        assert ok.status_code == 422 and "not JSON" in ok.json()["detail"]


def test_a_non_ascii_token_header_is_401_not_500(make_client):
    client = make_client(api_token=TOKEN)
    for header in ("X-Basin-Token", "Authorization"):
        value = ("Bearer " if header == "Authorization" else "") + "tök€n"
        r = client.post("/api/runs", json=spec(), headers={header: value.encode()})
        assert r.status_code == 401, r.text
        r = client.get("/api/checkpoints", headers={header: value.encode()})
        assert r.status_code == 401, r.text


# ---- JSON cap ------------------------------------------------------------------------------


def _raw_post(port: int, head: str, chunks: list[bytes]) -> bytes:
    """Send a request head and body chunks over a socket; read the answer until it closes.
    Sending stops as soon as the server has answered (it may cut the body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(head.encode())
        for c in chunks:
            try:
                s.sendall(c)
            except OSError:  # the server answered and closed: it read no further
                break
        s.settimeout(60)
        out = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in out:
                data = s.recv(65536)
                if not data:
                    break
                out += data
    return out


def test_json_bodies_over_the_cap_are_413_by_length_and_while_streaming(make_client):
    client = make_client()
    five_mb = b"[" + b"1," * (5 * 1024**2 // 2) + b"1]"
    r = client.post("/api/runs/validate", content=five_mb, headers=JSON)
    assert r.status_code == 413, r.text
    assert "1048576" in r.json()["detail"] and "BASIN_MAX_JSON_BYTES" in r.json()["detail"]

    app = client.app
    with serve(app) as port:
        # Content-Length over the cap: refused before a byte of the body is sent
        head = (f"POST /api/runs/validate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: application/json\r\nX-Basin-Token: \r\n"
                f"Content-Length: {len(five_mb)}\r\n\r\n")
        answer = _raw_post(port, head, [])
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        # chunked, no length: counted while it streams, cut at the cap (the body never ends)
        head = (f"POST /api/runs/validate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: application/json\r\nX-Basin-Token: \r\n"
                "Transfer-Encoding: chunked\r\n\r\n")
        piece = b"1," * 32768
        chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        answer = _raw_post(port, head, [chunk] * 20)  # 1.25 MiB, no final 0-chunk
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_uploads_keep_their_own_cap_not_the_json_one(make_client, classifier_family):
    client = make_client(max_json_bytes=1000)
    body = classifier_family["data"].read_bytes()
    assert len(body) > 1000
    assert client.put("/api/datasets", params={"name": "e.csv"}, content=body).status_code == 201
    files = {"file": ("f.csv", body.replace(b"\n", b"\r\n"), "text/csv")}
    assert client.post("/api/datasets", files=files).status_code == 201
    assert client.post("/api/runs/validate", json={"x": "y" * 2000}).status_code == 413


# ---- Host allow-list -----------------------------------------------------------------------


def test_only_allowed_hosts_are_answered(make_client):
    client = make_client(allowed_hosts="")
    r = client.get("/api/health", headers={"Host": "evil.example"})
    assert r.status_code == 400 and "BASIN_ALLOWED_HOSTS" in r.json()["detail"]
    assert client.get("/runs/abc", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/api/meta", headers={"Host": "evil.example:8000"}).status_code == 400
    assert client.get("/api/meta", headers={"Host": "testserver"}).status_code == 400
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "LOCALHOST"):
        assert client.get("/api/meta", headers={"Host": host}).status_code == 200, host
    public = make_client(allowed_hosts="api", public_url="https://basin.example.org/x")
    for host in ("basin.example.org", "api:8000", "127.0.0.1:8000"):
        assert public.get("/api/meta", headers={"Host": host}).status_code == 200, host
    assert public.get("/api/meta", headers={"Host": "evil.example"}).status_code == 400
    anyone = make_client(allowed_hosts="*")
    assert anyone.get("/api/meta", headers={"Host": "evil.example"}).status_code == 200


# ---- CSRF guard ----------------------------------------------------------------------------


def test_form_like_writes_need_the_header(make_client, classifier_family):
    client = bare(make_client())
    body = classifier_family["data"].read_bytes()
    r = client.post("/api/datasets", files={"file": ("e.csv", body, "text/csv")})
    assert r.status_code == 403, r.text
    assert "X-Basin-Token" in r.json()["detail"] and r.json()["error"] == "CsrfRefused"
    attempts = [
        ("POST", "/api/runs", {"content": b'{"a": 1}', "headers": {"Content-Type": "text/plain"}}),
        ("POST", "/api/runs", {"data": {"a": "1"}}),  # application/x-www-form-urlencoded
        ("POST", "/api/runs/AAAAAAAAAAAAAAAAAAAAAA/cancel", {}),  # no body, no type
        ("DELETE", "/api/checkpoints/x", {}),
        ("PUT", "/api/datasets?name=e.csv", {"content": body}),  # no content type
    ]
    for method, path, kw in attempts:
        assert client.request(method, path, **kw).status_code == 403, (method, path)
    assert client.get("/api/datasets").json() == []  # nothing was stored
    # the same upload with the header (any value: this server has no token) is accepted
    ok = client.post("/api/datasets", files={"file": ("e.csv", body, "text/csv")},
                     headers={"X-Basin-Token": ""})
    assert ok.status_code == 201, ok.text
    # a body only scripts can send (JSON, octet-stream) needs no header
    raw = client.put("/api/datasets", params={"name": "e2.tsv"}, content=body.replace(b",", b"\t"),
                     headers={"Content-Type": "application/octet-stream"})
    assert raw.status_code == 201, raw.text
    assert client.post("/api/runs/validate", json={"path": 1}).status_code == 422


def test_no_cors_answer_admits_another_origin(make_client):
    client = make_client()
    pre = client.options("/api/runs", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-basin-token"})
    assert "access-control-allow-origin" not in pre.headers
    assert "access-control-allow-origin" not in client.get(
        "/api/meta", headers={"Origin": "https://evil.example"}).headers


# ---- listings behind the token, a run's link open -----------------------------------------


def test_with_a_token_listings_need_it_and_a_run_link_does_not(
    make_client, classifier_family, redis_url
):
    client = bare(make_client(api_token=TOKEN, redis_url=redis_url))
    fill(client, classifier_family, AUTH)
    created = client.post("/api/runs", json=spec(), headers=AUTH)
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]

    r = client.get("/api/runs")
    assert r.status_code == 401 and "token" in r.json()["detail"]
    listed = client.get("/api/runs", headers=AUTH)
    assert listed.status_code == 200 and run_id in [x["id"] for x in listed.json()]
    for path in ("/api/fits", "/api/subspaces", "/api/artefacts", "/api/tunes", "/api/checkpoints",
                 "/api/checkpoints/ft_a", "/api/checkpoints/ft_a/archive",
                 "/api/datasets", "/api/datasets/eval.csv", "/api/datasets/eval.csv/file",
                 "/api/datasets/eval.csv/preview"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=AUTH).status_code == 200, path
    archive = client.get("/api/checkpoints/ft_a/archive", headers={"Authorization": f"Bearer {TOKEN}"})
    assert archive.headers["content-type"] == "application/x-tar" and len(archive.content) > 1000

    # the share link alone opens the run
    for path in (f"/api/runs/{run_id}", f"/api/runs/{run_id}/points",
                 f"/api/runs/{run_id}/export", f"/api/runs/{run_id}/export?format=csv"):
        assert client.get(path).status_code == 200, path
    assert client.get(f"/api/runs/{run_id}").json()["status"] == "queued"
    # health and meta stay open and list no run, not even the one a worker drains
    from service.runstate.keys import worker_key
    from workers.leases import Heartbeat

    beat = Heartbeat(client.app.state.redis, "w-sec", "cpu", 30)
    beat.draining(run_id)
    try:
        health = client.get("/api/health")
        assert [w["busy"] for w in health.json()["workers"] if w["name"] == "w-sec"] == [True]
        for path in ("/api/health", "/api/meta"):
            r = client.get(path)
            assert r.status_code == 200 and run_id not in r.text, path
    finally:
        client.app.state.redis.delete(worker_key("w-sec"))
    # writes on the run still need the token
    assert client.post(f"/api/runs/{run_id}/cancel").status_code == 401
    assert client.post(f"/api/runs/{run_id}/cancel", headers=AUTH).status_code == 200


# ---- run ids and cursors -------------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["a:b", "basin:runs", "x" * 65, "short", "ä" * 10])
def test_a_run_id_that_cannot_name_a_run_is_404_and_never_reaches_redis(client, run_id):
    # the fixture's Redis URL points at a closed port: reaching Redis would be 503
    for method, suffix in (("GET", ""), ("GET", "/points"), ("GET", "/events"),
                           ("GET", "/export"), ("GET", "/forgetting"), ("POST", "/cancel"), ("DELETE", "")):
        r = client.request(method, f"/api/runs/{run_id}{suffix}")
        assert r.status_code == 404, (method, suffix, r.text)
        assert r.json()["error"] == "RunNotFound" and "no run with id" in r.json()["detail"]


def test_a_malformed_cursor_is_422_naming_it(client):
    run = "AAAAAAAAAAAAAAAAAAAAAA"
    for bad in ("zzz", "1-2-3", "(1", "store-x", "1" * 25):
        r = client.get(f"/api/runs/{run}/points", params={"after": bad})
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"] == "InvalidCursor" and "cursor" in r.json()["detail"]
    r = client.get(f"/api/runs/{run}/events", headers={"Last-Event-ID": "zzz"})
    assert r.status_code == 422 and r.json()["error"] == "InvalidCursor"


def test_good_cursors_are_read(make_client, classifier_family, redis_url):
    client = make_client(redis_url=redis_url)
    fill(client, classifier_family)
    run_id = client.post("/api/runs", json=spec()).json()["id"]
    for after in ("", "-", "0", "0-0", "1700000000000-0", "1700000000000", "store"):
        r = client.get(f"/api/runs/{run_id}/points", params={"after": after})
        assert r.status_code == 200, (after, r.text)
        assert r.json()["points"] == [] and r.json()["status"] == "queued"


# ---- scope regexes -------------------------------------------------------------------------


def test_a_hostile_scope_regex_is_validated_and_matched_in_linear_time(client, classifier_family):
    from basin.scope_regex import compile_scope

    fill(client, classifier_family)
    t0 = time.perf_counter()
    r = client.post("/api/runs/validate", json=spec(scope=HOSTILE))
    # answered (not hung): Check now also runs the worker's test that the scope moves something
    assert r.status_code == 422 and "matches no parameter that can move" in r.json()["detail"], r.text
    rx = compile_scope(HOSTILE)
    names = ["bert.encoder.layer.11.attention.self.query.weight" * 4] * 2000
    assert not any(rx.search(n) for n in names)
    # Python's backtracking re needs minutes for one such name; RE2 does all in milliseconds
    assert time.perf_counter() - t0 < 20


@pytest.mark.parametrize(
    ("scope", "needle"),
    [(r"(query)\1", "backreferences"), (r"query(?=\.weight)", "lookaround"),
     (r"(?<!self)\.query", "lookaround"), ("(unclosed", "missing )")],
)
def test_a_scope_re2_cannot_compile_is_422_naming_the_problem(client, scope, needle):
    r = client.post("/api/runs/validate", json=spec(scope=scope))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith("invalid spec: scope") and needle in detail and "RE2" in detail


def test_a_scope_regex_over_the_length_cap_is_422(make_client):
    client = make_client(max_scope_length=20)
    r = client.post("/api/runs/validate", json=spec(scope="a" * 21))
    assert r.status_code == 422
    assert "21 characters" in r.json()["detail"] and "BASIN_MAX_SCOPE_LENGTH" in r.json()["detail"]


# ---- caps ----------------------------------------------------------------------------------

PLANE = {"type": "plane", "a": "ft_a", "b": "ft_b", "c": "ft_c", "resolution": [5, 2]}
TRAJ = {"type": "trajectory", "checkpoints": ["c1", "c2", "c3", "c4"], "resolution": [3, 3]}
CAPS = [
    ({"path": {**spec()["path"], "points": 12}}, "points: 12", 10, "BASIN_MAX_POINTS"),
    ({"path": PLANE}, "path.resolution (x): 5", 4, "BASIN_MAX_RESOLUTION"),
    ({"path": TRAJ}, "checkpoints on the path: 4", 3, "BASIN_MAX_CHECKPOINTS"),
    ({"max_examples": 100}, "max_examples: 100", 64, "BASIN_MAX_EXAMPLES"),
    ({"max_length": 256}, "max_length: 256", 128, "BASIN_MAX_LENGTH"),
    ({"batch_size": 64}, "batch_size: 64", 32, "BASIN_MAX_BATCH_SIZE"),
]
LOW = {"max_points": 10, "max_resolution": 4, "max_checkpoints": 3, "max_examples": 64,
       "max_length": 128, "max_batch_size": 32}


@pytest.mark.parametrize(("change", "what", "limit", "setting"), CAPS,
                         ids=[c[3] for c in CAPS])
def test_each_cap_is_422_with_its_limit_and_setting(make_client, change, what, limit, setting):
    client = make_client(**LOW)
    for path in ("/api/runs/validate", "/api/runs"):
        r = client.post(path, json=spec(**change))
        assert r.status_code == 422, r.text
        assert r.json()["detail"] == (
            f"invalid spec: {what} is over this server's limit of {limit} ({setting})"
        )


def test_every_cap_exceeded_is_listed(make_client):
    client = make_client(**LOW)
    body = spec(max_examples=100, max_length=256, batch_size=64,
                path={**PLANE, "resolution": [5, 5]})
    detail = client.post("/api/runs/validate", json=body).json()["detail"]
    for setting in ("BASIN_MAX_POINTS", "BASIN_MAX_RESOLUTION", "BASIN_MAX_EXAMPLES",
                    "BASIN_MAX_LENGTH", "BASIN_MAX_BATCH_SIZE"):
        assert setting in detail, setting
    assert "(y): 5" in detail and "points: 25" in detail


# ---- remote workers ------------------------------------------------------------------------


def test_a_remote_worker_downloads_with_the_token_and_says_when_it_lacks_it(
    make_client, classifier_family, tmp_path
):
    from basin.errors import CheckpointError
    from service.store import Store
    from workers.fetch import FetchingResolver

    client = make_client(api_token=TOKEN)
    fill(client, classifier_family, AUTH)
    with serve(client.app) as port:
        base = f"http://127.0.0.1:{port}"
        without = FetchingResolver(Store(tmp_path / "w1"), base)
        with pytest.raises(CheckpointError, match="BASIN_API_TOKEN on this worker"):
            without.checkpoint("ft_a")
        worker = FetchingResolver(Store(tmp_path / "w2"), base, token=TOKEN)
        src = worker.checkpoint("ft_a")
        assert src.weights.exists() and (src.config_dir / "config.json").exists()
        assert worker.dataset("eval.csv").read_bytes() == classifier_family["data"].read_bytes()
