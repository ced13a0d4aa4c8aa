"""JSON answers of the hot read routes, encoded with msgspec from plain values.

FastAPI would validate a route's returned model against its ``response_model`` once more and
then serialise it; for a page of 50 accounts that is most of the route's own CPU (issue 11).
The read routes build plain dicts in the schema's shape instead and return them through
:func:`json_response`: FastAPI hands a returned ``Response`` on as it is, while the declared
``response_model`` still documents the schema (the OpenAPI document does not change). msgspec
encodes UUIDs, datetimes (``Z`` for UTC, as Pydantic) and string enums natively.
``tests/api/test_fast_json.py`` holds the output equal to the Pydantic models' own.
"""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import Response

_encoder = msgspec.json.Encoder()


def encode(content: Any) -> bytes:
    """Compact UTF-8 JSON of plain values (dicts, lists, str, numbers, UUID, datetime, enums)."""
    return _encoder.encode(content)


def json_response(content: Any, status_code: int = 200) -> Response:
    """A JSON response of plain values, encoded once, without any model validation."""
    return Response(encode(content), status_code=status_code, media_type="application/json")
