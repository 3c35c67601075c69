"""ReferenceBox (z^B about each pixel's local median) and the composites that use it against
scipy's median filter and zennit's ZBox with the same per-pixel bounds (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import median_filter

from lrpseg import lrp
from lrpseg.lrp import reference_box
from lrpseg.lrp.reference_box import ReferenceBox, local_median
from tests.lrpseg.lrp.conftest import tiny_unet
from tests.lrpseg.lrp.zennit_bridge import max_rel_diff, zennit_relevance

TOL = 1e-6


def _scipy_median(x: torch.Tensor, window: int) -> np.ndarray:
    planes = x.numpy().reshape(-1, *x.shape[-2:])
    return np.stack([median_filter(p, size=window, mode="nearest") for p in planes]).reshape(x.shape)


@pytest.mark.parametrize("window", [1, 3, 15])
@pytest.mark.parametrize("max_levels", [reference_box.MAX_LEVELS, 0], ids=["histogram", "unfolded"])
def test_local_median_equals_scipy(window: int, max_levels: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference_box, "MAX_LEVELS", max_levels)  # 0: every input takes the unfolded windows
    x = torch.randn(2, 3, 37, 29, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert np.array_equal(local_median(x, window).numpy(), _scipy_median(x, window))


@pytest.mark.parametrize("levels", [1, 2, 256, 4096, 65536])
def test_the_sliding_histogram_equals_scipy_on_quantised_images(levels: int) -> None:
    """8- to 16-bit images as a model sees them (normalised): few distinct values, many ties."""
    g = torch.Generator().manual_seed(levels)
    raw = torch.randint(0, levels, (1, 1, 70, 45), generator=g).to(torch.float32)
    x = (raw / max(levels - 1, 1) - 0.3) / 0.2
    assert np.array_equal(local_median(x).numpy(), _scipy_median(x, 15))


@pytest.mark.parametrize("counters", [reference_box._COUNTERS, 256 * 40], ids=["whole-plane", "row-blocks"])
@pytest.mark.parametrize("window", [3, 15])
def test_width_segments_slide_side_by_side(counters: int, window: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide images are cut into segments that slide at once (the last one shorter: 6 or 33 here); with
    too few counters for two segments of the whole plane, one segment in blocks of rows."""
    monkeypatch.setattr(reference_box, "_COUNTERS", counters)
    g = torch.Generator().manual_seed(window)
    x = torch.randint(0, 256, (1, 2, 61, 203), generator=g).to(torch.float32)
    assert np.array_equal(local_median(x, window).numpy(), _scipy_median(x, window))


def test_planes_slide_side_by_side_in_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """A volume's slices (a batch's images) in passes of as many whole planes as the counters
    hold: 2 + 2 + 1 here."""
    monkeypatch.setattr(reference_box, "_PASS_COUNTERS", 256 * 23 * 2)  # 256 levels: 256 counters a row
    calls: list[int] = []
    real = reference_box._slide
    monkeypatch.setattr(reference_box, "_slide", lambda c, *a: calls.append(c.shape[1]) or real(c, *a))
    x = torch.randint(0, 256, (1, 5, 23, 31), generator=torch.Generator().manual_seed(5)).to(torch.float32)
    assert np.array_equal(local_median(x).numpy(), _scipy_median(x, 15))
    assert calls == [2, 2, 1]


@pytest.mark.parametrize(("shape", "window", "levels"), [((2, 37, 29), 15, 256), ((1, 61, 203), 3, 17), ((3, 20, 24), 15, 2), ((1, 5, 5), 15, 100)])  # fmt: skip
def test_counting_below_each_level_equals_scipy(
    shape: tuple[int, int, int], window: int, levels: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CUDA's path for few levels (run here on the CPU), in blocks of planes and of levels."""
    monkeypatch.setattr(reference_box, "_COUNT_CHUNK", 3000)
    raw = torch.randint(0, levels, shape, generator=torch.Generator().manual_seed(levels)).to(torch.float32)
    values, ranks = torch.unique(raw, return_inverse=True)
    got = values[reference_box.counted_median_ranks(ranks, values.numel(), window)]
    assert np.array_equal(got.numpy(), _scipy_median(raw, window))


def test_local_median_in_strips_and_on_volumes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference_box, "_CHUNK", 500)  # a few rows per strip or histogram block
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 33, 21, dtype=torch.float64, generator=g)
    assert np.array_equal(local_median(x, 7).numpy(), _scipy_median(x, 7))
    volume = torch.randn(1, 1, 4, 12, 10, dtype=torch.float64, generator=g)  # each D-slice on its own
    assert np.array_equal(local_median(volume, 5).numpy(), _scipy_median(volume, 5))
    monkeypatch.setattr(reference_box, "MAX_LEVELS", 0)
    assert np.array_equal(local_median(x, 7).numpy(), _scipy_median(x, 7))


@pytest.mark.parametrize(("max_levels", "window"), [(600, 15), (600, 3), (300, 5), (40, 15)])
def test_inputs_with_more_levels_take_the_histogram_block_by_block(
    max_levels: int, window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Floats with more distinct values than MAX_LEVELS: blocks of rows re-ranked (several blocks
    here, the last one shorter), equal to scipy; too wide for one row per block: the unfolded windows."""
    monkeypatch.setattr(reference_box, "MAX_LEVELS", max_levels)
    x = torch.randn(1, 2, 41, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(max_levels))
    rows = reference_box.block_rows(17, window)
    assert (rows > 0) == (max_levels > 40) and (rows == 0 or rows < 41)
    if rows > 0:
        calls: list[int] = []
        real = reference_box.sliding_median_ranks
        monkeypatch.setattr(reference_box, "sliding_median_ranks", lambda r, n, w: calls.append(n) or real(r, n, w))
    assert np.array_equal(local_median(x, window).numpy(), _scipy_median(x, window))
    if rows > 0:
        assert len(calls) == 2 * -(-41 // rows) and max(calls) <= max_levels
        wide = x[:, :, :17, :].transpose(-1, -2)  # a view: 17 x 17, strides swapped
        assert np.array_equal(local_median(wide, window).numpy(), _scipy_median(wide.contiguous(), window))


def test_distinct_ranks_equal_torch_unique() -> None:
    """numpy's unique on the CPU: the same levels and ranks, also of a channels-last input."""
    raw = torch.randint(-25, 25, (2, 3, 17, 13), generator=torch.Generator().manual_seed(2)).to(torch.float32)
    for x in (raw, raw.contiguous(memory_format=torch.channels_last), raw.double() / 7):
        planes = x.reshape(-1, 17, 13)
        levels, ranks = reference_box.distinct_ranks(planes)
        want_levels, want_ranks = torch.unique(planes, return_inverse=True)
        assert torch.equal(levels, want_levels) and torch.equal(ranks, want_ranks) and ranks.dtype == torch.int64


def test_local_median_of_flat_inputs_is_the_median_of_the_last_dimension() -> None:
    x = torch.tensor([[3.0, -1.0, 2.0, 7.0, 0.0]], dtype=torch.float64)
    assert local_median(x).tolist() == [[2.0] * 5]


def test_even_or_non_positive_windows_are_refused() -> None:
    for bad in (0, 4, -3):
        with pytest.raises(ValueError, match="odd"):
            ReferenceBox(bad)
        with pytest.raises(ValueError, match="odd"):
            local_median(torch.zeros(1, 1, 4, 4), bad)


def _r_out(logits: torch.Tensor) -> torch.Tensor:
    keep = torch.rand(logits.shape, generator=torch.Generator().manual_seed(3)) > 0.3
    return logits * keep


@pytest.mark.parametrize("window", [3, 15])
@pytest.mark.parametrize("composite", ["conserving-reference", "epsilon-gamma-reference"])
def test_reference_composites_equal_zennit_with_the_same_bounds(composite: str, window: int) -> None:
    torch.manual_seed(0)
    model, x = tiny_unet("transpose"), torch.randn(2, 1, 20, 24, dtype=torch.float64)  # sides divisible: no pad
    prepared = lrp.prepare(model)
    resolved = prepared.resolve(composite, (-3.0, 3.0))
    first = [name for name, rule in resolved.items() if isinstance(rule, ReferenceBox)]
    assert len(first) == 1
    others = {type(r).__name__ for n, r in resolved.items() if n != first[0]}
    assert others == ({"BiasFree"} if composite == "conserving-reference" else {"Gamma"})
    rules = {**resolved, first[0]: ReferenceBox(window)}
    with torch.no_grad():
        r_out = _r_out(prepared.forward(x)[1])
    ours = lrp.propagate(model, x, r_out, rules=rules, bounds=(-3.0, 3.0))
    low, high = ReferenceBox(window).bounds(x)  # the first conv's input is x itself
    theirs = zennit_relevance(model, x, r_out, {**resolved, first[0]: lrp.ZBox(low, high)})
    assert max_rel_diff(ours, theirs) <= TOL
    global_box = zennit_relevance(model, x, r_out, {**resolved, first[0]: lrp.ZBox(-3.0, 3.0)})
    assert max_rel_diff(ours, global_box) > 1e-3  # the per-pixel box matters


def test_conserving_reference_absorbs_nothing_in_biases() -> None:
    torch.manual_seed(0)
    model, x = tiny_unet("transpose"), torch.randn(2, 1, 20, 24, dtype=torch.float64)
    e = lrp.explain(model, x, target="all", rules="conserving-reference", bounds=(-3.0, 3.0))
    assert torch.all(e.bias_share.abs() <= 1e-12)
    torch.testing.assert_close(e.conservation + e.stabilizer_share, torch.ones_like(e.conservation))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pixels_at_their_local_background_get_no_relevance(dtype: torch.dtype) -> None:
    """A grey image (not at the normalisation mean 0) with one dark bar: only the bar and the
    pixels whose window median differs from them can carry first-layer relevance."""
    torch.manual_seed(0)
    model = tiny_unet("transpose").to(dtype)
    x = torch.full((1, 1, 20, 24), 0.7, dtype=dtype)
    x[0, 0, 8:10, 4:20] = -1.5
    e = lrp.explain(model, x, target="all", rules="conserving-reference", bounds=(-3.0, 3.0))
    background = x[0, 0] == local_median(x)[0, 0]
    assert background.sum() > 400
    assert torch.all(e.relevance[0, 0][background] == 0)  # exactly: the terms are x - m, not x w - low w+ - high w-
    assert e.relevance[0, 0][~background].abs().sum() > 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_local_median_on_cuda_equals_the_cpu_histogram() -> None:
    """CUDA counts below each level (8 bits) or selects from unfolded windows, the CPU slides a histogram:
    the same element."""
    raw = torch.randint(0, 256, (2, 1, 64, 48), generator=torch.Generator().manual_seed(3)).float() / 255
    assert torch.equal(local_median(raw.cuda()).cpu(), local_median(raw))
    fine = raw + torch.rand(raw.shape, generator=torch.Generator().manual_seed(4)) * 1e-3  # > 256 levels
    assert torch.equal(local_median(fine.cuda()).cpu(), local_median(fine))
