"""A minimal Redis client over plain RESP, for ``basin up``'s supervisor and demo status:
enough for ``SET``/``GET``/``DEL``/``LPUSH``/``LTRIM``/``EXISTS`` without importing redis-py
(``basin up`` starts without loading it).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

logger = logging.getLogger(__name__)

def _keys() -> Any:
    """The Redis key layout (:mod:`service.runstate.keys`), imported when first used: the
    run-state package loads redis-py, which ``basin up`` itself never needs."""
    from service.runstate import keys

    return keys



def redis_command(port: int, *args: str, timeout: float = 2.0) -> Any:
    """Send one command to the Redis on 127.0.0.1:``port`` (plain RESP) and parse the reply.

    Enough for the supervisor (``LPUSH``/``LTRIM``/``EXISTS``/``GET``) without importing
    the redis client. Raises ``OSError`` when Redis does not answer.
    """
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"".join(out))
        f = s.makefile("rb")
        return _resp(f)


def _resp(f: Any) -> Any:
    line = f.readline()
    if not line:
        raise OSError("Redis closed the connection")
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise OSError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode()
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp(f) for _ in range(n)]
    raise OSError(f"unexpected Redis reply {line!r}")
