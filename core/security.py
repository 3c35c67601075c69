"""Security rules both processes share: API key parsing and hashing, loopback, callback host rules.

A key is a random token shown once (`lrpseg keys new NAME`); the service only ever holds
its SHA-256. A key has enough entropy (256 bits) that an unsalted hash is as good as a
password hash here, and it is cheap enough to check on every request. Keys come from
`LRPSEG_API_KEYS` (``name:sha256hex,...``) and/or `LRPSEG_API_KEYS_FILE` (one
``name sha256hex`` per line, ``#`` comments); both are parsed when Settings are built, so
a malformed entry stops start-up with the line that is wrong.

The principal's id is the key's name: jobs, idempotency keys and rate-limit buckets are
per name, so a key can be rotated (new secret, same name) without orphaning its jobs.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

KEY_PREFIX = "lrpseg_"
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,63}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
ANONYMOUS = "anonymous"  # the principal when auth is off; not allowed as a key name


class KeyConfigError(ValueError):
    """A key entry that cannot be used; the message names the source and what is wrong."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str  # hex digest of the full key text
    source: str = field(default="", compare=False)  # where it was configured, for error messages


def new_key() -> str:
    """A fresh key: recognisable prefix + 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_entry(name: str, digest: str, where: str) -> ApiKey:
    if not KEY_NAME.fullmatch(name):
        raise KeyConfigError(f"{where}: key name {name!r} must be 1-64 letters, digits or ._- (starting alphanumeric)")
    if name == ANONYMOUS:
        raise KeyConfigError(f"{where}: {ANONYMOUS!r} is reserved for auth-off mode; choose another key name")
    digest = digest.lower()
    if not SHA256_HEX.fullmatch(digest):
        raise KeyConfigError(f"{where}: the hash of key {name!r} must be 64 hex digits (SHA-256 of the key)")
    return ApiKey(name, digest, where)


def parse_keys_setting(text: str | None) -> list[ApiKey]:
    """`LRPSEG_API_KEYS`: ``name:sha256hex`` entries separated by commas."""
    out = []
    for i, item in enumerate((text or "").split(","), 1):
        item = item.strip()
        if not item:
            continue
        name, sep, digest = item.partition(":")
        if not sep:
            raise KeyConfigError(f"LRPSEG_API_KEYS entry {i}: expected name:sha256hex")
        out.append(key_entry(name.strip(), digest.strip(), f"LRPSEG_API_KEYS entry {i}"))
    return out


def parse_keys_file(path: Path) -> list[ApiKey]:
    """`LRPSEG_API_KEYS_FILE`: ``name sha256hex`` per line; blank lines and ``#`` comments allowed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyConfigError(f"API keys file {path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise KeyConfigError(f"API keys file {path}: not UTF-8 text") from None
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise KeyConfigError(f"API keys file {path} line {number}: expected 'name sha256hex'")
        out.append(key_entry(parts[0], parts[1], f"API keys file {path} line {number}"))
    return out


def check_unique(keys: Iterable[ApiKey]) -> list[ApiKey]:
    seen_names: set[str] = set()
    seen_hashes: set[str] = set()
    out = list(keys)
    for key in out:
        if key.name in seen_names:
            raise KeyConfigError(f"{key.source}: key name {key.name!r} is configured twice")
        if key.sha256 in seen_hashes:
            raise KeyConfigError(f"{key.source}: key {key.name!r} has the same hash as another key")
        seen_names.add(key.name)
        seen_hashes.add(key.sha256)
    return out


def configured_keys(api_keys: str | None, api_keys_file: Path | None) -> list[ApiKey]:
    """Every key from both sources, validated; KeyConfigError names the bad entry."""
    keys = parse_keys_setting(api_keys)
    if api_keys_file is not None:
        keys += parse_keys_file(api_keys_file)
    return check_unique(keys)


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ---- callback hosts (SSRF policy) ---------------------------------------------------------

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class HostRule:
    """One entry of `callback_allowed_hosts`: an exact name, a `*.suffix`, or an IP network."""

    name: str | None = None
    suffix: str | None = None
    network: IpNetwork | None = None

    def allows(self, host: str) -> bool:
        ip = _ip(host)
        if ip is not None:
            return self.network is not None and ip.version == self.network.version and ip in self.network
        if self.name is not None:
            return host == self.name
        return self.suffix is not None and host.endswith("." + self.suffix)


def parse_host_rule(entry: str) -> HostRule:
    text = entry.strip().lower()
    if not text:
        raise ValueError("empty entry in callback_allowed_hosts")
    if text.startswith("*."):
        suffix = text[2:]
        if not suffix or "*" in suffix or "/" in suffix:
            raise ValueError(f"callback_allowed_hosts: bad wildcard {entry!r} (use *.example.org)")
        return HostRule(suffix=suffix)
    try:
        return HostRule(network=ipaddress.ip_network(text.strip("[]"), strict=False))
    except ValueError:
        pass
    if "*" in text or "/" in text or ":" in text or " " in text:
        raise ValueError(f"callback_allowed_hosts: {entry!r} is not a host name, *.suffix, IP or CIDR")
    return HostRule(name=text)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


# ---- PACS peers: DICOMweb URLs (the same SSRF policy) and DIMSE application entities ----------

MAX_DICOMWEB_URL = 2048
AE_TITLE = re.compile(r"^[ -\[\]-~]{1,16}$")  # DICOM AE: 16 printable characters, no backslash


@dataclass(frozen=True)
class AE:
    """A DICOM application entity: AE title, host, port."""

    title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.title}@{self.host}:{self.port}"


def parse_ae(text: str) -> AE:
    """`AET@host:port` (IPv6 hosts in brackets); ValueError saying what is wrong."""
    title, at, address = text.strip().rpartition("@")
    host, colon, port = address.rpartition(":")
    if not at or not colon or not title.strip():
        raise ValueError(f"{text!r} is not AET@host:port")
    if not AE_TITLE.match(title) or title != title.strip():
        raise ValueError(f"AE title {title!r} must be 1-16 printable characters without backslash or edge spaces")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"port {port!r} must be 1-65535")
    host = host.strip("[]")
    if not host:
        raise ValueError(f"{text!r} has no host")
    return AE(title, host, int(port))


def dicomweb_url_problem(url: str, allowed_hosts: list[str]) -> str | None:
    """Why a DICOMweb URL may not be used (None: it may). No DNS lookup: names match as names,
    IP literals by network, as for callbacks (core.security)."""
    if not allowed_hosts:
        return "DICOMweb is disabled on this server (the operator sets LRPSEG_DICOMWEB_ALLOWED_HOSTS)"
    if len(url) > MAX_DICOMWEB_URL:
        return f"longer than {MAX_DICOMWEB_URL} characters"
    if any(c == "\\" or c.isspace() or not c.isprintable() for c in url):
        # HTTP clients split such URLs elsewhere than urlsplit does (requests ends the host at a
        # backslash): the host checked here would not be the host asked
        return "must not contain backslashes, spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if "%" in parts.netloc:
        return "must not percent-escape its host"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (user:password@); the server's LRPSEG_DICOMWEB_* settings hold them"
    if parts.query or parts.fragment:
        return "must be a DICOMweb root URL without ?query or #fragment"
    host = (parts.hostname or "").lower()
    if not host:
        return "has no host"
    if port == 0:
        return "port 0 is not allowed"
    if not any(parse_host_rule(entry).allows(host) for entry in allowed_hosts):
        return f"host {host!r} is not in this server's dicomweb_allowed_hosts"
    return None
