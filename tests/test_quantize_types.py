"""Quant type names -> llama.cpp's LLAMA_FTYPE: from the Python binding, or from gguf's LlamaFileType where the
binding is absent (a device machine with only the built tools); both tables must agree."""

from __future__ import annotations

import sys

import pytest

from quantswarm.errors import ConfigError
from quantswarm.quantize import ftype

LADDER = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K", "BF16", "F32")


def test_the_binding_and_gguf_give_the_same_numbers(monkeypatch):
    with_binding = {q: ftype(q) for q in LADDER}
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` now raises ImportError
    assert {q: ftype(q) for q in LADDER} == with_binding
    assert with_binding["Q4_K_M"] == 15 and with_binding["F16"] == 1 and with_binding["F32"] == 0
    assert ftype("q2_k") == 10  # case does not matter


@pytest.mark.parametrize("binding", [True, False], ids=["binding", "gguf"])
def test_an_unknown_type_is_one_line_listing_the_known(monkeypatch, binding):
    if not binding:
        monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(ConfigError, match=r"unknown quant type 'Q9_K'; llama.cpp knows: .*Q4_K_M") as exc:
        ftype("Q9_K")
    assert "\n" not in str(exc.value)
