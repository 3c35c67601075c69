from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lrpseg.models import build_model
from lrpseg.registry import Registry, save_model_dir
from lrpseg.training import TrainingError, TrainOptions, evaluate, evaluation_set, render_card, train
from lrpseg.training.trainer import augment, random_crop

TINY = {"size": 32, "n_train": 16, "n_val": 8, "n_test": 8, "epochs": 2, "progress": False}


@pytest.fixture(scope="module")
def tiny_unet():
    return train(TrainOptions(model="unet", **TINY))


def test_unet_trains_end_to_end_into_a_loadable_model_directory(tiny_unet, tmp_path: Path) -> None:
    result = tiny_unet
    info = save_model_dir(tmp_path / "tiny@1", result.model, result.config, render_card(result.config))
    assert info.id == "unet-defects@1" and info.kind == "segmenter" and info.input_size is None
    loaded = Registry([tmp_path]).load(info.id)
    x = info.normalize(torch.rand(2, 1, 40, 40))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), result.model.eval()(x))
    assert len(result.history) == 2 and all(h["train_loss"] > 0 for h in result.history)
    card = (tmp_path / "tiny@1" / "card.md").read_text()
    assert "| defect_iou |" in card and "## Where it errs" in card
    rows = result.config["breakdown"]
    _, _, labels = evaluation_set(result.config["evaluation"])
    assert rows["crack"]["images"] + rows["blowhole"]["images"] == int(labels.sum())


def test_card_metrics_are_recomputable_from_the_evaluation_record(tiny_unet) -> None:
    config = tiny_unet.config
    images, masks, labels = evaluation_set(config["evaluation"])
    x = (images - config["normalization"]["mean"][0]) / config["normalization"]["std"][0]
    again = evaluate(tiny_unet.model, "segmenter", x, masks, labels)
    assert again == pytest.approx(config["metrics"], abs=1e-6)


def test_training_is_reproducible_per_seed() -> None:
    options = TrainOptions(model="vgg11-onefc", **TINY)
    a, b = train(options), train(options)
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key]), key
    c = train(TrainOptions(model="vgg11-onefc", **{**TINY, "seed": 1}))
    assert not torch.equal(c.model.state_dict()["classifier.1.weight"], a.model.state_dict()["classifier.1.weight"])


def test_training_lowers_the_loss_and_moves_the_weights() -> None:
    options = TrainOptions(model="vgg11-128n", size=32, n_train=64, n_val=16, n_test=16, epochs=4, progress=False)
    result = train(options)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    torch.manual_seed(0)
    untrained = build_model(result.config["architecture"])
    assert not torch.equal(untrained.state_dict()["features.0.weight"], result.model.state_dict()["features.0.weight"])
    assert result.config["data"]["labels"] == "image-level labels only"


def test_augment_and_crop_keep_images_and_masks_aligned() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(8, 1, 16, 16)
    masks = (images[:, 0] > 0.7).long()
    x, m = augment(images, masks, gen)
    x, m = random_crop(x, m, 8, gen)
    assert x.shape == (8, 1, 8, 8) and m.shape == (8, 8, 8)
    assert torch.equal((x[:, 0] > 0.7).long(), m)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (TrainOptions(model="resnet"), "unknown model 'resnet'"),
        (TrainOptions(model="vgg11-128n", size=48), "multiple of 32"),
        (TrainOptions(model="vgg11-onefc", crop=32), "segmenters only"),
        (TrainOptions(model="unet", size=32, crop=64), "crop must be in"),
        (TrainOptions(model="unet", device="cuda:7" if not torch.cuda.is_available() else "bogus"), "device"),
    ],
)
def test_bad_options_fail_clearly(options: TrainOptions, message: str) -> None:
    with pytest.raises((TrainingError, RuntimeError), match=message):
        train(options)
