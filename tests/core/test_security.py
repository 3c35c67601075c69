"""Key parsing and hashing, loopback, callback host rules (core.security)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import security


def test_a_new_key_hashes_to_the_configured_digest() -> None:
    key = security.new_key()
    assert key.startswith(security.KEY_PREFIX)
    digest = security.hash_key(key)
    (parsed,) = security.configured_keys(f"ops:{digest.upper()}", None)
    assert parsed.name == "ops" and parsed.sha256 == digest


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ops", "expected name:sha256hex"),
        ("anonymous:" + "0" * 64, "reserved"),
        ("-bad:" + "0" * 64, "key name"),
        ("ops:123", "64 hex digits"),
        ("a:" + "0" * 64 + ",a:" + "1" * 64, "configured twice"),
        ("a:" + "0" * 64 + ",b:" + "0" * 64, "same hash"),
    ],
)
def test_bad_key_entries_name_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(security.KeyConfigError, match=message):
        security.configured_keys(text, None)


def test_keys_file_lines_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# ops team\nops " + "a" * 64 + "  # rotated\n\nci " + "b" * 64 + "\n")
    assert [k.name for k in security.configured_keys(None, path)] == ["ops", "ci"]
    path.write_text("ops\n")
    with pytest.raises(security.KeyConfigError, match="line 1"):
        security.configured_keys(None, path)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("example.org", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert security.is_loopback(host) is loopback


def test_host_rules() -> None:
    assert security.parse_host_rule("ris.example.org").allows("ris.example.org")
    assert not security.parse_host_rule("ris.example.org").allows("x.ris.example.org")
    assert security.parse_host_rule("*.example.org").allows("a.b.example.org")
    assert not security.parse_host_rule("*.example.org").allows("example.org")
    assert security.parse_host_rule("10.0.0.0/8").allows("10.1.2.3")
    assert not security.parse_host_rule("10.0.0.0/8").allows("::1")
    for bad in ("", "*.", "http://x/y", "a b"):
        with pytest.raises(ValueError):
            security.parse_host_rule(bad)


@pytest.mark.parametrize(
    "url",
    [
        "http://attacker.test\\.pacs.example.org/dicom-web",  # requests would ask attacker.test
        "http://pacs.example.org\t/dicom-web",
        "http://attacker.test%2f.pacs.example.org/dicom-web",
    ],
)
def test_dicomweb_urls_that_http_clients_split_elsewhere_are_refused(url: str) -> None:
    """A host the allow-list checks must be the host the HTTP client asks (review of issue 18)."""
    problem = security.dicomweb_url_problem(url, ["*.pacs.example.org"])
    assert problem is not None and ("backslashes" in problem or "percent-escape" in problem)
    assert security.dicomweb_url_problem("http://a.pacs.example.org/dicom-web", ["*.pacs.example.org"]) is None
