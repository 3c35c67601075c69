"""Layer names in the params checked against the model at submission, as the worker would check them.

`lrp.rules` keys and `cam_layer` name modules of the model; a wrong name used to pass submission
and fail only in the worker (issue 15). The check runs the worker's own code on the model
(`lrpseg.pipeline.build_rules` + the engine's `resolve`, the CAM's call-module lookup), so the
two cannot disagree. Only params that name layers pay for it: the model is loaded (cached by the
registry) and traced once per process (cached by the engine).
"""

from __future__ import annotations

import logging

from lrpseg.inputs import ParamsError
from lrpseg.lrp.engine import prepare
from lrpseg.lrp.errors import RuleError
from lrpseg.pipeline import build_rules, zbox_bounds
from lrpseg.registry import ModelInfo, Registry
from schemas.params import JobParams

log = logging.getLogger("lrpseg.service")


def check_layer_names(registry: Registry, info: ModelInfo, params: JobParams) -> None:
    """ParamsError naming `params.lrp.rules` or `params.cam_layer` if the model has no such layer."""
    if not params.lrp.rules and params.cam_layer is None:
        return
    try:
        model = registry.load(info.id, device="cpu")
    except Exception as exc:  # a model that does not load is the worker's to report (readyz)
        log.warning("model %s did not load for the layer check: %s", info.id, type(exc).__name__)
        return
    prepared = prepare(model)
    if params.cam_layer is not None:
        modules = sorted({str(n.target) for n in prepared.gm.graph.nodes if n.op == "call_module"})
        if params.cam_layer not in modules:
            raise ParamsError(
                "params.cam_layer", f"model {info.id} has no module {params.cam_layer!r}; modules: {modules}"
            )
    if params.lrp.rules:
        bounds = zbox_bounds(info)
        try:
            prepared.resolve(build_rules(params, model, None, bounds), bounds)  # type: ignore[arg-type]
        except (RuleError, ValueError) as exc:
            raise ParamsError("params.lrp.rules", str(exc)) from None
