"""Model registry on the real SmolLM2 GGUF: metadata, and clear errors for bad files."""

import subprocess
import sys

import pytest

from quantswarm.errors import ModelFileError
from quantswarm.registry import inspect_gguf


def test_inspect_smollm2(smollm2):
    info = inspect_gguf(smollm2)
    assert info.architecture == "llama"
    assert info.n_layers == 30
    assert info.file_type == "Q4_1"
    assert info.chat_template and "im_start" in info.chat_template
    assert len(info.layer_bytes) == 30
    assert sum(info.layer_bytes.values()) + info.other_bytes < info.size_bytes
    assert 130e6 < info.n_params < 140e6
    assert info.kv_bytes_per_token() == 30 * 3 * 64 * 2 * 2


def test_truncated_file(smollm2, tmp_path):
    bad = tmp_path / "trunc.gguf"
    bad.write_bytes(smollm2.read_bytes()[: 40_000_000])
    with pytest.raises(ModelFileError, match="trunc"):
        inspect_gguf(bad)


def test_not_gguf(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_text("hello")
    with pytest.raises(ModelFileError, match="not a GGUF"):
        inspect_gguf(p)
    with pytest.raises(ModelFileError, match="no such file"):
        inspect_gguf(tmp_path / "missing.gguf")


def test_cli_inspect(smollm2, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "quantswarm.cli", "models", "inspect", str(smollm2)],
                        capture_output=True, text=True)
    assert ok.returncode == 0
    assert "llama" in ok.stdout and "30" in ok.stdout and "Q4_1" in ok.stdout
    bad = tmp_path / "t.gguf"
    bad.write_bytes(smollm2.read_bytes()[:1_000_000])
    res = subprocess.run([sys.executable, "-m", "quantswarm.cli", "models", "inspect", str(bad)],
                         capture_output=True, text=True)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in res.stderr
