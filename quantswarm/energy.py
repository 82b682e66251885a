"""GPU energy, power and VRAM through NVML; degrades to "n/a" where there is no NVIDIA driver.

:class:`EnergyMeter` measures joules over a block of work: the driver's total-energy counter
(``nvmlDeviceGetTotalEnergyConsumption``, Volta and newer) when it answers, else power samples
integrated over time. It also records peak VRAM in use. :func:`nvml_status` says once why
metrics are off.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from dataclasses import dataclass, field

_STATUS: str | None = None


def nvml_status() -> str:
    """"ok: N GPU(s)" or the reason NVML is unusable (e.g. no NVIDIA driver)."""
    global _STATUS
    if _STATUS is None:
        try:
            import pynvml

            pynvml.nvmlInit()
            _STATUS = f"ok: {pynvml.nvmlDeviceGetCount()} GPU(s)"
        except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded / ImportError
            _STATUS = f"no NVIDIA driver ({type(exc).__name__}): energy/VRAM metrics off"
    return _STATUS


def nvml_ok() -> bool:
    return nvml_status().startswith("ok")


@dataclass
class GpuSample:
    """One NVML reading of one GPU."""

    t: float
    gpu: int
    power_w: float
    energy_mj: float | None
    temp_c: float
    sm_util: float
    mem_util: float
    vram_used_mib: float
    vram_total_mib: float
    process_vram_mib: dict[int, float] = field(default_factory=dict)


def cuda_to_nvml(visible: str | None, uuids: list[str]) -> list[int]:
    """NVML indices of the GPUs CUDA shows this process, in CUDA's order (CUDA index k -> result[k]).

    ``visible`` is ``CUDA_VISIBLE_DEVICES`` (None: unset, every GPU); ``uuids`` are NVML's UUIDs by NVML index.
    Entries are indices or (prefixes of) UUIDs, ``GPU-…``; as in CUDA, the list ends at the first entry that
    names no GPU or repeats one. NVML numbers GPUs in PCI bus order: an index entry maps to the same NVML index,
    which is CUDA's numbering with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (and for identical GPUs in practice)."""
    if visible is None:
        return list(range(len(uuids)))
    out: list[int] = []
    for entry in (e.strip() for e in visible.split(",")):
        if entry.isascii() and entry.isdigit():
            index = int(entry)
        else:
            matches = [i for i, u in enumerate(uuids) if entry and u.startswith(entry)]
            index = matches[0] if len(matches) == 1 else -1  # an ambiguous prefix names no GPU, as in CUDA
        if not 0 <= index < len(uuids) or index in out:
            break
        out.append(index)
    return out


def visible_gpus() -> list[int]:
    """NVML indices of the GPUs this process (and the llama.cpp servers it starts) can use ([] without NVML)."""
    if not nvml_ok():
        return []
    import os

    return cuda_to_nvml(os.environ.get("CUDA_VISIBLE_DEVICES"), list(_nvml_uuids()))


@functools.cache
def _nvml_uuids() -> tuple[str, ...]:
    import pynvml

    uuids = []
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            u = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))
            uuids.append(u.decode() if isinstance(u, bytes) else u)
    except pynvml.NVMLError as exc:
        print(f"note: NVML could not list GPU UUIDs ({exc}): GPU metrics off", file=sys.stderr)
        return ()
    return tuple(uuids)


def gpu_names() -> list[str]:
    """Names of the visible GPUs, in CUDA's order."""
    if not nvml_ok():
        return []
    import pynvml

    out = []
    for i in visible_gpus():
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
        out.append(name.decode() if isinstance(name, bytes) else name)
    return out


def device_label() -> str:
    """What a results row records in ``device``: the GPU name, or the CPU core count."""
    import os

    names = gpu_names()
    return ", ".join(names) if names else f"cpu ({os.cpu_count()} cores)"


def free_vram_mib() -> list[float]:
    """Free memory per visible GPU in MiB, in CUDA's order ([] without NVML)."""
    if not nvml_ok():
        return []
    import pynvml

    return [pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).free / 2**20
            for i in visible_gpus()]


def sample(gpu: int = 0) -> GpuSample | None:
    """One reading of GPU ``gpu`` (a CUDA index: the ``gpu``-th visible GPU); None without NVML or without
    such a GPU."""
    if not nvml_ok():
        return None
    import pynvml

    visible = visible_gpus()
    if not 0 <= gpu < len(visible):
        return None
    h = pynvml.nvmlDeviceGetHandleByIndex(visible[gpu])

    def safe(fn, default=float("nan")):
        try:
            return fn()
        except pynvml.NVMLError:
            return default

    mem = pynvml.nvmlDeviceGetMemoryInfo(h)
    util = safe(lambda: pynvml.nvmlDeviceGetUtilizationRates(h), None)
    procs = safe(lambda: pynvml.nvmlDeviceGetComputeRunningProcesses(h), [])
    return GpuSample(
        t=time.time(),
        gpu=gpu,
        power_w=safe(lambda: pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0),
        energy_mj=safe(lambda: float(pynvml.nvmlDeviceGetTotalEnergyConsumption(h)), None),
        temp_c=safe(lambda: float(pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU))),
        sm_util=float(util.gpu) if util else float("nan"),
        mem_util=float(util.memory) if util else float("nan"),
        vram_used_mib=mem.used / 2**20,
        vram_total_mib=mem.total / 2**20,
        process_vram_mib={p.pid: (p.usedGpuMemory or 0) / 2**20 for p in procs},
    )


class EnergyMeter:
    """Joules and peak VRAM over a ``with`` block, on GPU ``gpu``; all None without NVML."""

    def __init__(self, gpu: int = 0, interval_s: float = 0.1):
        self.gpu = gpu
        self.interval_s = interval_s
        self.joules: float | None = None
        self.peak_vram_mib: float | None = None
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._power_j = 0.0

    @property
    def available(self) -> bool:
        return nvml_ok()

    def __enter__(self) -> EnergyMeter:
        self._t0 = time.monotonic()
        self._start = sample(self.gpu)
        if self._start is not None:
            self.peak_vram_mib = self._start.vram_used_mib
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.interval_s):
            s = sample(self.gpu)
            now = time.monotonic()
            if s is None:
                continue
            self.peak_vram_mib = max(self.peak_vram_mib or 0.0, s.vram_used_mib)
            if s.power_w == s.power_w:  # not NaN
                self._power_j += s.power_w * (now - last)
            last = now

    def __exit__(self, *exc) -> None:
        self.seconds = time.monotonic() - self._t0
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        end = sample(self.gpu)
        if self._start.energy_mj is not None and end is not None and end.energy_mj is not None:
            self.joules = (end.energy_mj - self._start.energy_mj) / 1000.0
        else:
            self.joules = self._power_j

    def wh_per_mtok(self, tokens: int) -> float | None:
        """Watt-hours per million tokens over the block (None without a meter or tokens)."""
        return wh_per_mtok(self.joules, tokens)

    @property
    def avg_power_w(self) -> float | None:
        """Mean power over the block, W to 0.1 (None without a reading)."""
        return round(self.joules / self.seconds, 1) if self.joules is not None and self.seconds > 0 else None


def wh_per_mtok(joules: float | None, tokens: int) -> float | None:
    """Watt-hours per million generated tokens: ``joules`` / 3600 / ``tokens`` x 1e6 (None without joules or
    tokens)."""
    if joules is None or tokens <= 0:
        return None
    return joules / 3600.0 / tokens * 1e6
