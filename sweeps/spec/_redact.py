"""``redact``: hide values that look like secrets before a config is logged or printed."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

__all__ = [
    "REDACTED",
    "SECRET_KEY",
    "redact",
    "redact_text",
    "redact_url",
    "uri_has_credentials",
    "uri_has_password",
]

REDACTED = "***"
SECRET_KEY = re.compile(r"password|passwd|token|secret", re.IGNORECASE)
"""Keys whose values are hidden: any key containing one of these words, in any case."""
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<authority>[^/]*)(?P<rest>.*)$", re.S)
_PASSWORD_KEY = re.compile(r"password|passwd", re.IGNORECASE)
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")
"""A URL inside a text: it ends at a space or a quote."""


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
        return redact_url(value)
    return value


def redact_url(url: str, *, keep_user: bool = True) -> str:
    """``url`` with its password and secret query values masked; anything else unchanged.

    The one URL parser behind every redaction (spec values, printed tracking URIs): the user
    information ends at the last ``@`` before the first ``/``, so a password holding an
    unencoded ``@``, ``#`` or ``?`` is hidden whole (``urllib.parse.urlsplit`` ends the host at
    the ``#`` or ``?`` and shows the rest). ``keep_user=False`` drops ``user:password@`` whole,
    as a URI is shown on a console. A string that is no ``scheme://`` URL is returned as given.

    Example:
        >>> redact_url("postgresql://me:p#w@db/x?sslpassword=k")
        'postgresql://me:***@db/x?sslpassword=***'
        >>> redact_url("http://me:pw@host:5000", keep_user=False)
        'http://host:5000'
    """
    parts = _split_url(url)
    if parts is None:
        return url
    scheme, userinfo, host, path, query = parts
    authority = host
    if userinfo is not None and keep_user:
        user, colon, _ = userinfo.partition(":")
        authority = f"{user}:{REDACTED}@{host}" if colon else f"{userinfo}@{host}"
    if query is not None:
        query = "&".join(
            f"{key}={REDACTED}" if eq and SECRET_KEY.search(unquote(key)) else f"{key}{eq}{item}"
            for key, eq, item in _pairs(query)
        )
        path = f"{path}?{query}"
    return f"{scheme}{authority}{path}"


def redact_text(text: str, *, keep_user: bool = False) -> str:
    """``text`` with every URL in it shown as :func:`redact_url` with ``keep_user`` (by default
    False: without its user) does.

    For messages that quote a URL (MLflow's errors quote the request URL, which holds the
    tracking URI as given), and for values holding a URL among other text (a ``--set`` value
    ``{path: s3://bucket/x?secret_key=...}``). A URL ends at a space or a quote.

    Example:
        >>> redact_text("API request to https://tok@host/api?token=t failed")
        'API request to https://host/api?token=*** failed'
    """
    return _URL_IN_TEXT.sub(lambda match: redact_url(match[0], keep_user=keep_user), text)


def uri_has_password(url: str) -> bool:
    """True when ``url`` holds a password: ``user:password@`` (parsed as :func:`redact_url`
    does) or a ``password=``-like query value; False for a string that is no URL."""
    parts = _split_url(url)
    if parts is None:
        return False
    _, userinfo, _, _, query = parts
    if userinfo is not None and userinfo.partition(":")[2]:
        return True
    return _has_key(query, _PASSWORD_KEY)


def uri_has_credentials(url: str) -> bool:
    """True when ``url`` holds any credential: user information (``user@``, ``token@``,
    ``user:password@``) or a query value whose name matches :data:`SECRET_KEY`
    (``?token=``); False for a string that is no URL."""
    parts = _split_url(url)
    if parts is None:
        return False
    _, userinfo, _, _, query = parts
    return bool(userinfo) or _has_key(query, SECRET_KEY)


def _pairs(query: str) -> list[tuple[str, str, str]]:
    """``(key, "=" or "", value)`` of each ``&``-separated item of a query, undecoded."""
    return [pair.partition("=") for pair in query.split("&")]


def _has_key(query: str | None, pattern: re.Pattern[str]) -> bool:
    """True when a query item with a value has a (decoded) name matching ``pattern``."""
    return any(eq and pattern.search(unquote(key)) for key, eq, _ in _pairs(query or ""))


def _split_url(url: str) -> tuple[str, str | None, str, str, str | None] | None:
    """``(scheme://, userinfo, host, path, query)``; None for no ``scheme://`` URL.

    ``userinfo`` is None without an ``@``, ``query`` without a ``?``. A fragment stays in the
    query (or the path): a ``#`` in a secret query value must not end what is masked.
    """
    match = _URL.match(url)
    if match is None:
        return None
    userinfo, at, host = match["authority"].rpartition("@")
    split = min((i for i in (host.find("?"), host.find("#")) if i >= 0), default=len(host))
    host, rest = host[:split], host[split:] + match["rest"]  # a query or fragment after the host
    path, question, query = rest.partition("?")
    return match["scheme"], userinfo if at else None, host, path, query if question else None
