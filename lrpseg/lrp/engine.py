"""One recorded forward pass, then one backward sweep of relevance over the traced graph."""

from __future__ import annotations

import operator
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from lrpseg.heap import release_heap
from lrpseg.lrp import pool_codes
from lrpseg.lrp.composites import Bounds, rule_map
from lrpseg.lrp.errors import RuleError, TraceError
from lrpseg.lrp.graph import (
    Kind,
    NodeInfo,
    analyse,
    aten_name,
    export_graph,
    fold_batchnorm,
    nonnegative_nodes,
    output_source,
    trace,
)
from lrpseg.lrp.norms import sigma_constant_vjp
from lrpseg.lrp.rules import Norm, Pass, Rule, stabilize
from lrpseg.lrp.strips import (
    WINDOW_LEVELS,
    WINDOW_PIXELS,
    StripPlan,
    backward_segment,
    forward_segment,
    meta_shapes,
    plan_strips,
)
from lrpseg.precision import forward_precision, widen, widened_logits

NORM_EPS = 1e-6
Rules = str | Mapping[str, Rule]


@dataclass(frozen=True)
class Dropped:
    """Where a recorded value was freed: only its shape is left (cat and gates read shapes)."""

    shape: torch.Size


class Env(dict[fx.Node, Any]):
    """The recorded values of a lean forward pass, and the max-pool indices it kept."""

    def __init__(self) -> None:
        super().__init__()
        self.indices: dict[fx.Node, Tensor] = {}


POOL_WITH_INDICES: dict[type, Callable[..., Any]] = {
    nn.MaxPool1d: F.max_pool1d,
    nn.MaxPool2d: F.max_pool2d,
    nn.MaxPool3d: F.max_pool3d,
}
UNPOOL: dict[type, Callable[..., Tensor]] = {
    nn.MaxPool1d: F.max_unpool1d,
    nn.MaxPool2d: F.max_unpool2d,
    nn.MaxPool3d: F.max_unpool3d,
}
CONV_2D = (nn.Conv2d, nn.ConvTranspose2d)
PADS = (nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d)


def _unpoolable(info: NodeInfo) -> bool:
    """A max-pool of non-overlapping windows: its gradient is an unpooling by the forward's indices."""
    m = info.module
    if type(m) not in POOL_WITH_INDICES or m.return_indices or m.ceil_mode:  # type: ignore[union-attr]
        return False
    dims = int(type(m).__name__[-2])
    k, s, p, d = (_tuple(getattr(m, a), dims) for a in ("kernel_size", "stride", "padding", "dilation"))
    return k == s and set(p) == {0} and set(d) == {1}


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * n


def _unpool(module: Any, r: Tensor, indices: Tensor, shape: torch.Size) -> Tensor:
    """r routed back to the positions the max-pool picked (each input position gets at most one);
    `indices` as torch gives them or as int8 window offsets (pool_codes)."""
    dims = len(shape) - 2
    if indices.dtype == torch.int8:
        indices = pool_codes.expand(indices, tuple(shape[-dims:]), _tuple(module.kernel_size, dims))
    return UNPOOL[type(module)](r, indices, module.kernel_size, module.stride, output_size=list(shape[-dims:]))


def _compact(module: Any, indices: Tensor, shape: torch.Size) -> Tensor:
    """A max-pool's many indices as int8 window offsets where they fit (1 byte per pooled value, not 8)."""
    dims = len(shape) - 2
    kernel = _tuple(module.kernel_size, dims)
    return pool_codes.compact(indices, tuple(shape[-dims:]), kernel) if pool_codes.worth(indices, kernel) else indices


@dataclass
class Propagation:
    relevance: Tensor  # shape of x
    logits: Tensor
    r_out: Tensor
    bias: Tensor  # (N,) relevance absorbed by biases
    stabilizer: Tensor | None = None  # (N,) relevance absorbed by the rules' stabilisers


class PreparedModel:
    """A model traced and BN-folded once; derived weights are cached on its layers.

    With `example`, the model is exported (torch.export) at that input's shape
    instead of traced with torch.fx: `shape` then names the only input shape it serves.
    """

    def __init__(self, model: nn.Module, example: Tensor | None = None) -> None:
        self.gm = trace(model) if example is None else export_graph(model, example)
        self.shape: tuple[int, ...] | None = None if example is None else tuple(example.shape)
        fold_batchnorm(self.gm)
        self.infos: dict[fx.Node, NodeInfo] = analyse(self.gm)
        # 2-D convolutions run channels-last: oneDNN's native layout, no reorder copies of
        # inputs and outputs (measured: 2-5x faster and ~100 B/px less transient memory at
        # 1024² on 8-16 channels, docs/lrp.md). Not where an InstanceNorm sits between them: its
        # kernel makes every input contiguous, and each conv then reorders it back (a MONAI
        # U-Net's ε sweep: 169 ms channels-last, 147 ms contiguous, a gradient 100 ms).
        modules = list(self.gm.modules())
        self.channels_last = any(isinstance(m, CONV_2D) for m in modules) and not any(
            isinstance(m, nn.modules.instancenorm._InstanceNorm) for m in modules
        )
        for m in modules if self.channels_last else ():
            if isinstance(m, CONV_2D):
                m.to(memory_format=torch.channels_last)
        # get_submodule walks the dotted name: ~0.1 ms a call on MONAI's deep names, per node run
        self._modules = dict(self.gm.named_modules(remove_duplicate=False))
        self.by_name = {info.name: info for info in self.infos.values()}
        self.param_names = [i.name for i in self.infos.values() if i.kind is Kind.PARAM]
        self._rule_cache: dict[tuple, dict[str, Rule]] = {}
        nodes = list(self.gm.graph.nodes)
        self._position = {node: i for i, node in enumerate(nodes)}
        self._last_forward_use: dict[fx.Node, int] = {}
        for i, node in enumerate(nodes):
            for inp in node.all_input_nodes:
                self._last_forward_use[inp] = i
        self.nonneg: set[fx.Node] = nonnegative_nodes(self.gm, self.infos)
        self.unpool: set[fx.Node] = {n for n, i in self.infos.items() if _unpoolable(i)}
        self.window_pixels = WINDOW_PIXELS  # full-resolution layers run in windows of this many core pixels
        self.window_levels = WINDOW_LEVELS  # resolutions windowed (full, half, ...)
        self._shapes: dict[tuple[Any, ...], dict[fx.Node, torch.Size]] = {}

    # --- forward -------------------------------------------------------------
    def _layout(self, x: Tensor) -> Tensor:
        """x in the memory format the prepared convolutions run in (values unchanged)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def forward(self, x: Tensor, *, grad: bool = False) -> tuple[dict[fx.Node, Any], Tensor]:
        """Run the folded graph, keeping every node's value (the activations rules need)."""
        env: dict[fx.Node, Any] = {}
        x = self._layout(x)
        out: Any = None
        with torch.set_grad_enabled(grad):
            for node in self.gm.graph.nodes:
                if node.op == "placeholder":
                    env[node] = x
                elif node.op == "output":
                    out = output_source(fx.node.map_arg(node.args[0], lambda n: env[n]))
                else:
                    env[node] = self._run(node, env)
        if not isinstance(out, Tensor):
            raise RuleError("the model must return a tensor of logits (or a dict with 'out', or a tuple)")
        return env, out

    def forward_lean(
        self, x: Tensor, keep: set[fx.Node], strips: StripPlan | None = None
    ) -> tuple[dict[fx.Node, Any], Tensor]:
        """Run the folded graph keeping only the values in `keep` (what the sweep reads) and
        the non-tensor values (sizes, constants). Every other tensor is freed after its last
        forward use; the parts of a `cat` that are kept become views of its output (one copy).
        With `strips`, each segment's nodes are evaluated in windows and only what the rest of
        the graph reads of them is made whole (the others are left as shapes)."""
        env = Env()
        out: Any = None
        last_use = self._last_forward_use
        x = self._layout(x)
        with torch.no_grad():
            for i, node in enumerate(self.gm.graph.nodes):
                if node.op == "placeholder":
                    env[node] = x
                elif node.op == "output":
                    out = output_source(fx.node.map_arg(node.args[0], lambda n: env[n]))
                elif strips is not None and node in strips.member:
                    self._forward_segment(node, env, strips)
                elif node in self.unpool:
                    module = self.infos[node].module
                    pooled = env[node.args[0]]
                    value, indices = POOL_WITH_INDICES[type(module)](
                        pooled, module.kernel_size, module.stride, return_indices=True
                    )
                    env.indices[node] = _compact(module, indices, pooled.shape)
                    env[node] = value
                    del pooled, indices
                else:
                    value = env[node] = self._run(node, env)
                    if node.target in (torch.cat, torch.concat) and isinstance(value, Tensor):
                        self._view_parts(node, env, value, keep)
                for inp in node.all_input_nodes:
                    value = env.get(inp)
                    if last_use[inp] == i and inp not in keep and isinstance(value, Tensor):
                        env[inp] = Dropped(value.shape)
        if not isinstance(out, Tensor):
            raise RuleError("the model must return a tensor of logits (or a dict with 'out', or a tuple)")
        return env, out

    def _forward_segment(self, node: fx.Node, env: dict[fx.Node, Any], strips: StripPlan) -> None:
        """At a segment's first node: its exports made whole, its other values left as shapes."""
        segment = strips.member[node]
        if node is not segment.nodes[0]:
            return
        made: dict[fx.Node, Tensor] = {}
        roots = {r: self._recompute(r, env, made) for r in segment.roots}
        whole = forward_segment(self, segment, strips, roots)
        del roots, made
        for n in segment.nodes:
            env[n] = whole[n] if n in whole else Dropped(strips.shapes[n])

    @staticmethod
    def _view_parts(node: fx.Node, env: dict[fx.Node, Any], value: Tensor, keep: set[fx.Node]) -> None:
        """Kept inputs of a cat become views of its output, so their own storage can go."""
        parts = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if not isinstance(parts, (list, tuple)) or not isinstance(dim, int):
            return
        offset = 0
        for part in parts:
            t = env.get(part) if isinstance(part, fx.Node) else None
            if not isinstance(t, Tensor):
                return
            if part in keep and t.dim() == value.dim():
                env[part] = value.narrow(dim, offset, t.shape[dim])
            offset += t.shape[dim]

    def reads(self, rules: dict[str, Rule]) -> dict[fx.Node, list[fx.Node]]:
        """The recorded values each backward step reads (per relevance-carrying node)."""
        out: dict[fx.Node, list[fx.Node]] = {}
        for node, info in self.infos.items():
            kind = info.kind
            if kind is Kind.PARAM:
                rule = rules[info.name]
                out[node] = [info.inputs[0], node] if rule.uses_output else [info.inputs[0]]
            elif kind in (Kind.ADD, Kind.NORM, Kind.STATS) or (
                kind is Kind.GRADIENT and node.target not in (torch.cat, torch.concat) and node not in self.unpool
            ):
                out[node] = [node, *node.all_input_nodes]
            else:  # PASS, GATE, cat, max-pool by its indices, INPUT, OUTPUT: shapes at most
                out[node] = []
        return out

    def kept(self, rules: dict[str, Rule], strips: StripPlan | None = None, x: Tensor | None = None) -> set[fx.Node]:
        """What a lean forward keeps: every value some backward step reads, except those
        recomputed on demand, plus what those are recomputed from (and the max-pool indices).
        With the input `x`, small inputs (recomputes(x) False) keep every value read: the sweep
        then finds them recorded and recomputes nothing."""
        reads, _, kept = self.plan(rules, strips)
        if x is not None and not self.recomputes(x):
            return {v for values in reads.values() for v in values}
        return kept

    def recomputes(self, x: Tensor) -> bool:
        """Whether cheap values are recomputed where read instead of kept: where memory counts, for
        inputs of more than window_pixels pixels (all samples). Below, the values a widening
        convolution makes cost a few MB, and keeping them spares the sweep its second run of those
        convolutions (`ours` at 256²: 1.29x -> 1.17x a gradient)."""
        return x.numel() > self.window_pixels * x.shape[1] if x.dim() > 1 else False

    def strips(self, rules: dict[str, Rule], x: Tensor) -> StripPlan | None:
        """The full-resolution segments to evaluate in windows at input `x` (lrpseg.lrp.strips),
        or None where nothing would be windowed (small inputs, non-local rules, other networks)."""
        if x.dim() != 4:
            return None
        if x.shape[-2] * x.shape[-1] <= self.window_pixels:
            return None  # one window at most: nothing to plan (and no shape pass: see meta_shapes)
        return plan_strips(
            self.infos, rules, self.reads(rules), self.shapes(x), self.unpool, self.window_pixels, self.window_levels
        )

    def shapes(self, x: Tensor) -> dict[fx.Node, torch.Size]:
        """Every node's output shape at an input shaped like x (empty where the meta device cannot
        run the graph: then strips plans no windows), cached per shape. The first call in a process
        imports torch's meta kernels (~150 MiB resident, ~2 s): a worker's warm-up makes it at a
        small input, so its first large job does not pay it (pipeline.warm_up)."""
        key = (tuple(x.shape), x.dtype, x.device)
        if key not in self._shapes:
            if len(self._shapes) >= 8:
                self._shapes.pop(next(iter(self._shapes)))
            try:
                named = meta_shapes(self.gm, x)
                self._shapes[key] = {n: named[n.name] for n in self.gm.graph.nodes if n.name in named}
            except (RuntimeError, TypeError, ValueError, NotImplementedError):
                self._shapes[key] = {}
        return self._shapes[key]

    def plan(
        self, rules: dict[str, Rule], strips: StripPlan | None = None
    ) -> tuple[dict[fx.Node, list[fx.Node]], set[fx.Node], set[fx.Node]]:
        """(values each step reads, values recomputed where read, values kept).

        With `strips`, a segment's steps read only the values that enter it (its roots,
        charged to the node the sweep reaches first); its own values are made per window.

        Recomputed rather than kept: elementwise activations and padding of an available
        value (one that is kept anyway, recomputed, or the input), and stride-1
        convolutions of an available value with at least 2x more output than input
        channels (the first layer; each encoder level's widening conv): keeping those
        outputs would cost at least twice what their input does.
        """
        reads = self.reads(rules)
        for segment in strips.segments if strips is not None else ():
            reads.update({n: [] for n in segment.nodes})
            reads[segment.nodes[-1]] = list(segment.roots)
        wanted = {v for values in reads.values() for v in values}
        cheap: set[fx.Node] = set()
        for node, info in self.infos.items():
            if node.op == "placeholder" or not info.inputs:
                continue
            if not all(i.op == "placeholder" or i in cheap or i in wanted for i in info.inputs):
                continue
            module = info.module
            elementwise = info.kind is Kind.PASS and len(node.all_input_nodes) == 1
            padding = info.kind is Kind.GRADIENT and (node.target is F.pad or isinstance(module, PADS))
            widening = (
                isinstance(module, nn.modules.conv._ConvNd)
                and not module.transposed
                and set(module.stride) == {1}
                and module.in_channels * 2 <= module.out_channels
            )
            if elementwise or padding or widening:
                cheap.add(node)
        needed: set[fx.Node] = set()
        stack = [v for v in wanted if v in cheap]
        while stack:
            v = stack.pop()
            if v not in needed:
                needed.add(v)
                stack.extend(i for i in v.all_input_nodes if i in cheap)
        roots = {i for v in needed for i in v.all_input_nodes if i not in needed}
        return reads, needed, (wanted - needed) | roots

    def _recompute(self, node: fx.Node, env: dict[fx.Node, Any], made: dict[fx.Node, Tensor]) -> Tensor:
        """A dropped cheap value, recomputed from the input (kept in `made` for this step only)."""
        value = env[node]
        if not isinstance(value, Dropped):
            return value  # type: ignore[no-any-return]
        if node not in made:
            local = {**env, **{i: self._recompute(i, env, made) for i in node.all_input_nodes if i in self.infos}}
            with torch.no_grad():
                made[node] = self._run(node, local)
        return made[node]

    def _run(self, node: fx.Node, env: dict[fx.Node, Any]) -> Any:
        args = fx.node.map_arg(node.args, lambda n: env[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
        if node.op == "call_module":
            return self._modules[str(node.target)](*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], str(node.target))(*args[1:], **kwargs)
        if node.op == "get_attr":
            obj: Any = self.gm
            for part in str(node.target).split("."):
                obj = getattr(obj, part)
            return obj
        raise RuleError(f"unexpected graph node {node.op}")

    # --- rules ---------------------------------------------------------------
    def resolve(self, rules: Rules, bounds: Bounds) -> dict[str, Rule]:
        """A rule for every parametric layer, from a composite name or a {name: rule} map."""
        if isinstance(rules, str):
            return rule_map(rules, self.infos, bounds)
        unknown = sorted(set(rules) - set(self.by_name) - {"*"})
        if unknown:
            raise RuleError(f"rules name unknown layers {unknown}; parametric layers: {self.param_names}")
        resolved = {n: rules.get(n, rules.get("*")) for n in self.param_names}
        missing = [n for n, r in resolved.items() if r is None]
        if missing:
            raise RuleError(f"no rule for layers {missing}; map them or give a default under '*'")
        for name, rule in rules.items():
            info = self.by_name.get(name)
            if info is not None and info.kind is not Kind.PARAM and not isinstance(rule, (Pass, Norm)):
                raise RuleError(f"rule {rule!r} does not apply to non-parametric layer '{name}'")
        extra = {n: r for n, r in rules.items() if n in self.by_name and n not in resolved}
        return {**resolved, **extra}  # type: ignore[dict-item]

    # --- backward ------------------------------------------------------------
    def backward(
        self,
        env: dict[fx.Node, Any],
        r_out: Tensor,
        rules: dict[str, Rule],
        absorbed: dict[str, Tensor] | None = None,
        *,
        free: bool = False,
        strips: StripPlan | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Relevance at the input and the relevance absorbed by biases, per sample.

        With `absorbed` given, absorbed["stabilizer"] receives (N,) the relevance the
        stabilised denominators kept at parametric, additive and norm steps: what
        entered a step minus what left it minus what its biases took. Every other step
        conserves exactly (pass, gate, cat, max-pool) or is measured (norm layers,
        padding, slicing), so the total is Σ r_out - Σ input relevance - Σ bias - those.
        With `free`, each recorded value is dropped from `env` once the sweep has passed
        its last reader (the sweep can then run only once on this `env`). `strips`: the
        plan `env` was recorded with (forward_lean); each segment is swept in windows.
        """
        out_node = next(n for n in self.infos if n.op == "output")
        source = self.infos[out_node].inputs[0]
        rel: dict[fx.Node, Tensor] = {source: r_out}
        bias = r_out.new_zeros(r_out.shape[0])
        uncounted = torch.zeros(r_out.shape[0], dtype=torch.float64, device=r_out.device)
        first = next(iter(self.infos))
        result: Tensor | None = None
        reads, cheap, _ = self.plan(rules, strips)
        pending: dict[fx.Node, int] = {}
        for node_reads in reads.values() if free else ():
            for v in node_reads:
                pending[v] = pending.get(v, 0) + 1
        for node in reversed(list(self.infos)):
            if strips is not None and node in strips.member:
                self._backward_segment(node, env, rel, rules, strips)
                self._release(node, reads, pending, env)
                continue
            r = rel.pop(node, None)
            if r is None:
                self._release(node, reads, pending, env)
                continue
            info = self.infos[node]
            if info.kind is Kind.INPUT:
                result = r
                continue
            bias_acc: list[Tensor] = []
            made: dict[fx.Node, Tensor] = {}
            for v in reads[node]:
                if v in cheap:
                    self._recompute(v, env, made)
            passed = self._step(info, {**env, **made} if made else env, r, rules, bias_acc)
            del made
            batched = all(t.dim() > 0 and t.shape[0] == len(uncounted) for t in (r, *(t for _, t in passed)))
            if absorbed is not None and batched and (info.kind is Kind.STATS or _lossy_gradient(info)):
                uncounted += _per_sample(r) - sum(
                    (_per_sample(r_in) for _, r_in in passed), torch.zeros_like(uncounted)
                )
            del r
            for inp, r_in in passed:
                rel[inp] = rel[inp] + r_in if inp in rel else r_in
            del passed
            for b in bias_acc:
                bias = bias + b
            self._release(node, reads, pending, env)
            if strips is not None and strips.trim:
                release_heap()  # the windows' freed blocks would otherwise stay resident (lrpseg.heap)
        if result is None:
            result = torch.zeros_like(env[first])
        result = result.contiguous()
        if absorbed is not None:
            kept = _per_sample(r_out) - _per_sample(result) - bias.to(torch.float64) - uncounted
            absorbed["stabilizer"] = kept.to(bias.dtype)
        return result, bias

    def _backward_segment(
        self,
        node: fx.Node,
        env: dict[fx.Node, Any],
        rel: dict[fx.Node, Tensor],
        rules: dict[str, Rule],
        strips: StripPlan,
    ) -> None:
        """At the segment's node the sweep reaches first: the whole segment, in windows."""
        segment = strips.member[node]
        if node is not segment.nodes[-1]:
            return
        made: dict[fx.Node, Tensor] = {}
        roots = {r: self._recompute(r, env, made) for r in segment.roots}
        entering = {n: rel.pop(n) for n in segment.nodes if n in rel}
        leaving = backward_segment(self, segment, strips, roots, entering, rules)
        del roots, made, entering
        for inp, r_in in leaving.items():
            rel[inp] = rel[inp] + r_in if inp in rel else r_in

    @staticmethod
    def _release(
        node: fx.Node, reads: dict[fx.Node, list[fx.Node]], pending: dict[fx.Node, int], env: dict[fx.Node, Any]
    ) -> None:
        """Drop the recorded values whose last reader was `node`'s step."""
        for v in reads.get(node, ()) if pending else ():
            pending[v] -= 1
            value = env.get(v)
            if pending[v] == 0 and v.op != "placeholder" and isinstance(value, Tensor):
                env[v] = Dropped(value.shape)

    def _step(
        self, info: NodeInfo, env: dict[fx.Node, Any], r: Tensor, rules: dict[str, Rule], bias_acc: list[Tensor]
    ) -> list[tuple[fx.Node, Tensor]]:
        node, kind = info.node, info.kind
        if kind is Kind.PARAM:
            x_node = info.inputs[0]
            rule = rules[info.name]
            z = env[node] if rule.uses_output else None
            step = rule.step(info.layer, env[x_node], z, r, nonneg=x_node in self.nonneg)
            bias_acc.append(step.bias)
            return [(x_node, step.relevance)]
        if kind is Kind.PASS:
            return [(info.inputs[0], r)]
        if kind is Kind.GATE:  # y = g * x (g a gate or constant): x gets all of it
            x_node = info.inputs[0]
            return [(x_node, sum_to_shape(r, env[x_node].shape))]
        if kind in (Kind.ADD, Kind.NORM, Kind.STATS):
            rule = rules.get(info.name)
            s = _divide(r, stabilize(env[node], rule.epsilon if isinstance(rule, Norm) else NORM_EPS))
        if kind is Kind.ADD:
            a, b = node.args[0], node.args[1]
            return [(a, env[a] * s), (b, env[b] * s)]
        if kind is Kind.NORM:
            x_node = info.inputs[0]
            return [(x_node, env[x_node] * self._vjp(node, env, [x_node], s)[0])]
        if kind is Kind.STATS:  # z-rule through the layer with σ held constant
            x_node = info.inputs[0]
            return [(x_node, env[x_node] * sigma_constant_vjp(info.module, env[x_node], s))]
        if node.target in (torch.cat, torch.concat):
            return self._split_cat(node, env, r)
        if node in self.unpool and isinstance(env, Env) and node in env.indices:
            x_node = info.inputs[0]
            return [(x_node, _unpool(info.module, r, env.indices[node], env[x_node].shape))]
        # GRADIENT: split exactly as the gradient does
        return list(zip(info.inputs, self._vjp(node, env, info.inputs, r)))

    def _split_cat(self, node: fx.Node, env: dict[fx.Node, Any], r: Tensor) -> list[tuple[fx.Node, Tensor]]:
        """The gradient of torch.cat without re-running it: r cut into one piece per input.

        The piece the sweep reaches next (the input computed last) is a view; the others
        are copies: a view would keep all of r alive until its consumer is reached (a
        U-Net's skip piece waits for the whole lower part of the sweep)."""
        parts = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        sizes = [env[p].shape[dim] for p in parts]
        pieces = torch.split(r, sizes, dim=dim)
        nxt = max(range(len(parts)), key=lambda i: self._position[parts[i]])
        return [(p, piece if i == nxt else piece.clone()) for i, (p, piece) in enumerate(zip(parts, pieces))]

    def _vjp(self, node: fx.Node, env: dict[fx.Node, Any], inputs: list[fx.Node], v: Tensor) -> list[Tensor]:
        """v^T d node / d inputs, by re-running this one (cheap, non-parametric) op."""
        with torch.enable_grad():
            leaves = {n: env[n].detach().requires_grad_() for n in inputs}
            out = self._run(node, {**env, **leaves})
            grads = torch.autograd.grad(
                out, [leaves[n] for n in inputs], v, create_graph=v.requires_grad, allow_unused=True
            )
        return [torch.zeros_like(leaves[n]) if g is None else g for n, g in zip(inputs, grads)]


def _divide(r: Tensor, d: Tensor) -> Tensor:
    """r / d, written into d (a fresh denominator) unless autograd tracks r."""
    return r / d if r.requires_grad else torch.div(r, d, out=d)


def _lossy_gradient(info: NodeInfo) -> bool:
    """A gradient-split step that may drop relevance (padding, slicing): measured. Reshapes,
    cat and max-pool move every bit of relevance somewhere."""
    if info.kind is not Kind.GRADIENT:
        return False
    node = info.node
    return (
        node.target in (F.pad, operator.getitem)
        or isinstance(info.module, PADS)
        or aten_name(node) in ("slice", "select", "pad", "constant_pad_nd")
    )


def sum_to_shape(r: Tensor, shape: torch.Size) -> Tensor:
    """Sum relevance over the dimensions an operand was broadcast along."""
    if r.shape == shape:
        return r
    lead = r.dim() - len(shape)
    r = r.sum(dim=tuple(range(lead))) if lead else r
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and r.shape[i] != 1)
    return r.sum(dim=dims, keepdim=True) if dims else r


def _per_sample(t: Tensor) -> Tensor:
    """(N,) float64 sums (over the dimensions, not flatten(1): that copies a channels-last t)."""
    return t.sum(dim=tuple(range(1, t.dim())), dtype=torch.float64) if t.dim() > 1 else t.to(torch.float64)


_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict[Any, PreparedModel]]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
VERIFY_RTOL = 1e-4  # the traced graph must give the model's own output (float32 rounding aside)


def _signature(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or modified in place."""
    return tuple((id(t), t._version, t.device, t.dtype) for t in (*model.parameters(), *model.buffers()))


def _reproduces(prepared: PreparedModel, model: nn.Module, x: Tensor) -> bool:
    """Whether the traced graph gives the model's output at `x` (fx can silently miss
    Python branches on tensors, e.g. `isinstance(t, Tensor)` on a proxy)."""
    with torch.no_grad():
        expected = output_source(model(x))
        try:
            got = prepared.forward(x)[1]
        except (RuntimeError, TypeError, ValueError, IndexError):
            return False  # e.g. a branch fx dropped left a shape mismatch
    if not isinstance(expected, Tensor) or expected.shape != got.shape:
        return False
    scale = expected.abs().max().clamp_min(torch.finfo(expected.dtype).tiny)
    return bool(((got - expected).abs().max() / scale) <= VERIFY_RTOL)


def prepare(model: nn.Module, x: Tensor | None = None) -> PreparedModel:
    """The cached PreparedModel for `model` (re-prepared if its weights changed).

    The model is traced with torch.fx once; with an input `x`, the traced graph is
    checked against the model's own output at the first call. Where fx fails or
    disagrees, the model is exported with torch.export at `x`'s shape instead
    (one graph per input shape).
    """
    sig = _signature(model)
    with _LOCK:
        hit = _CACHE.get(model)
        graphs = hit[1] if hit is not None and hit[0] == sig else {}
    if None in graphs:
        return graphs[None]
    if x is not None and tuple(x.shape) in graphs:
        return graphs[tuple(x.shape)]
    key: Any = None
    try:
        prepared = PreparedModel(model)
        if x is not None and not _reproduces(prepared, model, x):
            raise TraceError("the torch.fx graph does not reproduce the model's output")
    except TraceError:
        if x is None:
            raise
        prepared, key = PreparedModel(model, x), tuple(x.shape)
    with _LOCK:
        _CACHE[model] = (sig, {**graphs, key: prepared})
    return prepared


def default_bounds(x: Tensor) -> Bounds:
    """Per-sample min and max of the input: the z^B box when the caller gives none."""
    dims = tuple(range(1, x.dim()))
    return x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)


def record(
    prepared: PreparedModel, x: Tensor, keep: set[fx.Node], strips: StripPlan | None, precision: torch.dtype
) -> tuple[Env, Tensor]:
    """The lean forward pass in `precision` (bf16/fp16 under autocast), its records and logits
    widened to float32: the sweep always runs in float32 (lrpseg.precision says why)."""
    with forward_precision(x.device, precision):
        env, logits = prepared.forward_lean(x, keep, strips)
    if precision != torch.float32:
        logits = widened_logits(logits, precision)
        for node, value in env.items():
            env[node] = widen(value)
    return env, logits


def run(
    model: nn.Module,
    x: Tensor,
    r_out: Tensor | Callable[[Tensor], Tensor],
    rules: Rules = "ours",
    bounds: Bounds | None = None,
    precision: torch.dtype = torch.float32,
) -> Propagation:
    """Forward once (in `precision`), build r_out (a tensor, or a function of the logits), propagate once."""
    prepared = prepare(model, x)
    resolved = prepared.resolve(rules, bounds if bounds is not None else default_bounds(x))
    strips = prepared.strips(resolved, x)
    env, logits = record(prepared, x, prepared.kept(resolved, strips, x), strips, precision)
    r0 = r_out(logits) if callable(r_out) else r_out
    if r0.shape != logits.shape:
        raise ValueError(f"r_out has shape {tuple(r0.shape)}, the model output has {tuple(logits.shape)}")
    absorbed: dict[str, Tensor] = {}
    relevance, bias = prepared.backward(env, r0.to(logits), resolved, absorbed, free=True, strips=strips)
    del env
    return Propagation(relevance, logits, r0, bias, absorbed.get("stabilizer", torch.zeros_like(bias)))


def propagate(
    model: nn.Module,
    x: Tensor,
    r_out: Tensor | Callable[[Tensor], Tensor],
    rules: Rules = "ours",
    bounds: Bounds | None = None,
) -> Tensor:
    """Input relevance (shape of `x`) for initial relevance `r_out` at the model output.

    `rules` is a composite name ("conserving", "montavon", "ours", "epsilon-gamma-box",
    "epsilon-plus-flat", "epsilon") or {module name: Rule} with an optional "*" default.
    `bounds` = (low, high) of the input box for the z^B rule (default: per-sample min/max).
    """
    return run(model, x, r_out, rules, bounds).relevance
