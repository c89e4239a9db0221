"""Orchestration around the kernels, in sub-packages that name their job: io, models, datasets, runtime,
store, reporting; `errors` is shared by all of them."""
