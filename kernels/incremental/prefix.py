"""The clean pass: run the traced model once on the clip, find its prefix of local operations, keep their outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode

from aosa.kernels.incremental.geometry import tile_size
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
    """Whether anything may read the node's clean rows: the input's, from which every occluded tile is built, and
    another node's unless its one reader is a pointwise op right after it (never cut off from it)."""
    users = list(node.users)
    only = users[0] if len(users) == 1 else None
    return ops[node].kind == "input" or not (only is node.next and only in ops and ops[only].kind == "pointwise")


def _same_view(a: Any, b: Any) -> bool:
    """Two tensors that are one view of the same memory (what one reads, the other reads)."""
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.data_ptr() == b.data_ptr()
            and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype)


def _read_after_write(writer: fx.Node, written: fx.Node, env: dict[fx.Node, Any], order: dict[fx.Node, int],
                      root: nn.Module) -> None:
    """`writer` wrote in place into the value of `written`: a node after it that reads that memory (through
    `written` or another alias of it) reads it as written, so it is made to read `writer`'s output, which must be
    the same view; the graph then says what eager runs, whichever path computes each node. NotIncremental where
    that view differs."""
    memory = env[written].untyped_storage().data_ptr()
    aliases = [node for node, value in env.items() if node is not writer and isinstance(value, torch.Tensor)
               and value.numel() and value.untyped_storage().data_ptr() == memory]
    for alias in aliases:
        for reader in [user for user in alias.users if order[user] > order[writer]]:
            if not _same_view(env[writer], env[alias]):
                raise NotIncremental(f"{describe(writer, root)} writes in place into {describe(alias, root)}, which "
                                     f"{describe(reader, root)} reads after it through another view")
            reader.replace_input_with(alias, writer)


@torch.no_grad()
def clean_pass(root: nn.Module, graph: fx.Graph, clip: torch.Tensor, cell: tuple[int, int]) -> Prefix:
    """Run the model on the (C, T, H, W) clip, classifying nodes until the first non-local one. A node that writes
    in place into a value read after it is modelled as eager runs it (`_read_after_write`), and the clean rows
    of a local node are copied before anything after it may write into them, laid out on its tiles of `cell`."""
    nodes = list(graph.nodes)
    order = {node: position for position, node in enumerate(nodes)}
    inputs = [node for node in nodes if node.op == "placeholder"]
    if len(inputs) != 1:
        raise NotIncremental(f"{type(root).__name__} takes {len(inputs)} inputs; incremental occlusion needs one clip")
    env: dict[fx.Node, Any] = {inputs[0]: clip.unsqueeze(0).clone()}  # a model may write into its input
    ops = {inputs[0]: LocalOp("input", lambda x: x, ())}
    rows = {inputs[0]: to_rows(clip)}  # clean rows of local nodes, copied while no later node has written into them
    stop, prefix_flops = "", 0
    with FlopCounterMode(display=False) as counter:
        for node in nodes[1:]:
            if node.op == "output":
                logits = fx.node.map_arg(node.args[0], env.__getitem__)
                break
            op = None if stop else classify(node, root, set(ops))
            previous = node.prev
            if previous in ops and previous not in rows and (op is None or op.kind != "pointwise"):
                rows[previous] = to_rows(env[previous][0])  # a reader that is not its pointwise slot: keep them now
            versions = {source: env[source]._version for source in node.all_input_nodes
                        if isinstance(env[source], torch.Tensor)}
            before = counter.get_total_flops()
            env[node] = run_node(root, node, env)
            for source in [source for source, version in versions.items() if env[source]._version != version]:
                _read_after_write(node, source, env, order, root)
            if stop:
                continue
            if op is None or not _keeps_shape(op, env[node], env):
                stop, prefix_flops = describe(node, root), before
                if previous in ops and previous not in rows:  # a pointwise op that changed the shape: never in place
                    rows[previous] = to_rows(env[previous][0])
            else:
                ops[node] = op
                if not (len(node.users) == 1 and next(iter(node.users)) is node.next):
                    rows[node] = to_rows(env[node][0])
        else:
            raise NotIncremental(f"{type(root).__name__}'s traced graph has no output")
    if not any(op.kind == "window" for op in ops.values()):
        raise NotIncremental(f"{type(root).__name__} starts with {stop or 'no operation'}, which is not local")
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise NotIncremental(f"{type(root).__name__} does not return one (batch, classes) logits tensor")
    ops = fold_batch_norms(ops, root)
    shapes = {node: tuple(env[node].shape[1:]) for node in ops}
    tables = {node: CleanTable(rows[node], shapes[node][1:], tile_size(shapes[node][1:], cell))
              for node in ops if _needs_table(node, ops)}
    return Prefix(nodes, ops, tables, shapes, logits, prefix_flops or counter.get_total_flops(),
                  counter.get_total_flops(), stop)
