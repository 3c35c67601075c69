"""Max-pool indices as int8 window offsets (lrpseg.lrp.pool_codes): the same unpooling, 1/8 of the bytes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lrpseg import lrp
from lrpseg.lrp import engine, pool_codes
from tests.lrpseg.lrp.conftest import tiny_unet

POOLS = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


@pytest.mark.parametrize(
    ("shape", "kernel"),
    [((2, 3, 9), (3,)), ((2, 3, 8, 6), (2, 2)), ((1, 4, 9, 7), (3, 2)), ((1, 2, 4, 6, 5), (2, 3, 2))],
)
def test_codes_give_back_torch_indices(shape: tuple[int, ...], kernel: tuple[int, ...]) -> None:
    x = torch.randn(shape, dtype=torch.float64)
    x[..., :2] = 0.0  # ties: torch's first maximum must come back
    _, indices = POOLS[len(kernel)](x, kernel, kernel, return_indices=True)
    code = pool_codes.compact(indices, shape[2:], kernel)
    assert code.dtype == torch.int8
    assert torch.equal(pool_codes.expand(code, shape[2:], kernel), indices)


def test_windows_too_large_for_int8_keep_int64() -> None:
    assert pool_codes.fits((11, 11)) and not pool_codes.fits((12, 11))


def test_the_forward_keeps_codes_and_the_sweep_gives_the_same_relevance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_codes, "COMPACT_FROM", 1)
    model, x = tiny_unet("transpose"), torch.randn(2, 1, 21, 18, dtype=torch.float64)
    prepared = lrp.prepare(model, x)
    rules = prepared.resolve("conserving", (-3.0, 3.0))
    env, logits = prepared.forward_lean(x, prepared.kept(rules))
    assert isinstance(env, engine.Env) and env.indices
    assert all(v.dtype == torch.int8 for v in env.indices.values())
    relevance, _ = prepared.backward(env, logits, rules)
    full_env, _ = prepared.forward(x)  # every value recorded: max-pools split by their gradient
    expected, _ = prepared.backward(full_env, logits, rules)
    assert torch.allclose(relevance, expected, rtol=1e-12, atol=1e-12 * float(expected.abs().max()))


def test_few_indices_stay_int64() -> None:
    """Below COMPACT_FROM pooled values the conversion costs more than it saves."""
    model, x = tiny_unet("transpose"), torch.randn(1, 1, 16, 16, dtype=torch.float64)
    prepared = lrp.prepare(model, x)
    env, _ = prepared.forward_lean(x, prepared.kept(prepared.resolve("conserving", (-3.0, 3.0))))
    assert isinstance(env, engine.Env) and env.indices
    assert all(v.dtype == torch.int64 for v in env.indices.values())
