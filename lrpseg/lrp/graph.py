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
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from lrpseg.lrp.canonical import AnyBatchNorm, AnyInstanceNorm, modularize
from lrpseg.lrp.errors import TraceError, UnsupportedOperationError
from lrpseg.lrp.layers import Layer

M = TypeVar("M", bound=nn.Module)


class Kind(enum.Enum):
    INPUT = "input"
    PARAM = "param"  # Conv/ConvTranspose/Linear: gets an LRP rule
    PASS = "pass"  # elementwise activations, identities: relevance passes unchanged
    GRADIENT = "gradient"  # max-pool, cat, slicing, padding, reshapes: split by the gradient
    NORM = "norm"  # upsampling, average pooling: the parameter-free z-rule
    STATS = "stats"  # Batch/Instance/Group/LayerNorm: sigma held constant, the rest a linear map (z-rule)
    ADD = "add"  # a + b: proportional split
    GATE = "gate"  # x * g, x * c, x / c: g (a sigmoid-like gate) or c held constant, all relevance to x
    OUTPUT = "output"


PARAM_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
BATCHNORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, AnyBatchNorm)
NORM_LAYER_MODULES = (
    *BATCHNORM_MODULES,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    AnyInstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
)
# Elementwise activations: relevance passes unchanged (identity rule).
ACTIVATION_MODULES = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ReLU6,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.SiLU,
    nn.GELU,
    nn.Mish,
    nn.Softplus,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
)
MAX_POOLS = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
AVG_POOLS = (
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
)
IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
MODULE_KINDS: dict[type, Kind] = {
    **{t: Kind.PASS for t in (*ACTIVATION_MODULES, *IDENTITY_MODULES)},
    **{
        t: Kind.GRADIENT
        for t in (
            *MAX_POOLS,
            nn.Flatten,
            nn.Unflatten,
            nn.ZeroPad1d,
            nn.ZeroPad2d,
            nn.ZeroPad3d,
            nn.ConstantPad1d,
            nn.ConstantPad2d,
            nn.ConstantPad3d,
        )
    },
    **{t: Kind.STATS for t in NORM_LAYER_MODULES},
    **{
        t: Kind.NORM
        for t in (
            nn.Upsample,
            nn.UpsamplingNearest2d,
            nn.UpsamplingBilinear2d,
            *AVG_POOLS,
        )
    },
}
ACTIVATION_FUNCTIONS = (
    F.relu,
    torch.relu,
    F.leaky_relu,
    F.prelu,
    torch.prelu,
    F.relu6,
    F.elu,
    F.selu,
    torch.selu,
    F.celu,
    F.silu,
    F.gelu,
    F.mish,
    F.softplus,
    F.sigmoid,
    torch.sigmoid,
    F.tanh,
    torch.tanh,
    F.hardtanh,
    F.hardswish,
    F.hardsigmoid,
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
)
# Ops whose output, multiplied into another tensor, acts as a gate (held constant).
GATE_FUNCTIONS = (F.sigmoid, torch.sigmoid, F.hardsigmoid, F.softmax, torch.softmax, F.tanh, torch.tanh)
GATE_MODULES = (nn.Sigmoid, nn.Hardsigmoid, nn.Softmax, nn.Tanh)
GATE_METHODS = ("sigmoid", "softmax", "tanh")
FUNCTION_KINDS: dict[object, Kind] = {
    **{f: Kind.PASS for f in ACTIVATION_FUNCTIONS},
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
    torch.permute: Kind.GRADIENT,
    torch.transpose: Kind.GRADIENT,
    torch.movedim: Kind.GRADIENT,
    torch.stack: Kind.GRADIENT,
    F.interpolate: Kind.NORM,
    F.upsample: Kind.NORM,
    torch.mean: Kind.NORM,
    torch.sum: Kind.NORM,
    F.batch_norm: Kind.STATS,
    F.instance_norm: Kind.STATS,
    F.group_norm: Kind.STATS,
    F.layer_norm: Kind.STATS,
    F.avg_pool1d: Kind.NORM,
    F.avg_pool2d: Kind.NORM,
    F.avg_pool3d: Kind.NORM,
    F.adaptive_avg_pool1d: Kind.NORM,
    F.adaptive_avg_pool2d: Kind.NORM,
    F.adaptive_avg_pool3d: Kind.NORM,
    operator.add: Kind.ADD,
    torch.add: Kind.ADD,
    operator.mul: Kind.GATE,
    torch.mul: Kind.GATE,
    operator.truediv: Kind.GATE,
    torch.div: Kind.GATE,
}
METHOD_KINDS: dict[str, Kind] = {
    **{m: Kind.PASS for m in ("relu", "sigmoid", "tanh", "contiguous", "clone", "float", "double", "to")},
    **{
        m: Kind.GRADIENT
        for m in (
            "view",
            "reshape",
            "flatten",
            "permute",
            "squeeze",
            "unsqueeze",
            "transpose",
            "expand",
            "expand_as",
            "view_as",
            "reshape_as",
            "movedim",
            "moveaxis",
        )
    },
    "mean": Kind.NORM,
    "sum": Kind.NORM,
    "add": Kind.ADD,
    "mul": Kind.GATE,
    "div": Kind.GATE,
}
UPSAMPLING_MODULES = (nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
# The same ops in an exported (.pt2) program's aten graph, by operator name.
ATEN_KINDS: dict[str, Kind] = {
    **{
        name: Kind.PASS
        for name in (
            "relu",
            "leaky_relu",
            "prelu",
            "_prelu_kernel",
            "relu6",
            "hardtanh",
            "elu",
            "selu",
            "celu",
            "silu",
            "gelu",
            "mish",
            "softplus",
            "sigmoid",
            "tanh",
            "hardswish",
            "hardsigmoid",
            "dropout",
            "feature_dropout",
            "alpha_dropout",
            "feature_alpha_dropout",
            "clone",
            "contiguous",
            "alias",
            "_to_copy",
            "to",
            "type_as",
        )
    },
    **{
        name: Kind.GRADIENT
        for name in (
            "max_pool1d",
            "max_pool2d",
            "max_pool3d",
            "max_pool2d_with_indices",
            "max_pool3d_with_indices",
            "adaptive_max_pool1d",
            "adaptive_max_pool2d",
            "adaptive_max_pool3d",
            "cat",
            "concat",
            "stack",
            "view",
            "reshape",
            "_unsafe_view",
            "flatten",
            "permute",
            "transpose",
            "movedim",
            "t",
            "squeeze",
            "unsqueeze",
            "expand",
            "slice",
            "select",
            "pad",
            "constant_pad_nd",
        )
    },
    **{
        name: Kind.NORM
        for name in (
            "upsample_nearest1d",
            "upsample_nearest2d",
            "upsample_nearest3d",
            "upsample_linear1d",
            "upsample_bilinear2d",
            "upsample_trilinear3d",
            "_upsample_nearest_exact1d",
            "_upsample_nearest_exact2d",
            "_upsample_nearest_exact3d",
            "avg_pool1d",
            "avg_pool2d",
            "avg_pool3d",
            "adaptive_avg_pool1d",
            "adaptive_avg_pool2d",
            "adaptive_avg_pool3d",
            "_adaptive_avg_pool2d",
            "_adaptive_avg_pool3d",
            "mean",
            "sum",
        )
    },
    "add": Kind.ADD,
    "mul": Kind.GATE,
    "div": Kind.GATE,
}
ATEN_GATES = ("sigmoid", "hardsigmoid", "_softmax", "softmax", "tanh")
ATEN_SHAPES = ("view", "reshape", "_unsafe_view", "expand", "squeeze", "unsqueeze", "flatten", "clone", "alias")
ATEN_SKIPPED = ("_assert_tensor_metadata", "_assert_scalar", "_assert_async", "sym_size", "sym_numel", "sym_stride")


def aten_name(node: fx.Node) -> str | None:
    """'conv2d' for a call of torch.ops.aten.conv2d.<overload>; None for anything else."""
    target = node.target
    if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
        return None
    namespace, _, name = target._schema.name.partition("::")
    return name if namespace == "aten" else None


def upsamples(node: fx.Node, module: nn.Module | None) -> bool:
    """Upsample/interpolate or a transposed convolution: what starts a decoder."""
    if isinstance(module, (*UPSAMPLING_MODULES, nn.modules.conv._ConvTransposeNd)):
        return True
    return node.target in (F.interpolate, F.upsample) or (aten_name(node) or "").startswith(("upsample", "_upsample"))


INPLACE_FUNCTIONS = {
    operator.iadd: operator.add,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
    torch.relu_: torch.relu,
    torch.sigmoid_: torch.sigmoid,
}
INPLACE_METHODS = {
    "relu_": "relu",
    "add_": "add",
    "mul_": "mul",
    "div_": "div",
    "sigmoid_": "sigmoid",
    "tanh_": "tanh",
}
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
    """Symbolically trace a copy of `model` (eval mode) with in-place ops made out-of-place.

    A GraphModule (e.g. an exported program's module) is copied, not traced again.
    Functional conv/linear/norm calls on constant parameters become modules.
    """
    model = _eval(copy.deepcopy(model))
    for m in model.modules():
        if getattr(m, "inplace", False):
            m.inplace = False
    if isinstance(model, fx.GraphModule):
        gm = model
    else:
        try:
            gm = fx.symbolic_trace(model)
        except Exception as exc:  # fx raises many types; the message is what matters
            raise TraceError(
                f"the model cannot be traced with torch.fx ({type(exc).__name__}: {exc}); data-dependent Python "
                "control flow is not supported"
            ) from exc
    return _canonical(gm)


def export_graph(model: nn.Module, example: Tensor) -> fx.GraphModule:
    """The aten graph of `model` exported (torch.export, non-strict) at `example`'s shape.

    For models torch.fx cannot trace faithfully (Python control flow on shapes,
    isinstance checks on tensors): the graph holds for inputs of this shape only.
    """
    model = _eval(copy.deepcopy(model))
    try:
        program = torch.export.export(model, (example.detach(),), strict=False)
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:300]
        raise UnsupportedOperationError(
            f"the model can be neither traced with torch.fx nor exported ({type(exc).__name__}: {first})"
        ) from exc
    return _canonical(program.module())


def _out_of_place(target: torch._ops.OpOverload) -> torch._ops.OpOverload | None:
    """aten.relu_.default -> aten.relu.default (None if `target` is not an in-place aten op)."""
    namespace, _, name = target._schema.name.partition("::")
    if namespace != "aten" or not name.endswith("_") or name.startswith("_"):
        return None
    packet = getattr(torch.ops.aten, name[:-1], None)
    return getattr(packet, target._overloadname, None) if packet is not None else None


def _canonical(gm: fx.GraphModule) -> fx.GraphModule:
    for node in gm.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            node.target = _out_of_place(node.target) or node.target
        if node.op == "call_function" and node.target in INPLACE_FUNCTIONS:
            node.target = INPLACE_FUNCTIONS[node.target]
        elif node.op == "call_method" and node.target in INPLACE_METHODS:
            node.target = INPLACE_METHODS[node.target]
        if "inplace" in node.kwargs:
            node.kwargs = {**node.kwargs, "inplace": False}
    gm.recompile()
    modularize(gm)
    return _eval(gm)


def _eval(model: M) -> M:
    """Eval mode without calling .eval() (an exported program's module refuses it)."""
    for m in model.modules():
        m.training = False
    return model


def fold_batchnorm(gm: fx.GraphModule) -> None:
    """Fold each BatchNorm into the Conv/Linear that feeds it (exact, eps included).

    A BatchNorm that does not directly follow a layer used only by it stays in the
    graph: it is then a normalisation node (Kind.STATS) with its running statistics.
    """
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), BATCHNORM_MODULES):
            continue
        bn = gm.get_submodule(node.target)
        src = node.args[0]
        src_mod = gm.get_submodule(src.target) if isinstance(src, fx.Node) and src.op == "call_module" else None
        if not isinstance(src_mod, PARAM_MODULES) or len(src.users) != 1 or bn.running_mean is None:
            continue
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


SHAPE_FUNCTIONS = (torch.reshape, torch.flatten, torch.squeeze, torch.unsqueeze, operator.getitem)
SHAPE_METHODS = ("view", "reshape", "flatten", "squeeze", "unsqueeze", "expand", "expand_as", "view_as", "contiguous")


def is_gate(node: fx.Node, gm: fx.GraphModule) -> bool:
    """Whether `node` is the output of a sigmoid-like op (seen through reshapes and expands)."""
    while True:
        if node.op == "call_module":
            return isinstance(gm.get_submodule(str(node.target)), GATE_MODULES)
        if node.op == "call_function" and (node.target in GATE_FUNCTIONS or aten_name(node) in ATEN_GATES):
            return True
        if node.op == "call_method" and node.target in GATE_METHODS:
            return True
        shape_op = (
            node.op == "call_function" and (node.target in SHAPE_FUNCTIONS or aten_name(node) in ATEN_SHAPES)
        ) or (node.op == "call_method" and node.target in SHAPE_METHODS)
        if not shape_op or not node.args or not isinstance(node.args[0], fx.Node):
            return False
        node = node.args[0]


def gated_operand(node: fx.Node, gm: fx.GraphModule, carries: set[fx.Node]) -> fx.Node | None:
    """For x * g, x * c or x / c: the operand x that receives all relevance (None: not a gate)."""
    operands = list(node.args[:2])
    carrying = [a for a in operands if isinstance(a, fx.Node) and a in carries]
    is_div = node.target in (operator.truediv, torch.div) or node.target == "div" or aten_name(node) == "div"
    if is_div:
        return operands[0] if carrying == [operands[0]] else None  # x / constant only
    if len(carrying) == 1:
        return carrying[0]  # x * constant
    gates = [a for a in carrying if is_gate(a, gm)]
    if len(carrying) == 2 and len(gates) == 1:
        return next(a for a in carrying if a is not gates[0])
    return None


def classify(node: fx.Node, gm: fx.GraphModule, carries: set[fx.Node]) -> Kind:
    """The Kind of a relevance-carrying node, or UnsupportedOperationError naming it."""
    if node.op == "placeholder":
        return Kind.INPUT
    if node.op == "output":
        return Kind.OUTPUT
    kind: Kind | None = None
    if node.op == "call_module":
        mod = gm.get_submodule(str(node.target))
        kind = Kind.PARAM if isinstance(mod, PARAM_MODULES) else module_kind(mod)
    elif node.op == "call_function":
        kind = FUNCTION_KINDS.get(node.target)
        if kind is None:
            kind = ATEN_KINDS.get(aten_name(node))
    elif node.op == "call_method":
        kind = METHOD_KINDS.get(str(node.target))
    if kind is Kind.ADD and not _is_tensor_add(node, carries):
        kind = None  # adding a constant or scaling is not a relevance-preserving merge
    if kind is Kind.GATE and gated_operand(node, gm, carries) is None:
        kind = None  # a product of two tensors neither of which is a gate
    if node.target is F.pad and node.kwargs.get("mode", "constant") != "constant":
        kind = None
    if kind is None:
        raise UnsupportedOperationError(
            f"LRP has no rule for {describe(node, gm)}. Supported: Conv/ConvTranspose/Linear (BatchNorm folded), "
            "Batch/Instance/Group/LayerNorm, elementwise activations (ReLU, PReLU, ELU, SELU, SiLU, GELU, Sigmoid, "
            "Tanh, ...), max/avg/adaptive pooling, Upsample/interpolate, cat, slicing, pad, a + b of two tensors, "
            "x * gate (sigmoid-like) or x * constant, flatten/reshape/view"
        )
    return kind


def module_kind(module: nn.Module) -> Kind | None:
    """The Kind of a leaf module, by its class or the nearest base class we know."""
    return next((MODULE_KINDS[t] for t in type(module).__mro__ if t in MODULE_KINDS), None)


def receiving_inputs(
    node: fx.Node, kind: Kind, inputs: list[fx.Node], gm: fx.GraphModule, carries: set[fx.Node]
) -> list[fx.Node]:
    """The inputs that receive relevance from `node` (a gate's gate gets none)."""
    if kind is Kind.GATE:
        return [gated_operand(node, gm, carries)]
    if kind in (Kind.PASS, Kind.NORM, Kind.STATS, Kind.PARAM):
        first = node.args[0] if node.args else None
        return [first] if isinstance(first, fx.Node) and first in carries else inputs[:1]
    return inputs


def output_source(value: object) -> object:
    """The logits in a model's output: a tensor, `out` of a dict (torchvision), or the first of a tuple."""
    if isinstance(value, dict):
        if "out" in value:
            return value["out"]
        if len(value) == 1:
            return next(iter(value.values()))
        raise UnsupportedOperationError(f"the model returns a dict without an 'out' entry: keys {sorted(value)}")
    if isinstance(value, (tuple, list)):
        if not value:
            raise UnsupportedOperationError("the model returns an empty tuple")
        return output_source(value[0])
    return value


def _roles(infos: dict[fx.Node, NodeInfo], gm: fx.GraphModule) -> None:
    """Mark first/decoder/head layers and number the encoder layers in data-flow order."""
    before_param: dict[fx.Node, bool] = {}
    before_up: dict[fx.Node, bool] = {}
    for node, info in infos.items():
        before_param[node] = any(before_param[i] or infos[i].kind is Kind.PARAM for i in info.inputs)
        before_up[node] = upsamples(node, info.module) or any(before_up[i] for i in info.inputs)
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
    """Classify every node that relevance flows through (topological order) and assign roles.

    Nodes fed by the input but whose relevance goes nowhere (a gate's branch, an
    auxiliary output) need no rule; an unsupported op on the relevance path fails here.
    """
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedOperationError(f"the model must take exactly one input tensor, it takes {len(placeholders)}")
    carries: set[fx.Node] = set(placeholders)
    found: dict[fx.Node, tuple[Kind | UnsupportedOperationError, list[fx.Node]]] = {}
    for node in gm.graph.nodes:
        inputs = [i for i in node.all_input_nodes if i in carries]
        if node.op != "placeholder" and not inputs:
            continue  # shapes, sizes, constants: no relevance flows here
        if node.op == "call_function" and (node.target is getattr or aten_name(node) in ATEN_SKIPPED):
            continue  # x.shape, x.dtype, assertions, ...
        if node.op == "call_method" and node.target in NON_TENSOR_METHODS:
            continue
        if node.op == "call_module" and str(node.target).startswith("_guards"):
            continue  # torch.export's input guards
        if node.op == "output":
            source = output_source(node.args[0])
            if not isinstance(source, fx.Node) or source not in carries:
                raise UnsupportedOperationError("the model's output does not depend on its input")
            found[node] = (Kind.OUTPUT, [source])
            break
        carries.add(node)
        try:
            kind: Kind | UnsupportedOperationError = classify(node, gm, carries)
            receivers = receiving_inputs(node, kind, inputs, gm, carries)  # type: ignore[arg-type]
        except UnsupportedOperationError as exc:
            kind, receivers = exc, inputs
        found[node] = (kind, receivers)
    reached = _reaching_output(found)
    infos: dict[fx.Node, NodeInfo] = {}
    for node, (kind, receivers) in found.items():
        if node not in reached:
            continue
        if isinstance(kind, UnsupportedOperationError):
            raise kind
        module = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
        layer = Layer(module) if kind is Kind.PARAM else None
        infos[node] = NodeInfo(node, kind, receivers, layer, module)
    _roles(infos, gm)
    return infos


def _reaching_output(found: dict[fx.Node, tuple[object, list[fx.Node]]]) -> set[fx.Node]:
    """Nodes from which relevance reaches the output, following receiving inputs backwards."""
    reached: set[fx.Node] = set()
    for node in reversed(list(found)):
        if found[node][0] is Kind.OUTPUT:
            reached.add(node)
        if node in reached:
            reached.update(found[node][1])
    return reached


# Ops whose output is >= 0 whatever their input, and ops that keep an input's sign (>= 0 in, >= 0 out).
NONNEG_MODULES = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Hardsigmoid, nn.Softplus)
NONNEG_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.sigmoid, torch.sigmoid, F.hardsigmoid, F.softplus)
NONNEG_METHODS = ("relu", "sigmoid")
SIGN_KEEPING_MODULES = (
    *MAX_POOLS,
    *AVG_POOLS,
    nn.Flatten,
    nn.ZeroPad1d,
    nn.ZeroPad2d,
    nn.ZeroPad3d,
    *IDENTITY_MODULES,
)
SIGN_KEEPING_FUNCTIONS = (
    torch.cat,
    torch.concat,
    torch.flatten,
    torch.reshape,
    operator.getitem,
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
)
SIGN_KEEPING_METHODS = ("view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze", "permute", "clone")


def nonnegative_nodes(gm: fx.GraphModule, infos: dict[fx.Node, NodeInfo]) -> set[fx.Node]:
    """Relevance-carrying nodes whose value is >= 0 for every input (ReLU outputs and
    pooling, cat, slicing or zero-padding of such): the rules skip their x- terms."""
    found: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if node not in infos or node.op in ("placeholder", "output"):
            continue
        module = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
        if (
            isinstance(module, NONNEG_MODULES)
            or (node.op == "call_function" and node.target in NONNEG_FUNCTIONS)
            or (node.op == "call_method" and node.target in NONNEG_METHODS)
        ):
            found.add(node)
            continue
        keeps_sign = (
            isinstance(module, SIGN_KEEPING_MODULES)
            or (node.op == "call_function" and node.target in SIGN_KEEPING_FUNCTIONS)
            or (node.op == "call_method" and node.target in SIGN_KEEPING_METHODS)
            or (node.op == "call_function" and node.target is F.pad and _zero_pad(node))
        )
        first = node.args[0] if node.args else None
        operands = list(first) if isinstance(first, (list, tuple)) else [first]  # cat: every part
        if keeps_sign and all(isinstance(a, fx.Node) and a in found for a in operands):
            found.add(node)
    return found


def _zero_pad(node: fx.Node) -> bool:
    mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
    value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else None)
    return mode == "constant" and (value is None or value == 0)
