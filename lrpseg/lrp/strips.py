"""The full-resolution layers in horizontal windows: no full-resolution value stored whole.

A network's full-resolution layers (a U-Net's first encoder level and last decoder
level) hold most of an explanation's memory: every value and relevance tensor there
has the image's size times its channels. Their ops are local (stride-1 convolutions,
elementwise activations, channel concatenation, non-overlapping max-pools, k = s
transposed convolutions), so a window of rows [lo, hi) of their inputs gives their
exact values on rows [lo + h, hi - h) (h: the window's halo, the rows zero padding
at a window edge inside the image can reach), and a window of relevance gives the
exact relevance of the rule steps on those rows as well, for rules that only look at
a neighbourhood and whose biases take nothing (the bias-free rules, z^B, the
reference box; `window_extra`).

So each maximal run of such nodes (in graph order: the sweep reaches it as one
block) is a `Segment`: the forward pass computes only what leaves it (e.g. the
max-pool's output, the logits) window by window, and the sweep, on reaching it,
re-runs its forward on each window (from the values that enter it: the input, the
lower levels' outputs) and steps its rules there, keeping each window's core rows of
the relevance that leaves it. Windows of the network cost one extra forward of those
layers and their halos; memory drops to a window's worth (docs/lrp.md, "Memory").
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, fx, nn

from lrpseg.heap import release_heap
from lrpseg.lrp.bias_free import BiasFree
from lrpseg.lrp.graph import Kind, NodeInfo
from lrpseg.lrp.reference_box import ReferenceBox
from lrpseg.lrp.rules import AlphaBeta, Epsilon, Flat, Gamma, Rule, WSquare, ZBox, Zero, ZPlus

WINDOW_PIXELS = 1 << 18  # core pixels (rows x width) of one window at full resolution
WINDOW_LEVELS = 2  # resolutions windowed: full, half (a U-Net's top two levels)
TRIM_PIXELS = 1 << 16  # windows this large free MiBs at a time: worth handing back (release_heap)
LOCAL_RULES = (ZPlus, AlphaBeta, Gamma, Zero, Flat, WSquare)  # each output unit's step reads its neighbourhood only


@dataclass
class Segment:
    """A run of full-resolution nodes (graph order) and what evaluating it in windows needs."""

    nodes: list[fx.Node]  # stepped backward in windows
    closure: list[fx.Node]  # evaluated in each window: `nodes` and the full-resolution nodes they read
    roots: list[fx.Node]  # read from the recorded values (sliced per window where spatial)
    exports: list[fx.Node]  # values of `nodes` the rest of the graph reads (the forward makes them whole)
    reads: dict[fx.Node, list[fx.Node]]  # values each node's step reads (kept within a window until read)
    ratio: dict[fx.Node, int]  # full-resolution rows per row of each closure node and spatial root
    halo: int  # rows each side of a window's core that the forward and the steps need
    forward_halo: int  # rows each side the forward alone needs
    align: int  # window edges are multiples of this (every ratio divides it)


@dataclass
class StripPlan:
    segments: list[Segment]
    rows: int  # full-resolution rows
    window_rows: int  # core rows per window
    member: dict[fx.Node, Segment] = field(default_factory=dict)
    shapes: dict[fx.Node, torch.Size] = field(default_factory=dict)
    trim: bool = False  # hand freed heap pages back after each window and step (windows of MiBs)

    def __post_init__(self) -> None:
        self.member = {n: s for s in self.segments for n in s.nodes}


def window_extra(rule: Rule, layer_bias: Tensor | None) -> int | None:
    """Rows beyond the kernel a rule's step reads around each unit; None where it is not
    local or its bias relevance is not zero (a window's halo would count it twice)."""
    inner = rule.inner if isinstance(rule, BiasFree) else rule
    zero_bias = isinstance(rule, BiasFree) or layer_bias is None
    if isinstance(inner, ReferenceBox):
        return inner.window // 2
    if isinstance(inner, ZBox):
        spatial_bounds = any(isinstance(b, Tensor) and b.dim() > 2 and b.shape[-2] > 1 for b in (inner.low, inner.high))
        return None if spatial_bounds else 0
    if isinstance(inner, Epsilon) and not isinstance(inner, Zero):
        return 0 if zero_bias and not inner.relative else None
    return 0 if zero_bias and isinstance(inner, LOCAL_RULES) else None


def meta_shapes(gm: fx.GraphModule, like: Tensor) -> dict[str, torch.Size]:
    """Every node's output shape (by node name) at an input shaped like `like`, from a copy of
    the graph on the meta device: shapes only, no data. The first call in a process imports
    torch's meta kernels (~150 MiB resident, once), so small inputs skip it (PreparedModel.strips)."""
    meta = copy.deepcopy(gm).to("meta")
    interpreter = fx.Interpreter(meta, garbage_collect_values=False)
    interpreter.run(torch.empty(like.shape, dtype=like.dtype, device="meta"))
    return {n.name: v.shape for n, v in interpreter.env.items() if isinstance(v, Tensor)}


def _conv_radius(module: nn.Module) -> int | None:
    """Rows each side a stride-1 'same' 2-D convolution reads; None for any other convolution."""
    if not isinstance(module, nn.Conv2d) or module.padding_mode != "zeros" or tuple(module.stride) != (1, 1):
        return None
    reach = module.dilation[0] * (module.kernel_size[0] - 1)
    return reach // 2 if reach % 2 == 0 and module.padding == (reach // 2, module.padding[1]) else None


def _up_conv(module: nn.Module) -> bool:
    """A 2-D transposed convolution of non-overlapping kernels: each input row makes its own output rows."""
    return (
        isinstance(module, nn.ConvTranspose2d)
        and tuple(module.stride) == tuple(module.kernel_size)
        and tuple(module.padding) == (0, 0)
        and tuple(module.output_padding) == (0, 0)
        and tuple(module.dilation) == (1, 1)
    )


def _local(
    info: NodeInfo, rules: dict[str, Rule], shapes: dict[fx.Node, torch.Size], unpool: set[fx.Node]
) -> int | None:
    """The halo rows (beyond the convolution's own) a full-resolution node needs, or None
    where it cannot run in windows."""
    node, kind, module = info.node, info.kind, info.module
    if kind is Kind.PARAM and module is not None and (_conv_radius(module) is not None or _up_conv(module)):
        rule = rules.get(info.name)
        return None if rule is None else window_extra(rule, info.layer.bias if info.layer else None)
    if kind is Kind.PASS and len(node.all_input_nodes) == 1:
        return 0 if shapes.get(node.all_input_nodes[0]) == shapes.get(node) else None
    if kind is Kind.GRADIENT and node.target in (torch.cat, torch.concat):
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        return 0 if dim in (1, -3) else None
    if kind is Kind.GRADIENT and node in unpool and isinstance(module, nn.MaxPool2d):
        return 0
    return None


def plan_strips(
    infos: dict[fx.Node, NodeInfo],
    rules: dict[str, Rule],
    reads: dict[fx.Node, list[fx.Node]],
    shapes: dict[fx.Node, torch.Size],
    unpool: set[fx.Node],
    window_pixels: int = WINDOW_PIXELS,
    levels: int = WINDOW_LEVELS,
) -> StripPlan | None:
    """The segments of full-resolution nodes for an input whose node shapes are `shapes`."""
    spatial = {n: s for n, s in shapes.items() if len(s) == 4}
    if not spatial:
        return None
    rows = max(s[-2] for s in spatial.values())
    width = max(s[-1] for s in spatial.values())
    full = {n for n, s in spatial.items() if s[-2] << (levels - 1) >= rows}
    extra: dict[fx.Node, int] = {}
    for node, info in infos.items():
        top = node in full or (node in unpool and info.inputs[0] in full)
        found = _local(info, rules, shapes, unpool) if top and node.op != "placeholder" else None
        if found is not None and all(u in infos for u in node.users):
            extra[node] = found
    while True:  # a run that cannot be windowed is evaluated whole: the others must not read into it
        segments = _segments(infos, extra, reads, spatial, rows, unpool)
        inside = {n for s in segments for n in s.nodes}
        dropped = {n for n in extra if n not in inside}
        if not dropped:
            break
        extra = {n: e for n, e in extra.items() if n not in dropped}
    if not segments:
        return None
    for segment in segments:
        segment.exports = [n for n in segment.nodes if any(u not in inside for u in n.users)]
    align = max(s.align for s in segments)
    window_rows = max(align, window_pixels // max(width, 1))
    if window_rows >= rows:
        return None  # one window: nothing to gain
    window_rows -= window_rows % align
    return StripPlan(segments, rows, window_rows, shapes=dict(shapes), trim=window_rows * width >= TRIM_PIXELS)


def _segments(
    infos: dict[fx.Node, NodeInfo],
    extra: dict[fx.Node, int],
    reads: dict[fx.Node, list[fx.Node]],
    spatial: dict[fx.Node, torch.Size],
    rows: int,
    unpool: set[fx.Node],
) -> list[Segment]:
    """Maximal runs of windowable nodes in graph order, as segments (those whose rows fit)."""
    segments = []
    run: list[fx.Node] = []
    for node in [*infos, None]:
        if node is not None and node in extra:
            run.append(node)
            continue
        if run:
            segment = _segment(run, extra, infos, reads, spatial, rows, unpool)
            if segment is not None and any(infos[n].kind is Kind.PARAM for n in run):  # else nothing to gain
                segments.append(segment)
            run = []
    return segments


def _segment(
    run: list[fx.Node],
    extra: dict[fx.Node, int],
    infos: dict[fx.Node, NodeInfo],
    reads: dict[fx.Node, list[fx.Node]],
    spatial: dict[fx.Node, torch.Size],
    rows: int,
    unpool: set[fx.Node],
) -> Segment | None:
    closure: set[fx.Node] = set()
    stack = list(run)
    while stack:
        node = stack.pop()
        if node not in closure:
            closure.add(node)
            stack.extend(i for i in node.all_input_nodes if i in extra)
    order = [n for n in infos if n in closure]
    roots = sorted({i for n in order for i in n.all_input_nodes if i not in closure}, key=order_key(infos))
    ratio: dict[fx.Node, int] = {}
    for n in (*order, *roots):
        if n in spatial:
            if rows % spatial[n][-2]:
                return None
            ratio[n] = rows // spatial[n][-2]
    if any(n not in ratio for n in order):
        return None
    align = max(ratio.values())
    if rows % align:
        return None
    forward = sum(_radius(infos[n]) * ratio[n] for n in order)
    backward = sum((_radius(infos[n]) + extra[n]) * ratio[n] for n in run)
    pools = sum(align for n in order if isinstance(infos[n].module, nn.MaxPool2d))
    return Segment(
        nodes=run,
        closure=order,
        roots=roots,
        exports=[],
        # a max-pool in a window is split by its gradient (re-run on its input), not by recorded indices
        reads={n: [infos[n].inputs[0]] if n in unpool else reads[n] for n in run},
        ratio=ratio,
        halo=_up(forward + backward + pools, align),
        forward_halo=_up(forward + pools, align),
        align=align,
    )


def order_key(infos: dict[fx.Node, NodeInfo]) -> Callable[[fx.Node], tuple[int, str]]:
    position = {n: i for i, n in enumerate(infos)}
    return lambda n: (position.get(n, -1), n.name)


def _radius(info: NodeInfo) -> int:
    module = info.module
    return (_conv_radius(module) or 0) if info.kind is Kind.PARAM and module is not None else 0


def _up(n: int, align: int) -> int:
    return -(-n // align) * align


Window = tuple[int, int, int, int]


def windows(rows: int, core: int, halo: int) -> Iterator[Window]:
    """(lo, start, stop, hi): core rows [start, stop) and the rows [lo, hi) evaluated for them."""
    for start in range(0, rows, core):
        stop = min(rows, start + core)
        yield max(0, start - halo), start, stop, min(rows, stop + halo)


def rows_of(t: Tensor, lo: int, hi: int, ratio: int) -> Tensor:
    """Rows [lo, hi) (full-resolution numbering) of a value with `ratio` rows per row of its own."""
    return t[..., lo // ratio : hi // ratio, :]


class Stepper(Protocol):
    """What windows need of a PreparedModel: evaluate one node, step one node's rule."""

    infos: dict[fx.Node, NodeInfo]

    def _run(self, node: fx.Node, env: dict[fx.Node, Any]) -> Any: ...

    def _step(
        self, info: NodeInfo, env: dict[fx.Node, Any], r: Tensor, rules: dict[str, Rule], bias_acc: list[Tensor]
    ) -> list[tuple[fx.Node, Tensor]]: ...


def _shell(value: Tensor) -> Tensor:
    """A value's shape without its data (cat splits and gates read only shapes)."""
    return torch.empty(value.shape, device="meta")


def evaluate_window(
    model: Stepper,
    segment: Segment,
    roots: dict[fx.Node, Any],
    lo: int,
    hi: int,
    keep: set[fx.Node],
) -> dict[fx.Node, Any]:
    """The closure's values on rows [lo, hi) (edges inside the image padded with zeros as the
    image's own are): exact `halo` rows in from such an edge. Values not in `keep` are
    dropped to their shapes after their last use in the window."""
    local = {r: rows_of(v, lo, hi, segment.ratio[r]) if r in segment.ratio else v for r, v in roots.items()}
    last = {i: n for n in segment.closure for i in n.all_input_nodes}
    with torch.no_grad():
        for node in segment.closure:
            local[node] = model._run(node, local)
            for i in node.all_input_nodes:
                if last.get(i) is node and i not in keep and isinstance(local.get(i), Tensor):
                    local[i] = _shell(local[i])
    return local


def _put(
    out: dict[fx.Node, Tensor], node: fx.Node, value: Tensor, shape: torch.Size, window: Window, ratio: int
) -> None:
    """Write a window's core rows of `value` into the whole tensor for `node` (made at the first window)."""
    lo, start, stop, _ = window
    whole = out.get(node)
    if whole is None:
        last = torch.channels_last if value.dim() == 4 and not value.is_contiguous() else torch.contiguous_format
        whole = out[node] = torch.empty(shape, dtype=value.dtype, device=value.device, memory_format=last)
    whole[..., start // ratio : stop // ratio, :] = value[..., (start - lo) // ratio : (stop - lo) // ratio, :]


def forward_segment(
    model: Stepper, segment: Segment, plan: StripPlan, roots: dict[fx.Node, Any]
) -> dict[fx.Node, Tensor]:
    """The whole values of the segment's exports, window by window."""
    out: dict[fx.Node, Tensor] = {}
    keep = set(segment.exports)
    for window in windows(plan.rows, plan.window_rows, segment.forward_halo):
        local = evaluate_window(model, segment, roots, window[0], window[3], keep)
        for node in segment.exports:
            _put(out, node, local[node], plan.shapes[node], window, segment.ratio[node])
        del local
        if plan.trim:
            release_heap()
    return out


def backward_segment(
    model: Stepper,
    segment: Segment,
    plan: StripPlan,
    roots: dict[fx.Node, Any],
    entering: dict[fx.Node, Tensor],
    rules: dict[str, Rule],
) -> dict[fx.Node, Tensor]:
    """The relevance leaving the segment (whole tensors) for the relevance `entering` its nodes:
    each window re-runs the forward and steps the rules in reverse graph order."""
    out: dict[fx.Node, Tensor] = {}
    keep = {v for n in segment.nodes for v in segment.reads[n]}
    last_reader = {v: n for n in reversed(segment.nodes) for v in segment.reads[n]}  # first in graph order
    for window in windows(plan.rows, plan.window_rows, segment.halo):
        lo, hi = window[0], window[3]
        local = evaluate_window(model, segment, roots, lo, hi, keep)
        rel = {n: rows_of(t, lo, hi, segment.ratio[n]) for n, t in entering.items()}
        for node in reversed(segment.nodes):
            r = rel.pop(node, None)
            if r is not None:
                for inp, r_in in model._step(model.infos[node], local, r, rules, []):
                    rel[inp] = rel[inp] + r_in if inp in rel else r_in
                del r
            for v in segment.reads[node]:
                if last_reader[v] is node and isinstance(local.get(v), Tensor):
                    local[v] = _shell(local[v])
        del local
        for node, r in rel.items():
            _put(out, node, r, plan.shapes[node], window, segment.ratio[node])
        del rel
        if plan.trim:
            release_heap()
    return out
