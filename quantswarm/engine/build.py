"""Build llama.cpp's own tools from the source that matches the installed llama-cpp-python.

The llama-cpp-python source package vendors llama.cpp; building its ``llama-server``,
``llama-quantize``, ``llama-imatrix``, ``llama-perplexity`` and ``llama-batched-bench`` from
there keeps the tools and the Python binding on the same llama.cpp commit. Binaries are cached
per version and backend under ``<cache>/llama.cpp/<version>-<cpu|cuda>/bin``.

llama.cpp is compiled once: the tools are linked against shared ``libllama``/``libggml*`` libraries
kept beside them, and a llama-cpp-python installed without its own copy (``CMAKE_ARGS=-DLLAMA_BUILD=OFF``,
as ``make install`` does) is pointed at those libraries by links in its ``llama_cpp/lib`` folder. A
binding that compiled its own libraries is left alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from quantswarm.errors import EngineError
from quantswarm.paths import cache_dir, llama_bin_root

TOOLS = ("llama-server", "llama-quantize", "llama-imatrix", "llama-perplexity", "llama-batched-bench")


def binding_version() -> str:
    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        raise EngineError("llama-cpp-python is not installed: `pip install -e .` first") from None


def bin_dir(backend: str) -> Path:
    return llama_bin_root() / f"{binding_version()}-{backend}" / "bin"


def gpu_present() -> bool:
    """True when an NVIDIA driver answers (NVML), not merely when nvcc exists."""
    try:
        import pynvml

        pynvml.nvmlInit()
        n = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
        return n > 0
    except Exception:
        return False


def find_tool(name: str) -> Path | None:
    """Path of a built llama.cpp tool: $LLAMA_<NAME>_BIN, the cache (CUDA first), or PATH."""
    env = os.environ.get(name.upper().replace("-", "_") + "_BIN")
    if env and Path(env).exists():
        return Path(env)
    for backend in ("cuda", "cpu") if gpu_present() else ("cpu", "cuda"):
        try:
            p = bin_dir(backend) / name
        except EngineError:
            break
        if p.exists():
            return p
    which = shutil.which(name)
    return Path(which) if which else None


def require_tool(name: str) -> Path:
    p = find_tool(name)
    if p is None:
        var = name.upper().replace("-", "_") + "_BIN"
        raise EngineError(f"{name} is not built: run `quantswarm engine build` (or set {var})")
    return p


def _sdist(source: Path | None) -> Path:
    """The llama-cpp-python sdist for the installed version (cached, or downloaded from PyPI)."""
    if source is not None:
        if not source.exists():
            raise EngineError(f"--source {source}: no such file")
        return source
    ver = binding_version()
    cached = cache_dir() / "sdist" / f"llama_cpp_python-{ver}.tar.gz"
    if cached.exists():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run(
            # only the binding as source: with `:all:`, pip also builds the sdist's build requirements from
            # source to read its metadata (3.6 min instead of 10 s on a 2-core machine without a pip cache)
            [sys.executable, "-m", "pip", "download", "--no-binary", "llama-cpp-python", "--no-deps", "-d", tmp,
             f"llama-cpp-python=={ver}"],
            capture_output=True, text=True,
        )
        got = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if res.returncode != 0 or not got:
            raise EngineError(
                f"could not download the llama-cpp-python {ver} source package ({res.stderr.strip()[-200:]}); "
                "pass it with --source FILE"
            )
        shutil.move(got[0], cached)
    return cached


def source_tree(source: Path | None = None) -> Path:
    """The llama.cpp tree vendored in the installed llama-cpp-python's sdist (extracted once, cached).

    Holds ``convert_hf_to_gguf.py``, ``convert_lora_to_gguf.py`` and ``gguf-py`` of the same commit
    as the Python binding.
    """
    sdist = _sdist(source)
    work = llama_bin_root() / f"src-{binding_version()}"
    if not (work / "done").exists():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter="data")
        (work / "done").write_text("ok")
    trees = list(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
    if not trees:
        raise EngineError(f"{sdist} has no vendor/llama.cpp tree")
    return trees[0]


def build_tools(
    *, source: Path | None = None, backend: str = "auto", jobs: int | None = None, force: bool = False,
    log=print,
) -> Path:
    """Build the tools (cached); returns the bin directory. backend: auto | cpu | cuda."""
    if backend == "auto":
        backend = "cuda" if gpu_present() and shutil.which("nvcc") else "cpu"
    if backend not in ("cpu", "cuda"):
        raise EngineError(f"backend must be auto, cpu or cuda, not {backend!r}")
    out = bin_dir(backend)
    if not force and all((out / t).exists() for t in TOOLS) and (out / "libllama.so").exists():
        log(f"llama.cpp tools already built: {out}")
        link_binding(out, log)
        return out
    tree = source_tree(source)
    build = tree / f"build-{backend}"
    args = [
        "cmake", "-S", str(tree), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
        "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON",
        "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
        # shared libllama/libggml beside the tools (found through $ORIGIN), also loaded by the Python binding
        "-DBUILD_SHARED_LIBS=ON", "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON", "-DCMAKE_INSTALL_RPATH=$ORIGIN",
    ]
    if shutil.which("ninja"):
        args += ["-G", "Ninja"]
    if backend == "cuda":
        args += ["-DGGML_CUDA=on", f"-DCMAKE_CUDA_ARCHITECTURES={os.environ.get('CUDA_ARCHS', 'native')}"]
    log(f"configuring llama.cpp ({backend}) in {build}")
    _run(args, build.parent / f"cmake-{backend}.log")
    jobs = jobs or os.cpu_count() or 2
    log(f"building {', '.join(TOOLS)} with {jobs} jobs (minutes on a small machine; log: {build}.log)")
    _run(["cmake", "--build", str(build), "-j", str(jobs), "--target", *TOOLS], Path(f"{build}.log"))
    out.mkdir(parents=True, exist_ok=True)
    for lib in shared_libs(build / "bin"):
        (out / lib.name).unlink(missing_ok=True)
        shutil.copy2(lib, out / lib.name, follow_symlinks=False)  # libllama.so -> libllama.so.0 -> ...
    for t in TOOLS:  # copy then rename: a tool still running from the old build keeps its file ("text file busy")
        tmp = out / f".{t}.new"
        shutil.copy2(build / "bin" / t, tmp)
        os.replace(tmp, out / t)
    log(f"built: {out}")
    link_binding(out, log)
    return out


def shared_libs(folder: Path) -> list[Path]:
    """llama.cpp's shared libraries in a folder (versioned names and their links)."""
    return sorted(p for p in folder.glob("lib*.so*") if p.name.startswith(("libllama", "libggml", "libmtmd")))


def binding_lib_dir() -> Path | None:
    """The installed llama-cpp-python's ``llama_cpp/lib`` folder, found without importing the binding."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "lib"


def link_binding(libs: Path, log=print) -> bool:
    """Point a llama-cpp-python installed without its own libraries at the ones in ``libs``; True if linked.

    A binding holding libraries it compiled itself (regular files) is left as it is.
    """
    target = binding_lib_dir()
    if target is None:
        return False
    own = [p for p in target.glob("lib*.so*") if not p.is_symlink()] if target.is_dir() else []
    if own:
        return False
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("lib*.so*"):
        old.unlink()
    for lib in shared_libs(libs):
        (target / lib.name).symlink_to(lib.resolve())
    log(f"llama-cpp-python now loads llama.cpp from {libs} (links in {target})")
    return True


def _run(args: list[str], logfile: Path) -> None:
    with open(logfile, "w") as f:
        res = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        tail = logfile.read_text()[-1500:]
        raise EngineError(f"`{' '.join(args[:3])} ...` failed (exit {res.returncode}); log {logfile}:\n{tail}")
