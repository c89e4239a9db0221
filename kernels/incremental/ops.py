"""Which traced operations are local (their changed outputs stay in boxes), and how each runs on patches."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

import torch
import torch.nn.functional as F
from torch import fx, nn


class NotIncremental(RuntimeError):
    """The model has no prefix of local operations that incremental occlusion could reuse."""


@dataclass(frozen=True)
class Window:
    """A conv or pool window per axis (time, height, width)."""

    kernel: tuple[int, int, int]
    stride: tuple[int, int, int]
    padding: tuple[int, int, int]
    dilation: tuple[int, int, int]


UNIT = Window((1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1))


@dataclass(frozen=True)
class LocalOp:
    """`kind` pointwise (one input, same shape), window (conv/pool), frames (keeps the input frames `select(T)`
    lists, as SlowFast's slow pathway) or merge (add/cat of several inputs); `run` applies it to patch tensors
    (P, C, t, h, w), windows gathered with padding `pad` already in place; `inplace`, where there is one, computes
    the same into its first input (for a reader that is the input's only one: no new patch memory)."""

    kind: str
    run: Callable[..., torch.Tensor]
    inputs: tuple[fx.Node, ...]
    window: Window = UNIT
    pad: float = 0.0
    select: Callable[[int], torch.Tensor] | None = None
    inplace: Callable[..., torch.Tensor] | None = None


POINTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
                     nn.Hardsigmoid, nn.Softplus, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout3d, nn.AlphaDropout)
POINTWISE_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.gelu, F.silu, F.leaky_relu, F.elu, F.hardswish, F.hardsigmoid,
                       torch.sigmoid, torch.tanh, F.mish}
POINTWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "clone"}
ARITHMETIC = {operator.add: torch.add, operator.iadd: torch.add, torch.add: torch.add, operator.mul: torch.mul,
              operator.imul: torch.mul, torch.mul: torch.mul, operator.sub: torch.sub, torch.sub: torch.sub}
ARITHMETIC_METHODS = {"add": torch.add, "add_": torch.add, "mul": torch.mul, "mul_": torch.mul, "sub": torch.sub}
INPLACE = {torch.add: torch.Tensor.add_, torch.mul: torch.Tensor.mul_, torch.sub: torch.Tensor.sub_,
           torch.relu: torch.relu_, F.relu: torch.relu_}  # the same op writing into its first operand
LEAF_TYPES = (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, nn.AvgPool3d) + POINTWISE_MODULES


def _triple(value: int | tuple[int, ...]) -> tuple[int, int, int]:
    return (value,) * 3 if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


def _conv(module: nn.Conv3d) -> LocalOp | None:
    """A zero-padded Conv3d as a window op: its own weights, stride and dilation, padding 0 (the gathered windows
    carry the padding)."""
    if module.padding_mode != "zeros" or isinstance(module.padding, str) and module.padding != "valid":
        return None
    padding = (0, 0, 0) if isinstance(module.padding, str) else _triple(module.padding)
    window = Window(_triple(module.kernel_size), _triple(module.stride), padding, _triple(module.dilation))

    def run(x: torch.Tensor) -> torch.Tensor:
        return F.conv3d(x, module.weight, module.bias, window.stride, 0, window.dilation, module.groups)
    return LocalOp("window", run, (), window)


def _folded(conv: nn.Conv3d, norm: nn.BatchNorm3d, window: Window) -> Callable[[torch.Tensor], torch.Tensor]:
    """The conv followed by the eval-mode batch norm as one conv: weights scaled by gamma / sqrt(var + eps) per
    output channel and the shift moved into the bias (computed in float64, equal to the two ops up to rounding)."""
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.double()
    shift = -norm.running_mean.double() * scale + (norm.bias.double() if norm.bias is not None else 0)
    bias = shift if conv.bias is None else conv.bias.double() * scale + shift
    weight = (conv.weight.double() * scale.view(-1, 1, 1, 1, 1)).to(conv.weight.dtype).detach()
    bias = bias.to(conv.weight.dtype).detach()
    return lambda x: F.conv3d(x, weight, bias, window.stride, 0, window.dilation, conv.groups)


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def fold_batch_norms(ops: dict[fx.Node, LocalOp], root: nn.Module) -> dict[fx.Node, LocalOp]:
    """`ops` with each eval BatchNorm3d that is the only reader of a Conv3d run inside that conv on patches (one
    pass fewer over every patch, no patch memory of its own); the norm node passes its input through."""
    folded = dict(ops)
    for node, op in ops.items():
        source = op.inputs[0] if op.inputs else None
        if (node.op != "call_module" or source is None or source.op != "call_module" or len(source.users) != 1
                or not _unchanged(root.get_submodule(node.target), nn.BatchNorm3d)
                or not _unchanged(root.get_submodule(source.target), nn.Conv3d)):
            continue
        run = _folded(root.get_submodule(source.target), root.get_submodule(node.target), ops[source].window)
        folded[source] = dataclasses.replace(ops[source], run=run)
        folded[node] = dataclasses.replace(op, run=_same, inplace=_same)
    return folded


def _pool(module: nn.Module) -> LocalOp | None:
    """MaxPool3d (padding is -inf, so ceil_mode is exact too) or AvgPool3d counting padding zeros."""
    kernel, stride = _triple(module.kernel_size), _triple(module.stride or module.kernel_size)
    padding = _triple(module.padding)
    if isinstance(module, nn.MaxPool3d):
        if module.return_indices:
            return None
        window = Window(kernel, stride, padding, _triple(module.dilation))
        return LocalOp("window", lambda x: F.max_pool3d(x, kernel, stride, 0, window.dilation), (), window, -torch.inf)
    exact = (module.count_include_pad or not any(padding)) and not module.ceil_mode
    if not exact or module.divisor_override is not None:
        return None
    window = Window(kernel, stride, padding, (1, 1, 1))
    return LocalOp("window", lambda x: F.avg_pool3d(x, kernel, stride, 0), (), window)


def selects_frames(module: nn.Module) -> bool:
    """A module that keeps some frames of its input and nothing else, listing them by `frame_index(T)`."""
    return callable(getattr(module, "frame_index", None))


def _unchanged(module: nn.Module, *bases: type[nn.Module]) -> bool:
    """`module` is one of `bases` and keeps its forward (a subclass may compute something else)."""
    return any(isinstance(module, base) and type(module).forward is base.forward for base in bases)


def _module_op(module: nn.Module) -> LocalOp | None:
    """The LocalOp of a leaf module, None if it is not local (unknown, training-mode BN or dropout)."""
    if selects_frames(module):
        return LocalOp("frames", lambda x: x, (), select=module.frame_index)
    if _unchanged(module, nn.Conv3d):
        return _conv(module)
    if _unchanged(module, nn.MaxPool3d, nn.AvgPool3d):
        return _pool(module)
    if _unchanged(module, nn.BatchNorm3d):
        return None if module.training or module.running_mean is None else LocalOp("pointwise", module, ())
    dropout = isinstance(module, nn.modules.dropout._DropoutNd)
    if _unchanged(module, *POINTWISE_MODULES) and not (dropout and module.training):
        passes = dropout or _unchanged(module, nn.Identity)  # in eval both return their input
        return LocalOp("pointwise", module, (), inplace=torch.relu_ if _unchanged(module, nn.ReLU) else
                       _same if passes else None)
    return None


def _arithmetic(function: Callable[..., torch.Tensor], args: tuple[Any, ...], local: set[fx.Node]) -> LocalOp | None:
    """x op y of two local nodes of one shape (a merge), or of a local node and a number (pointwise)."""
    if len(args) != 2:
        return None
    nodes = [arg for arg in args if isinstance(arg, fx.Node)]
    if not nodes or any(node not in local for node in nodes):
        return None
    if len(nodes) == 2:
        return LocalOp("merge", function, tuple(nodes), inplace=INPLACE.get(function))
    other = args[1] if isinstance(args[0], fx.Node) else args[0]
    if not isinstance(other, (int, float)):
        return None
    if isinstance(args[0], fx.Node):
        return LocalOp("pointwise", lambda x: function(x, other), tuple(nodes))
    return LocalOp("pointwise", lambda x: function(other, x), tuple(nodes))


def _cat(node: fx.Node, local: set[fx.Node]) -> LocalOp | None:
    """torch.cat of local nodes along channels."""
    parts = node.args[0]
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    if dim not in (1, -4) or not isinstance(parts, (list, tuple)) or any(p not in local for p in parts):
        return None
    return LocalOp("merge", lambda *xs: torch.cat(xs, 1), tuple(parts))


def classify(node: fx.Node, root: nn.Module, local: set[fx.Node]) -> LocalOp | None:
    """The LocalOp for `node` if it is local and every tensor it reads is a local node, else None."""
    args = node.args
    if node.op == "call_module":
        op = _module_op(root.get_submodule(node.target))
        ok = op is not None and len(args) == 1 and not node.kwargs and args[0] in local
        return dataclasses.replace(op, inputs=(args[0],)) if ok else None
    if node.op == "call_function" and node.target is torch.cat:
        return _cat(node, local)
    if node.op == "call_function" and node.target in ARITHMETIC and not node.kwargs:
        return _arithmetic(ARITHMETIC[node.target], args, local)
    if node.op == "call_method" and node.target in ARITHMETIC_METHODS and not node.kwargs:
        return _arithmetic(ARITHMETIC_METHODS[node.target], args, local)
    pointwise = (node.op == "call_function" and node.target in POINTWISE_FUNCTIONS
                 or node.op == "call_method" and node.target in POINTWISE_METHODS)
    if pointwise and args and args[0] in local and not any(isinstance(a, fx.Node) for a in args[1:]):
        target, rest, kwargs = node.target, args[1:], dict(node.kwargs)
        kwargs.pop("inplace", None)
        if node.op == "call_method":
            inplace = torch.relu_ if target == "relu" and not rest and not kwargs else None
            return LocalOp("pointwise", lambda x: getattr(x, target)(*rest, **kwargs), (args[0],), inplace=inplace)
        inplace = INPLACE.get(target) if not rest and not kwargs else None
        return LocalOp("pointwise", lambda x: target(x, *rest, **kwargs), (args[0],), inplace=inplace)
    return None


def describe(node: fx.Node, root: nn.Module) -> str:
    """A short name of a traced operation for error messages: `layer4.avgpool (AdaptiveAvgPool3d)`, `flatten`."""
    if node.op == "call_module":
        return f"{node.target} ({type(root.get_submodule(node.target)).__name__})"
    return getattr(node.target, "__name__", str(node.target))


class _Tracer(fx.Tracer):
    """symbolic_trace, keeping conv/pool/norm/activation subclasses (torchvision's Conv3DSimple) as leaves."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return (isinstance(module, LEAF_TYPES) or selects_frames(module)
                or super().is_leaf_module(module, qualified_name))

    def call_module(self, module: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        """An nn.Identity passes its input through untraced (it may hold a list: SlowFast's last fusion)."""
        if type(module) is nn.Identity and len(args) == 1 and not kwargs:
            return args[0]
        return super().call_module(module, forward, args, kwargs)


_TRACED: WeakKeyDictionary[nn.Module, fx.Graph | NotIncremental] = WeakKeyDictionary()


def trace(module: nn.Module) -> fx.Graph:
    """The module's torch.fx graph, traced once per module; NotIncremental (one line) when it cannot be traced
    faithfully."""
    hooked = [name or type(module).__name__ for name, sub in module.named_modules()
              if sub._forward_hooks or sub._forward_pre_hooks]
    if hooked:
        raise NotIncremental(f"{type(module).__name__} has forward hooks on {hooked[0]}, which torch.fx does not trace")
    if module not in _TRACED:
        try:
            _TRACED[module] = _Tracer().trace(module)
        except Exception as error:  # noqa: BLE001 - any tracing failure means: run dense
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            _TRACED[module] = NotIncremental(f"{type(module).__name__} cannot be traced by torch.fx: {reason[:200]}")
    traced = _TRACED[module]
    if isinstance(traced, NotIncremental):
        raise traced
    return traced
