"""llama.cpp's quantizer: write a GGUF as another quant type (allow-requantize on).

Shared by the quant ladder (evals), swarm specs that make missing quants (serving) and repair.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from quantswarm.engine.base import quiet_native_stderr
from quantswarm.engine.build import find_tool, require_tool
from quantswarm.errors import ConfigError, EngineError
from quantswarm.registry import inspect_gguf


def ftype(qtype: str) -> int:
    """llama.cpp's LLAMA_FTYPE constant for a quant name such as ``Q4_K_M``: from the Python binding when it is
    installed, else from the ``gguf`` package's ``LlamaFileType`` (same values; a machine with only the built
    tools has no binding). Raises ConfigError for an unknown name, listing the known ones."""
    try:
        import llama_cpp

        table = {k.removeprefix("LLAMA_FTYPE_MOSTLY_").removeprefix("LLAMA_FTYPE_ALL_"): int(getattr(llama_cpp, k))
                 for k in dir(llama_cpp) if k.startswith(("LLAMA_FTYPE_MOSTLY_", "LLAMA_FTYPE_ALL_"))}
    except ImportError:
        from gguf import LlamaFileType

        table = {m.name.removeprefix("MOSTLY_").removeprefix("ALL_"): int(m) for m in LlamaFileType
                 if m.name != "GUESSED"}
    name = qtype.upper()
    if name not in table:
        raise ConfigError(f"unknown quant type {qtype!r}; llama.cpp knows: {', '.join(sorted(table))}")
    return table[name]


def quantize(src: str | Path, dst: str | Path, qtype: str, *, imatrix: str | Path | None = None,
             threads: int = 0) -> Path:
    """Write ``src`` as ``qtype`` to ``dst`` (allow-requantize on).

    Uses the built ``llama-quantize`` tool when there is one (required with ``imatrix``), else the Python binding.
    """
    src, dst = Path(src), Path(dst)
    inspect_gguf(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    tool = require_tool("llama-quantize") if imatrix else find_tool("llama-quantize")
    if tool is not None:  # the built tool when there is one: the Python binding is then not needed at all
        ftype(qtype)  # an unknown type fails here with the list of known ones
        args = [str(tool), "--allow-requantize"] + (["--imatrix", str(imatrix)] if imatrix else [])
        res = subprocess.run(args + [str(src), str(tmp), qtype.upper(), str(threads or 0)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise EngineError(f"llama-quantize {qtype} failed: {res.stderr[-400:]}")
    else:
        import llama_cpp

        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype(qtype)
        params.allow_requantize = True
        params.nthread = threads
        with quiet_native_stderr():
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if rc != 0:
            tmp.unlink(missing_ok=True)
            raise EngineError(f"llama.cpp could not quantize {src} to {qtype} (code {rc})")
    tmp.replace(dst)
    return dst
