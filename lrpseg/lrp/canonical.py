"""Functional layers made modules, so every architecture reaches the engine in one form.

Some networks call `F.conv2d(x, self.weight, ...)` themselves (efficientnet's
"same"-padding convs, timm's BatchNorm-act layers), and an exported program (.pt2)
is nothing but such calls (`aten.conv2d`, `aten.batch_norm`, `aten.instance_norm`,
...) on parameters read with `get_attr`. Each such call whose parameters are
constants of the graph is replaced by the equivalent torch.nn module (same
tensors), named after its parameters (`encoder.conv1` for `encoder.conv1.weight`),
so the rules, BatchNorm folding and rule maps treat them like any Conv/BN layer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

CONV_FUNCTIONS: dict[Any, tuple[int, bool]] = {
    F.conv1d: (1, False),
    F.conv2d: (2, False),
    F.conv3d: (3, False),
    F.conv_transpose1d: (1, True),
    F.conv_transpose2d: (2, True),
    F.conv_transpose3d: (3, True),
}
CONV_MODULES = {
    (1, False): nn.Conv1d,
    (2, False): nn.Conv2d,
    (3, False): nn.Conv3d,
    (1, True): nn.ConvTranspose1d,
    (2, True): nn.ConvTranspose2d,
    (3, True): nn.ConvTranspose3d,
}


class AnyBatchNorm(nn.BatchNorm2d):
    """BatchNorm for an input of any rank (built from a functional call of unknown rank)."""

    def _check_input_dim(self, input: Tensor) -> None:
        pass


class AnyInstanceNorm(nn.InstanceNorm2d):
    """InstanceNorm for an input of any rank."""

    def forward(self, input: Tensor) -> Tensor:
        return F.instance_norm(input, None, None, self.weight, self.bias, True, 0.0, self.eps)


# Parameter names of functions whose signature Python cannot inspect (C builtins).
BUILTIN_PARAMS: dict[Any, tuple[str, ...]] = {
    **dict.fromkeys(
        (F.conv1d, F.conv2d, F.conv3d), ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    ),
    **dict.fromkeys(
        (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d),
        ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation"),
    ),
}


def _bind(fn: Callable, node: fx.Node) -> dict[str, Any]:
    """The call's arguments by parameter name (defaults filled in where known)."""
    if fn in BUILTIN_PARAMS:
        return {**dict(zip(BUILTIN_PARAMS[fn], node.args)), **node.kwargs}
    bound = inspect.signature(fn).bind(*node.args, **node.kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _aten_bind(node: fx.Node) -> dict[str, Any]:
    """An aten call's arguments by schema name (defaults filled in)."""
    schema = node.target._schema  # type: ignore[union-attr]
    values: dict[str, Any] = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args):
            values[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            values[arg.name] = node.kwargs[arg.name]
        else:
            values[arg.name] = arg.default_value if arg.has_default_value() else None
    return values


def _constant(gm: fx.GraphModule, value: Any) -> Tensor | bool | None:
    """The tensor a get_attr node reads; None for None; False if the value is computed."""
    if value is None:
        return None
    if not isinstance(value, fx.Node) or value.op != "get_attr":
        return False
    obj: Any = gm
    for part in str(value.target).split("."):
        obj = getattr(obj, part)
    return obj if isinstance(obj, Tensor) else False


def _param(t: Tensor | None) -> nn.Parameter | None:
    return None if t is None else nn.Parameter(t.detach(), requires_grad=False)


def _ints(value: Any, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (int(value),) * n


def _conv(gm: fx.GraphModule, a: dict[str, Any], dims: int, transposed: bool) -> nn.Module | None:
    weight, bias = _constant(gm, a.get("weight")), _constant(gm, a.get("bias"))
    a = {k: v for k, v in a.items() if v is not None}
    if weight is False or weight is None or bias is False or isinstance(a.get("padding"), str):
        return None
    groups = int(a.get("groups") or 1)
    out_ch = weight.shape[1] * groups if transposed else weight.shape[0]
    in_ch = weight.shape[0] if transposed else weight.shape[1] * groups
    kwargs: dict[str, Any] = {
        "stride": _ints(a.get("stride", 1), dims),
        "padding": _ints(a.get("padding", 0), dims),
        "dilation": _ints(a.get("dilation", 1), dims),
        "groups": groups,
        "bias": bias is not None,
    }
    if transposed:
        kwargs["output_padding"] = _ints(a.get("output_padding", 0), dims)
    module = CONV_MODULES[(dims, transposed)](in_ch, out_ch, tuple(weight.shape[2:]), **kwargs)
    module.weight, module.bias = _param(weight), _param(bias)  # type: ignore[assignment]
    return module


def _linear(gm: fx.GraphModule, a: dict[str, Any]) -> nn.Module | None:
    weight, bias = _constant(gm, a.get("weight")), _constant(gm, a.get("bias"))
    if weight is False or weight is None or bias is False:
        return None
    module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    module.weight, module.bias = _param(weight), _param(bias)  # type: ignore[assignment]
    return module


def _norm_affine(module: nn.Module, weight: Any, bias: Any) -> nn.Module:
    module.weight, module.bias = _param(weight), _param(bias)  # type: ignore[assignment]
    return module


def _batch_norm(gm: fx.GraphModule, a: dict[str, Any]) -> nn.Module | None:
    values = [_constant(gm, a.get(k)) for k in ("weight", "bias", "running_mean", "running_var")]
    if any(v is False for v in values) or values[2] is None or a.get("training"):
        return None
    weight, bias, mean, var = values
    module = AnyBatchNorm(mean.shape[0], eps=float(a.get("eps", 1e-5)), affine=weight is not None)
    module.running_mean, module.running_var = mean.detach(), var.detach()  # type: ignore[union-attr]
    return _norm_affine(module, weight, bias).eval()


def _instance_norm(gm: fx.GraphModule, a: dict[str, Any]) -> nn.Module | None:
    weight, bias = _constant(gm, a.get("weight")), _constant(gm, a.get("bias"))
    if weight is False or bias is False or not a.get("use_input_stats", True):
        return None
    channels = weight.shape[0] if weight is not None else int(a.get("channels") or 1)
    module = AnyInstanceNorm(channels, eps=float(a.get("eps", 1e-5)), affine=weight is not None)
    return _norm_affine(module, weight, bias).eval()


def _group_norm(gm: fx.GraphModule, a: dict[str, Any]) -> nn.Module | None:
    weight, bias = _constant(gm, a.get("weight")), _constant(gm, a.get("bias"))
    if weight is False or bias is False:
        return None
    channels = weight.shape[0] if weight is not None else int(a["num_groups"])
    module = nn.GroupNorm(int(a["num_groups"]), channels, eps=float(a.get("eps", 1e-5)), affine=weight is not None)
    return _norm_affine(module, weight, bias)


def _layer_norm(gm: fx.GraphModule, a: dict[str, Any]) -> nn.Module | None:
    weight, bias = _constant(gm, a.get("weight")), _constant(gm, a.get("bias"))
    if weight is False or bias is False:
        return None
    module = nn.LayerNorm(list(a["normalized_shape"]), eps=float(a.get("eps", 1e-5)), bias=bias is not None)
    module.elementwise_affine = weight is not None
    return _norm_affine(module, weight, bias)


def _aten_module(gm: fx.GraphModule, name: str, a: dict[str, Any]) -> nn.Module | None:
    if name in ("conv1d", "conv2d", "conv3d"):
        return _conv(gm, a, int(name[4]), False)
    if name in ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"):
        return _conv(gm, a, int(name[14]), True)
    if name == "convolution":
        weight = _constant(gm, a.get("weight"))
        dims = weight.dim() - 2 if isinstance(weight, Tensor) else 2
        return _conv(gm, a, dims, bool(a.get("transposed")))
    if name == "linear":
        return _linear(gm, {"weight": a.get("weight"), "bias": a.get("bias")})
    if name == "batch_norm":
        return _batch_norm(gm, a)
    if name == "instance_norm":
        return _instance_norm(gm, a)
    if name == "group_norm":
        return _group_norm(gm, a)
    if name == "layer_norm":
        return _layer_norm(gm, a)
    return None


def _functional_module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The module equivalent to a functional call, or None (not one we convert)."""
    target = node.target
    if target in CONV_FUNCTIONS:
        dims, transposed = CONV_FUNCTIONS[target]
        return _conv(gm, _bind(target, node), dims, transposed)  # type: ignore[arg-type]
    if target is F.linear:
        return _linear(gm, _bind(F.linear, node))
    if target is F.batch_norm:
        return _batch_norm(gm, _bind(F.batch_norm, node))
    if target is F.instance_norm:
        return _instance_norm(gm, _bind(F.instance_norm, node))
    if target is F.group_norm:
        return _group_norm(gm, _bind(F.group_norm, node))
    if target is F.layer_norm:
        return _layer_norm(gm, _bind(F.layer_norm, node))
    if isinstance(target, torch._ops.OpOverload):
        namespace, _, name = target._schema.name.partition("::")
        if namespace == "aten":
            return _aten_module(gm, name, _aten_bind(node))
    return None


def _free_name(gm: fx.GraphModule, node: fx.Node) -> str:
    """A module name from the parameter the call reads (`a.b.weight` -> `a.b`), not yet taken."""
    source = next((a for a in node.all_input_nodes if a.op == "get_attr"), None)
    base = str(source.target).rpartition(".")[0] if source is not None else ""
    base = base or node.name
    name, i = base, 0
    while _taken(gm, name) and not _replaceable(gm, name):
        i += 1
        name = f"{base}_lrp{i}"
    return name


def _taken(gm: fx.GraphModule, name: str) -> bool:
    obj: Any = gm
    for part in name.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def _replaceable(gm: fx.GraphModule, name: str) -> bool:
    """An exported program's plain holder of parameters (no children, never called) may be replaced."""
    try:
        obj = gm.get_submodule(name)
    except AttributeError:
        return False
    called = any(n.op == "call_module" and n.target == name for n in gm.graph.nodes)
    return type(obj) is nn.Module and not list(obj.children()) and not called


def _install(gm: fx.GraphModule, name: str, module: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent: Any = gm
    for part in parent_name.split(".") if parent_name else []:
        if not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
    if not isinstance(parent, nn.Module):
        raise ValueError(name)
    parent.add_module(leaf, module)


def modularize(gm: fx.GraphModule) -> None:
    """Replace functional conv/linear/norm calls on constant parameters with modules."""
    changed = False
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        module = _functional_module(gm, node)
        if isinstance(module, AnyInstanceNorm) and not module.affine and "val" in node.meta:
            module.num_features = int(node.meta["val"].shape[1])
        if module is None:
            continue
        name = _free_name(gm, node)
        _install(gm, name, module.eval())
        x = node.args[0] if node.args else node.kwargs.get("input")
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(name, (x,))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        changed = True
    if changed:
        for node in list(gm.graph.nodes):
            if node.op == "get_attr" and not node.users:
                gm.graph.erase_node(node)
        gm.graph.lint()
        gm.recompile()
