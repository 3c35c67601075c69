"""Helpers for lrpseg.io tests: pydicom's shipped test corpus, read from disk only."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom import Dataset

CORPUS = Path(pydicom.data.__file__).parent / "test_files"


def corpus_bytes(name: str) -> bytes:
    """Bytes of a file shipped inside the pydicom wheel (never downloaded)."""
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"{name} is not shipped with this pydicom")
    return path.read_bytes()


def corpus_dataset(name: str) -> Dataset:
    return pydicom.dcmread(io.BytesIO(corpus_bytes(name)), force=True)


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
