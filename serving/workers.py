"""Co-resident workers: one llama-server process per agent, all loaded at start and kept loaded.

:class:`Supervisor` starts every agent (in parallel), watches them (process alive + ``/health``),
restarts a crashed one on its same port, and re-plans with fewer GPU layers when a load fails with
out-of-memory. Nothing is swapped: an agent is either up or being restarted.
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from quantswarm.engine.server import LlamaServerEngine
from quantswarm.errors import ConfigError, EngineError, QuantswarmError
from serving.llama_log import read_buffer_sizes
from serving.planner import MIB, AgentPlan, VramPlan, is_oom
from serving.swarm_config import AgentSpec, SwarmConfig


@dataclass
class Worker:
    """One agent's process and its state: starting | up | restarting | failed | stopped."""

    name: str
    spec: AgentSpec
    n_gpu_layers: int
    engine: LlamaServerEngine | None = None
    state: str = "starting"
    restarts: int = 0
    oom_retries: int = 0
    error: str = ""
    unhealthy: int = 0

    @property
    def url(self) -> str:
        return self.engine.url if self.engine else ""

    @property
    def pid(self) -> int | None:
        return self.engine.pid if self.engine else None

    @property
    def up(self) -> bool:
        return self.state == "up"


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is usable, as for the server
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port_block(n: int, host: str = "127.0.0.1") -> int:
    """A base port with ``n`` consecutive free ports, below the kernel's ephemeral range: a port in that range can be
    taken by any outgoing connection (health checks make many) between this check and the bind."""
    import random

    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ephemeral.read_text().split()[0]) if ephemeral.exists() else 32768
    rng = random.Random()
    for _ in range(200):
        base = rng.randint(20000, max(20000 + n, low - n - 1))
        if all(port_free(host, base + i) for i in range(n)):
            return base
    raise ConfigError(f"no block of {n} free ports on {host} below {low}")


def process_vram_by_gpu(pid: int) -> dict[int, float]:
    """VRAM of process ``pid`` on each visible GPU that lists it: CUDA index -> MiB (NVML's per-process used memory);
    empty without NVML or when no GPU lists the process."""
    from quantswarm.energy import nvml_ok, sample, visible_gpus

    if not nvml_ok():
        return {}
    out = {}
    for g in range(len(visible_gpus())):
        s = sample(g)
        if s is not None and pid in s.process_vram_mib:
            out[g] = s.process_vram_mib[pid]
    return out


def process_memory_mib(pid: int, by_gpu: dict[int, float] | None = None) -> tuple[float | None, str]:
    """Measured memory of a worker: its VRAM summed over every visible GPU (NVML) when a GPU lists it, else its
    RSS ("rss"). ``by_gpu``: :func:`process_vram_by_gpu` already read for ``pid`` (read here when None)."""
    by_gpu = process_vram_by_gpu(pid) if by_gpu is None else by_gpu
    if by_gpu:
        return sum(by_gpu.values()), "vram"
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024, "rss"
    except OSError:
        pass
    return None, "n/a"


def plan_error_pct(mem: dict) -> float | None:
    """(measured - planned) / planned x 100 of one :meth:`Supervisor.measured_memory` row (None when either is
    missing or zero)."""
    measured, planned = mem["measured_mib"], mem["planned_mib"]
    return (measured - planned) / planned * 100 if measured and planned else None


class Supervisor:
    """Starts, watches and restarts the swarm's llama-server workers."""

    def __init__(self, cfg: SwarmConfig, plan: VramPlan, log: Callable[[str], None] = print):
        self.cfg = cfg
        self.plan = plan
        self.log = log
        self.workers = {n: Worker(n, cfg.agents[n], plan.agents[n].n_gpu_layers) for n in plan.order}
        self.log_dir = Path(cfg.workers.log_dir or tempfile.mkdtemp(prefix="quantswarm-workers-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._watch: threading.Thread | None = None
        self._restarting: set[str] = set()
        self.events: list[dict] = []  # restarts, OOM re-plans, give-ups (for /metrics and reports)

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Load every agent (in parallel) and start the health watcher; raises if one cannot load."""
        host = self.cfg.workers.host
        busy = [f"{w.name}:{w.spec.port}" for w in self.workers.values() if not port_free(host, w.spec.port)]
        if busy:
            raise QuantswarmError(f"workers.start_port: port(s) already in use on {host}: {', '.join(busy)}; "
                                  "stop the other process or change workers.start_port")
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(self.workers)) as pool:
            futures = {n: pool.submit(self._load, n) for n in self.workers}
            errors = []
            for n, fut in futures.items():
                try:
                    fut.result()
                    w = self.workers[n]
                    self.log(f"  {n:12} up on {w.url} (pid {w.pid}, ngl {w.n_gpu_layers}) "
                             f"[{sum(x.up for x in self.workers.values())}/{len(self.workers)}]")
                except QuantswarmError as exc:
                    errors.append(f"{n}: {exc}")
        if errors:
            self.close()
            raise EngineError("could not start the swarm: " + " | ".join(errors))
        self.log(f"swarm of {len(self.workers)} agents loaded in {time.monotonic() - t0:.1f} s")
        self._watch = threading.Thread(target=self._watch_loop, name="quantswarm-health", daemon=True)
        self._watch.start()

    def _load(self, name: str) -> None:
        """Start one worker; on out-of-memory, retry with fewer GPU layers (up to workers.oom_retries)."""
        w = self.workers[name]
        a = w.spec
        while True:
            try:
                engine = LlamaServerEngine(
                    a.model, n_ctx=a.n_ctx, parallel=a.parallel, n_gpu_layers=w.n_gpu_layers,
                    n_threads=a.n_threads, host=self.cfg.workers.host, port=a.port,
                    extra_args=(*self.plan.agents[name].server_args(self.plan.multi_gpu), *a.extra_args),
                    lora_path=a.lora, kv_cache_type=a.kv_cache_type, flash_attn=a.flash_attn, n_ubatch=a.n_ubatch,
                    log_verbosity=4,  # llama.cpp's buffer sizes in the worker log (serving.llama_log reads them)
                    startup_timeout=self.cfg.workers.startup_timeout_s,
                    request_timeout=self.cfg.gateway.request_timeout_s,
                    log_path=self.log_dir / f"{name}.log",
                )
            except EngineError as exc:
                log_text = (self.log_dir / f"{name}.log").read_text(errors="replace") if (
                    self.log_dir / f"{name}.log").exists() else str(exc)
                if w.n_gpu_layers > 0 and is_oom(log_text) and w.oom_retries < self.cfg.workers.oom_retries:
                    w.oom_retries += 1
                    old = w.n_gpu_layers
                    w.n_gpu_layers = max(0, old - max(1, (a_layers := self.plan.agents[name].n_layers) // 4))
                    self._note("oom-replan", name, f"ngl {old} -> {w.n_gpu_layers} of {a_layers + 1}")
                    continue
                w.state, w.error = "failed", str(exc)
                raise
            with self._lock:
                w.engine, w.state, w.unhealthy = engine, "up", 0
            return

    def _note(self, kind: str, name: str, detail: str) -> None:
        self.events.append({"t": time.time(), "event": kind, "agent": name, "detail": detail})
        self.log(f"[{kind}] {name}: {detail}")

    def _watch_loop(self) -> None:
        while not self._stop.wait(self.cfg.workers.health_interval_s):
            for name, w in list(self.workers.items()):
                if self._stop.is_set():
                    return
                if w.state != "up" or w.engine is None:
                    continue
                dead = w.engine.proc.poll() is not None
                if not dead:
                    w.unhealthy = 0 if w.engine.healthy() else w.unhealthy + 1
                if dead or w.unhealthy >= 3:
                    why = f"process exited ({w.engine.proc.returncode})" if dead else "3 failed health checks"
                    self.mark_down(name, why)

    def mark_down(self, name: str, why: str) -> None:
        """Take a worker out of rotation and restart it in the background (idempotent)."""
        with self._lock:
            w = self.workers[name]
            if name in self._restarting or w.state in ("failed", "stopped") or self._stop.is_set():
                return
            self._restarting.add(name)
            w.state = "restarting"
        threading.Thread(target=self._restart, args=(name, why), daemon=True).start()

    def _restart(self, name: str, why: str) -> None:
        w = self.workers[name]
        try:
            if w.engine is not None and w.engine.proc.poll() is None and w.engine.healthy():
                with self._lock:
                    w.state = "up"  # a transient error: the process answers again
                return
            if w.restarts >= self.cfg.workers.max_restarts:
                w.state, w.error = "failed", f"gave up after {w.restarts} restarts ({why})"
                self._note("give-up", name, w.error)
                return
            w.restarts += 1
            self._note("restart", name, f"{why}; restart {w.restarts}/{self.cfg.workers.max_restarts}")
            if w.engine is not None:
                w.engine.close()
            deadline = time.monotonic() + 10
            while not port_free(self.cfg.workers.host, w.spec.port) and time.monotonic() < deadline:
                time.sleep(0.2)
            try:
                self._load(name)
                self.log(f"  {name:12} back up on {w.url} (pid {w.pid})")
            except QuantswarmError as exc:
                w.state, w.error = "failed", str(exc)
                self._note("give-up", name, str(exc))
        finally:
            with self._lock:
                self._restarting.discard(name)

    def wait_up(self, name: str, timeout: float) -> bool:
        """Block until ``name`` is up (True) or failed/timed out (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            w = self.workers[name]
            if w.up:
                return True
            if w.state in ("failed", "stopped"):
                return False
            time.sleep(0.1)
        return False

    def close(self) -> None:
        """Stop the watcher and terminate every worker (no orphan llama-server processes)."""
        self._stop.set()
        if self._watch is not None and self._watch is not threading.current_thread():
            self._watch.join(timeout=5)
        for w in self.workers.values():
            if w.engine is not None:
                try:
                    w.engine.close()
                except Exception as exc:  # keep closing the others
                    self.log(f"closing {w.name}: {exc}")
            w.state = "stopped"

    def __enter__(self) -> Supervisor:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- reports ---------------------------------------------------------------------------
    def status(self) -> dict[str, dict]:
        return {n: {"state": w.state, "url": w.url, "pid": w.pid, "n_gpu_layers": w.n_gpu_layers,
                    "restarts": w.restarts, "error": w.error} for n, w in self.workers.items()}

    def measured_memory(self) -> list[dict]:
        """Per worker: planned VRAM and host memory (MiB), the layers it loaded with, and its measured memory.

        ``measure`` says what ``measured_mib`` is: ``vram`` (NVML per-process memory, summed over the visible GPUs;
        ``planned_by_gpu_mib`` / ``measured_by_gpu_mib`` split both per GPU index), ``rss`` (host resident
        memory, when NVML does not list the process) or ``n/a``; ``planned_mib`` is the plan figure to compare it
        with (planned VRAM for ``vram``, else the planned weights + KV cache). ``planned_kv_mib`` /
        ``logged_kv_mib`` and ``planned_compute_mib`` / ``logged_compute_mib`` set the planner's KV cache and compute
        buffer against the sizes llama.cpp logged for the worker (all devices; 0 when not logged).
        """
        rows = []
        for n, w in self.workers.items():
            p: AgentPlan = self.plan.agents[n]
            by_gpu = process_vram_by_gpu(w.pid) if w.pid else {}
            measured, kind = process_memory_mib(w.pid, by_gpu) if w.pid else (None, "n/a")
            weights_kv = (p.cpu_weights + p.cpu_kv + p.gpu_weights + p.gpu_kv) / MIB
            logged = read_buffer_sizes(self.log_dir / f"{n}.log")
            rows.append({"agent": n, "planned_ngl": p.n_gpu_layers, "n_gpu_layers": w.n_gpu_layers,
                         "n_layers": p.n_layers + 1, "planned_vram_mib": p.gpu_bytes / MIB,
                         "planned_host_mib": p.cpu_bytes / MIB, "planned_weights_kv_mib": weights_kv,
                         "planned_mib": p.gpu_bytes / MIB if kind == "vram" else weights_kv,
                         "measure": kind, "measured_mib": measured,
                         "planned_kv_mib": (p.gpu_kv + p.cpu_kv) / MIB, "logged_kv_mib": logged.total("kv"),
                         "planned_compute_mib": p.compute / MIB,
                         "logged_compute_mib": logged.total("compute"),
                         "planned_by_gpu_mib": {d: b / MIB for d, b in sorted(p.devices.items())},
                         "measured_by_gpu_mib": by_gpu})
        return rows

    def measured_vs_plan(self) -> list[dict]:
        """Planner prediction vs measured memory per worker (VRAM via NVML, else host RSS), with the error."""
        rows = []
        for m in self.measured_memory():
            measured, kind, predicted = m["measured_mib"], m["measure"], m["planned_mib"]
            pct = plan_error_pct(m)
            err = "n/a" if pct is None else f"{pct:+.0f}%"
            rows.append({"agent": m["agent"], "measure": kind, "predicted_MiB": f"{predicted:.1f}",
                         "measured_MiB": f"{measured:.1f}" if measured is not None else "n/a", "error": err})
        return rows
