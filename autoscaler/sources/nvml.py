"""Direct GPU readings through NVML, for the GPU-host systemd mode.

Reads per-GPU utilisation and memory with ``nvidia-ml-py`` (module ``pynvml``, imported
lazily, install the ``gpu`` extra). Signals per GPU:

- ``gpu_utilization``: percent (0–100) of the last sample period in which a kernel ran
  (``nvmlDeviceGetUtilizationRates().gpu``);
- ``gpu_memory_used_ratio``: ``used / total`` device memory (0–1).

The target of GPU ``i`` is ``targets[str(i)]`` (or ``targets[<uuid>]``) when mapped,
otherwise ``gpu<i>``. Without the library, a driver or a GPU, collect raises
``SourceError`` with the NVML error name (for example ``NVML_ERROR_LIBRARY_NOT_FOUND``)
and tries to initialise again next tick; it never crashes the service. A read error of one
GPU (``NVML_ERROR_GPU_IS_LOST``, ``NOT_SUPPORTED`` under MIG, ...) skips that GPU's
samples (they age to stale) and is kept in ``gpu_errors``; the other GPUs still report.

Calls block (microseconds to milliseconds), so they run in a worker thread.

Not verified on a real GPU in this project: tested on a host without a driver (the real
``LIBRARY_NOT_FOUND`` path) and with ``pynvml`` functions replaced at the seam.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from autoscaler.errors import SourceError
from autoscaler.sources.base import Sample


@dataclass(frozen=True, slots=True)
class NvmlSpec:
    """Config of an ``nvml`` source."""

    targets: dict[str, str] = field(default_factory=dict)
    """GPU index (as a string, e.g. "0") or UUID → target name; unmapped GPUs are
    ``gpu<index>``."""
    only_mapped: bool = False
    """Report only GPUs listed in ``targets``."""


def error_name(pynvml: ModuleType, exc: BaseException) -> str:
    """``NVML_ERROR_…`` name of an ``NVMLError`` (or the exception type's name)."""
    code = getattr(exc, "value", None)
    if isinstance(code, int):
        for attr in dir(pynvml):
            if attr.startswith("NVML_ERROR_") and getattr(pynvml, attr) == code:
                return attr
    return type(exc).__name__


class NvmlSource:
    """Pull source reading GPUs through NVML."""

    def __init__(self, name: str, spec: NvmlSpec, *, module: str = "pynvml") -> None:
        self.name = name
        self.spec = spec
        self._module_name = module
        self._nvml: ModuleType | None = None
        self._initialised = False
        self._lock = threading.Lock()
        self.gpu_errors: dict[str, str] = {}
        """Last read error per GPU index (cleared when the GPU reads again)."""

    def _load(self) -> ModuleType:
        if self._nvml is None:
            try:
                self._nvml = importlib.import_module(self._module_name)
            except ImportError as exc:
                raise SourceError(
                    f"source {self.name!r}: NVML unavailable: {self._module_name} is not "
                    "installed (pip install 'autoscaler[gpu]' / nvidia-ml-py)"
                ) from exc
        return self._nvml

    def _read(self, now: float) -> list[Sample]:
        with self._lock:
            nv = self._load()
            nvml_error: type[BaseException] = nv.NVMLError
            try:
                if not self._initialised:
                    nv.nvmlInit()
                    self._initialised = True
                count = int(nv.nvmlDeviceGetCount())
            except nvml_error as exc:
                self._initialised = False
                raise SourceError(
                    f"source {self.name!r}: NVML unavailable: {error_name(nv, exc)} ({exc})"
                ) from None
            out: list[Sample] = []
            for i in range(count):
                try:
                    out.extend(self._device(nv, i, now))
                    self.gpu_errors.pop(str(i), None)
                except nvml_error as exc:
                    self.gpu_errors[str(i)] = error_name(nv, exc)
            return out

    def _device(self, nv: Any, index: int, now: float) -> list[Sample]:
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        target = self.spec.targets.get(str(index))
        if target is None and self.spec.targets:
            uuid = nv.nvmlDeviceGetUUID(handle)
            target = self.spec.targets.get(uuid.decode() if isinstance(uuid, bytes) else uuid)
        if target is None:
            if self.spec.only_mapped:
                return []
            target = f"gpu{index}"
        util = nv.nvmlDeviceGetUtilizationRates(handle)
        mem = nv.nvmlDeviceGetMemoryInfo(handle)
        total = float(mem.total)
        ratio = float(mem.used) / total if total > 0 else float("nan")
        return [
            Sample(target, "gpu_utilization", float(util.gpu), now),
            Sample(target, "gpu_memory_used_ratio", ratio, now),
        ]

    async def collect(self, now: float) -> Sequence[Sample]:
        return await asyncio.to_thread(self._read, now)

    def _shutdown(self) -> None:
        with self._lock:
            if self._initialised and self._nvml is not None:
                try:
                    self._nvml.nvmlShutdown()
                except Exception:  # noqa: S110 - best effort at shutdown
                    pass
                self._initialised = False

    async def aclose(self) -> None:
        await asyncio.to_thread(self._shutdown)


def build(name: str, spec: NvmlSpec) -> NvmlSource:
    """Factory for ``SOURCE_TYPES``."""
    return NvmlSource(name, spec)
