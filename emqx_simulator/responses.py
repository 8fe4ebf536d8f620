"""Response bodies and error shapes of EMQX's HTTP API frameworks.

v3/v4 (minirest 0.2/0.3): JSON ``{"code":0,...}`` with HTTP 200, application errors as HTTP
200 with a numeric ``code``, framework errors as plain text (401 ``UNAUTHORIZED``, 404
``Not found.``, 500 ``Internal Error``). v5 (minirest 1.x): bare JSON, errors with a real status
and ``{"code":"UPPER_SNAKE","message":...}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web

_encoder = msgspec.json.Encoder()
JSON = "application/json"


def encode(payload: Any) -> bytes:
    """JSON-encode a response payload (dicts, lists, msgspec Structs)."""
    return _encoder.encode(payload)


def json_bytes(
    body: bytes, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response from an already encoded body."""
    return web.Response(body=body, status=status, content_type=JSON, headers=headers)


def json_response(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response."""
    return json_bytes(encode(payload), status, headers)


def plain(status: int, text: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """A text/plain response, as minirest's framework errors are."""
    return web.Response(body=text.encode(), status=status, content_type="text/plain",
                        headers=headers)  # fmt: skip


def v5_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A v5 error: real HTTP status, ``{"code":..., "message":...}``."""
    return json_response({"code": code, "message": message}, status, headers)


def legacy_error(code: int, message: str) -> web.Response:
    """A v3/v4 application error: HTTP 200 with a non-zero numeric ``code``."""
    return json_response({"code": code, "message": message})


def legacy_ok(data: Any = None, meta: Any = None) -> dict[str, Any]:
    """The v3/v4 success envelope ``{"code":0,"data":...,"meta":...}``."""
    payload: dict[str, Any] = {"code": 0}
    if data is not None:
        payload["data"] = data
    if meta is not None:
        payload["meta"] = meta
    return payload


#: minirest 0.x answers for a missing route, a failed Basic auth and a crashed handler.
NOT_FOUND_TEXT = "Not found."
UNAUTHORIZED_TEXT = "UNAUTHORIZED"
INTERNAL_ERROR_TEXT = "Internal Error"
LEGACY_REALM = {"WWW-Authenticate": 'Basic Realm="minirest-server"'}
V5_REALM = {"WWW-Authenticate": 'Basic Realm="emqx-dashboard"'}

PROXY_ERROR_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def bare(status: int, text: str = "", headers: Mapping[str, str] | None = None) -> web.Response:
    """A response without a Content-Type header, as minirest 0.x writes its 401 (`UNAUTHORIZED`)
    and cowboy its 404 for a path no route matches (empty) (recorded:
    tests/fixtures/recorded/4.4.19/nodes_bad_key.json, api_v5_on_v4.json)."""
    # aiohttp itself names application/octet-stream for a body without a type.
    return web.Response(body=text.encode() if text else None, status=status, headers=headers)


def legacy_unauthorized() -> web.Response:
    """v3/v4 failed Basic auth: 401 `UNAUTHORIZED`, minirest's realm, no Content-Type."""
    return bare(401, UNAUTHORIZED_TEXT, LEGACY_REALM)


def legacy_not_found() -> web.Response:
    """v3/v4 unknown route, or an unknown node name in the path."""
    return plain(404, NOT_FOUND_TEXT)


def legacy_crash() -> web.Response:
    """v3/v4 handler crash (e.g. a non-integer ``_page``)."""
    return plain(500, INTERNAL_ERROR_TEXT)
