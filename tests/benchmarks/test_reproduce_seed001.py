"""Smoke test of the seed 001 reproduction script on the first 16 test samples (7 defective)."""

from __future__ import annotations

import contextlib
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.preprocessing import minmax_scale

from benchmarks import reproduce_seed001 as rep
from lrpseg.registry import SHIPPED_DIR

N_TEST = 16

pytestmark = pytest.mark.skipif(
    not all((SHIPPED_DIR / m / "config.json").is_file() for m in [*rep.CLASSIFIERS.values(), rep.SEGMENTER]),
    reason="the shipped models are not all present",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, str]:
    out = tmp_path_factory.mktemp("seed001")
    png, js = out / "pr.png", out / "results.json"
    capture = out / "stdout.txt"
    with capture.open("w") as handle, contextlib.redirect_stdout(handle):
        code = rep.main(["--n-test", str(N_TEST), "--threads", "2", "--pr-png", str(png), "--json", str(js)])
    assert code == 0
    return json.loads(js.read_text()), png, capture.read_text()


def in_unit(value: float) -> bool:
    return 0.0 <= value <= 1.0


def test_table2_rates_match_the_image_counts(run: tuple[dict[str, Any], Path, str]) -> None:
    results, _, _ = run
    assert set(results["table2"]) == set(rep.CLASSIFIERS)
    assert results["defective"] + results["defect_free"] == N_TEST and results["defective"] > 0
    for head, row in results["table2"].items():
        ours = row["ours"]
        assert ours["tp"] + ours["fn"] == results["defective"]
        assert ours["tn"] + ours["fp"] == results["defect_free"]
        assert ours["tpr"] == pytest.approx(ours["tp"] / results["defective"])
        assert ours["balanced_accuracy"] == pytest.approx((ours["tpr"] + ours["tnr"]) / 2)
        assert row["paper"] == rep.PAPER_TABLE2[head]


def test_table3_has_every_combination_once_with_unit_metrics(run: tuple[dict[str, Any], Path, str]) -> None:
    results, _, _ = run
    keys = [(r["rules"], r["head"], r["mask"]) for r in results["table3"]]
    extractors = (*rep.EXTRACTORS, *rep.EXTRA_EXTRACTORS)
    assert sorted(keys) == sorted(itertools.product(rep.RULE_SETS, rep.CLASSIFIERS, extractors))
    rows = [r["ours"] for r in results["table3"]] + [results["unet"]["ours"], results["unet_own_images"]["ours"]]
    for ours in rows:
        assert all(in_unit(ours[k]) for k in (*rep.METRICS, "predicted_share"))
        # IoU never exceeds precision or recall (TP / (TP + FP + FN)).
        assert ours["iou"] <= min(ours["precision"], ours["recall"]) + 1e-12
    for row in results["table3"]:
        if row["mask"] in rep.EXTRA_EXTRACTORS:
            assert row["paper"] is None
            continue
        assert tuple(row["paper"][k] for k in rep.METRICS) == rep.PAPER_TABLE3[(row["rules"], row["head"], row["mask"])]
        assert ("score_one_share" in row["ours"]) == (row["mask"] in ("gmm", "bmm"))


def test_pr_curves_figure_and_printed_tables(run: tuple[dict[str, Any], Path, str]) -> None:
    results, png, stdout = run
    scores = ("gmm", "bmm", "raw")
    expected = {"unet"} | {f"{r}/{h}/{k}" for r in rep.RULE_SETS for h in rep.CLASSIFIERS for k in scores}
    assert set(results["average_precision"]) == expected
    assert all(in_unit(ap) for ap in results["average_precision"].values())
    assert set(results["highest_cut"]) == expected
    assert all(in_unit(v) for top in results["highest_cut"].values() for v in top.values())
    assert 0.0 < results["positive_share"] < 0.2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Table 2" in stdout and "Table 3" in stdout
    per_rules = 2 * (len(rep.EXTRACTORS) + len(rep.EXTRA_EXTRACTORS))
    assert stdout.count("| ours | ") == per_rules and stdout.count("| montavon | ") == per_rules
    assert "0.462" in stdout and "96.1%" in stdout  # the paper's values sit beside ours


def test_minmax_per_image_matches_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 5, 7)) * [[[1.0]], [[1e-6]], [[1e3]]]
    got = rep.minmax_per_image(maps)
    for m, g in zip(maps, got):
        np.testing.assert_allclose(g.ravel(), minmax_scale(m.ravel()), rtol=0, atol=1e-12)
    assert np.array_equal(rep.minmax_per_image(np.full((1, 4, 4), 2.5)), np.zeros((1, 4, 4)))
