"""GGUF metadata of unexpected type, shape or absence, on small real GGUFs written with gguf's GGUFWriter.

Each file is understood as llama.cpp reads it (per-layer KV head arrays, separate K/V head sizes), or
refused with one ``error:`` line and exit 2 by ``models inspect`` and ``serve --dry-run``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import yaml

from quantswarm.errors import ModelFileError
from quantswarm.registry import inspect_gguf
from serving.planner import ModelShape

N_LAYERS, N_EMBD = 3, 64


def write_gguf(path: Path, kv: dict | None = None, drop: tuple[str, ...] = (), blocks: int = N_LAYERS) -> Path:
    """A 3-block llama GGUF with F32 tensors; ``kv`` overrides metadata (value, or (value, GGUFValueType))."""
    meta: dict = {
        "llama.block_count": N_LAYERS, "llama.context_length": 256, "llama.embedding_length": N_EMBD,
        "llama.feed_forward_length": 128, "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
    }
    meta.update(kv or {})
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    for key, value in meta.items():
        if key in drop:
            continue
        if isinstance(value, tuple):
            w.add_key_value(key, value[0], value[1])
        elif isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, list):
            w.add_array(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        else:
            w.add_uint32(key, value)
    w.add_tensor("token_embd.weight", np.ones((32, N_EMBD), dtype=np.float32))
    for i in range(blocks):
        w.add_tensor(f"blk.{i}.attn_q.weight", np.ones((N_EMBD, N_EMBD), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_plain_file_is_read(tmp_path):
    info = inspect_gguf(write_gguf(tmp_path / "ok.gguf"))
    assert (info.n_layers, info.n_embd, info.n_head, info.n_head_kv, info.head_dim) == (3, 64, 4, 2, 16)
    assert info.n_head_kv_layers == [2, 2, 2]
    assert info.kv_bytes_per_token() == 3 * 2 * (16 + 16) * 2
    assert info.layer_bytes == {i: N_EMBD * N_EMBD * 4 for i in range(3)}


def test_per_layer_kv_heads_are_summed(tmp_path):
    # a hybrid model: block 0 has no attention cache, blocks 1 and 2 have 2 and 4 KV heads
    info = inspect_gguf(write_gguf(tmp_path / "arr.gguf", {"llama.attention.head_count_kv": [0, 2, 4]}))
    assert info.n_head_kv_layers == [0, 2, 4] and info.n_head_kv == 4
    per_head = (16 + 16) * 2  # K + V head size x f16
    assert info.kv_bytes_per_token_layers() == [0, 2 * per_head, 4 * per_head]
    assert info.kv_bytes_per_token() == 6 * per_head
    shape = ModelShape.from_gguf(info)
    assert shape.kv_bytes(1, 10) == 4 * per_head * 10  # -ngl 1 offloads the last block only
    assert shape.kv_bytes(2, 10) == 6 * per_head * 10
    assert shape.kv_bytes(3, 10) == shape.kv_bytes(4, 10) == 6 * per_head * 10  # the output head holds no cache
    assert shape.kv_bytes(0, 10) == 0


def test_per_layer_heads_and_separate_value_length(tmp_path):
    info = inspect_gguf(write_gguf(tmp_path / "kv.gguf", {
        "llama.attention.head_count": [8, 4, 4], "llama.attention.head_count_kv": [2, 2, 1],
        "llama.attention.value_length": 4,
    }))
    assert info.head_dim == 64 // 8 and info.head_dim_v == 4  # head size from block 0's head count, as llama.cpp
    assert info.kv_bytes_per_token() == (2 + 2 + 1) * (8 + 4) * 2


def test_no_attention_heads_means_no_kv_cache(tmp_path):
    info = inspect_gguf(write_gguf(tmp_path / "rec.gguf", drop=("llama.attention.head_count",
                                                                "llama.attention.head_count_kv")))
    assert info.n_head == 0 and info.kv_bytes_per_token() == 0


@pytest.mark.parametrize(
    "kv, drop, blocks, message",
    [
        ({"llama.block_count": "3"}, (), 3, r"llama.block_count is a string \('3'\), expected a non-negative integer"),
        ({"llama.attention.head_count_kv": [2, 2]}, (), 3, r"head_count_kv is an array of 2, expected .* array of 3"),
        ({"llama.attention.head_count_kv": 2.5}, (), 3, r"head_count_kv is a float \('2.5'\)"),
        ({"llama.attention.head_count_kv": ["2", "2", "2"]}, (), 3, r"head_count_kv is an array of 3"),
        ({"llama.embedding_length": (-64, gguf.GGUFValueType.INT32)}, (), 3, r"embedding_length is an integer .*-64"),
        ({"llama.context_length": [256]}, (), 3, r"context_length is an array of 1, expected a non-negative"),
        ({}, ("llama.block_count",), 3, r"has no llama.block_count"),
        ({"tokenizer.chat_template": 7}, (), 3, r"chat_template is an integer \('7'\), expected a string"),
        ({}, (), 5, r"tensor blk.3.attn_q.weight names block 3 but llama.block_count is 3"),
    ],
)
def test_bad_metadata_is_refused(tmp_path, kv, drop, blocks, message):
    with pytest.raises(ModelFileError, match=message):
        inspect_gguf(write_gguf(tmp_path / "bad.gguf", kv, drop, blocks))


def one_error_line(res: subprocess.CompletedProcess, needle: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.stderr


def test_cli_refuses_string_block_count(tmp_path):
    bad = write_gguf(tmp_path / "bad.gguf", {"llama.block_count": "30"})
    res = subprocess.run([sys.executable, "-m", "quantswarm.cli", "models", "inspect", str(bad)],
                         capture_output=True, text=True)
    one_error_line(res, "llama.block_count is a string ('30')")
    spec = tmp_path / "swarm.yaml"
    spec.write_text(yaml.safe_dump({"agents": {"a": {"model": str(bad), "n_ctx": 64}}, "vram": {"budget_mib": 0}}))
    res = subprocess.run([sys.executable, "-m", "quantswarm.cli", "serve", str(spec), "--dry-run"],
                         capture_output=True, text=True)
    one_error_line(res, "llama.block_count is a string ('30')")


def test_cli_plans_per_layer_kv_heads(tmp_path):
    model = write_gguf(tmp_path / "arr.gguf", {"llama.attention.head_count_kv": [0, 2, 4]})
    res = subprocess.run([sys.executable, "-m", "quantswarm.cli", "models", "inspect", str(model)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "0.4 KiB per token" in res.stdout  # 6 KV heads x (16 + 16) x 2 bytes = 384 bytes
    spec = tmp_path / "swarm.yaml"
    spec.write_text(yaml.safe_dump({"agents": {"a": {"model": str(model), "n_ctx": 64}}, "vram": {"budget_mib": 0}}))
    res = subprocess.run([sys.executable, "-m", "quantswarm.cli", "serve", str(spec), "--dry-run"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "0/4" in res.stdout, res.stdout + res.stderr  # CPU plan of 3 blocks + head
