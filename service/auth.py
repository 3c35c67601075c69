"""The API key check: which principal a presented key belongs to (keys are parsed in core.security).

The principal's id is the key's name: jobs, idempotency keys and rate-limit buckets are
per name, so a key can be rotated (new secret, same name) without orphaning its jobs.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from core.security import ANONYMOUS, ApiKey, configured_keys, hash_key
from core.settings import Settings

__all__ = ["ANONYMOUS", "KeyStore"]


class KeyStore:
    """The configured key hashes; `lookup` says whose key a presented token is."""

    def __init__(self, keys: Iterable[ApiKey], *, required: bool) -> None:
        self.keys = tuple(keys)
        self.required = required

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyStore:
        keys = configured_keys(settings.api_keys, settings.api_keys_file)
        return cls(keys, required=settings.auth_required)

    def lookup(self, presented: str) -> str | None:
        """The key's name, or None. Compares against every entry in constant time per entry."""
        digest = hash_key(presented)
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.sha256) and found is None:
                found = key.name
        return found
