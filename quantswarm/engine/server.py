"""llama-server backend: llama.cpp's own OpenAI-compatible server, started and stopped by us.

This is the throughput path: ``--parallel N`` slots share one model with continuous batching,
so N client threads keep the hardware busy. The server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import atexit
import math
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx

from quantswarm.engine.base import Completion, GenerationParams, Message, fold_choice_logprobs
from quantswarm.engine.build import require_tool
from quantswarm.errors import EngineError
from quantswarm.registry import inspect_gguf


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate a child process, killing it if it has not exited after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_LIVE: dict[int, subprocess.Popen] = {}  # pid -> every llama-server started by this process and not yet stopped
_LIVE_LOCK = threading.Lock()


def live_server_pids() -> list[int]:
    """Process ids of the llama-servers this process started and has not stopped."""
    with _LIVE_LOCK:
        return sorted(_LIVE)


def stop_live_servers() -> int:
    """Stop every llama-server this process started and has not stopped (they run in their own session, so a
    signal to ours never reaches them); returns how many were stopped. Runs at exit too."""
    with _LIVE_LOCK:
        procs = list(_LIVE.values())
        _LIVE.clear()
    for proc in procs:
        stop_process(proc)
    return len(procs)


atexit.register(stop_live_servers)

_ISSUED_PORTS: set[int] = set()
_PORT_LOCK = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now and never handed out before in this process, so servers started at once in threads
    cannot be given the same port before the first of them binds it."""
    with _PORT_LOCK:
        while True:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
            if port not in _ISSUED_PORTS:
                _ISSUED_PORTS.add(port)
                return port


def context_args(kv_cache_type: str | None = None, flash_attn: str | None = None, n_ubatch: int | None = None,
                 log_verbosity: int | None = None) -> list[str]:
    """llama-server flags for the context settings that are given (None: llama.cpp's default)."""
    args: list[str] = []
    if kv_cache_type:
        args += ["--cache-type-k", kv_cache_type, "--cache-type-v", kv_cache_type]
    if flash_attn:
        args += ["--flash-attn", flash_attn]
    if n_ubatch:
        args += ["--ubatch-size", str(n_ubatch)]
    if log_verbosity is not None:
        args += ["--log-verbosity", str(log_verbosity)]
    return args


class LlamaServerEngine:
    """A ``llama-server`` process serving one GGUF with ``parallel`` slots of ``n_ctx`` tokens each.

    ``kv_cache_type`` (llama.cpp's names: f16, q8_0, ...) is passed as ``--cache-type-k`` and ``--cache-type-v``,
    ``flash_attn`` ("on"/"off") as ``--flash-attn`` and ``n_ubatch`` as ``--ubatch-size``; None leaves llama.cpp's
    default (f16, auto, 512). ``log_verbosity`` 4 (``-lv 4``) makes llama.cpp log its buffer sizes
    (:mod:`serving.llama_log` reads them).
    """

    backend = "llama-server"

    def __init__(
        self,
        model_path: str,
        *,
        n_ctx: int = 2048,
        parallel: int = 4,
        n_gpu_layers: int = 0,
        n_threads: int | None = None,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: str | Path | None = None,
        extra_args: tuple[str, ...] = (),
        startup_timeout: float = 180.0,
        request_timeout: float = 600.0,
        lora_path: str | None = None,
        log_path: str | Path | None = None,
        kv_cache_type: str | None = None,
        flash_attn: str | None = None,
        n_ubatch: int | None = None,
        log_verbosity: int | None = None,
    ):
        inspect_gguf(model_path)
        self.model_path = str(model_path)
        self.parallel = max(1, parallel)
        self.n_ctx = n_ctx
        self.n_gpu_layers = n_gpu_layers
        self.seed = seed
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        binary = Path(binary) if binary else require_tool("llama-server")
        cmd = [
            str(binary), "-m", self.model_path, "--host", host, "--port", str(self.port),
            "-c", str(n_ctx * self.parallel), "-np", str(self.parallel), "-ngl", str(n_gpu_layers),
            "--seed", str(seed), "--metrics", "--no-webui", *extra_args,
        ]
        if n_threads:
            cmd += ["-t", str(n_threads)]
        if lora_path:
            cmd += ["--lora", str(lora_path)]
        cmd += context_args(kv_cache_type, flash_attn, n_ubatch, log_verbosity)
        self.cmd = cmd
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        with _LIVE_LOCK:
            _LIVE[self.proc.pid] = self.proc
        self._client = httpx.Client(base_url=self.url, timeout=request_timeout)
        self._wait_healthy(startup_timeout)

    # --- lifecycle -------------------------------------------------------------------------
    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineError(
                    f"llama-server exited with code {self.proc.returncode} while loading {self.model_path}: "
                    f"{self.log_tail()}"
                )
            if self.healthy():
                return
            time.sleep(0.2)
        self.close()
        raise EngineError(f"llama-server did not become healthy in {timeout:.0f} s: {self.log_tail()}")

    def healthy(self) -> bool:
        try:
            return self._client.get("/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self, n: int = 600) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:].strip()
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        stop_process(self.proc)
        with _LIVE_LOCK:
            _LIVE.pop(self.proc.pid, None)
        self._client.close()
        if not self._log.closed:
            self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- requests --------------------------------------------------------------------------
    def _post(self, path: str, body: dict) -> dict:
        return post_json(self._client, path, body)

    def _body(self, p: GenerationParams) -> dict:
        body = {"max_tokens": p.max_tokens, "temperature": p.temperature, "top_p": p.top_p, "seed": p.seed}
        if p.stop:
            body["stop"] = list(p.stop)
        if p.grammar:
            body["grammar"] = p.grammar
        return body

    def chat(self, messages: list[Message], params: GenerationParams | None = None) -> Completion:
        p = params or GenerationParams()
        t0 = time.perf_counter()
        out = self._post("/v1/chat/completions", {"messages": messages, **self._body(p)})
        latency = (time.perf_counter() - t0) * 1000
        return _completion(out, out["choices"][0]["message"].get("content") or "", latency)

    def complete(self, prompt: str, params: GenerationParams | None = None) -> Completion:
        p = params or GenerationParams()
        t0 = time.perf_counter()
        out = self._post("/v1/completions", {"prompt": prompt, **self._body(p)})
        latency = (time.perf_counter() - t0) * 1000
        return _completion(out, out["choices"][0].get("text") or "", latency)

    def choice_logprobs(self, messages: list[Message], choices: list[str], top_k: int = 50) -> dict[str, float]:
        """Top-k next-token log-probabilities after the chat prompt, folded onto the choices."""
        out = self._post(
            "/v1/chat/completions",
            {"messages": messages, "max_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": top_k,
             "seed": self.seed},
        )
        return fold_choice_logprobs(top_logprobs(out, self.url), choices)

    def metrics_text(self) -> str:
        r = self._client.get("/metrics")
        return r.text if r.status_code == 200 else ""


def top_logprobs(out: dict, url: str = "llama-server") -> list[tuple[str, float]]:
    """(token text, log-probability) of the first generated token's top candidates in a chat completion answer;
    EngineError when one is not a number (JSON has no NaN: llama-server writes a NaN log-probability as null)."""
    content = ((out.get("choices") or [{}])[0].get("logprobs") or {}).get("content") or []
    pairs = [(t.get("token"), t.get("logprob")) for t in (content[0].get("top_logprobs") or [] if content else [])]
    bad = [(tok, lp) for tok, lp in pairs
           if not isinstance(tok, str) or isinstance(lp, bool) or not isinstance(lp, (int, float)) or math.isnan(lp)]
    if bad:
        raise EngineError(f"{url} returned {len(bad)} top log-probabilities that are not numbers (first: {bad[0]!r}); "
                          "the model's logits are not finite")
    return [(tok, float(lp)) for tok, lp in pairs]


def post_json(client: httpx.Client, path: str, body: dict) -> dict:
    """POST ``body`` to a llama-server endpoint; its JSON answer, else EngineError with the status and message."""
    try:
        r = client.post(path, json=body)
    except httpx.HTTPError as exc:
        raise EngineError(f"llama-server {client.base_url}{path}: {type(exc).__name__}: {exc}") from None
    if r.status_code != 200:
        raise EngineError(f"llama-server {path} answered {r.status_code}: {r.text[:300]}")
    return r.json()


def _completion(out: dict, text: str, latency: float) -> Completion:
    usage = out.get("usage") or {}
    timings = out.get("timings") or {}
    return Completion(
        text=text,
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        latency_ms=latency,
        finish_reason=out["choices"][0].get("finish_reason") or "",
        prompt_ms=timings.get("prompt_ms"),
        gen_ms=timings.get("predicted_ms"),
    )
