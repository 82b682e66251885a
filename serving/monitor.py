"""GPU monitor: a background NVML sampler writing CSV, a temperature alert, plots and energy summaries.

Readings come from :func:`quantswarm.energy.sample`. On a machine without NVML the monitor says so
once and records nothing (no CSV is created).
"""

from __future__ import annotations

import csv
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from quantswarm.energy import GpuSample, nvml_ok, nvml_status, sample, wh_per_mtok
from quantswarm.errors import DataError

COLUMNS = ["t", "gpu", "power_w", "energy_mj", "temp_c", "sm_util", "mem_util", "vram_used_mib", "vram_total_mib",
           "process_vram_mib"]


def sample_row(s: GpuSample) -> dict:
    return {"t": f"{s.t:.3f}", "gpu": s.gpu, "power_w": s.power_w,
            "energy_mj": "" if s.energy_mj is None else s.energy_mj, "temp_c": s.temp_c, "sm_util": s.sm_util,
            "mem_util": s.mem_util, "vram_used_mib": round(s.vram_used_mib, 1),
            "vram_total_mib": round(s.vram_total_mib, 1),
            "process_vram_mib": json.dumps({str(k): round(v, 1) for k, v in s.process_vram_mib.items()})}


class Monitor:
    """Samples GPU ``gpu`` every ``interval_s`` into ``csv_path`` on a daemon thread (``start``/``stop``)."""

    def __init__(self, csv_path: str | Path, interval_s: float = 1.0, gpu: int = 0, temp_alert_c: float = 85.0,
                 log: Callable[[str], None] = print, sampler: Callable[[int], GpuSample | None] = sample):
        self.csv_path = Path(csv_path)
        self.interval_s = interval_s
        self.gpu = gpu
        self.temp_alert_c = temp_alert_c
        self.log = log
        self._sample = sampler
        self.available = sampler is not sample or nvml_ok()
        self.last: GpuSample | None = None
        self.samples = 0
        self.alerts = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Monitor:
        if not self.available:
            self.log(f"monitor: {nvml_status()}; recording nothing")
            return self
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._loop, name="quantswarm-monitor", daemon=True)
        self._thread.start()
        self.log(f"monitor: sampling GPU {self.gpu} every {self.interval_s:g} s into {self.csv_path}")
        return self

    def _loop(self) -> None:
        new = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        hot = False
        with open(self.csv_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                w.writeheader()
            while True:
                s = self._sample(self.gpu)
                if s is not None:
                    self.last = s
                    w.writerow(sample_row(s))
                    f.flush()
                    self.samples += 1
                    is_hot = s.temp_c == s.temp_c and s.temp_c > self.temp_alert_c
                    if is_hot and not hot:
                        self.alerts += 1
                        self.log(f"ALERT gpu{s.gpu} temperature {s.temp_c:.0f} C > {self.temp_alert_c:.0f} C "
                                 f"(power {s.power_w:.0f} W, VRAM {s.vram_used_mib:.0f} MiB)")
                    hot = is_hot
                if self._stop.wait(self.interval_s):
                    return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def read_samples(csv_path: str | Path) -> list[dict]:
    """Rows of a monitor CSV (numbers as floats); DataError for a missing or foreign file."""
    p = Path(csv_path)
    if not p.is_file():
        raise DataError(f"{p}: no monitor CSV (written by `quantswarm serve` or `quantswarm monitor run` on a GPU)")
    with open(p, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not set(COLUMNS) <= set(reader.fieldnames):
            raise DataError(f"{p}: not a quantswarm monitor CSV (columns {', '.join(COLUMNS)})")
        rows = []
        for r in reader:
            row = {k: (float(v) if v not in ("", None) else math.nan) for k, v in r.items()
                   if k != "process_vram_mib"}
            row["process_vram_mib"] = r["process_vram_mib"]
            rows.append(row)
    return rows


@dataclass
class EnergySummary:
    """Energy over a monitor CSV (or a time window of it)."""

    seconds: float
    joules: float | None
    mean_power_w: float | None
    peak_vram_mib: float | None
    peak_temp_c: float | None
    tokens: int = 0

    @property
    def wh_per_mtok(self) -> float | None:
        return wh_per_mtok(self.joules, self.tokens)


def energy_summary(rows: list[dict], tokens: int = 0, t0: float | None = None,
                   t1: float | None = None) -> EnergySummary:
    """Joules from the energy counter (or power integrated over time), peaks, and Wh per 1M ``tokens``."""
    rows = [r for r in rows if (t0 is None or r["t"] >= t0) and (t1 is None or r["t"] <= t1)]
    if len(rows) < 2:
        return EnergySummary(0.0, None, None, rows[0]["vram_used_mib"] if rows else None,
                             rows[0]["temp_c"] if rows else None, tokens)
    secs = rows[-1]["t"] - rows[0]["t"]
    e0, e1 = rows[0]["energy_mj"], rows[-1]["energy_mj"]
    if e0 == e0 and e1 == e1:
        joules = (e1 - e0) / 1000.0
    else:
        joules = sum((b["t"] - a["t"]) * (a["power_w"] + b["power_w"]) / 2 for a, b in zip(rows, rows[1:], strict=False)
                     if a["power_w"] == a["power_w"] and b["power_w"] == b["power_w"])
    return EnergySummary(secs, joules, joules / secs if secs > 0 else None,
                         max(r["vram_used_mib"] for r in rows), max(r["temp_c"] for r in rows), tokens)


def plot_monitor(csv_path: str | Path, out: str | Path | None = None) -> Path:
    """Draw power and VRAM over time from a monitor CSV into a PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_samples(csv_path)
    if not rows:
        raise DataError(f"{csv_path}: no samples to plot")
    out = Path(out) if out else Path(csv_path).with_suffix(".png")
    t0 = rows[0]["t"]
    ts = [r["t"] - t0 for r in rows]
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(9, 5.5))
    ax1.plot(ts, [r["power_w"] for r in rows], color="tab:red")
    ax1.set_ylabel("power (W)")
    ax1.grid(alpha=0.3)
    ax2.plot(ts, [r["vram_used_mib"] for r in rows], color="tab:blue", label="used")
    ax2.axhline(rows[0]["vram_total_mib"], color="grey", ls="--", lw=0.8, label="total")
    ax2.set_ylabel("VRAM (MiB)")
    ax2.set_xlabel("seconds")
    ax2.legend(loc="lower right")
    ax2.grid(alpha=0.3)
    s = energy_summary(rows)
    title = Path(csv_path).name
    if s.joules is not None:
        title += f": {s.joules / 3600:.3f} Wh over {s.seconds:.0f} s, peak VRAM {s.peak_vram_mib:.0f} MiB"
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def run_monitor(csv_path: str | Path, interval_s: float, duration_s: float | None, gpu: int = 0,
                temp_alert_c: float = 85.0, log: Callable[[str], None] = print) -> int:
    """Sample in the foreground for ``duration_s`` (None: until Ctrl-C); returns samples written."""
    mon = Monitor(csv_path, interval_s, gpu, temp_alert_c, log=log).start()
    if not mon.available:
        return 0
    t_end = time.monotonic() + duration_s if duration_s else math.inf
    try:
        while time.monotonic() < t_end:
            time.sleep(min(0.5, max(t_end - time.monotonic(), 0.01)))
    except KeyboardInterrupt:
        pass
    finally:
        mon.stop()
    return mon.samples
