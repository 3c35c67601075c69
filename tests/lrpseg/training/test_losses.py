from __future__ import annotations

import pytest
import torch

from lrpseg.training.losses import segmentation_loss, soft_dice_loss


def test_soft_dice_by_hand() -> None:
    logits = torch.randn(2, 2, 4, 4)
    masks = (torch.rand(2, 4, 4) < 0.3).long()
    p = torch.exp(logits[:, 1]) / torch.exp(logits).sum(dim=1)
    t = masks.float()
    expected = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    assert soft_dice_loss(logits, masks).item() == pytest.approx(expected.item(), rel=1e-6)


def test_soft_dice_is_near_zero_for_confident_correct_logits() -> None:
    masks = torch.zeros(1, 8, 8, dtype=torch.long)
    masks[0, 2:5, 3] = 1
    logits = torch.stack([(1 - masks) * 20.0, masks * 20.0], dim=1).float()
    assert soft_dice_loss(logits, masks).item() < 1e-6


def test_segmentation_loss_is_weighted_ce_plus_dice() -> None:
    logits = torch.randn(3, 2, 5, 5)
    masks = (torch.rand(3, 5, 5) < 0.2).long()
    logp = logits.log_softmax(dim=1)
    nll = -logp.gather(1, masks[:, None]).squeeze(1)
    w = torch.where(masks == 1, 5.0, 1.0)
    ce = (w * nll).sum() / w.sum()
    expected = ce + soft_dice_loss(logits, masks)
    assert segmentation_loss(logits, masks).item() == pytest.approx(expected.item(), rel=1e-6)
