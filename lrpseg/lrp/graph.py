"""The traced graph LRP walks: tracing, BatchNorm folding, op classification, layer roles.

The model is traced with torch.fx, so any architecture built from the supported
ops works without per-architecture code. Nodes that carry relevance (those fed,
directly or not, by the input) are classified once; anything else fails here,
at preparation, with the op's name and place.
"""

from __future__ import annotations

import copy
import enum
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from lrpseg.lrp.errors import UnsupportedOperationError
from lrpseg.lrp.layers import Layer


class Kind(enum.Enum):
    INPUT = "input"
    PARAM = "param"  # Conv/ConvTranspose/Linear: gets an LRP rule
    PASS = "pass"  # elementwise activations, identities: relevance passes unchanged
    GRADIENT = "gradient"  # max-pool, cat, slicing, padding, reshapes: split by the gradient
    NORM = "norm"  # upsampling, average pooling: the parameter-free z-rule
    ADD = "add"  # a + b: proportional split
    OUTPUT = "output"


PARAM_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
BATCHNORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
MODULE_KINDS: dict[type, Kind] = {
    **{t: Kind.PASS for t in (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout3d)},
    **{
        t: Kind.GRADIENT
        for t in (
            nn.MaxPool1d,
            nn.MaxPool2d,
            nn.MaxPool3d,
            nn.AdaptiveMaxPool1d,
            nn.AdaptiveMaxPool2d,
            nn.AdaptiveMaxPool3d,
            nn.Flatten,
            nn.Unflatten,
            nn.ZeroPad2d,
            nn.ConstantPad2d,
        )
    },
    **{
        t: Kind.NORM
        for t in (
            nn.Upsample,
            nn.UpsamplingNearest2d,
            nn.UpsamplingBilinear2d,
            nn.AvgPool1d,
            nn.AvgPool2d,
            nn.AvgPool3d,
            nn.AdaptiveAvgPool1d,
            nn.AdaptiveAvgPool2d,
            nn.AdaptiveAvgPool3d,
        )
    },
}
FUNCTION_KINDS: dict[object, Kind] = {
    F.relu: Kind.PASS,
    torch.relu: Kind.PASS,
    F.leaky_relu: Kind.PASS,
    torch.cat: Kind.GRADIENT,
    torch.concat: Kind.GRADIENT,
    torch.flatten: Kind.GRADIENT,
    torch.reshape: Kind.GRADIENT,
    operator.getitem: Kind.GRADIENT,
    F.pad: Kind.GRADIENT,
    F.max_pool1d: Kind.GRADIENT,
    F.max_pool2d: Kind.GRADIENT,
    F.max_pool3d: Kind.GRADIENT,
    torch.squeeze: Kind.GRADIENT,
    torch.unsqueeze: Kind.GRADIENT,
    F.interpolate: Kind.NORM,
    F.avg_pool1d: Kind.NORM,
    F.avg_pool2d: Kind.NORM,
    F.avg_pool3d: Kind.NORM,
    F.adaptive_avg_pool1d: Kind.NORM,
    F.adaptive_avg_pool2d: Kind.NORM,
    F.adaptive_avg_pool3d: Kind.NORM,
    operator.add: Kind.ADD,
    torch.add: Kind.ADD,
}
METHOD_KINDS: dict[str, Kind] = {
    "relu": Kind.PASS,
    "contiguous": Kind.PASS,
    "clone": Kind.PASS,
    **{m: Kind.GRADIENT for m in ("view", "reshape", "flatten", "permute", "squeeze", "unsqueeze", "transpose")},
    "add": Kind.ADD,
}
UPSAMPLING_MODULES = (nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
INPLACE_FUNCTIONS = {operator.iadd: operator.add, torch.relu_: torch.relu}
INPLACE_METHODS = {"relu_": "relu", "add_": "add"}
NON_TENSOR_METHODS = {"size", "dim", "numel", "type", "get_device"}


@dataclass
class Roles:
    """Where a parametric layer sits in data flow (used by the named composites)."""

    first: bool = False  # no parametric layer before it in data flow
    decoder: bool = False  # an upsampling op lies before it (or it upsamples itself)
    head: bool = False  # a Linear layer, or no parametric layer after it
    encoder_index: int = -1  # position among encoder layers, in data-flow order
    encoder_count: int = 0


@dataclass
class NodeInfo:
    node: fx.Node
    kind: Kind
    inputs: list[fx.Node]  # relevance-carrying inputs
    layer: Layer | None = None
    module: nn.Module | None = None
    roles: Roles = field(default_factory=Roles)

    @property
    def name(self) -> str:
        return str(self.node.target) if self.node.op == "call_module" else self.node.name


def describe(node: fx.Node, gm: fx.GraphModule) -> str:
    """Human-readable 'what and where' of a node for error messages."""
    if node.op == "call_module":
        what = f"module '{node.target}' ({type(gm.get_submodule(str(node.target))).__name__})"
    elif node.op == "call_method":
        what = f"method '.{node.target}()'"
    else:
        what = f"function '{getattr(node.target, '__name__', node.target)}'"
    stack = node.meta.get("nn_module_stack")
    inside = f" inside '{list(stack)[-1]}'" if stack else ""
    return f"{what} at graph node '{node.name}'{inside}"


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace a copy of `model` (eval mode) with in-place ops made out-of-place."""
    model = copy.deepcopy(model).eval()
    for m in model.modules():
        if getattr(m, "inplace", False):
            m.inplace = False
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types; the message is what matters
        raise UnsupportedOperationError(
            f"the model cannot be traced with torch.fx ({type(exc).__name__}: {exc}); data-dependent Python "
            "control flow is not supported"
        ) from exc
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in INPLACE_FUNCTIONS:
            node.target = INPLACE_FUNCTIONS[node.target]
        elif node.op == "call_method" and node.target in INPLACE_METHODS:
            node.target = INPLACE_METHODS[node.target]
        if "inplace" in node.kwargs:
            node.kwargs = {**node.kwargs, "inplace": False}
    gm.recompile()
    return gm


def fold_batchnorm(gm: fx.GraphModule) -> None:
    """Fold each BatchNorm into the Conv/Linear that feeds it (exact, eps included)."""
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), BATCHNORM_MODULES):
            continue
        src = node.args[0]
        src_mod = gm.get_submodule(src.target) if isinstance(src, fx.Node) and src.op == "call_module" else None
        if not isinstance(src_mod, PARAM_MODULES) or len(src.users) != 1:
            raise UnsupportedOperationError(
                f"{describe(node, gm)} does not directly follow a Conv/Linear layer used only by it; "
                "LRP needs BatchNorm folded into the preceding layer"
            )
        bn = gm.get_submodule(node.target)
        if isinstance(src_mod, nn.Linear):
            fused = fuse_linear_bn_eval(src_mod, bn)
        else:
            fused = fuse_conv_bn_eval(src_mod, bn, transpose=isinstance(src_mod, nn.modules.conv._ConvTransposeNd))
        parent, _, leaf = str(src.target).rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, leaf, fused)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()


def _is_tensor_add(node: fx.Node, carries: set[fx.Node]) -> bool:
    operands = [a for a in node.args[:2] if isinstance(a, fx.Node)]
    return len(operands) == 2 and all(a in carries for a in operands) and not node.kwargs.get("alpha")


def classify(node: fx.Node, gm: fx.GraphModule, carries: set[fx.Node]) -> Kind:
    """The Kind of a relevance-carrying node, or UnsupportedOperationError naming it."""
    if node.op == "placeholder":
        return Kind.INPUT
    if node.op == "output":
        return Kind.OUTPUT
    kind: Kind | None = None
    if node.op == "call_module":
        mod = gm.get_submodule(str(node.target))
        kind = Kind.PARAM if isinstance(mod, PARAM_MODULES) else MODULE_KINDS.get(type(mod))
    elif node.op == "call_function":
        kind = FUNCTION_KINDS.get(node.target)
    elif node.op == "call_method":
        kind = METHOD_KINDS.get(str(node.target))
    if kind is Kind.ADD and not _is_tensor_add(node, carries):
        kind = None  # adding a constant or scaling is not a relevance-preserving merge
    if node.target is F.pad and node.kwargs.get("mode", "constant") != "constant":
        kind = None
    if kind is None:
        raise UnsupportedOperationError(
            f"LRP has no rule for {describe(node, gm)}. Supported: Conv/ConvTranspose/Linear (BatchNorm folded), "
            "ReLU/LeakyReLU, max/avg pooling, Upsample/interpolate, cat, slicing, pad, a + b of two tensors, "
            "flatten/reshape/view"
        )
    return kind


def _roles(infos: dict[fx.Node, NodeInfo], gm: fx.GraphModule) -> None:
    """Mark first/decoder/head layers and number the encoder layers in data-flow order."""
    before_param: dict[fx.Node, bool] = {}
    before_up: dict[fx.Node, bool] = {}
    for node, info in infos.items():
        before_param[node] = any(before_param[i] or infos[i].kind is Kind.PARAM for i in info.inputs)
        upsamples = isinstance(info.module, UPSAMPLING_MODULES) or node.target is F.interpolate
        upsamples |= isinstance(info.module, nn.modules.conv._ConvTransposeNd)
        before_up[node] = upsamples or any(before_up[i] for i in info.inputs)
    after_param: dict[fx.Node, bool] = {}
    for node in reversed(infos):
        users = [u for u in node.users if u in infos]
        after_param[node] = any(after_param[u] or infos[u].kind is Kind.PARAM for u in users)
    params = [i for i in infos.values() if i.kind is Kind.PARAM]
    for info in params:
        r = info.roles
        r.first = not before_param[info.node]
        r.decoder = before_up[info.node]
        r.head = isinstance(info.module, nn.Linear) or not after_param[info.node]
    encoder = [i for i in params if not i.roles.decoder and not i.roles.head]
    for index, info in enumerate(encoder):
        info.roles.encoder_index, info.roles.encoder_count = index, len(encoder)


def analyse(gm: fx.GraphModule) -> dict[fx.Node, NodeInfo]:
    """Classify every relevance-carrying node (topological order) and assign roles."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedOperationError(f"the model must take exactly one input tensor, it takes {len(placeholders)}")
    carries: set[fx.Node] = set(placeholders)
    infos: dict[fx.Node, NodeInfo] = {}
    for node in gm.graph.nodes:
        inputs = [i for i in node.all_input_nodes if i in carries]
        if node.op != "placeholder" and not inputs:
            continue  # shapes, sizes, constants: no relevance flows here
        if node.op == "call_function" and node.target is getattr:
            continue  # x.shape, x.dtype, ...
        if node.op == "call_method" and node.target in NON_TENSOR_METHODS:
            continue
        carries.add(node)
        kind = classify(node, gm, carries)
        module = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
        layer = Layer(module) if kind is Kind.PARAM else None
        infos[node] = NodeInfo(node, kind, inputs, layer, module)
    _roles(infos, gm)
    return infos
