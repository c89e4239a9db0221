"""Incremental occlusion: exact occluded-clip logits that recompute each local layer only where a mask changed it."""

from kernels.incremental.buffers import BufferPool
from kernels.incremental.mode import MODES, incremental_for
from kernels.incremental.model import IncrementalModel
from kernels.incremental.planning import Plan
from kernels.incremental.ops import NotIncremental

__all__ = ["MODES", "BufferPool", "IncrementalModel", "NotIncremental", "Plan", "incremental_for"]
