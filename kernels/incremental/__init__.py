"""Incremental occlusion: exact occluded-clip logits that recompute each local layer only where a mask changed it."""

from aosa.kernels.incremental.buffers import BufferPool
from aosa.kernels.incremental.graphs import PlanGraphs
from aosa.kernels.incremental.mode import MODES, incremental_for
from aosa.kernels.incremental.model import IncrementalModel
from aosa.kernels.incremental.planning import Plan
from aosa.kernels.incremental.ops import NotIncremental

__all__ = ["MODES", "BufferPool", "IncrementalModel", "NotIncremental", "Plan", "PlanGraphs", "incremental_for"]
