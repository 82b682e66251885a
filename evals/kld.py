"""Token-level fidelity against the reference: mean KL divergence and top-1 agreement.

Uses llama.cpp's own ``llama-perplexity``: once ``--kl-divergence-base`` on the reference saves
its next-token distributions over a fixed text, then ``--kl-divergence`` on each quant compares.
The text is ``evals/heldout.txt`` (MMLU dev + HumanEval, ``evals.heldout_text``), never the importance matrix's
calibration text (``evals/calibration.txt``), which would favour the imatrix rungs; provenance in ``evals/TEXTS.md``.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from quantswarm.engine.build import require_tool
from quantswarm.errors import ConfigError, EngineError
from quantswarm.registry import sha256_file

CALIBRATION = Path(__file__).parent / "calibration.txt"  # the importance matrix's text (llama-imatrix)
HELDOUT = Path(__file__).parent / "heldout.txt"  # the KLD's text, held out from CALIBRATION


@dataclass
class Fidelity:
    """One quant's fidelity to the reference on the same text."""

    agent: str
    reference_agent: str
    mean_kld: float
    kld_err: float
    same_top1_pct: float
    ppl: float
    tokens: int
    text: str


def _perplexity(args: list[str]) -> str:
    res = subprocess.run([str(require_tool("llama-perplexity")), *args], capture_output=True, text=True)
    out = res.stdout + res.stderr
    if res.returncode != 0:
        raise EngineError(f"llama-perplexity failed (exit {res.returncode}): {out[-500:]}")
    return out


def _num(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    return float(m.group(1)) if m else float("nan")


def measure(reference: tuple[str, str], quants: list[tuple[str, str]], out_dir: Path, *, text: Path = HELDOUT,
            n_ctx: int = 256, chunks: int = 8, n_gpu_layers: int = 0,
            log: Callable[[str], None] | None = None) -> list[Fidelity]:
    """KLD and top-1 agreement of each (agent, path) in ``quants`` against ``reference`` (agent, path);
    ``log`` gets a status line before each llama-perplexity run."""
    say = log or (lambda _line: None)
    text = Path(text)
    if not text.is_file():
        raise ConfigError(f"--text {text}: no such file")
    if chunks < 2:
        raise ConfigError(f"--chunks {chunks}: llama-perplexity reports the mean KLD over 2 or more chunks")
    if text.resolve() == CALIBRATION.resolve():
        say(f"note: {text.name} is the importance matrix's calibration text; the imatrix rungs are favoured on it")
    out_dir.mkdir(parents=True, exist_ok=True)
    # the saved reference logits hold exactly n_ctx x chunks tokens of this text from this file: all in the name
    key = f"{text.stem}.{n_ctx}x{chunks}.{sha256_file(reference[1])[:12]}"
    base = out_dir / f"{reference[0].replace('/', '_')}.{key}.kld-base"
    common = ["-f", str(text), "-c", str(n_ctx), "--chunks", str(chunks), "-ngl", str(n_gpu_layers)]
    if not base.exists():
        say(f"reference logits: {reference[0]} over {chunks} x {n_ctx} tokens (llama-perplexity)")
        _perplexity(["-m", reference[1], "--kl-divergence-base", str(base), *common])
    results = []
    for i, (agent, path) in enumerate(quants, 1):
        say(f"[{i}/{len(quants)}] KLD of {agent} vs {reference[0]}")
        out = _perplexity(["-m", path, "--kl-divergence-base", str(base), "--kl-divergence", *common])
        mean_kld = _num(r"Mean\s+KLD:\s+(-?[\d.]+)", out)
        if math.isnan(mean_kld):
            raise EngineError(f"llama-perplexity printed no mean KLD for {agent}: {out.strip()[-300:]}")
        results.append(Fidelity(
            agent=agent, reference_agent=reference[0],
            mean_kld=mean_kld, kld_err=_num(r"Mean\s+KLD:\s+[-\d.]+\s+±\s+([\d.]+)", out),
            same_top1_pct=_num(r"Same top p:\s+([\d.]+)", out), ppl=_num(r"Mean PPL\(Q\)\s*:\s*([\d.]+)", out),
            tokens=n_ctx * chunks, text=text.name,
        ))
    with open(out_dir / "kld.jsonl", "a") as f:
        for r in results:
            f.write(json.dumps(asdict(r)) + "\n")
    return results


def read_fidelity(results_dir: Path) -> dict[str, Fidelity]:
    """The latest fidelity record per agent in a results directory."""
    p = Path(results_dir) / "kld.jsonl"
    if not p.exists():
        return {}
    out = {}
    for line in p.read_text().splitlines():
        if line.strip():
            r = Fidelity(**json.loads(line))
            out[r.agent] = r
    return out
