"""Gunicorn's access log without secrets: API tokens in query strings (NORA's URL call carries
one inside its ``call`` JSON) and in headers are replaced before a line is written.

Used as gunicorn's ``--logger-class``; ``redact_target`` is the pure part.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gunicorn.glogging import Logger  # type: ignore[import-untyped]  # gunicorn ships no type information

REDACTED = "[redacted]"
# Our tokens wherever they appear, even in a query that does not parse.
TOKEN_TEXT = re.compile(r"nrt_[A-Za-z0-9_\-%]+")
CALL_PARAMETER = "call"
SECRET_HEADERS = ("{authorization}i", "{cookie}i")


def _redact_call(value: str) -> str:
    try:
        call = json.loads(value)
    except json.JSONDecodeError:
        return REDACTED
    if not isinstance(call, dict):
        return REDACTED
    return json.dumps({k: REDACTED if "token" in k.lower() else v for k, v in call.items()}, separators=(",", ":"))


def _redact_pair(name: str, value: str) -> tuple[str, str]:
    if "token" in name.lower():
        return name, REDACTED
    if name == CALL_PARAMETER:
        return name, _redact_call(value)
    return name, value


def redact_query(query: str) -> str:
    if not query:
        return query
    pairs = [_redact_pair(name, value) for name, value in parse_qsl(query, keep_blank_values=True)]
    return TOKEN_TEXT.sub(REDACTED, urlencode(pairs))


def redact_target(target: str) -> str:
    """A request target or URL with every token replaced: ``/?call={..."token":"nrt_..."}`` keeps
    everything but the secret."""
    parts = urlsplit(target)
    return TOKEN_TEXT.sub(REDACTED, urlunsplit(parts._replace(query=redact_query(parts.query))))


class RedactingLogger(Logger):  # type: ignore[misc]  # its base is untyped (Any) under strict
    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        method, _, rest = str(atoms["r"]).partition(" ")
        target, _, protocol = rest.rpartition(" ")
        atoms["r"] = f"{method} {redact_target(target)} {protocol}"
        atoms["q"] = redact_query(atoms["q"] or "")
        atoms["f"] = redact_target(atoms["f"])
        for header in SECRET_HEADERS:
            if header in atoms:
                atoms[header] = REDACTED
        return atoms
