"""Pure tensor maths of AOSA: tracks, tube masks, fills, every explanation method and metric.

Nothing here imports Ray, video/file I/O or storage: a kernel takes tensors (and a callable model)
and returns tensors.
"""
