"""The quant ladder: from one reference GGUF, every quant type, made by llama.cpp's own quantizer.

Where the only GGUF is already quantized (e.g. a Q4_K_M from a hub), the reference is made by
dequantizing it to F16 with allow-requantize, and labelled honestly: ``F16 (from Q4_K_M)``.
Every rung made from such a reference carries ``via F16 from Q4_K_M`` in its label. Files are
cached by the source's sha256: a finished rung is never redone.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from quantswarm.engine.build import require_tool
from quantswarm.errors import ConfigError, EngineError
from quantswarm.quantize import ftype, quantize
from quantswarm.registry import inspect_gguf, sha256_file

__all__ = ["DEFAULT_QUANTS", "Rung", "ftype", "make_imatrix", "make_ladder", "quantize", "read_ladder"]

DEFAULT_QUANTS = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")
FULL_PRECISION = ("F32", "F16", "BF16")


@dataclass
class Rung:
    """One file of the ladder."""

    quant: str
    path: str
    reference: str  # how it was made, e.g. "F16 (from Q4_K_M)" or "Q2_K via F16 from Q4_K_M"
    is_reference: bool
    imatrix: bool = False
    size_bytes: int = 0
    bits_per_weight: float = 0.0
    tensor_types: dict[str, int] = field(default_factory=dict)  # stored type -> tensor count (from the file)
    k_quant_fell_back: bool = False  # a nominal k-quant stored mostly in other types (rows not divisible by 256)


def make_imatrix(model: Path, calibration: Path, out: Path, *, n_ctx: int = 256, chunks: int = 16) -> Path:
    """An importance matrix from ``calibration`` text with llama.cpp's llama-imatrix (cached)."""
    if out.exists():
        return out
    res = subprocess.run([str(require_tool("llama-imatrix")), "-m", str(model), "-f", str(calibration), "-o",
                          str(out), "-c", str(n_ctx), "--chunks", str(chunks)], capture_output=True, text=True)
    if res.returncode != 0 or not out.exists():
        raise EngineError(f"llama-imatrix failed: {(res.stderr or res.stdout)[-400:]}")
    return out


def make_ladder(model: str | Path, out_dir: str | Path, quants: tuple[str, ...] = DEFAULT_QUANTS, *,
                imatrix_quants: tuple[str, ...] = (), calibration: Path | None = None) -> list[Rung]:
    """Reference + one file per quant under ``out_dir`` (cached by source sha); writes ladder.json."""
    model, out_dir = Path(model), Path(out_dir)
    info = inspect_gguf(model)
    for q in (*quants, *imatrix_quants):
        ftype(q)  # fail early on a typo
    sha = sha256_file(model)
    stem = model.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "ladder.json"
    old = json.loads(manifest.read_text()) if manifest.exists() else {}
    if old.get("source_sha") not in (None, sha):
        raise ConfigError(f"{out_dir} holds a ladder of another file (sha {old['source_sha']}); use another --out")
    if info.file_type in FULL_PRECISION:
        ref_path, ref_label = model, f"{info.file_type} (original)"
        origin = ""
    else:
        ref_path = out_dir / f"{stem}.F16.gguf"
        ref_label = f"F16 (from {info.file_type})"
        origin = f" via F16 from {info.file_type}"
    jobs = [] if ref_path == model or ref_path.exists() else [("F16", ref_path, model, None)]
    rungs = [Rung("F16" if ref_path != model else info.file_type, str(ref_path), ref_label, True)]
    imat = None
    if imatrix_quants:
        from evals.kld import CALIBRATION

        calibration = calibration or CALIBRATION
        imat = out_dir / f"{stem}.imatrix.dat"
    for q in quants:
        path = out_dir / f"{stem}.{q.upper()}.gguf"
        rungs.append(Rung(q.upper(), str(path), f"{q.upper()}{origin}", False))
        if not path.exists():
            jobs.append((q, path, ref_path, None))
    for q in imatrix_quants:
        path = out_dir / f"{stem}.{q.upper()}-imat.gguf"
        rungs.append(Rung(f"{q.upper()}-imat", str(path), f"{q.upper()} imatrix{origin}", False, imatrix=True))
        if not path.exists():
            jobs.append((q, path, ref_path, imat))
    for q, path, src, im in tqdm(jobs, desc="quantizing", unit="file", disable=not jobs):
        if im is not None:
            make_imatrix(ref_path, calibration, im)
        quantize(src, path, q, imatrix=im)
    for r in rungs:
        ri = inspect_gguf(r.path)
        r.size_bytes, r.bits_per_weight = ri.size_bytes, round(ri.bits_per_weight, 3)
        r.tensor_types, r.k_quant_fell_back = dict(ri.tensor_types), ri.k_quant_fell_back
    # rung paths are stored relative to the ladder folder, so a ladder can be moved or carried
    stored = [{**asdict(r), "path": Path(r.path).name if Path(r.path).parent == out_dir else r.path} for r in rungs]
    manifest.write_text(json.dumps({"source": str(model), "source_sha": sha, "source_type": info.file_type,
                                    "rungs": stored}, indent=2))
    return rungs


def read_ladder(out_dir: str | Path) -> list[Rung]:
    manifest = Path(out_dir) / "ladder.json"
    if not manifest.exists():
        raise ConfigError(f"{manifest}: no ladder here; run `quantswarm eval ladder MODEL --out {out_dir}`")
    rungs = [Rung(**r) for r in json.loads(manifest.read_text())["rungs"]]
    for r in rungs:
        r.path = str(Path(out_dir) / r.path) if not Path(r.path).is_absolute() else r.path
    return rungs
