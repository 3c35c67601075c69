"""NumPy .npy decoding: layout rule, value rule, refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest

from lrpseg.io import ImageDecodeError, decode_image


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(8)


def test_float_inside_unit_range_kept_exactly(rng: np.random.Generator) -> None:
    values = rng.random((12, 9))
    image = decode_image(_npy(values))
    assert (image.format, image.channels, image.bit_depth, image.pixels) == ("npy", 1, 64, 12 * 9)
    np.testing.assert_array_equal(image.array[0], values.astype(np.float32))


def test_float_outside_unit_range_is_minmax_scaled(rng: np.random.Generator) -> None:
    values = rng.normal(size=(3, 10, 8)).astype(np.float32) * 50
    image = decode_image(_npy(values))
    expected = (values.astype(np.float64) - values.min()) / (values.max() - values.min())
    np.testing.assert_allclose(image.array, expected, atol=1e-6)
    assert image.array.min() == 0.0 and image.array.max() == 1.0


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32])
def test_integers_by_dtype_range(rng: np.random.Generator, dtype: type) -> None:
    info = np.iinfo(dtype)
    values = rng.integers(info.min, info.max, (6, 5), dtype=dtype, endpoint=True)
    image = decode_image(_npy(values))
    expected = (values.astype(np.float64) - info.min) / (float(info.max) - info.min)
    np.testing.assert_allclose(image.array[0], expected, atol=1e-7)
    np.testing.assert_array_equal(image.raw[0], values)


def test_bool_is_zero_one() -> None:
    values = np.eye(4, dtype=bool)
    np.testing.assert_array_equal(decode_image(_npy(values)).array[0], values.astype(np.float32))


def test_layout_rule(rng: np.random.Generator) -> None:
    hwc = rng.random((10, 7, 3))
    np.testing.assert_array_equal(decode_image(_npy(hwc)).array, np.moveaxis(hwc, 2, 0).astype(np.float32))
    chw = rng.random((3, 10, 7))
    np.testing.assert_array_equal(decode_image(_npy(chw)).array, chw.astype(np.float32))
    ambiguous = rng.random((3, 10, 3))  # channel-first wins
    image = decode_image(_npy(ambiguous))
    assert (image.channels, image.height, image.width) == (3, 10, 3)
    single = rng.random((10, 7, 1))
    assert decode_image(_npy(single)).array.shape == (1, 10, 7)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_refused(bad: float) -> None:
    values = np.zeros((4, 4), np.float32)
    values[1, 2] = bad
    with pytest.raises(ImageDecodeError) as info:
        decode_image(_npy(values))
    assert (info.value.status, info.value.code) == (422, "non_finite")


@pytest.mark.parametrize(
    ("shape", "code"), [((5,), "bad_ndim"), ((1, 1, 3, 4, 4), "bad_ndim"), ((5, 6, 7, 8), "bad_channels")]
)
def test_bad_shapes_refused(shape: tuple[int, ...], code: str) -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(_npy(np.zeros(shape, np.float32)))
    assert (info.value.status, info.value.code) == (422, code)


def test_object_dtype_refused_without_unpickling() -> None:
    class Boom:
        def __reduce__(self) -> tuple:
            return (pytest.fail, ("unpickled!",))

    data = _npy(np.array([[Boom(), Boom()]], dtype=object), allow_pickle=True)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data)
    assert (info.value.status, info.value.code) == (422, "npy_object_dtype")


@pytest.mark.parametrize("values", [np.zeros((3, 3), np.complex64), np.zeros((3, 3), "U2"), np.zeros((3, 3), "i4,f4")])
def test_other_dtypes_refused(values: np.ndarray) -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(_npy(values))
    assert (info.value.status, info.value.code) == (422, "npy_dtype")


def test_header_checked_before_data() -> None:
    buffer = io.BytesIO()  # a header declaring 30000 x 30000 with no data behind it
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": (30000, 30000)})
    with pytest.raises(ImageDecodeError) as info:
        decode_image(buffer.getvalue())
    assert (info.value.status, info.value.code) == (413, "side_too_large")
    truncated = _npy(np.zeros((2, 2), np.uint8))[:-1]
    with pytest.raises(ImageDecodeError) as info:
        decode_image(truncated)
    assert (info.value.status, info.value.code) == (400, "npy_truncated")


def test_zero_size_and_frame() -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(_npy(np.zeros((0, 4), np.float32)))
    assert (info.value.status, info.value.code) == (422, "empty_image")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(_npy(np.zeros((4, 4), np.float32)), frame=1)
    assert info.value.code == "frame_out_of_range"


@pytest.mark.parametrize(("shape", "depth"), [((4, 6, 5), 4), ((1, 3, 6, 5), 3), ((3, 2, 6, 5), 2)])
def test_volumes(shape: tuple[int, ...], depth: int) -> None:
    values = np.random.default_rng(3).integers(0, 65535, shape, dtype=np.uint16)
    volume = decode_image(_npy(values))
    channels = shape[0] if len(shape) == 4 else 1
    assert (volume.depth, volume.channels, volume.height, volume.width) == (depth, channels, 6, 5)
    assert volume.pixels == depth * 6 * 5  # per channel
    np.testing.assert_allclose(volume.array.reshape(values.shape), values / 65535.0, rtol=1e-6)


def test_volume_voxel_limit_is_413() -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(_npy(np.zeros((10, 10, 10), np.float32)), max_voxels=999)
    assert (info.value.status, info.value.code) == (413, "too_many_voxels")
