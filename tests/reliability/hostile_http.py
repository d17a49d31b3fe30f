"""Hostile requests of issue 24, parts 2, 3, 6 and 7, built in memory (nothing here sends).

Each builder returns bytes or a JSON-able value; :mod:`tests.reliability.test_hostile_http`
sends them to the real stack and tallies the answers per class.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# ---- part 6: numbers and nesting -------------------------------------------------------


def nested_object(depth: int, key: str = "path") -> str:
    """``{"path": {"path": … {}}}``, ``depth`` levels, as text (no Python recursion)."""
    return f'{{"{key}": ' * (depth - 1) + "{}" + "}" * (depth - 1)


def nested_array(depth: int) -> str:
    return "[" * depth + "]" * depth


def safetensors_with_header(header_text: str) -> bytes:
    """A bare safetensors file whose header is ``header_text`` (no data)."""
    raw = header_text.encode()
    return struct.pack("<Q", len(raw)) + raw


def safetensors_many_tensors(n: int, name_len: int = 40) -> bytes:
    """A valid safetensors file of ``n`` one-byte tensors with long names (none fits a model):
    its header is about ``n × (name_len + 60)`` bytes."""
    header: dict[str, dict] = {}
    for i in range(n):
        name = f"t{i:08d}".ljust(name_len, "x")
        header[name] = {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]}
    text = json.dumps(header)
    text += " " * (-(len(text) + 8) % 8)
    return struct.pack("<Q", len(text)) + text.encode() + b"\0" * n


def safetensors_huge_shape(n: int) -> bytes:
    """One tensor whose shape lists ``n`` dimensions (an error must not echo them all)."""
    header = {"w": {"dtype": "U8", "shape": [1] * n + [-1], "data_offsets": [0, 1]}}
    text = json.dumps(header)
    return struct.pack("<Q", len(text)) + text.encode() + b"\0"


def safetensors_long_name(n: int) -> bytes:
    """One tensor with an ``n``-character name and an unknown dtype."""
    header = {"n" * n: {"dtype": "NOPE", "shape": [1], "data_offsets": [0, 1]}}
    text = json.dumps(header)
    return struct.pack("<Q", len(text)) + text.encode() + b"\0"


# ---- part 3: a second local server the dashboard must never call ------------------------


class Bait:
    """A tiny HTTP server on another loopback port that answers every request with a secret
    (a 500 in text for most paths, a health document naming it for ``/api/health``) and
    counts the requests it got. The dashboard's server-side client must never reach it."""

    def __init__(self) -> None:
        self.secret = "BAIT-SECRET-" + socket.gethostname()[:8] + "-7f3a"
        self.hits: list[str] = []
        bait = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                bait.hits.append(f"{self.command} {self.path}")
                if self.path.startswith("/api/health"):
                    body = json.dumps(
                        {
                            "ok": True,
                            "status": "ok",
                            "supervisor": {
                                "events": [{"service": bait.secret, "message": bait.secret}]
                            },
                            "demo_lm": {"state": "failed", "error": bait.secret},
                        }
                    ).encode()
                    code, ctype = 200, "application/json"
                else:
                    body = (bait.secret + " internal admin page ").encode() * 40
                    code, ctype = 500, "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815 (http.server's names)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Bait:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def dash_callback(output: str, trigger: str) -> dict:
    """The body the browser posts to ``/_dash-update-component`` for a one-input callback."""
    out_id, out_prop = output.split(".")
    in_id, in_prop = trigger.split(".")
    return {
        "output": output,
        "outputs": {"id": out_id, "property": out_prop},
        "inputs": [{"id": in_id, "property": in_prop, "value": 1}],
        "changedPropIds": [trigger],
        "state": [],
    }


# ---- part 2: raw requests (a declared length that is never sent, chunked bodies) -------


def raw_request(port: int, head: str, chunks: list[bytes] = ()) -> bytes:
    """Send a request head and body chunks over a socket; read the answer's head. Sending
    stops as soon as the server has answered and closed (it may cut the body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(head.encode("latin-1"))
        for c in chunks:
            try:
                s.sendall(c)
            except OSError:  # the server answered and closed: it read no further
                break
        out = b""
        try:
            while b"\r\n\r\n" not in out:
                data = s.recv(65536)
                if not data:
                    break
                out += data
        except OSError:
            pass
    return out


def status_of(answer: bytes) -> int | str:
    """The status code of a raw HTTP answer, or ``"no answer"``."""
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else "no answer"


def chunked(total: int, piece: int = 1 << 20, fill: bytes = b" ") -> list[bytes]:
    """A chunked body of ``total`` bytes in pieces (no final 0-chunk: it never ends)."""
    out = []
    left = total
    while left > 0:
        n = min(piece, left)
        out.append(f"{n:x}\r\n".encode() + fill * n + b"\r\n")
        left -= n
    return out


# ---- the job kinds added since round three: bodies in other encodings, hostile YAML -------


def bom_json(text: str) -> bytes:
    """JSON after a UTF-8 byte-order mark (Python's ``json.loads(bytes)`` reads it)."""
    return b"\xef\xbb\xbf" + text.encode()


def utf16be_json(text: str) -> bytes:
    """JSON in UTF-16-BE without a mark: its first byte is ``\\x00``, not ``{``."""
    return text.encode("utf-16-be")


def yaml_alias_bomb(levels: int = 9, width: int = 9, field: str = "seeds") -> str:
    """``levels`` anchors of ``width`` aliases each: ``field`` stands for width**levels items
    (9 × 9: 387 million) while the text is a few hundred bytes."""
    lines = [f"x0: &x0 [{', '.join(['1'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * width)}]")
    return "\n".join(lines) + f"\nbase: ft_a\ndataset: eval.csv\n{field}: *x{levels - 1}\n"


def yaml_nested(depth: int) -> str:
    return "base: ft_a\ndataset: eval.csv\nlabels: " + "[" * depth + "]" * depth + "\n"
