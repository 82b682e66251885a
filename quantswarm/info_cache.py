"""A disk cache of parsed GGUF metadata, so a file is read once per machine, not once per command.

Reading a GGUF's header with the ``gguf`` package walks every metadata array (SmolLM2's 49k-token
vocabulary takes seconds on a small CPU). The parsed :class:`~quantswarm.registry.ModelInfo` is kept
as JSON under ``<cache>/gguf-info/``, keyed by the file's resolved path, size and mtime, plus a
fingerprint of the parser (the ``gguf`` version and the source of ``registry.py``): a changed file
or a changed parser is read afresh. A cache that cannot be read or written is skipped silently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from quantswarm.paths import cache_dir


@lru_cache(maxsize=1)
def _parser_fingerprint() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from quantswarm import registry

    try:
        gguf_version = version("gguf")
    except PackageNotFoundError:
        gguf_version = "?"
    source = Path(registry.__file__).read_bytes()
    return hashlib.sha256(gguf_version.encode() + b"\0" + source).hexdigest()[:16]


def _entry(path: str, size: int, mtime_ns: int) -> Path:
    key = hashlib.sha256(f"{path}\0{size}\0{mtime_ns}\0{_parser_fingerprint()}".encode()).hexdigest()[:32]
    return cache_dir() / "gguf-info" / f"{key}.json"


def _encode(info: Any) -> dict:
    data = dataclasses.asdict(info)
    data["path"] = str(info.path)
    data["layer_bytes"] = [[int(k), int(v)] for k, v in info.layer_bytes.items()]
    return data


def _decode(cls: type, data: dict) -> Any:
    data = dict(data)
    data["path"] = Path(data["path"])
    data["layer_bytes"] = {int(k): int(v) for k, v in data["layer_bytes"]}
    return cls(**data)


def cached_info(path: str, size: int, mtime_ns: int, parse: Callable[[], Any]) -> Any:
    """``parse()``'s ModelInfo for this file version, from the disk cache when it holds one."""
    entry = _entry(path, size, mtime_ns)
    if entry.is_file():
        try:
            from quantswarm.registry import ModelInfo

            return _decode(ModelInfo, json.loads(entry.read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            pass  # unreadable or from another ModelInfo layout: parse again
    info = parse()
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_encode(info)))
        tmp.replace(entry)
    except OSError:
        pass
    return info
