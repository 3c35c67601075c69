"""service/static/render.js run in node against lrpseg.render: the same threshold tau, bit for bit.

The Playwright test in test_viewer.py checks the same in chromium (slow); this one runs in
well under a second wherever node is installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lrpseg import render
from lrpseg.masks.synthetic import lrp_like_map

RENDER_JS = Path(__file__).resolve().parents[2] / "service" / "static" / "render.js"
NODE = shutil.which("node")

SCRIPT = """
import { readFileSync } from "node:fs";
const R = await import(process.argv[1]);
const cases = JSON.parse(readFileSync(0, "utf8"));
const out = cases.map(([values, opts]) => {
  const t = R.transfer(Float64Array.from(values), opts);
  return { tau: t.tau, coloured: t.values.filter((v) => v !== 0).length };
});
process.stdout.write(JSON.stringify(out));
"""


def run_js(cases: list[tuple[list[float], dict]]) -> list[dict]:
    assert NODE is not None
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", SCRIPT, RENDER_JS.as_uri()],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_js_threshold_equals_python_bit_for_bit() -> None:
    rng = np.random.default_rng(5)
    maps = [
        lrp_like_map((64, 48), seed=1)[0],
        rng.standard_cauchy((40, 40)) * rng.choice([1e-4, 1.0, 30.0], (40, 40)),
        np.where(rng.random((32, 32)) < 0.9, 0.0, rng.normal(0, 1, (32, 32))),
        rng.normal(0, 1e-30, (16, 16)),
        np.round(rng.normal(0, 2, (20, 20))),  # many ties
    ]
    options = [{}, {"mass": 0.95}, {"mass": 0.5}, {"mass": 0.0}, {"mass": 1.0}, {"percentile": 50.0}]
    cases = [(m.ravel().tolist(), {"mode": "log", **o}) for m in maps for o in options]
    got = run_js(cases)
    for (values, opts), js in zip(cases, got):
        rel = np.asarray(values)
        kw = {k: v for k, v in opts.items() if k != "mode"}
        tau = render.resolve_tau(rel, **kw)
        assert js["tau"] == tau, opts  # the same float, not merely close
        assert js["coloured"] == np.count_nonzero(render.log_transfer(rel, **kw)), opts
