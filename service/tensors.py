"""Tensors of the Open Inference Protocol: JSON or binary (the binary tensor extension) <-> NumPy.

A request body is JSON, or JSON followed by raw tensor bytes when the header
`Inference-Header-Content-Length` gives the JSON's length; an input with the parameter
`binary_data_size` takes that many bytes from the tail, in input order (little-endian,
row-major). Responses mirror it for outputs asked for with `binary_data: true`.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import ValidationError

from schemas.inference_protocol import InferInput, InferOutput, InferRequest

HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class TensorError(ValueError):
    """The request's tensors are malformed; `field` names the culprit (inputs[0].shape)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def datatype_of(dtype: np.dtype) -> str:
    for name, known in DATATYPES.items():
        if known == dtype.newbyteorder("<"):
            return name
    raise TypeError(f"no Open Inference Protocol datatype for {dtype}")


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body under `Content-Encoding` gzip or deflate, at most `limit` bytes after inflating."""
    if not encoding or encoding == "identity":
        return body
    if encoding not in WBITS:
        raise TensorError("Content-Encoding", f"{encoding!r} is not supported; send gzip, deflate or identity")
    inflater = zlib.decompressobj(WBITS[encoding])
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise TensorError("Content-Encoding", f"the body is not valid {encoding}: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise TensorError("body", f"the inflated body exceeds {limit} bytes")
    return out


def parse_request(body: bytes, header_length: str | None) -> tuple[InferRequest, bytes]:
    """The JSON part as an InferRequest and the binary tail (b"" without the extension)."""
    if header_length is None:
        head, tail = body, b""
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise TensorError(HEADER_LENGTH, f"must be the length of the JSON part (0..{len(body)})")
        head, tail = body[: int(header_length)], body[int(header_length) :]
    try:
        return InferRequest.model_validate_json(head), tail
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise TensorError(where, f"{where}: {first['msg']}") from None


def input_array(tensor: InferInput, index: int, tail: bytes, offset: int, max_elements: int) -> tuple[np.ndarray, int]:
    """One input as an array of its shape, and the tail offset after its binary data."""
    where = f"inputs[{index}]"
    dtype = DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise TensorError(f"{where}.datatype", f"{tensor.datatype!r} is not a numeric datatype: {', '.join(DATATYPES)}")
    if any(s < 0 for s in tensor.shape):
        raise TensorError(f"{where}.shape", f"shape {tensor.shape} has a negative size")
    count = math.prod(tensor.shape)
    if count > max_elements:
        raise TensorError(f"{where}.shape", f"shape {tensor.shape} has {count} elements; the limit is {max_elements}")
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        if tensor.data is not None:
            raise TensorError(where, "give data or binary_data_size, not both")
        if not isinstance(size, int) or isinstance(size, bool) or size != count * dtype.itemsize:
            raise TensorError(
                f"{where}.parameters.binary_data_size", f"must be {count * dtype.itemsize} for {tensor.shape}"
            )
        if offset + size > len(tail):
            raise TensorError(f"{where}.parameters.binary_data_size", "the body ends before this tensor's bytes")
        return np.frombuffer(tail, dtype, count, offset).reshape(tensor.shape), offset + size
    if tensor.data is None:
        raise TensorError(f"{where}.data", "no data and no binary_data_size")
    try:
        array = np.asarray(tensor.data)
    except (ValueError, TypeError):
        raise TensorError(f"{where}.data", "data must be a flat or evenly nested list of numbers") from None
    if array.dtype.kind not in "biuf":
        raise TensorError(f"{where}.data", f"data must be {tensor.datatype} numbers")
    if array.size != count:
        raise TensorError(f"{where}.data", f"{array.size} values for shape {tensor.shape} ({count} elements)")
    if dtype.kind in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
            raise TensorError(f"{where}.data", f"{tensor.datatype} data must be whole numbers")
        if array.min() < info.min or array.max() > info.max:
            raise TensorError(f"{where}.data", f"values outside the range of {tensor.datatype}")
    values = array.astype(dtype)
    return values.reshape(tensor.shape), offset


def bytes_tensor(items: Sequence[bytes]) -> bytes:
    """BYTES elements in binary form: each a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def encode_outputs(
    outputs: Sequence[tuple[str, np.ndarray | list[bytes]]], binary: set[str]
) -> tuple[list[InferOutput], bytes]:
    """Output tensors as the response's JSON entries and the binary tail (for names in `binary`)."""
    entries, tail = [], []
    for name, value in outputs:
        if isinstance(value, list):  # BYTES
            shape, datatype = [len(value)], "BYTES"
            raw = bytes_tensor(value)
            data: list[Any] = [v.decode() for v in value]
        else:
            shape, datatype = list(value.shape), datatype_of(value.dtype)
            raw = np.ascontiguousarray(value, value.dtype.newbyteorder("<")).tobytes()
            data = value.ravel().tolist()
        if name in binary:
            entries.append(
                InferOutput(name=name, shape=shape, datatype=datatype, parameters={"binary_data_size": len(raw)})
            )
            tail.append(raw)
        else:
            entries.append(InferOutput(name=name, shape=shape, datatype=datatype, data=data))
    return entries, b"".join(tail)


def response_body(payload: dict[str, Any], tail: bytes) -> tuple[bytes, dict[str, str]]:
    """The response bytes and headers: plain JSON, or JSON + tail with the header length."""
    head = json.dumps(payload, separators=(",", ":")).encode()
    if not tail:
        return head, {"Content-Type": "application/json"}
    return head + tail, {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
