"""Read the buffer sizes a llama-server (llama.cpp) load log reports, to compare them with the VRAM plan.

llama.cpp logs one line per buffer and device at load (visible with ``-lv 4``; the workers start that way):

    load_tensors:   CPU_Mapped model buffer size =    92.10 MiB
    llama_context:        CPU  output buffer size =     0.38 MiB
    llama_kv_cache:        CPU KV buffer size =    22.50 MiB
    sched_reserve:        CPU compute buffer size =    14.01 MiB

(``load_tensors``, ``llama_context::llama_context``, ``llama_kv_cache::llama_kv_cache`` and
``llama_context::sched_reserve`` in llama.cpp's ``src/``). The device is the buffer type's name: ``CPU``,
``CPU_Mapped``, ``CUDA0``, ``CUDA_Host`` ...
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_LINE = re.compile(r"(?P<dev>[\w.-]+)\s+(?P<kind>model|output|KV|compute) buffer size\s*=\s*(?P<mib>[\d.]+) MiB")
KINDS = ("model", "kv", "compute", "output")


@dataclass
class LoggedBuffers:
    """MiB per device for each kind of buffer llama.cpp reported (``{"CPU": 14.01}``); empty when not logged."""

    model: dict[str, float] = field(default_factory=dict)
    kv: dict[str, float] = field(default_factory=dict)
    compute: dict[str, float] = field(default_factory=dict)
    output: dict[str, float] = field(default_factory=dict)

    def total(self, kind: str, device_prefix: str = "") -> float:
        """Sum of one kind over the devices whose name starts with ``device_prefix`` (all by default), MiB."""
        return sum(v for d, v in getattr(self, kind).items() if d.startswith(device_prefix))

    @property
    def found(self) -> bool:
        return any(getattr(self, k) for k in KINDS)


def parse_buffer_sizes(text: str) -> LoggedBuffers:
    """The buffer sizes of a llama.cpp load log; a later line for the same device and kind replaces an earlier one
    (a re-reserve, or a restart appended to the same log)."""
    out = LoggedBuffers()
    for m in _LINE.finditer(text):
        getattr(out, m["kind"].lower())[m["dev"]] = float(m["mib"])
    return out


def read_buffer_sizes(path: str | Path) -> LoggedBuffers:
    """:func:`parse_buffer_sizes` of a log file (empty when the file cannot be read)."""
    try:
        return parse_buffer_sizes(Path(path).read_text(errors="replace"))
    except OSError:
        return LoggedBuffers()
