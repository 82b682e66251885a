"""CUDA_VISIBLE_DEVICES -> NVML indices: a process pinned to the second GPU measures that GPU, not NVML's first
(the 2×H200 repair runs of 2026-11-30 pinned one run per GPU and read GPU 0's energy for both)."""

from __future__ import annotations

import pytest

from quantswarm.energy import cuda_to_nvml, device_label, sample

UUIDS = ["GPU-aaaa-1111", "GPU-bbbb-2222", "GPU-cccc-3333"]


@pytest.mark.parametrize(("visible", "nvml"), [
    (None, [0, 1, 2]),  # unset: every GPU
    ("1", [1]),
    ("2,0", [2, 0]),  # CUDA index 0 is NVML's 2
    ("GPU-bbbb", [1]),  # a UUID prefix
    ("GPU-cccc-3333,1", [2, 1]),
    ("", []),  # set but empty: no GPU
    ("1,7,0", [1]),  # CUDA stops at the first entry naming no GPU
    ("0,0,1", [0]),  # ... or repeating one
    ("-1", []),
    ("GPU-zzzz", []),
    ("GPU-", []),  # a prefix of every UUID: ambiguous, as CUDA says
    ("²", []),  # a digit to str.isdigit, not to CUDA
])
def test_cuda_visible_devices_map_to_nvml_indices(visible, nvml):
    assert cuda_to_nvml(visible, UUIDS) == nvml


def test_without_nvml_nothing_is_read_and_the_device_is_the_cpu(monkeypatch):
    from quantswarm import energy

    monkeypatch.setattr(energy, "nvml_ok", lambda: False)
    assert sample(0) is None and energy.visible_gpus() == [] and device_label().startswith("cpu (")
