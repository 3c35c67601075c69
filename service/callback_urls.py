"""Where a callback may go: the URL check of a submission (422 naming why), on core.security's host rules."""

from __future__ import annotations

from urllib.parse import urlsplit

from core.security import parse_host_rule
from schemas.problems import FieldError
from service.errors import ApiError

MAX_URL_LENGTH = 2048


def callbacks_enabled(allowed_hosts: list[str], secret: object) -> bool:
    return bool(allowed_hosts) and secret is not None


def check_callback_url(
    url: str | None, allowed_hosts: list[str], secret: object, require_https: bool = False, field: str = "callback_url"
) -> str | None:
    """The URL if callbacks may go there, else 422 naming why. No DNS lookup: names are
    matched as names (an operator lists the receivers it trusts), IP literals by network."""
    if url is None or not url.strip():
        return None
    url = url.strip()

    def invalid(message: str) -> ApiError:
        return ApiError(
            422,
            "Invalid callback",
            f"{field}: {message}",
            code="invalid-callback",
            errors=[FieldError(field=field, message=message)],
        )

    if not callbacks_enabled(allowed_hosts, secret):
        raise invalid("callbacks are disabled on this server (the operator sets allowed hosts and a secret)")
    if len(url) > MAX_URL_LENGTH:
        raise invalid(f"longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise invalid(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise invalid("must be an http:// or https:// URL")
    if require_https and parts.scheme != "https":
        raise invalid("this server only calls https:// URLs")
    if parts.username is not None or parts.password is not None:
        raise invalid("must not carry credentials (user:password@)")
    if parts.fragment:
        raise invalid("must not have a #fragment")
    host = (parts.hostname or "").lower()
    if not host:
        raise invalid("has no host")
    if port == 0:
        raise invalid("port 0 is not allowed")
    if not any(parse_host_rule(entry).allows(host) for entry in allowed_hosts):
        raise invalid(f"host {host!r} is not in this server's callback_allowed_hosts")
    return url
