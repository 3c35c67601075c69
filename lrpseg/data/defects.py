"""Defects as multiplicative darkening: thin branching cracks and small blowholes.

Each drawer returns (mask, factor): factor < 1 exactly on the mask and 1 elsewhere,
so `image = surface * factor` changes the surface precisely on the masked pixels.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter1d

from lrpseg.data.config import DefectDatasetConfig
from lrpseg.data.surface import coordinates

STEP = 0.5  # centre-line sampling step in pixels


def walk(rng: np.random.Generator, start: np.ndarray, heading: float, length: float) -> np.ndarray:
    """A jagged, slowly turning path of (row, col) points starting at `start`."""
    n = max(int(length / STEP), 2)
    headings = heading + np.cumsum(rng.normal(0.0, 0.06, n))
    steps = STEP * np.stack([np.sin(headings), np.cos(headings)], axis=1)
    path = start + np.cumsum(steps, axis=0)
    jitter = gaussian_filter1d(rng.normal(0.0, 1.0, n), 3.0) * rng.uniform(0.5, 1.5)
    normal = np.stack([np.cos(headings), -np.sin(headings)], axis=1)
    return path + jitter[:, None] * normal


def crack_paths(rng: np.random.Generator, config: DefectDatasetConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Main path and branches as (points (n, 2), radii (n,)) pairs."""
    size = config.size
    width_scale = max(config.scale, 0.6) ** 0.5
    start = rng.uniform(0.15, 0.85, size=2) * size
    length = rng.uniform(0.3, 0.7) * size
    main = walk(rng, start, rng.uniform(0.0, 2 * np.pi), length)
    t = np.linspace(0.0, 1.0, len(main))
    r0 = rng.uniform(0.8, 1.8) * width_scale
    wobble = gaussian_filter1d(rng.normal(0.0, 1.0, len(main)), 8.0)
    roughness = 1.0 + 0.15 * wobble / (wobble.std() + 1e-12)
    radii = np.maximum(r0 * (0.55 + 0.45 * np.sin(np.pi * t) ** 0.5) * roughness, 0.5)
    paths = [(main, radii)]
    for _ in range(int(rng.integers(0, 3))):
        i = int(rng.integers(int(0.2 * len(main)), int(0.8 * len(main))))
        d = main[min(i + 1, len(main) - 1)] - main[max(i - 1, 0)]
        heading = np.arctan2(d[0], d[1]) + rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.0)
        branch = walk(rng, main[i], heading, rng.uniform(0.15, 0.45) * length)
        tb = np.linspace(0.0, 1.0, len(branch))
        paths.append((branch, np.maximum(0.75 * radii[i] * (1.0 - 0.5 * tb), 0.5)))
    return paths


def rasterise(paths: list[tuple[np.ndarray, np.ndarray]], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Mask of pixels within each centre-line point's radius, and distance / radius there."""
    radius = np.zeros((size, size))
    for points, radii in paths:
        idx = np.rint(points).astype(int)
        keep = np.all((idx >= 0) & (idx < size), axis=1)
        np.maximum.at(radius, (idx[keep, 0], idx[keep, 1]), radii[keep])
    if not radius.any():
        return np.zeros((size, size), bool), np.ones((size, size))
    dist, (iy, ix) = distance_transform_edt(radius == 0, return_indices=True)
    nearest_radius = radius[iy, ix]
    return dist <= nearest_radius, dist / nearest_radius


def crack(rng: np.random.Generator, config: DefectDatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    """A thin branching crack, darkest along its centre line."""
    mask, rel = rasterise(crack_paths(rng, config), config.size)
    depth = rng.uniform(*config.crack_depth)
    factor = np.where(mask, 1.0 - depth * (1.0 - 0.5 * np.minimum(rel, 1.0) ** 2), 1.0)
    return mask, factor


def blowhole(rng: np.random.Generator, config: DefectDatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    """A small, irregular, roughly round pit, darkest in its middle."""
    size, scale = config.size, max(config.scale, 0.5)
    radius = max(rng.uniform(2.0, 6.0) * scale, 1.5)
    cy, cx = rng.uniform(radius + 1, size - radius - 1, size=2)
    yy, xx = coordinates(size)
    a = rng.uniform(0.0, np.pi)
    u = np.cos(a) * (xx - cx) + np.sin(a) * (yy - cy)
    v = (-np.sin(a) * (xx - cx) + np.cos(a) * (yy - cy)) / rng.uniform(0.65, 1.0)
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    amp, phase = rng.uniform(0.0, 0.15, size=2), rng.uniform(0.0, 2 * np.pi, size=2)
    edge = radius * (1.0 + amp[0] * np.cos(2 * phi + phase[0]) + amp[1] * np.cos(3 * phi + phase[1]))
    mask = rho <= edge
    depth = rng.uniform(*config.blowhole_depth)
    factor = np.where(mask, 1.0 - depth * (1.0 - 0.6 * (rho / edge) ** 2), 1.0)
    return mask, factor


def draw_defects(rng: np.random.Generator, kind: str, config: DefectDatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    """Union mask and combined darkening factor of one to three defects of `kind`."""
    drawer = {"crack": crack, "blowhole": blowhole}[kind]
    count = int(rng.choice([1, 2], p=[0.7, 0.3])) if kind == "crack" else int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    mask = np.zeros((config.size, config.size), bool)
    factor = np.ones((config.size, config.size))
    for _ in range(count):
        m, f = drawer(rng, config)
        mask |= m
        factor = np.minimum(factor, f)
    return mask, factor
