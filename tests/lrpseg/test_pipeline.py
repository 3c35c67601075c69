"""lrpseg.pipeline.run_job on a tiny random U-Net / VGG: what it returns is what the library computes."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import jaccard_score, precision_score, recall_score

from lrpseg import masks, render
from lrpseg.inputs import ParamsError, check_image, resolve_params
from lrpseg.io import decode_image
from lrpseg.lrp import explain, prepare, seg_grad_cam
from lrpseg.lrp.targets import predicted_class_mask
from lrpseg.pipeline import run_job, run_jobs
from lrpseg.registry import Registry
from schemas.params import JobParams
from schemas.results import JobResult
from tests.service import factories


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids OpenMP spin contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return factories.write_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def unet(registry: Registry):
    return registry.get(factories.SEGMENTER), registry.load(factories.SEGMENTER)


@pytest.fixture(scope="module")
def sample():
    image, truth = factories.defect_image(64)
    return decode_image(factories.png_bytes(image)), truth


def params(**kw) -> JobParams:
    return JobParams.model_validate(kw)


def model_input(info, image) -> torch.Tensor:
    return info.normalize(torch.from_numpy(image.array)[None])


def npy(out, name: str = "relevance.npy") -> np.ndarray:
    return np.load(io.BytesIO(out.artifacts[name]), allow_pickle=False)


def test_default_job_matches_the_library(unet, sample) -> None:
    (info, model), (image, truth) = unet, sample
    stages: list[str] = []
    out = run_job(model, info, image, JobParams(), truth, progress=lambda s, f: stages.append(s))
    result = JobResult.model_validate(out.result)
    json.dumps(out.result, allow_nan=False)
    assert stages == ["forward", "lrp", "masks", "metrics", "render"]
    assert result.params.target.cls == 1 and result.params.model == factories.SEGMENTER

    x = model_input(info, image)
    expected = explain(model, x, target="class", cls=1, rules="conserving-reference", bounds=info.zbox_bounds)
    relevance = npy(out)
    np.testing.assert_allclose(relevance, expected.relevance[0].numpy(), rtol=1e-6, atol=1e-9)
    e = result.explanation
    assert e.explained_pixels == int(expected.mask[0, 1].sum()) > 0 and np.abs(relevance).max() > 0
    np.testing.assert_allclose(e.conservation, expected.conservation.item(), rtol=1e-5)
    np.testing.assert_allclose(e.bias_share, expected.bias_share.item(), rtol=1e-5)
    np.testing.assert_allclose(e.stabilizer_share, expected.stabilizer_share.item(), rtol=1e-5, atol=1e-7)
    assert e.composite == "conserving-reference" and e.conservation > 0.9
    assert abs(e.conservation + e.bias_share + e.stabilizer_share - 1) < 1e-5  # the three shares add up
    np.testing.assert_allclose(relevance.sum(dtype=np.float64), e.conservation * e.r_out_sum, rtol=1e-4)

    labels = model(x).argmax(1)[0].numpy()
    assert [c.pixels for c in result.segmentation.classes] == np.bincount(labels.ravel(), minlength=2).tolist()
    rel2d = relevance.sum(0, dtype=np.float64)
    for name in ("simple", "gmm", "bmm", "component"):
        mask = masks.extract(name, rel2d).mask
        summary = result.masks[name]
        assert summary.pixels == int(mask.sum())
        np.testing.assert_allclose(summary.vs_ground_truth.recall, recall_score(truth.ravel(), mask.ravel()))
        if mask.any():
            np.testing.assert_allclose(summary.vs_ground_truth.iou, jaccard_score(truth.ravel(), mask.ravel()))
            np.testing.assert_allclose(summary.vs_ground_truth.precision, precision_score(truth.ravel(), mask.ravel()))
    assert result.ground_truth.no_skill == pytest.approx(truth.mean())

    # Pictures: tau from the default 90 % relevance mass, the scale in the JSON and on the colour bar.
    display = result.explanation.display
    assert display["max_abs"] == np.abs(rel2d).max() and display["tau"] == render.resolve_tau(rel2d, mass=0.9)
    assert display["coloured_share"] == render.coloured_share(rel2d, display["tau"])
    expected_bar = render.colorbar_png(display["max_abs"], tau=display["tau"], mass=0.9)
    assert out.artifacts["colorbar.png"] == expected_bar
    pixels = image.array[0]
    assert out.artifacts["segmentation.png"] == render.segmentation_png(labels, 2, pixels)


def test_per_layer_overrides_change_only_those_layers(unet, sample) -> None:
    (info, model), (image, _) = unet, sample
    p = params(lrp={"composite": "montavon", "rules": {"head": {"rule": "epsilon", "epsilon": 0.5}}})
    out = run_job(model, info, image, p)
    x = model_input(info, image)
    from lrpseg.lrp import Epsilon

    rules = dict(prepare(model).resolve("montavon", info.zbox_bounds))
    rules["head"] = Epsilon(0.5, relative=True)
    expected = explain(model, x, target="class", cls=1, rules=rules, bounds=info.zbox_bounds)
    np.testing.assert_allclose(npy(out), expected.relevance[0].numpy(), rtol=1e-6, atol=1e-9)
    assert out.result["explanation"]["rule_overrides"] == ["head"]
    with pytest.raises(ValueError, match="nolayer"):
        run_job(model, info, image, params(lrp={"rules": {"nolayer": {"rule": "flat"}}}))


def test_region_targets_explain_the_boxes(unet, sample) -> None:
    (info, model), (image, _) = unet, sample
    box = {"x0": 8, "y0": 4, "x1": 24, "y1": 14}
    for kind in ("region", "region-normalized"):
        out = run_job(model, info, image, params(target={"kind": kind, "cls": "defect", "region": [box]}))
        assert out.result["explanation"]["explained_pixels"] == 16 * 10
        assert out.result["explanation"]["target"] == kind


@pytest.mark.parametrize(("method", "variant"), [("seg-grad-cam", "grad"), ("seg-hires-grad-cam", "hires")])
def test_cam_baselines_over_the_same_pixel_set(unet, sample, method: str, variant: str) -> None:
    (info, model), (image, _) = unet, sample
    out = run_job(model, info, image, params(method=method, masks=["simple"]))
    x = model_input(info, image)
    with torch.no_grad():
        mask = predicted_class_mask(model(x), 1)
    expected = seg_grad_cam(model, x.requires_grad_(True), mask, variant=variant)
    np.testing.assert_allclose(npy(out)[0], expected[0].numpy(), rtol=1e-5, atol=1e-7)
    explanation = JobResult.model_validate(out.result).explanation
    assert explanation.method == method and explanation.conservation is None


def test_classifier_resized_to_its_input(registry: Registry, sample) -> None:
    info, model = registry.get(factories.CLASSIFIER), registry.load(factories.CLASSIFIER)
    image, truth = sample
    with pytest.raises(ParamsError, match="32x32"):
        run_job(model, info, image, JobParams())
    out = run_job(model, info, image, params(resize=True), truth)
    result = JobResult.model_validate(out.result)
    assert result.input.resized_from == (64, 64) and result.segmentation is None
    assert sum(result.classification.probabilities.values()) == pytest.approx(1.0)
    assert npy(out).shape == (1, 32, 32) and "segmentation.png" not in out.artifacts


def test_segment_task_and_artifact_selection(unet, sample) -> None:
    (info, model), (image, truth) = unet, sample
    out = run_job(model, info, image, params(task="segment"), truth)
    assert set(out.artifacts) == {"segmentation.png", "segmentation.npy"} and "explanation" not in out.result
    assert out.result["ground_truth"]["model"]["positive_share"] == pytest.approx(truth.mean())
    out = run_job(model, info, image, params(masks=["bmm"], artifacts=["mask-bmm.png", "relevance.npy"]))
    assert set(out.artifacts) == {"mask-bmm.png", "relevance.npy"} and list(out.result["masks"]) == ["bmm"]


def test_a_blank_image_gives_json_without_nan(unet) -> None:
    info, model = unet
    blank = decode_image(factories.png_bytes(np.zeros((40, 48), np.uint8)))
    truth = np.zeros((40, 48), bool)
    out = run_job(model, info, blank, JobParams(), truth)
    json.dumps(out.result, allow_nan=False)
    assert all(
        factories.decode_png(out.artifacts[n]).shape[:2] == (40, 48)
        for n in out.artifacts
        if n.endswith(".png") and n not in ("colorbar.png", "pr-curve.png")
    )


def test_params_are_resolved_against_the_model(unet) -> None:
    info, _ = unet
    assert resolve_params(params(target={"cls": "background"}), info).params.target.cls == 0
    for bad, field in [
        (params(target={"cls": "crack"}), "params.target.cls"),
        (params(target={"cls": 2}), "params.target.cls"),
        (params(target={"kind": "all", "cls": 1}), "params.target.cls"),
    ]:
        with pytest.raises(ParamsError) as caught:
            resolve_params(bad, info)
        assert caught.value.field == field
    with pytest.raises(ParamsError, match="3 channel"):
        check_image(JobParams(), info, 3, 64, 64)


def test_dicom_input_gets_dicom_outputs(unet) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    info, model = unet
    image = decode_image(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    out = run_job(model, info, image, params(masks=["gmm"]))
    assert out.result["input"]["dicom"] is True and not out.result["warnings"]
    seg = pydicom.dcmread(io.BytesIO(out.artifacts["seg.dcm"]))
    assert seg.Modality == "SEG" and seg.Rows == image.height
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == ["defect (tiny-unet)", "LRP mask (gmm)"]
    assert pydicom.dcmread(io.BytesIO(out.artifacts["relevance.dcm"])).Rows == image.height


# ---- batches: run_jobs shares one forward + LRP pass and equals run_job image by image ----------

BATCH_RTOL = 1e-5  # float32: batched convolutions may sum in another order (measured worst below)


def assert_close_json(batched, single, path: str = "result") -> None:
    """Equal JSON, floats to BATCH_RTOL (relative to the larger magnitude, absolute near 0)."""
    if isinstance(single, dict):
        assert isinstance(batched, dict) and batched.keys() == single.keys(), path
        for key in single:
            assert_close_json(batched[key], single[key], f"{path}.{key}")
    elif isinstance(single, list):
        assert isinstance(batched, list) and len(batched) == len(single), path
        for i, (b, s) in enumerate(zip(batched, single)):
            assert_close_json(b, s, f"{path}[{i}]")
    elif isinstance(single, float) and not isinstance(single, bool):
        assert isinstance(batched, (int, float)), path
        assert batched == pytest.approx(single, rel=BATCH_RTOL, abs=1e-9), path
    else:
        assert batched == single, path


def without_timings(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "timings"}


@pytest.mark.parametrize(
    "shared",
    [
        {},
        {"lrp": {"composite": "epsilon-gamma-box"}, "target": {"kind": "all"}},
        # ours: with the conserving default one BMM pixel of this test image sits on its threshold and flips
        # with batched float32 rounding (2 vs 1 pixels); the batching itself is what this case checks
        {
            "lrp": {"composite": "ours"},
            "target": {"kind": "region", "cls": 1, "region": [{"x0": 8, "y0": 8, "x1": 40, "y1": 40}]},
        },
        {"task": "segment"},
        {"method": "seg-grad-cam"},
    ],
)
def test_a_batch_equals_its_jobs_one_by_one(unet, shared: dict) -> None:
    info, model = unet
    images, truths = [], []
    for seed in range(3):
        image, truth = factories.defect_image(64, seed=seed)
        images.append(decode_image(factories.png_bytes(image)))
        truths.append(truth if seed != 1 else None)
    # the tail (masks, visualisation, artifacts) is each job's own
    per_job = [
        {},
        {"masks": ["gmm"], "artifacts": ["relevance.npy", "mask-gmm.png"]},
        {"visualisation": {"threshold": 90}},
    ]
    if shared.get("task") == "segment":
        per_job = [{}, {"artifacts": ["segmentation.png"]}, {}]
    job_params = [params(**shared, **extra) for extra in per_job]

    batched = run_jobs(model, info, images, job_params, truths)
    worst = 0.0
    for image, p, truth, out in zip(images, job_params, truths, batched):
        single = run_job(model, info, image, p, truth)
        assert out.result["timings"]["batch_size"] == 3 and single.result["timings"]["batch_size"] == 1
        JobResult.model_validate(out.result)
        assert_close_json(without_timings(out.result), without_timings(single.result))
        assert out.artifacts.keys() == single.artifacts.keys()
        if "relevance.npy" in single.artifacts:
            a, b = npy(out), npy(single)
            assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
            worst = max(worst, float(np.abs(a - b).max() / np.abs(b).max()))
    assert worst < BATCH_RTOL


def test_a_batch_needs_one_shape_and_shared_params(unet, sample) -> None:
    info, model = unet
    image, _ = sample
    other = decode_image(factories.png_bytes(factories.defect_image(32)[0]))
    with pytest.raises(ValueError, match="one size"):
        run_jobs(model, info, [image, other], [params(), params()])
    with pytest.raises(ValueError, match="must agree"):
        run_jobs(model, info, [image, image], [params(), params(lrp={"composite": "montavon"})])
    assert run_jobs(model, info, [], []) == []


# ---- volumes and model metadata ------------------------------------------------------------------


@pytest.fixture(scope="module")
def clinical(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return factories.write_clinical_models(tmp_path_factory.mktemp("clinical"))


@pytest.fixture(scope="module")
def volume_job(clinical: Registry):
    info, model = clinical.get(factories.VOLUME), clinical.load(factories.VOLUME)
    volume, truth = factories.defect_volume()
    buffer = io.BytesIO()
    np.save(buffer, volume)
    image = decode_image(buffer.getvalue())
    # `ours`: the tiny test U-Net's defect logits are negative, so a sign-keeping conserving map has no
    # positive mass for the extractors to find (docs/lrp.md)
    return info, model, image, truth, run_job(model, info, image, params(lrp={"composite": "ours"}), truth)


def test_volume_job_is_the_library_on_the_whole_volume(volume_job) -> None:
    info, model, image, truth, out = volume_job
    result = JobResult.model_validate(out.result)
    assert result.input.depth == 16 and result.segmentation.depth == 16
    x = model_input(info, image)
    composite = result.explanation.composite
    expected = explain(model, x, target="class", cls=1, rules=composite, bounds=tuple(info.zbox_bounds))
    relevance = npy(out)
    assert relevance.shape == (1, 16, 32, 32)
    np.testing.assert_allclose(relevance, expected.relevance[0].numpy(), rtol=1e-5, atol=1e-9)
    rel3d = relevance.sum(0, dtype=np.float64)
    predicted = model(x)[0].argmax(0).numpy() == 1
    assert result.explanation.explained_pixels == predicted.sum() > 0
    for name in ("simple", "gmm", "bmm"):  # the extractors on the volume itself (5x5x5 mean filter)
        mask = masks.extract(name, rel3d).mask
        summary = result.masks[name]
        assert summary.pixels == mask.sum()
        m = summary.vs_ground_truth
        assert m.iou == pytest.approx(jaccard_score(truth.ravel(), mask.ravel(), zero_division=0))
        assert m.precision == pytest.approx(precision_score(truth.ravel(), mask.ravel(), zero_division=0))
        assert m.recall == pytest.approx(recall_score(truth.ravel(), mask.ravel(), zero_division=0))
    model_metrics = result.ground_truth.model
    assert model_metrics.iou == pytest.approx(jaccard_score(truth.ravel(), predicted.ravel()))


def test_volume_artifacts_are_slice_montages(volume_job) -> None:
    from lrpseg.render import segmentation_rgb
    from lrpseg.render.montage import GAP, montage_slices, tile

    info, model, image, _, out = volume_job
    assert "seg.dcm" not in out.artifacts and {"overlay.png", "segmentation.png", "mask-bmm.png"} <= set(out.artifacts)
    slices = montage_slices(16)
    assert slices == [0, 2, 4, 6, 8, 9, 11, 13, 15]
    seg = factories.decode_png(out.artifacts["segmentation.png"])
    assert seg.shape[:2] == (3 * 32 + 2 * GAP, 3 * 32 + 2 * GAP)
    labels = model(model_input(info, image))[0].argmax(0).numpy()  # tiles: those slices, row by row
    assert (seg == segmentation_rgb(tile(labels, slices), 2)).all()
    mask = factories.decode_png(out.artifacts["mask-simple.png"]) > 0
    rel3d = npy(out).sum(0, dtype=np.float64)
    assert (mask == tile(masks.extract("simple", rel3d).mask, slices)).all()


def test_volume_and_model_dimensions_must_agree(registry: Registry, clinical: Registry, unet, volume_job) -> None:
    info3d, _, volume, _, _ = volume_job
    info2d, model2d = unet
    classifier = registry.get(factories.CLASSIFIER)  # a 2-D segmenter takes a volume slice by slice; this does not
    with pytest.raises(ParamsError, match="takes 2-D images; got a volume of 16 slices"):
        run_job(registry.load(factories.CLASSIFIER), classifier, volume, params())
    with pytest.raises(ParamsError, match="slice by slice"):
        run_job(model2d, info2d, volume, params(faithfulness=True))
    flat = decode_image(factories.png_bytes(factories.defect_image(32)[0]))
    with pytest.raises(ParamsError, match="takes volumes"):
        check_image(params(), info3d, flat.channels, flat.height, flat.width, flat.depth)
    with pytest.raises(ParamsError) as found:
        check_image(params(method="seg-grad-cam"), info3d, 1, 32, 32, 16)
    assert found.value.field == "params.method"


def test_a_2d_segmenter_explains_a_volume_slice_by_slice(unet, volume_job) -> None:
    """Each slice's relevance and segmentation equal the library on that slice alone; the volume's
    sums are the slices' sums; masks and metrics are over the volume."""
    info, model = unet
    volume = volume_job[2]
    out = run_job(model, info, volume, params(masks=["simple"]))
    result = JobResult.model_validate(out.result)
    assert (result.input.depth, result.segmentation.depth) == (16, 16)
    relevance = npy(out)
    assert relevance.shape == (1, 16, 32, 32)
    x = info.normalize(torch.from_numpy(volume.array).movedim(1, 0))  # (D, C, H, W)
    bounds = tuple(info.zbox_bounds)
    r_out_sum = 0.0
    for d in range(16):
        expected = explain(model, x[d : d + 1], target="class", cls=1, rules="conserving-reference", bounds=bounds)
        np.testing.assert_allclose(relevance[:, d], expected.relevance[0].numpy(), rtol=1e-5, atol=1e-7)
        r_out_sum += float(expected.r_out.sum())
    assert result.explanation.r_out_sum == pytest.approx(r_out_sum, rel=1e-5)
    assert result.explanation.relevance_sum == pytest.approx(float(relevance.sum(dtype=np.float64)), rel=1e-6)
    with torch.no_grad():
        labels = model(x).argmax(1).numpy()  # (D, H, W)
    assert result.explanation.explained_pixels == (labels == 1).sum()
    assert result.segmentation.classes[1].pixels == (labels == 1).sum()
    mask = masks.extract("simple", relevance.sum(0, dtype=np.float64)).mask  # the extractor on the volume
    assert result.masks["simple"].pixels == mask.sum()


def test_domain_mismatch_is_refused_unless_allowed(clinical: Registry) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    info, model = clinical.get(factories.SURFACE), clinical.load(factories.SURFACE)
    ct = decode_image(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    with pytest.raises(ParamsError, match=r"modality CT; model tiny-surface@1 is made for modalities \['OT', 'XC'\]"):
        run_job(model, info, ct, params())
    out = run_job(model, info, ct, params(allow_domain_mismatch=True, masks=["gmm"]))
    assert any("outside the model's domain" in w for w in out.result["warnings"])
    seg = pydicom.dcmread(io.BytesIO(out.artifacts["seg.dcm"]))
    # the class carries the model's codes; its LRP mask is an explanation region of the same type,
    # made by the method and the mask extractor
    categories = [("SCT", "260787004"), ("99LRPSEG", "LRPEXPL")]
    algorithms = ["tiny-surface", "LRP conserving-reference + gmm mask"]
    for item, category_code, algorithm in zip(seg.SegmentSequence, categories, algorithms, strict=True):
        category, kind = item.SegmentedPropertyCategoryCodeSequence[0], item.SegmentedPropertyTypeCodeSequence[0]
        assert (category.CodingSchemeDesignator, category.CodeValue) == category_code
        assert (kind.CodingSchemeDesignator, kind.CodeValue, kind.CodeMeaning) == (
            "99LRPSEG",
            "SURFDEF",
            "Surface defect",
        )
        assert item.SegmentAlgorithmName == algorithm
    # the warning and the research-use notice travel with the DICOM, and the series says what made it
    assert seg.ImageComments.startswith("RESEARCH USE ONLY") and "outside the model's domain" in seg.ImageComments
    assert seg.SeriesDescription == "RUO SEG tiny-surface@1 LRP conserving-reference"
    assert seg.SeriesNumber == 1000 + 10 * int(ct.dicom.SeriesNumber) + 1
    assert (seg.Manufacturer, seg.ManufacturerModelName, seg.ContentCreatorName) == ("lrpseg", "tiny-surface", "LRPSEG")
    assert list(seg.SoftwareVersions)[1] == "tiny-surface@1"


def test_input_window_replaces_the_decoders_scaling(clinical: Registry, tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    from lrpseg.inputs import apply_input, resolve_params
    from lrpseg.registry import read_model_info

    source = clinical.get(factories.SURFACE).path
    config = json.loads((source / "config.json").read_text())
    config.update(input_window={"center": 40, "width": 400}, domain=None)
    config = {k: v for k, v in config.items() if v is not None}
    target = tmp_path / "windowed@1"
    target.mkdir()
    (target / "config.json").write_text(json.dumps(config))
    (target / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes())
    info = read_model_info(target)
    ct = decode_image(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    hu = ct.raw[0].astype(np.float64) * float(ct.dicom.RescaleSlope) + float(ct.dicom.RescaleIntercept)
    expected = np.clip((hu - (40 - 200)) / 400, 0, 1)
    windowed = apply_input(ct, resolve_params(params(), info).params, info)
    np.testing.assert_allclose(windowed.array[0], expected, atol=1e-6)
    assert not np.allclose(ct.array[0], expected)  # the decoder alone scales otherwise
    # one window concept: the request's params.input.window overrides the model's default
    asked = resolve_params(params(input={"window": {"centre": 0, "width": 100}}), info).params
    np.testing.assert_allclose(apply_input(ct, asked, info).array[0], np.clip((hu + 50) / 100, 0, 1), atol=1e-6)
    assert run_job(clinical.load(factories.SURFACE), info, ct, params()).result["input"]["window"] == {
        "center": 40.0,
        "width": 400.0,
    }


def test_faithfulness_is_opt_in_and_equals_the_metric(unet, sample) -> None:
    from lrpseg.metrics.faithfulness import deletion_insertion, input_gradient

    (info, model), (image, _) = unet, sample
    assert "faithfulness" not in run_job(model, info, image, params()).result["explanation"]
    stages: list[str] = []
    out = run_job(model, info, image, params(faithfulness=True), progress=lambda s, f: stages.append(s))
    result = JobResult.model_validate(out.result)
    assert "faithfulness" in stages and result.timings.faithfulness is not None
    found = result.explanation.faithfulness
    assert found is not None and found.steps == 20 and len(found.explanation.deletion) == 21

    x = model_input(info, image)
    with torch.no_grad():
        mask = predicted_class_mask(model(x), 1)

    def score(output: torch.Tensor) -> torch.Tensor:
        return (output * mask).flatten(1).sum(1)

    expected = deletion_insertion(model, x, npy(out), score)
    assert found.explanation.difference == pytest.approx(expected["difference"], rel=1e-5, abs=1e-7)
    gradient = deletion_insertion(model, x, input_gradient(model, x, score)[0], score)
    assert found.gradient.deletion_auc == pytest.approx(gradient["deletion_auc"], rel=1e-5, abs=1e-7)
    assert found.random.deletion != found.explanation.deletion


def test_faithfulness_needs_an_explanation() -> None:
    with pytest.raises(ValueError, match="faithfulness needs task 'explain'"):
        JobParams.model_validate({"task": "segment", "faithfulness": True})


def test_an_empty_target_class_is_never_silent(unet, sample) -> None:
    info, shifted = unet[0], copy.deepcopy(unet[1])
    with torch.no_grad():
        shifted.head.bias[1] -= 1e3  # the model now calls every pixel background
    image, _ = sample
    empty = run_job(shifted, info, image, params(masks=["simple"])).result
    assert empty["segmentation"]["classes"][1]["pixels"] == 0
    assert [w for w in empty["warnings"] if "predicts no 'defect' pixels" in w]
    found = run_job(unet[1], info, image, params(masks=["simple"])).result
    assert found["segmentation"]["classes"][1]["pixels"] > 0 and found["warnings"] == []
