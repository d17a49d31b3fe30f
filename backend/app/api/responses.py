"""The API's JSON response: strict JSON, whatever the content holds.

Starlette's ``JSONResponse`` refuses NaN and ±Infinity (``allow_nan=False``) by raising,
so one diverged point (a loss of ``inf`` or ``nan``) made a run's export, report and
points answer 500 for ever. Here every non-finite float is written as ``null``
(:func:`basin.strict_json.finite`), for every route (it is the app's
``default_response_class``) and the ones that build their answer themselves.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from basin import strict_json


class StrictJSONResponse(JSONResponse):
    """``JSONResponse`` whose NaN / ±Infinity become ``null``."""

    def render(self, content: Any) -> bytes:
        return strict_json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


__all__ = ["StrictJSONResponse"]
