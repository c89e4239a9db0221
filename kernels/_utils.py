"""Small helpers shared by several kernels modules."""

from __future__ import annotations

from torch import nn

from aosa.kernels.scoring import Model


def module_of(model: Model) -> nn.Module:
    """The torch module behind `model`: the model itself, or the `.module` of a wrapper (nested wrappers too)."""
    if isinstance(model, nn.Module):
        return model
    inner = getattr(model, "module", None)
    if inner is None:
        raise ValueError(f"{type(model).__name__} is neither a torch.nn.Module nor a wrapper with a `.module`; "
                         "this method needs the model's layers")
    return module_of(inner)
