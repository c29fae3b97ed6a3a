"""Direct GPU readings through NVML, for the GPU-host systemd mode.

Reads per-GPU utilisation and memory with ``nvidia-ml-py`` (module ``pynvml``, imported
lazily, install the ``gpu`` extra). Signals per GPU:

- ``gpu_utilization``: percent (0–100) of the last sample period in which a kernel ran
  (``nvmlDeviceGetUtilizationRates().gpu``);
- ``gpu_memory_used_ratio``: ``used / total`` device memory (0–1).

The target of GPU ``i`` is ``targets[str(i)]`` (or ``targets[<uuid>]``) when mapped,
otherwise ``gpu<i>``. Several GPUs mapped to one target (a worker with two GPUs) give one
sample per signal: the mean utilisation (as DCGM dashboards and KEDA-style scalers
average a node's GPUs) and the highest memory ratio (the fullest GPU is the one that runs
out: memory free on another GPU does not help it). Without the library, a driver or a
GPU, collect raises ``SourceError`` with the NVML error name (for example
``NVML_ERROR_LIBRARY_NOT_FOUND``) and tries to initialise again next tick; it never
crashes the service. A read error of one GPU (``NVML_ERROR_GPU_IS_LOST``,
``NOT_SUPPORTED`` under MIG, ...) makes its target's samples NaN (an average of the
remaining GPUs would misreport the target, and no sample would leave its last reading
looking fresh until ``max_age``): the store counts them and policies hold. It is kept in
``gpu_errors``; the other targets still report. A GPU that fails before its UUID is read
counts against the target it had at its last good read, or, never read, every target
mapped by UUID. A value no GPU can have (utilisation outside 0–100, memory used beyond
the total, a total of 0: a driver bug) is reported as NaN too (with the other GPUs of its
target), and is kept in ``gpu_errors``.

Calls block (microseconds to milliseconds, for ever on a GPU that fell off the bus), so
they run in a thread of the source's own, one call at a time: while a call is still
running, a collect does not start another one but fails at once (counted as
``stuck``), so at most one thread is ever stuck and the shared default executor (which
forecasting uses) is never filled with waiting ones.

Not verified on a real GPU in this project: tested on a host without a driver (the real
``LIBRARY_NOT_FOUND`` path) and with ``pynvml`` functions replaced at the seam.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from prometheus_client.core import Metric

from autoscaler.errors import SourceError
from autoscaler.sources.base import Sample
from autoscaler.sources.stats import by_reason

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NvmlSpec:
    """Config of an ``nvml`` source."""

    targets: dict[str, str] = field(default_factory=dict)
    """GPU index (as a string, e.g. "0") or UUID → target name; unmapped GPUs are
    ``gpu<index>``. GPUs of one target report its mean utilisation and highest memory
    ratio."""
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
        self._busy = False
        """A call runs in the source's thread (cleared on the loop when it returns)."""
        self._busy_since = 0.0
        self._index_target: dict[int, str] = {}
        """Target of each GPU index at its last good read."""
        self.gpu_errors: dict[str, str] = {}
        """Last read error per GPU index (cleared when the GPU reads again)."""
        self.errors: Counter[str] = Counter()
        """Collects that failed by reason: ``stuck`` (the previous NVML call is still
        running)."""

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
        util: dict[str, list[float]] = {}
        mem: dict[str, list[float]] = {}
        failed: set[str] = set()
        for i in range(count):
            target: str | None = None
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(i)
                target = self._target(nv, i, handle)
                if target is None:
                    continue
                gpu_util, ratio, wrong = self._device(nv, handle)
            except nvml_error as exc:
                self.gpu_errors[str(i)] = error_name(nv, exc)
                failed |= {target} if target else self._maybe_targets(i)
                continue
            except Exception as exc:  # a binding or driver bug (a None, a bad struct): this GPU
                self.gpu_errors[str(i)] = f"{type(exc).__name__}: {exc}"
                failed |= {target} if target else self._maybe_targets(i)
                continue
            self._index_target[i] = target
            if wrong:
                self.gpu_errors[str(i)] = f"invalid reading: {wrong}"
            else:
                self.gpu_errors.pop(str(i), None)
            util.setdefault(target, []).append(gpu_util)
            mem.setdefault(target, []).append(ratio)
        out: list[Sample] = []
        for target in [*util, *sorted(failed - util.keys())]:
            if target in failed:
                # Not all its GPUs could be read: its reading is not known. NaN, so policies
                # hold now; no sample would leave its last reading fresh until max_age.
                gpu_util = ratio = math.nan
            else:
                values, ratios = util[target], mem[target]
                gpu_util = sum(values) / len(values)
                ratio = max(ratios) if all(math.isfinite(r) for r in ratios) else math.nan
            out.append(Sample(target, "gpu_utilization", gpu_util, now))
            out.append(Sample(target, "gpu_memory_used_ratio", ratio, now))
        return out

    def _maybe_targets(self, index: int) -> set[str]:
        """Targets a GPU that failed before its UUID was read may belong to: the one it
        had when it last read well, else its index's, else (mapped by UUID) every target
        mapped by UUID, since reporting the others' GPUs alone would misreport them."""
        if index in self._index_target:
            return {self._index_target[index]}
        by_index = self.spec.targets.get(str(index))
        if by_index is not None:
            return {by_index}
        by_uuid = {t for k, t in self.spec.targets.items() if not k.isdigit()}
        return by_uuid | ({f"gpu{index}"} if not self.spec.only_mapped else set())

    def _target(self, nv: Any, index: int, handle: Any) -> str | None:
        """The target of a GPU; None when it is not mapped and only mapped GPUs count."""
        target = self.spec.targets.get(str(index))
        if target is None and self.spec.targets:
            uuid = nv.nvmlDeviceGetUUID(handle)
            target = self.spec.targets.get(uuid.decode() if isinstance(uuid, bytes) else uuid)
        if target is None and not self.spec.only_mapped:
            target = f"gpu{index}"
        return target

    def _device(self, nv: Any, handle: Any) -> tuple[float, float, str]:
        """Utilisation (%) and memory used ratio of one GPU, and what was wrong with them:
        a value no GPU can have (utilisation outside 0..100, used memory beyond a total, a
        total of 0) is NaN, so policies hold rather than act on it."""
        util = float(nv.nvmlDeviceGetUtilizationRates(handle).gpu)
        mem = nv.nvmlDeviceGetMemoryInfo(handle)
        used, total = float(mem.used), float(mem.total)
        ratio = used / total if total > 0 else math.nan
        wrong = []
        if not 0 <= util <= 100:
            wrong.append(f"utilization {util:g} %")
            util = math.nan
        if not 0 <= ratio <= 1:
            wrong.append(f"memory used {used:g} of {total:g} bytes")
            ratio = math.nan
        return util, ratio, "; ".join(wrong)

    async def _call(self, fn: Callable[[], list[Sample]], now: float) -> list[Sample]:
        """``fn()`` in the source's own thread; refused while the previous call still runs
        (NVML hung), so at most one thread is ever stuck here."""
        if self._busy:
            self.errors["stuck"] += 1
            log.warning("nvml call still running, skipping", extra={"source": self.name})
            raise SourceError(
                f"source {self.name!r}: the NVML call started at {self._busy_since:.0f} is"
                " still running (a hung GPU or driver?), not starting another"
            )
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[Sample]] = loop.create_future()

        def settle(result: list[Sample] | None, exc: BaseException | None) -> None:
            self._busy = False
            if done.cancelled():  # the tick gave up on it
                return
            if exc is not None:
                done.set_exception(exc)
            else:
                done.set_result(result or [])

        def run() -> None:
            try:
                result, exc = fn(), None
            except BaseException as e:  # handed to the awaiting task
                result, exc = None, e
            try:
                loop.call_soon_threadsafe(settle, result, exc)
            except RuntimeError:  # the loop closed while NVML was hung
                pass

        # A daemon thread: one hung in the driver must not keep the process from exiting.
        thread = threading.Thread(target=run, name=f"nvml-{self.name}", daemon=True)
        self._busy, self._busy_since = True, now
        try:
            thread.start()
        except RuntimeError as exc:  # no thread to be had
            self._busy = False
            raise SourceError(f"source {self.name!r}: cannot start an NVML thread: {exc}") from exc
        return await done

    async def collect(self, now: float) -> Sequence[Sample]:
        return await self._call(lambda: self._read(now), now)

    def _shutdown(self) -> list[Sample]:
        if self._initialised and self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: S110 - best effort at shutdown
                pass
            self._initialised = False
        return []

    async def aclose(self) -> None:
        try:
            await self._call(self._shutdown, self._busy_since)
        except SourceError:  # still hung: leave NVML alone, the daemon thread dies with us
            pass

    def metric_families(self) -> list[Metric]:
        """``autoscaler_source_query_errors_total{source,reason}`` (``stuck``)."""
        return [
            by_reason(
                "autoscaler_source_query_errors",
                "Failed source queries by reason",
                self.name,
                self.errors,
            )
        ]


def build(name: str, spec: NvmlSpec) -> NvmlSource:
    """Factory for ``SOURCE_TYPES``."""
    return NvmlSource(name, spec)
