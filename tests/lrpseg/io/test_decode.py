"""Format sniffing, refusals of unknown input, and that patient data stays out of logs."""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np
import pytest
from PIL import Image

from lrpseg.io import ImageDecodeError, decode_image
from lrpseg.io.sniff import sniff
from tests.lrpseg.io.corpus import corpus_bytes, corpus_dataset, to_bytes


def test_empty_upload_is_400() -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(b"")
    assert (info.value.status, info.value.code) == (400, "empty_upload")


def test_random_bytes_are_400() -> None:
    noise = np.random.default_rng(9).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(ImageDecodeError) as info:
        decode_image(noise)
    assert (info.value.status, info.value.code) == (400, "unknown_format")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "WEBP"])
def test_known_but_unsupported_formats_are_415(fmt: str) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, fmt)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(buffer.getvalue())
    assert (info.value.status, info.value.code) == (415, "unsupported_format")


def test_npz_is_415() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, image=np.zeros((2, 2)))
    with pytest.raises(ImageDecodeError) as info:
        decode_image(buffer.getvalue())
    assert info.value.status == 415


def test_sniff_prefers_dicom_preamble_over_tiff_header() -> None:
    data = corpus_bytes("CT_small.dcm")
    assert data[:4] == b"II*\x00"  # this file's preamble is a TIFF header (dual-personality file)
    assert sniff(data) == "dicom"


def test_hints_only_matter_for_unrecognisable_bytes() -> None:
    garbage = b"\x01\x02" * 40
    assert sniff(garbage) == "unknown"
    assert sniff(garbage, filename="scan.DCM") == "dicom"
    assert sniff(garbage, content_type="application/dicom; transfer-syntax=*") == "dicom"
    with pytest.raises(ImageDecodeError) as info:
        decode_image(garbage, filename="scan.dcm")
    assert info.value.status == 400


def test_patient_values_never_reach_logs_warnings_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    """A malformed birth date makes pydicom warn quoting the value; none of it may escape."""
    ds = corpus_dataset("CT_small.dcm")
    secret_date, secret_name = "1969X0X1", "Secret^Person"
    ds.PatientName = secret_name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # setting the bad value here warns too; not under test
        ds["PatientBirthDate"].value = secret_date
        data = to_bytes(ds)
    truncated = data[: len(data) - 5000]
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = decode_image(data)
        with pytest.raises(ImageDecodeError) as info:
            decode_image(truncated)
    assert image.dicom is not None and str(image.dicom.PatientName) == secret_name
    assert image.dicom.PatientBirthDate in ("", None)  # malformed date blanked for outputs
    emitted = caplog.text + " ".join(str(w.message) for w in caught) + info.value.detail + repr(info.value)
    assert secret_date not in emitted and "Secret" not in emitted
    error = info.value  # no chained pydicom exception whose message could quote values
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
