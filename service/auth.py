"""The API key check: which principal a presented key belongs to (keys are parsed in core.security).

The principal's id is the key's name: jobs, idempotency keys and rate-limit buckets are
per name, so a key can be rotated (new secret, same name) without orphaning its jobs.
"""

from __future__ import annotations

import argparse
import hmac
from collections.abc import Iterable

from core.security import ANONYMOUS, ApiKey, KeyConfigError, configured_keys, hash_key, key_entry, new_key
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


# ---- `lrpseg keys` -----------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    new = sub.add_parser("new", help="make a key: prints it once, and the line to configure")
    new.add_argument("name", help="the key's name: its jobs' owner (letters, digits, ._-)")
    hash_ = sub.add_parser("hash", help="print the configuration line for an existing key read from stdin")
    hash_.add_argument("name")


def run(args: argparse.Namespace) -> int:
    import sys

    try:
        key_entry(args.name, "0" * 64, "name")
    except KeyConfigError as exc:
        print(f"lrpseg keys: {exc}", file=sys.stderr)
        return 2
    if args.action == "new":
        key = new_key()
        print(f"key (shown once; give it to the client as X-API-Key or Authorization: Bearer):\n  {key}")
    else:
        key = sys.stdin.readline().strip()
        if not key:
            print("lrpseg keys hash: no key on stdin", file=sys.stderr)
            return 2
    digest = hash_key(key)
    print(f"line for LRPSEG_API_KEYS_FILE:\n  {args.name} {digest}")
    print(f"or entry for LRPSEG_API_KEYS:\n  {args.name}:{digest}")
    return 0
