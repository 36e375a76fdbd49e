"""``redact``: hide values that look like secrets before a config is logged or printed."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

__all__ = ["REDACTED", "SECRET_KEY", "redact"]

REDACTED = "***"
SECRET_KEY = re.compile(r"password|passwd|token|secret", re.IGNORECASE)
"""Keys whose values are hidden: any key containing one of these words, in any case."""
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<authority>[^/]*)(?P<rest>.*)$", re.S)


def redact(value: Any) -> Any:
    """A copy of ``value`` with secrets replaced by ``"***"``.

    The value of every mapping key matching :data:`SECRET_KEY` (``db_password``, ``API_TOKEN``,
    ``client_secret`` ...) is replaced whatever its type, at any depth, through mappings, lists
    and tuples; a password inside a URL (``https://user:pw@host``) and the value of a query
    parameter whose name matches :data:`SECRET_KEY` (``postgresql://u@db/x?password=pw``,
    ``https://host/data?token=abc``) are replaced too. Nothing else changes; the input is not
    modified.

    Example:
        >>> redact({"options": {"api_token": "abc", "n": 1}})
        {'options': {'api_token': '***', 'n': 1}}
    """
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and SECRET_KEY.search(key) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact(item) for item in value)
    if isinstance(value, str):
        match = _URL.match(value)
        if match is not None:
            return _redact_url(match["scheme"], match["authority"], match["rest"])
    return value


def _redact_url(scheme: str, authority: str, rest: str) -> str:
    """``user:password@`` and secret query values masked; everything else kept as written.

    The user information ends at the last ``@`` before the first ``/``, so a password holding
    an unencoded ``@``, ``#`` or ``?`` is still hidden whole.
    """
    userinfo, at, host = authority.rpartition("@")
    split = min((i for i in (host.find("?"), host.find("#")) if i >= 0), default=len(host))
    host, rest = host[:split], host[split:] + rest  # a query or fragment right after the host
    authority = f"{userinfo}{at}{host}"
    if at and ":" in userinfo:
        authority = f"{userinfo.partition(':')[0]}:{REDACTED}@{host}"
    path, question, query = rest.partition("?")
    if question:
        query, hash_, fragment = query.partition("#")
        pairs = [pair.partition("=") for pair in query.split("&")]
        query = "&".join(
            f"{key}={REDACTED}" if eq and SECRET_KEY.search(unquote(key)) else f"{key}{eq}{item}"
            for key, eq, item in pairs
        )
        rest = f"{path}?{query}{hash_}{fragment}"
    return f"{scheme}{authority}{rest}"
