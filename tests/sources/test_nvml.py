"""The NVML source. This machine has no NVIDIA driver: the unavailable path runs for real;
the reading path runs with ``pynvml`` functions replaced at the seam. Not verified on a
real GPU."""

from __future__ import annotations

import ctypes.util
import math
from types import SimpleNamespace

import pynvml
import pytest

from autoscaler.errors import SourceError
from autoscaler.sources.nvml import NvmlSource, NvmlSpec


@pytest.mark.skipif(
    ctypes.util.find_library("nvidia-ml") is not None, reason="a real NVML library is present"
)
async def test_without_a_driver_the_source_reports_library_not_found() -> None:
    src = NvmlSource("gpu", NvmlSpec())
    try:
        for now in (1.0, 2.0):  # retried each tick, never crashing
            with pytest.raises(SourceError, match="NVML_ERROR_LIBRARY_NOT_FOUND"):
                await src.collect(now)
    finally:
        await src.aclose()


async def test_without_pynvml_installed_the_reason_says_what_to_install() -> None:
    src = NvmlSource("gpu", NvmlSpec(), module="pynvml_missing_for_test")
    with pytest.raises(SourceError, match="nvidia-ml-py"):
        await src.collect(1.0)


class FakeGpus:
    """Two GPUs behind the pynvml API; GPU 1 can be 'lost'."""

    def __init__(self) -> None:
        self.inits = 0
        self.shutdowns = 0
        self.lost = False

    def install(self, mp: pytest.MonkeyPatch) -> None:
        mp.setattr(pynvml, "nvmlInit", self.init)
        mp.setattr(pynvml, "nvmlShutdown", self.shutdown)
        mp.setattr(pynvml, "nvmlDeviceGetCount", lambda: 2)
        mp.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: i)
        mp.setattr(pynvml, "nvmlDeviceGetUUID", lambda h: f"GPU-{h}")
        mp.setattr(pynvml, "nvmlDeviceGetUtilizationRates", self.util)
        mp.setattr(
            pynvml,
            "nvmlDeviceGetMemoryInfo",
            lambda h: SimpleNamespace(total=80 << 30, used=(20 << 30) * (h + 1), free=0),
        )

    def init(self) -> None:
        self.inits += 1

    def shutdown(self) -> None:
        self.shutdowns += 1

    def util(self, h: int) -> SimpleNamespace:
        if h == 1 and self.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return SimpleNamespace(gpu=[35, 97][h], memory=10)


async def test_gpus_are_read_per_index_with_mapped_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = FakeGpus()
    gpus.install(monkeypatch)
    src = NvmlSource("gpu", NvmlSpec(targets={"GPU-1": "llm-worker"}))
    got = {(s.target, s.signal): (s.value, s.at) for s in await src.collect(5.0)}
    assert got == {
        ("gpu0", "gpu_utilization"): (35.0, 5.0),
        ("gpu0", "gpu_memory_used_ratio"): (0.25, 5.0),
        ("llm-worker", "gpu_utilization"): (97.0, 5.0),
        ("llm-worker", "gpu_memory_used_ratio"): (0.5, 5.0),
    }
    await src.collect(6.0)
    assert gpus.inits == 1, "NVML is initialised once"

    gpus.lost = True
    samples = await src.collect(7.0)
    assert {s.target for s in samples} == {"gpu0"}, "a lost GPU is skipped, the others report"
    assert src.gpu_errors == {"1": "NVML_ERROR_GPU_IS_LOST"}
    await src.aclose()
    assert gpus.shutdowns == 1


async def test_only_mapped_gpus_are_reported_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeGpus().install(monkeypatch)
    src = NvmlSource("gpu", NvmlSpec(targets={"0": "embedder"}, only_mapped=True))
    samples = await src.collect(1.0)
    assert {s.target for s in samples} == {"embedder"}
    assert all(math.isfinite(s.value) for s in samples)


async def test_driver_not_loaded_at_init_is_retried_next_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpus = FakeGpus()
    gpus.install(monkeypatch)
    calls = {"n": 0}

    def flaky_init() -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    monkeypatch.setattr(pynvml, "nvmlInit", flaky_init)
    src = NvmlSource("gpu", NvmlSpec())
    with pytest.raises(SourceError, match="NVML_ERROR_DRIVER_NOT_LOADED"):
        await src.collect(1.0)
    assert len(await src.collect(2.0)) == 4
