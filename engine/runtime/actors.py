"""Ray actors of an evaluation, with the resources each stage needs declared here, where it is defined."""

from __future__ import annotations

import ray

from aosa.engine.runtime.whole_worker import VideoModelWorker
from aosa.engine.runtime.workers import VideoPreparer

# Decode + flow: CPU work. A crashed preparer is restarted and its call retried.
VideoActor = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=3)(VideoPreparer)

# One model per actor; on GPUs create it with `.options(num_gpus=fraction)`. A killed model actor is
# restarted (reloading its model) and the shard it was scoring is redone. It explains whole videos too.
ModelActor = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=3)(VideoModelWorker)
