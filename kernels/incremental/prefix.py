"""The clean pass: run the traced model once on the clip, find its prefix of local operations, keep their outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode

from aosa.kernels.incremental.ops import LocalOp, NotIncremental, classify, describe, fold_batch_norms
from aosa.kernels.incremental.patches import CleanTable, to_rows


@dataclass
class Prefix:
    """`nodes` run in graph order; the first len(`ops`) are local (placeholder first); `tables` hold the clean rows
    of the local nodes something may gather from; `shapes` their (C, T, H, W)."""

    nodes: list[fx.Node]
    ops: dict[fx.Node, LocalOp]
    tables: dict[fx.Node, CleanTable]
    shapes: dict[fx.Node, tuple[int, int, int, int]]
    logits: torch.Tensor
    prefix_flops: int
    total_flops: int
    stop: str


def run_node(root: nn.Module, node: fx.Node, env: dict[fx.Node, Any]) -> Any:
    """Execute one traced node on the values in `env`, as the model would."""
    args = fx.node.map_arg(node.args, env.__getitem__)
    kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
    if node.op == "call_module":
        return root.get_submodule(node.target)(*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    if node.op == "get_attr":
        value: Any = root
        for part in node.target.split("."):
            value = getattr(value, part)
        return value
    raise NotIncremental(f"cannot run traced node {node.op} {node.target}")


def _keeps_shape(op: LocalOp, value: Any, env: dict[fx.Node, Any]) -> bool:
    """The output is a float (1, C, T, H, W) tensor on the grid of its inputs (same shape for pointwise/add)."""
    if not (isinstance(value, torch.Tensor) and value.dim() == 5 and value.is_floating_point() and len(value) == 1):
        return False
    inputs = [env[node] for node in op.inputs]
    if op.kind == "pointwise":
        return inputs[0].shape == value.shape
    if op.kind == "merge":
        return all(x.shape[0] == 1 and x.shape[2:] == value.shape[2:] for x in inputs)
    if op.kind == "frames":  # it keeps the frames it lists and does nothing else
        kept = inputs[0].index_select(2, op.select(inputs[0].shape[2]).to(value.device))
        return kept.shape == value.shape and torch.equal(kept, value)
    return True


def _needs_table(node: fx.Node, ops: dict[fx.Node, LocalOp]) -> bool:
    """Whether anything may read the node's output other than a pointwise op right after it (the only reader
    that can never be cut off from it)."""
    users = list(node.users)
    return not (len(users) == 1 and users[0] is node.next and users[0] in ops and ops[users[0]].kind == "pointwise")


@torch.no_grad()
def clean_pass(root: nn.Module, graph: fx.Graph, clip: torch.Tensor) -> Prefix:
    """Run the model on the (C, T, H, W) clip, classifying nodes until the first non-local one."""
    nodes = list(graph.nodes)
    inputs = [node for node in nodes if node.op == "placeholder"]
    if len(inputs) != 1:
        raise NotIncremental(f"{type(root).__name__} takes {len(inputs)} inputs; incremental occlusion needs one clip")
    env: dict[fx.Node, Any] = {inputs[0]: clip.unsqueeze(0)}
    ops = {inputs[0]: LocalOp("input", lambda x: x, ())}
    stop, prefix_flops = "", 0
    with FlopCounterMode(display=False) as counter:
        for node in nodes[1:]:
            if node.op == "output":
                logits = fx.node.map_arg(node.args[0], env.__getitem__)
                break
            op = None if stop else classify(node, root, set(ops))
            before = counter.get_total_flops()
            env[node] = run_node(root, node, env)
            if stop:
                continue
            if op is None or not _keeps_shape(op, env[node], env):
                stop, prefix_flops = describe(node, root), before
            else:
                ops[node] = op
        else:
            raise NotIncremental(f"{type(root).__name__}'s traced graph has no output")
    if not any(op.kind == "window" for op in ops.values()):
        raise NotIncremental(f"{type(root).__name__} starts with {stop or 'no operation'}, which is not local")
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise NotIncremental(f"{type(root).__name__} does not return one (batch, classes) logits tensor")
    ops = fold_batch_norms(ops, root)
    tables = {node: CleanTable(to_rows(env[node][0]), tuple(env[node].shape[2:])) for node in ops
              if _needs_table(node, ops)}
    shapes = {node: tuple(env[node].shape[1:]) for node in ops}
    return Prefix(nodes, ops, tables, shapes, logits, prefix_flops or counter.get_total_flops(),
                  counter.get_total_flops(), stop)
