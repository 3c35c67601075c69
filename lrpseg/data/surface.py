"""Defect-free surfaces: grey texture, illumination, sensor noise and distractors.

Distractors are the look-alikes that fooled the U-Net in seed 001 (stains,
deposits, strong brightness edges) plus straight bright scratches; they appear in
defect-free and defective images alike, so they carry no label information.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.special import erf

from lrpseg.data.config import DefectDatasetConfig

# The surface is clipped into this range so every defect pixel (a darkening
# factor < 1) changes its value: masks then match the drawn defects exactly.
SURFACE_RANGE = (0.02, 0.98)
DISTRACTOR_KINDS = ("stain", "deposit", "edge", "scratch")


def coordinates(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinate grids, float64."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return yy, xx


def unit_noise(rng: np.random.Generator, size: int, sigma: float | tuple[float, float]) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to unit standard deviation."""
    noise = gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return noise / (noise.std() + 1e-12)


def streaks(rng: np.random.Generator, size: int) -> np.ndarray:
    """Parallel grinding marks / fibres at a random angle (1-D noise along one axis)."""
    yy, xx = coordinates(size)
    theta = rng.uniform(0.0, np.pi)
    u = -np.sin(theta) * xx + np.cos(theta) * yy
    u = u - u.min()
    n = int(np.ceil(u.max())) + 2
    profile = gaussian_filter(rng.standard_normal(n), rng.uniform(0.6, 1.5))
    profile /= profile.std() + 1e-12
    return np.interp(u, np.arange(n), profile)


def weave(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Woven fibre pattern as in fibre-reinforced polymer scans (seed 000)."""
    yy, xx = coordinates(size)
    theta = rng.uniform(0.0, np.pi / 2)
    period = rng.uniform(8.0, 16.0) * max(scale, 0.5)
    u = np.cos(theta) * xx + np.sin(theta) * yy
    v = -np.sin(theta) * xx + np.cos(theta) * yy
    phase = rng.uniform(0.0, 2 * np.pi, size=2)
    return np.sin(2 * np.pi * u / period + phase[0]) * np.sin(2 * np.pi * v / period + phase[1])


def texture(rng: np.random.Generator, config: DefectDatasetConfig) -> np.ndarray:
    """Base grey level plus grain, blotches and optional streaks or weave."""
    size, scale = config.size, config.scale
    image = np.full((size, size), rng.uniform(0.35, 0.65))
    image += rng.uniform(0.01, 0.03) * unit_noise(rng, size, 0.8)
    image += rng.uniform(0.01, 0.04) * unit_noise(rng, size, 6.0 * scale)
    style = rng.choice(["plain", "streaks", "weave"], p=[0.4, 0.35, 0.25])
    if style == "streaks":
        image += rng.uniform(0.01, 0.04) * streaks(rng, size)
    elif style == "weave":
        image += rng.uniform(0.01, 0.03) * weave(rng, size, scale)
    return image


def illumination(rng: np.random.Generator, size: int) -> np.ndarray:
    """Additive linear gradient plus vignetting, zero mean-ish."""
    yy, xx = coordinates(size)
    c = (size - 1) / 2.0
    phi = rng.uniform(0.0, 2 * np.pi)
    ramp = (np.cos(phi) * (xx - c) + np.sin(phi) * (yy - c)) / size
    vignette = ((xx - c) ** 2 + (yy - c) ** 2) / (2 * c * c)
    return rng.uniform(-0.25, 0.25) * ramp - rng.uniform(0.0, 0.15) * vignette


def stain(rng: np.random.Generator, config: DefectDatasetConfig) -> np.ndarray:
    """A soft, large, darker or brighter elliptical blob."""
    yy, xx = coordinates(config.size)
    cy, cx = rng.uniform(0, config.size, size=2)
    sy, sx = rng.uniform(0.05, 0.15, size=2) * config.size
    a = rng.uniform(0.0, np.pi)
    u = np.cos(a) * (xx - cx) + np.sin(a) * (yy - cy)
    v = -np.sin(a) * (xx - cx) + np.cos(a) * (yy - cy)
    sign = rng.choice([-1.0, 1.0])
    return sign * rng.uniform(0.05, 0.2) * np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))


def deposit(rng: np.random.Generator, config: DefectDatasetConfig) -> np.ndarray:
    """A cluster of small soft spots (sewer deposits, dust)."""
    size, scale = config.size, config.scale
    spots = np.zeros((size, size))
    cy, cx = rng.uniform(0.1, 0.9, size=2) * size
    radius = rng.uniform(0.04, 0.1) * size
    for _ in range(int(rng.integers(5, 20))):
        y = int(np.clip(cy + rng.normal(0, radius), 0, size - 1))
        x = int(np.clip(cx + rng.normal(0, radius), 0, size - 1))
        spots[y, x] += rng.uniform(0.5, 1.0)
    sigma = rng.uniform(1.0, 2.5) * max(scale, 0.5)
    spots = gaussian_filter(spots, sigma) * (2 * np.pi * sigma**2)
    sign = rng.choice([-1.0, 1.0], p=[0.4, 0.6])
    return sign * rng.uniform(0.08, 0.25) * np.minimum(spots, 1.0)


def brightness_edge(rng: np.random.Generator, config: DefectDatasetConfig) -> np.ndarray:
    """A sharp step in brightness along a straight line (a shadow or a joint)."""
    yy, xx = coordinates(config.size)
    cy, cx = rng.uniform(0.2, 0.8, size=2) * config.size
    a = rng.uniform(0.0, 2 * np.pi)
    d = np.cos(a) * (xx - cx) + np.sin(a) * (yy - cy)
    width = rng.uniform(0.5, 2.0)
    step = 0.5 * (1.0 + erf(d / (np.sqrt(2) * width)))
    return rng.choice([-1.0, 1.0]) * rng.uniform(0.08, 0.25) * step


def scratch(rng: np.random.Generator, config: DefectDatasetConfig) -> np.ndarray:
    """A straight, thin, brighter line: thin like a crack but straight and light."""
    yy, xx = coordinates(config.size)
    cy, cx = rng.uniform(0.1, 0.9, size=2) * config.size
    a = rng.uniform(0.0, np.pi)
    d = np.cos(a) * (xx - cx) + np.sin(a) * (yy - cy)
    along = -np.sin(a) * (xx - cx) + np.cos(a) * (yy - cy)
    half_length = rng.uniform(0.15, 0.5) * config.size
    width = rng.uniform(0.5, 1.0) * max(config.scale, 0.6)
    line = np.exp(-0.5 * (d / width) ** 2) / (1.0 + np.exp((np.abs(along) - half_length) / 2.0))
    return rng.uniform(0.06, 0.2) * line


DRAW_DISTRACTOR = {"stain": stain, "deposit": deposit, "edge": brightness_edge, "scratch": scratch}


def render_surface(rng: np.random.Generator, config: DefectDatasetConfig) -> tuple[np.ndarray, tuple[str, ...]]:
    """A defect-free surface in SURFACE_RANGE (float64) and the distractors drawn on it."""
    image = texture(rng, config) + illumination(rng, config.size)
    count = int(rng.integers(0, config.max_distractors + 1))
    kinds = tuple(str(k) for k in rng.choice(DISTRACTOR_KINDS, size=count))
    for kind in kinds:
        image += DRAW_DISTRACTOR[kind](rng, config)
    image += rng.uniform(*config.noise_std) * rng.standard_normal(image.shape)
    return np.clip(image, *SURFACE_RANGE), kinds
