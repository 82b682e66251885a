"""llama.cpp is compiled once: the tools' shared libraries also serve a llama-cpp-python installed without its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from quantswarm.engine.build import bin_dir, binding_lib_dir, shared_libs


@pytest.fixture(scope="module")
def built_libs() -> Path:
    libs = bin_dir("cpu")
    if not (libs / "libllama.so").exists():
        pytest.fail(f"no shared libllama in {libs}: run `quantswarm engine build` (make install does)")
    return libs


def test_tools_use_the_shared_libraries_beside_them(built_libs):
    names = {p.name for p in shared_libs(built_libs)}
    assert {"libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu.so"} <= names
    ldd = subprocess.run(["ldd", str(built_libs / "llama-server")], capture_output=True, text=True).stdout
    line = next(x for x in ldd.splitlines() if "libllama.so" in x)
    assert str(built_libs) in line and "not found" not in ldd, ldd


def test_binding_without_libraries_loads_the_tools_libraries(built_libs, tmp_path, smollm2):
    # a copy of the installed binding's Python files only: what `CMAKE_ARGS=-DLLAMA_BUILD=OFF pip install` leaves
    installed = binding_lib_dir()
    assert installed is not None
    pkg = tmp_path / "site" / "llama_cpp"
    shutil.copytree(installed.parent, pkg, ignore=shutil.ignore_patterns("lib", "__pycache__"))
    code = "import llama_cpp, sys; print(llama_cpp.llama_cpp._lib._name)"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    before = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert before.returncode != 0 and "Shared library with base name 'llama' not found" in before.stderr

    link = ("from pathlib import Path\nfrom quantswarm.engine.build import binding_lib_dir, link_binding\n"
            f"print(binding_lib_dir(), link_binding(Path({str(built_libs)!r}), log=lambda _m: None))")
    for _ in range(2):  # idempotent: the second run replaces its own links
        res = subprocess.run([sys.executable, "-c", link], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert res.stdout.split() == [str(pkg / "lib"), "True"], res.stderr[-800:]
    run = ("import llama_cpp\nfrom llama_cpp import Llama\n"
           f"m = Llama({str(smollm2)!r}, n_ctx=128, verbose=False)\n"
           "print(llama_cpp.llama_cpp._lib._name)\nprint(len(m.tokenize(b'Hello world')))")
    after = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert after.returncode == 0, after.stderr[-800:]
    lib_path, n_tokens = after.stdout.split()
    assert Path(lib_path) == pkg / "lib" / "libllama.so" and Path(lib_path).resolve().parent == built_libs.resolve()
    assert int(n_tokens) > 0


def test_binding_with_its_own_libraries_is_left_alone(built_libs, tmp_path):
    pkg = tmp_path / "site" / "llama_cpp"
    (pkg / "lib").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    own = pkg / "lib" / "libllama.so"
    own.write_bytes(b"compiled by pip")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    link = ("from pathlib import Path\nfrom quantswarm.engine.build import link_binding\n"
            f"print(link_binding(Path({str(built_libs)!r}), log=lambda _m: None))")
    res = subprocess.run([sys.executable, "-c", link], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.stdout.strip() == "False", res.stderr[-800:]
    assert own.read_bytes() == b"compiled by pip" and not (pkg / "lib" / "libggml.so").exists()
