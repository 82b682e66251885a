"""Back to the swarm: merge the LoRA, convert to GGUF with llama.cpp's converter, requantize.

The converters are llama.cpp's own (``convert_hf_to_gguf.py``, ``convert_lora_to_gguf.py``)
from the llama.cpp tree vendored in the installed llama-cpp-python, run with this Python and
that tree's ``gguf-py``. Merging happens on HF weights, so the converter applies the q/k
permutation of the llama architecture to the merged weights itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from evals.ladder import quantize
from quantswarm.engine.build import source_tree
from quantswarm.errors import QuantswarmError


class ExportError(QuantswarmError):
    """Merging, converting or quantizing the repaired model failed."""


def merge_adapter(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path,
                  log: Callable[[str], None] = print) -> Path:
    """Base weights + LoRA merged into plain HF weights (safetensors) with the tokenizer, in ``out_dir``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    log(f"merging adapter {adapter_dir} into {base_dir}")
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    bad = [name for name, t in merged.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ExportError(f"the merged weights hold NaN/inf in {len(bad)} tensors ({', '.join(bad[:4])}, ...): "
                          f"the adapter in {adapter_dir} diverged; retrain (e.g. --precision fp32, a lower "
                          "--learning-rate)")
    merged.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out_dir)
    return out_dir


def _run_converter(script: str, args: list[str], log: Callable[[str], None]) -> None:
    tree = Path(os.environ["QUANTSWARM_LLAMA_TREE"]) if os.environ.get("QUANTSWARM_LLAMA_TREE") else source_tree()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree / "gguf-py"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(tree / script), *args]
    log(f"running llama.cpp {script}")
    t0 = time.monotonic()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip()[-1200:]
        hint = " (pip install sentencepiece: the converter imports it)" if "sentencepiece" in tail else ""
        raise ExportError(f"{script} failed (exit {res.returncode}){hint}:\n{tail}")
    log(f"{script} done in {time.monotonic() - t0:.1f}s")


def hf_to_gguf(hf_dir: str | Path, out_path: str | Path, outtype: str = "f16",
               log: Callable[[str], None] = print) -> Path:
    """Convert an HF model folder to a GGUF file (F16 by default) with ``convert_hf_to_gguf.py``."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _run_converter("convert_hf_to_gguf.py", [str(hf_dir), "--outfile", str(out_path), "--outtype", outtype], log)
    return out_path


def lora_to_gguf(adapter_dir: str | Path, base_dir: str | Path, out_path: str | Path, outtype: str = "f16",
                 log: Callable[[str], None] = print) -> Path:
    """Convert a peft LoRA adapter to a GGUF LoRA (loadable with ``lora_path``) with ``convert_lora_to_gguf.py``."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _run_converter("convert_lora_to_gguf.py",
                   [str(adapter_dir), "--base", str(base_dir), "--outfile", str(out_path), "--outtype", outtype], log)
    return out_path


def export_repaired(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path, name: str, qtype: str,
                    *, merged: bool = True, log: Callable[[str], None] = print) -> dict[str, Path]:
    """GGUF LoRA of a repaired agent and, with ``merged``, the merged HF folder, its F16 GGUF and ``qtype`` GGUF."""
    out_dir = Path(out_dir)
    files = {"lora": lora_to_gguf(adapter_dir, base_dir, out_dir / f"{name}-repair-lora-F16.gguf", "f16", log=log)}
    if merged:
        files["merged_hf"] = merge_adapter(base_dir, adapter_dir, out_dir / "merged-hf", log=log)
        files["f16"] = hf_to_gguf(files["merged_hf"], out_dir / f"{name}-repaired-F16.gguf", "f16", log=log)
        log(f"requantizing to {qtype} (evals.ladder.quantize, allow-requantize)")
        files["quant"] = quantize(files["f16"], out_dir / f"{name}-repaired-{qtype}.gguf", qtype)
    return files
