"""`lrpseg keys`: make an API key (printed once) and the line that configures its hash (core.security)."""

from __future__ import annotations

import argparse
import sys

from core.security import KeyConfigError, hash_key, key_entry, new_key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    new = sub.add_parser("new", help="make a key: prints it once, and the line to configure")
    new.add_argument("name", help="the key's name: its jobs' owner (letters, digits, ._-)")
    hash_ = sub.add_parser("hash", help="print the configuration line for an existing key read from stdin")
    hash_.add_argument("name")


def run(args: argparse.Namespace) -> int:
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
