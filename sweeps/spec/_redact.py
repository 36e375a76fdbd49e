"""``redact``: hide values that look like secrets before a config is logged or printed."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["REDACTED", "SECRET_KEY", "redact"]

REDACTED = "***"
SECRET_KEY = re.compile(r"password|passwd|token|secret", re.IGNORECASE)
"""Keys whose values are hidden: any key containing one of these words, in any case."""
_URL_WITH_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]*:[^/@\s]*@")


def redact(value: Any) -> Any:
    """A copy of ``value`` with secrets replaced by ``"***"``.

    The value of every mapping key matching :data:`SECRET_KEY` (``db_password``, ``API_TOKEN``,
    ``client_secret`` ...) is replaced whatever its type, at any depth, through mappings, lists
    and tuples; a password inside a URL (``https://user:pw@host``) is replaced too. Nothing else
    changes; the input is not modified.

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
    if isinstance(value, str) and _URL_WITH_PASSWORD.match(value):
        return _redact_url(value)
    return value


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{hostport}"))
