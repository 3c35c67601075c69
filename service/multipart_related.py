"""A `multipart/related` body (RFC 2387; STOW-RS) split into its parts, with python-multipart's parser."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import Message

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser

from service.errors import ApiError


@dataclass
class Part:
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def content_type(self) -> str:
        return media_type(self.headers.get("content-type", ""))[0]


def media_type(header: str) -> tuple[str, dict[str, str]]:
    """`type/subtype` (lower case) and the parameters (names lower case, quotes removed) of a Content-Type."""
    message = Message()
    message["content-type"] = header
    params = {k.lower(): v for k, v in message.get_params(failobj=[])[1:]}
    main = header.split(";", 1)[0].strip().lower()
    return main, params


def split_parts(body: bytes, boundary: str, max_parts: int) -> list[Part]:
    """The body's parts; ApiError 400 when it is not a well-formed multipart body, 413 past `max_parts`."""
    parts: list[Part] = []
    header_name: list[bytes] = []
    header_value: list[bytes] = []
    closed: list[bool] = []  # the closing boundary was read

    def begin() -> None:
        if len(parts) >= max_parts:
            raise ApiError(413, "Payload too large", f"more than {max_parts} parts in one request")
        parts.append(Part())

    def header_end() -> None:
        parts[-1].headers[b"".join(header_name).decode("latin-1").lower()] = b"".join(header_value).decode("latin-1")
        header_name.clear()
        header_value.clear()

    callbacks = {
        "on_part_begin": begin,
        "on_part_data": lambda data, start, end: parts[-1].chunks.append(bytes(data[start:end])),
        "on_header_field": lambda data, start, end: header_name.append(bytes(data[start:end])),
        "on_header_value": lambda data, start, end: header_value.append(bytes(data[start:end])),
        "on_header_end": header_end,
        "on_end": lambda: closed.append(True),
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except MultipartParseError:
        raise ApiError(
            400, "Bad request", "the multipart/related body is malformed", code="malformed-multipart"
        ) from None
    if parts and not closed:
        raise ApiError(
            400,
            "Bad request",
            "the multipart/related body ends before its closing boundary",
            code="malformed-multipart",
        )
    if not parts:
        raise ApiError(400, "Bad request", "the multipart/related body holds no parts", code="malformed-multipart")
    return parts
