"""How busy the GPUs were while a run went on: NVML's utilization (the share of each sample period in which a
kernel ran), sampled in a background thread, so a dataset run can say whether it kept its GPU fed."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aosa.engine.errors import ConfigError


@dataclass
class GpuSamples:
    """One GPU's utilization samples (percent) over a run."""

    name: str
    percents: list[int] = field(default_factory=list)

    @property
    def busy(self) -> float:
        """Mean share of the run in which a kernel ran on this GPU (0..1)."""
        return sum(self.percents) / (100 * len(self.percents)) if self.percents else float("nan")


class GpuBusy:
    """`with GpuBusy() as busy:` samples every visible GPU every `interval` seconds until the block ends; NVML comes
    from nvidia-ml-py (`pynvml`), a ConfigError where it or a driver is missing."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.gpus: list[GpuSamples] = []
        self._stop = threading.Event()

    def __enter__(self) -> GpuBusy:
        try:
            import pynvml
            pynvml.nvmlInit()
        except Exception as exc:  # ImportError, or NVMLError without a driver
            raise ConfigError(f"cannot sample GPU utilization: {exc} (pip install nvidia-ml-py, on a GPU)") from None
        self._nvml = pynvml
        handles = [pynvml.nvmlDeviceGetHandleByIndex(index) for index in range(pynvml.nvmlDeviceGetCount())]
        self.gpus = [GpuSamples(str(pynvml.nvmlDeviceGetName(handle))) for handle in handles]
        self._thread = threading.Thread(target=self._sample, args=(handles,), daemon=True)
        self._thread.start()
        return self

    def _sample(self, handles: list[Any]) -> None:
        while not self._stop.wait(self.interval):
            for gpu, handle in zip(self.gpus, handles):
                gpu.percents.append(int(self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu))

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._nvml.nvmlShutdown()
