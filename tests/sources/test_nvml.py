"""The NVML source. This machine has no NVIDIA driver: the unavailable path runs for real;
the reading path runs with ``pynvml`` functions replaced at the seam. Not verified on a
real GPU."""

from __future__ import annotations

import asyncio
import ctypes.util
import math
import threading
from collections.abc import Sequence
from types import SimpleNamespace

import pynvml
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from autoscaler.errors import SourceError
from autoscaler.sources.base import Sample
from autoscaler.sources.nvml import NvmlSource, NvmlSpec
from autoscaler.sources.stats import SourceStats


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


def nan_targets(samples: Sequence[Sample]) -> tuple[set[str], set[str]]:
    """Targets with finite samples, and targets whose every sample is NaN (both signals)."""
    finite = {s.target for s in samples if math.isfinite(s.value)}
    nan = {s.target for s in samples if math.isnan(s.value)}
    assert not finite & nan
    for t in finite | nan:
        assert sorted(s.signal for s in samples if s.target == t) == [
            "gpu_memory_used_ratio",
            "gpu_utilization",
        ]
    return finite, nan


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

    gpus.lost = True  # its target's reading is unknown (NaN: policies hold at once), the
    # other GPUs report; no sample would leave its last reading fresh until max_age
    assert nan_targets(await src.collect(7.0)) == ({"gpu0"}, {"llm-worker"})
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


async def test_gpus_mapped_to_one_target_give_its_mean_utilisation_and_fullest_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpus = FakeGpus()
    gpus.install(monkeypatch)
    src = NvmlSource("gpu", NvmlSpec(targets={"0": "worker", "GPU-1": "worker"}))
    got = sorted((s.target, s.signal, s.value) for s in await src.collect(5.0))
    assert got == [("worker", "gpu_memory_used_ratio", 0.5), ("worker", "gpu_utilization", 66.0)]
    gpus.lost = True  # half the worker's GPUs cannot be read: the worker has no reading
    assert nan_targets(await src.collect(6.0)) == (set(), {"worker"})
    assert src.gpu_errors == {"1": "NVML_ERROR_GPU_IS_LOST"}


async def test_a_gpu_mapped_by_uuid_that_fails_before_its_uuid_is_read_holds_its_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GPU 1 is lost so early that even its handle cannot be had: which target it feeds is
    not known from the failing call, and the other GPU alone would misreport "worker"."""
    gpus = FakeGpus()
    gpus.install(monkeypatch)

    def handle(i: int) -> int:
        if i == 1 and gpus.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return i

    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", handle)
    spec = NvmlSpec(targets={"GPU-0": "worker", "GPU-1": "worker"})
    gpus.lost = True  # from the first read on: only the UUID map says where GPU 1 goes
    # (or, unmapped, it is gpu1)
    assert nan_targets(await NvmlSource("gpu", spec).collect(5.0)) == (set(), {"worker", "gpu1"})
    src = NvmlSource("gpu", spec)
    gpus.lost = False
    assert {s.target for s in await src.collect(5.0)} == {"worker"}
    gpus.lost = True  # after a good read: the GPU's target is remembered
    assert nan_targets(await src.collect(6.0)) == (set(), {"worker"})
    assert src.gpu_errors == {"1": "NVML_ERROR_GPU_IS_LOST"}


async def test_a_hung_nvml_call_ties_up_one_thread_and_later_collects_fail_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    FakeGpus().install(monkeypatch)
    loop = asyncio.get_running_loop()
    entered, release = asyncio.Event(), threading.Event()

    def hung(h: int) -> SimpleNamespace:  # a GPU fallen off the bus
        loop.call_soon_threadsafe(entered.set)
        release.wait()
        return SimpleNamespace(gpu=1, memory=0)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetUtilizationRates", hung)
    src = NvmlSource("gpu", NvmlSpec())
    first = asyncio.create_task(src.collect(1.0))
    await entered.wait()
    first.cancel()  # the engine's tick timeout gives up on it
    with pytest.raises(asyncio.CancelledError):
        await first
    threads = threading.active_count()
    try:
        for now in range(2, 42):  # more ticks than the default executor has threads
            with pytest.raises(SourceError, match="still running"):
                await asyncio.wait_for(src.collect(float(now)), 10)
        assert threading.active_count() == threads
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "forecast"), 10) == "forecast"
        assert src.errors["stuck"] == 40
        assert 'reason="stuck"' in generate_latest_of(src)
    finally:
        release.set()
    # the released call hands its result back to the loop soon, with no event to wait on
    while len(samples := await collect_when_free(src, 50.0)) == 0:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    assert {s.target for s in samples} == {"gpu0", "gpu1"}  # the GPU came back


async def collect_when_free(src: NvmlSource, now: float) -> Sequence[Sample]:
    try:
        return await src.collect(now)
    except SourceError:  # the hung call has not returned yet
        return []


def generate_latest_of(src: NvmlSource) -> str:
    registry = CollectorRegistry()
    registry.register(SourceStats([src]))
    return generate_latest(registry).decode()


async def test_a_reading_no_gpu_can_have_is_nan_so_policies_hold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A driver bug (a utilisation of 4294967295 %, used memory beyond the total) must not
    read as a saturated GPU and scale a target out: it is NaN, which policies hold on."""
    gpus = FakeGpus()
    gpus.install(monkeypatch)
    monkeypatch.setattr(
        pynvml,
        "nvmlDeviceGetUtilizationRates",
        lambda h: SimpleNamespace(gpu=[4294967295, 97][h], memory=0),
    )
    monkeypatch.setattr(
        pynvml,
        "nvmlDeviceGetMemoryInfo",
        lambda h: SimpleNamespace(total=80 << 30, used=[20 << 30, 90 << 30][h], free=0),
    )
    src = NvmlSource("gpu", NvmlSpec(targets={"0": "worker", "GPU-1": "worker", "2": "x"}))
    got = {(s.target, s.signal): s.value for s in await src.collect(5.0)}
    assert got.keys() == {("worker", "gpu_utilization"), ("worker", "gpu_memory_used_ratio")}
    assert all(math.isnan(v) for v in got.values()), got  # not a mean of 97 and 4.3e9
    assert src.gpu_errors == {
        "0": "invalid reading: utilization 4.29497e+09 %",
        "1": "invalid reading: memory used 9.66368e+10 of 8.58993e+10 bytes",
    }
    gpus.install(monkeypatch)  # the driver reads sanely again
    got = {(s.target, s.signal): s.value for s in await src.collect(6.0)}
    assert got == {("worker", "gpu_utilization"): 66.0, ("worker", "gpu_memory_used_ratio"): 0.5}
    assert src.gpu_errors == {}


async def test_an_error_nvml_does_not_name_fails_that_gpu_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A binding or driver bug that is not an NVMLError (a field that is None) is that GPU's
    error, as an NVMLError is: the other GPUs still report."""
    gpus = FakeGpus()
    gpus.install(monkeypatch)
    monkeypatch.setattr(
        pynvml, "nvmlDeviceGetUtilizationRates", lambda h: SimpleNamespace(gpu=[35, None][h])
    )
    src = NvmlSource("gpu", NvmlSpec())
    samples = await src.collect(5.0)
    assert nan_targets(samples) == ({"gpu0"}, {"gpu1"})
    got = {(s.target, s.signal): s.value for s in samples if s.target == "gpu0"}
    assert got == {("gpu0", "gpu_utilization"): 35.0, ("gpu0", "gpu_memory_used_ratio"): 0.25}
    assert src.gpu_errors["1"].startswith("TypeError: float() argument must be")


readings = st.one_of(
    st.integers(min_value=0, max_value=2**64), st.floats(allow_nan=True, allow_infinity=True)
)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    util=st.lists(readings, min_size=2, max_size=2),
    mem=st.lists(st.tuples(readings, readings), min_size=2, max_size=2),
)
def test_whatever_nvml_returns_every_sample_is_nan_or_in_range(
    util: list[float], mem: list[tuple[float, float]]
) -> None:
    """Fuzzed at the pynvml seam: values a buggy driver (or binding) may hand back never
    become a utilisation outside 0..100 or a memory ratio outside 0..1."""
    with pytest.MonkeyPatch.context() as mp:
        FakeGpus().install(mp)
        mp.setattr(pynvml, "nvmlDeviceGetUtilizationRates", lambda h: SimpleNamespace(gpu=util[h]))
        mp.setattr(
            pynvml,
            "nvmlDeviceGetMemoryInfo",
            lambda h: SimpleNamespace(used=mem[h][0], total=mem[h][1], free=0),
        )
        for spec in (NvmlSpec(), NvmlSpec(targets={"0": "w", "1": "w"})):
            samples = asyncio.run(NvmlSource("gpu", spec).collect(1.0))
            assert len(samples) == (4 if not spec.targets else 2)
            for s in samples:
                top = 100.0 if s.signal == "gpu_utilization" else 1.0
                assert math.isnan(s.value) or 0.0 <= s.value <= top, (s, util, mem)
