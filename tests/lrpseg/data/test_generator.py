from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label as components
from skimage.measure import regionprops
from skimage.morphology import skeletonize

from lrpseg.data import (
    SPLIT_RANGES,
    DefectDatasetConfig,
    SplitError,
    generate_sample,
    generate_split,
    generate_surface,
    split_of,
    split_seeds,
    split_sizes,
    stack_samples,
)

CONFIG = DefectDatasetConfig(size=96)


@pytest.fixture(scope="module")
def samples() -> list:
    return [generate_sample(seed, CONFIG) for seed in range(120)]


def test_same_seed_gives_the_same_sample() -> None:
    a, b = generate_sample(1234, CONFIG), generate_sample(1234, CONFIG)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert (a.label, a.kind, a.distractors) == (b.label, b.kind, b.distractors)


def test_different_seeds_give_different_images(samples: list) -> None:
    assert not np.array_equal(samples[0].image, samples[1].image)
    assert len({s.image.tobytes() for s in samples}) == len(samples)


def test_sample_types_and_ranges(samples: list) -> None:
    for s in samples:
        assert s.image.dtype == np.float32 and s.image.shape == (96, 96)
        assert s.mask.dtype == bool and s.mask.shape == (96, 96)
        assert s.image.min() >= 0.0 and s.image.max() <= 1.0
        assert s.label == int(s.mask.any())
        assert s.kind in (("crack", "blowhole") if s.label else ("none",))


def test_mask_is_exactly_where_the_defects_darken_the_surface(samples: list) -> None:
    defective = [s for s in samples if s.label]
    assert len(defective) > 30
    for s in samples:
        surface = generate_surface(s.seed, CONFIG)
        changed = s.image != surface
        assert np.array_equal(changed, s.mask), s.seed
        assert np.all(s.image[s.mask] < surface[s.mask])


def test_defects_cover_a_few_percent(samples: list) -> None:
    cover = np.array([s.mask.mean() for s in samples if s.label])
    assert cover.min() > 0
    assert 0.002 < cover.mean() < 0.05
    assert cover.max() < 0.1


def test_cracks_are_thin_and_blowholes_small(samples: list) -> None:
    for s in samples:
        if s.kind == "crack":
            width = s.mask.sum() / skeletonize(s.mask).sum()
            assert width < 5.0, s.seed
        elif s.kind == "blowhole":
            for region in regionprops(components(s.mask)):
                assert 1.0 <= region.equivalent_diameter_area <= 16.0, s.seed
                assert region.solidity > 0.7, s.seed


def test_label_rate_follows_the_config() -> None:
    labels = [generate_sample(seed, DefectDatasetConfig(size=32)).label for seed in range(400)]
    assert 0.4 < np.mean(labels) < 0.6  # defect_rate 0.5, 400 draws: 5 sigma
    assert not any(generate_sample(s, DefectDatasetConfig(size=32, defect_rate=0.0)).label for s in range(20))
    assert all(generate_sample(s, DefectDatasetConfig(size=32, defect_rate=1.0)).label for s in range(20))


def test_crack_share_one_gives_only_cracks() -> None:
    config = DefectDatasetConfig(size=48, defect_rate=1.0, crack_share=1.0)
    assert {generate_sample(s, config).kind for s in range(30)} == {"crack"}


def test_distractors_appear_with_and_without_defects(samples: list) -> None:
    for label in (0, 1):
        kinds = {k for s in samples if s.label == label for k in s.distractors}
        assert kinds == {"stain", "deposit", "edge", "scratch"}
    plain = DefectDatasetConfig(size=32, max_distractors=0)
    assert not any(generate_sample(i, plain).distractors for i in range(10))


def test_splits_are_disjoint_seed_ranges_in_60_20_20() -> None:
    lengths = {name: high - low for name, (low, high) in SPLIT_RANGES.items()}
    total = sum(lengths.values())
    assert [lengths[k] / total for k in ("train", "val", "test")] == [0.6, 0.2, 0.2]
    train, val, test = (set(split_seeds(name, 50)) for name in ("train", "val", "test"))
    assert not (train & val or train & test or val & test)
    assert {split_of(s) for s in val} == {"val"} and split_of(0) == "train"
    assert split_sizes(100) == {"train": 60, "val": 20, "test": 20}


def test_generate_split_is_reproducible_and_uses_its_seeds() -> None:
    config = DefectDatasetConfig(size=32)
    a, b = generate_split("test", 4, config), generate_split("test", 4, config)
    assert [s.seed for s in a] == list(range(800_000, 800_004))
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    later = generate_split("test", 2, config, start=2)
    assert np.array_equal(later[0].image, a[2].image)


def test_split_errors_are_specific() -> None:
    with pytest.raises(SplitError, match="unknown split 'dev'"):
        split_seeds("dev", 1)  # type: ignore[arg-type]
    with pytest.raises(SplitError, match="holds 200000 samples"):
        split_seeds("val", 200_001)
    with pytest.raises(SplitError, match="outside the seed space"):
        split_of(10**7)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        generate_sample(-1)


def test_stack_samples_shapes(samples: list) -> None:
    images, masks, labels = stack_samples(samples[:5])
    assert images.shape == (5, 1, 96, 96) and images.dtype.is_floating_point
    assert masks.shape == (5, 96, 96) and labels.tolist() == [s.label for s in samples[:5]]
    assert int(masks.sum()) == sum(int(s.mask.sum()) for s in samples[:5])
