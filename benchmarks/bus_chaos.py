"""Bus chaos benchmark (CPU, SmolLM2): does every task end as exactly one result or one dead letter, run once?

Three faults, one run, a real nats-server and real llama-servers (2 agents of SmolLM2-135M, 1 slot each):

1. **worker killed mid-task**: bus-worker host A (a subprocess: swarm + BusWorker) is SIGKILLed, with its
   llama-servers, while it runs tasks; host B starts and takes over (the killed runs are redelivered
   after ``ack_wait_s``).
2. **nats-server restarted mid-run**: stopped for 2 s and started again on the same port and store while
   host B is answering.
3. **a llama-server that fails to load**: agent ``spare``'s GGUF is replaced by one of an architecture
   llama.cpp does not know and its llama-server is killed; the restarts fail, and the tasks named to
   ``spare`` must be dead-lettered after ``max_deliver`` deliveries, not retried for ever or lost.

``ack_wait_s`` is 2 s and generations take longer than that on this CPU, so the heartbeats are exercised.
Each host journals every run it starts and how it ended (task id, delivery, pid), so runs are counted from
the hosts' side: a task is "run twice" when a run of it starts after a run of it answered, or while another
run of it is still going (not ended, on a host not killed); a run after a failed or killed one is a retry.

    .venv/bin/python benchmarks/bus_chaos.py [--out benchmarks/results/bus-chaos-cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from quantswarm.registry import DEFAULT_MODEL, fetch  # noqa: E402
from quantswarm.text_table import markdown_table  # noqa: E402
from serving.bus import close, collect, connect, ensure_stream, publish_task  # noqa: E402
from serving.natsd import LocalNats  # noqa: E402
from serving.swarm_config import load_swarm  # noqa: E402
from serving.workers import port_free  # noqa: E402

ACK_WAIT_S, MAX_DELIVER, MAX_TOKENS = 2.0, 3, 48
PROMPT = "Write three sentences about the sea."


# --- the bus-worker host (run as a subprocess so it can be killed) --------------------------------------------


def worker_main(spec_path: str, journal_path: str) -> None:
    """Load the swarm, journal its llama-server pids, consume the bus until SIGTERM, journaling every run."""
    from serving.bus import BusWorker
    from serving.swarm import Swarm

    journal = open(journal_path, "a", buffering=1)

    def note(**event) -> None:
        journal.write(json.dumps({"t": time.time(), "pid": os.getpid(), **event}) + "\n")
        journal.flush()
        os.fsync(journal.fileno())

    swarm = Swarm(load_swarm(spec_path), log=lambda m: note(event="log", line=m))
    swarm.start()
    note(event="up", llama_pids={n: w.pid for n, w in swarm.supervisor.workers.items()})
    worker = BusWorker(swarm, log=lambda m: note(event="log", line=m))
    worker.on_run = lambda tid, n, what: note(event="run" if what == "start" else what, id=tid, delivery=n)

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await worker.run(stop)

    try:
        asyncio.run(run())
    finally:
        note(event="down", completed=worker.completed, dead=worker.dead, retried=worker.retried,
             skipped=worker.skipped)
        swarm.close()


# --- the benchmark ------------------------------------------------------------------------------------------


def write_spec(d: Path, name: str, nats_url: str, start_port: int, chat: Path, spare: Path) -> Path:
    spec = d / f"{name}.yaml"
    spec.write_text(yaml.safe_dump({
        "agents": {"chat": {"model": str(chat), "n_ctx": 256, "parallel": 1, "n_threads": 1},
                   "spare": {"model": str(spare), "n_ctx": 256, "parallel": 1, "n_threads": 1}},
        "router": {"default_agent": "chat"}, "fallback": ["chat", "spare"], "vram": {"budget_mib": 0},
        "gateway": {"port": start_port + 9},
        "workers": {"start_port": start_port, "log_dir": str(d / f"{name}-logs"), "health_interval_s": 0.5,
                    "startup_timeout_s": 30, "max_restarts": 2},
        "bus": {"enabled": True, "url": nats_url, "ack_wait_s": ACK_WAIT_S, "max_deliver": MAX_DELIVER},
        "monitor": {"enabled": False, "csv": str(d / "monitor.csv")},
    }))
    return spec


def free_block(n: int = 10) -> int:
    """A base port with ``n`` free loopback ports after it, below the usual ephemeral range."""
    for base in range(21000, 32000, 100):
        if all(port_free("127.0.0.1", base + i) for i in range(n)):
            return base
    raise SystemExit("error: no free block of loopback ports in 21000..32000")


def unknown_arch_gguf(path: Path) -> Path:
    """A well-formed GGUF of an architecture llama.cpp does not know: quantswarm reads it, llama-server cannot."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "nosucharch")
    for key, value in (("block_count", 1), ("context_length", 256), ("embedding_length", 64),
                       ("attention.head_count", 4)):
        w.add_uint32(f"nosucharch.{key}", value)
    w.add_tensor("blk.0.attn_q.weight", np.ones((64, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def read_journal(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line cut by SIGKILL
            pass
    return out


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"error: timed out waiting for {what}")
        time.sleep(0.2)


def start_host(spec: Path, journal: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "worker", str(spec), str(journal)], cwd=REPO,
                            stdout=open(log, "a"), stderr=subprocess.STDOUT)


def host_events(journal: Path, pid: int, event: str) -> list[dict]:
    return [e for e in read_journal(journal) if e["pid"] == pid and e["event"] == event]


async def publish(url: str, spec_path: Path, tasks: list[tuple[str, str]]) -> int:
    spec = load_swarm(spec_path).bus
    nc = await connect(spec)
    js = nc.jetstream()
    await ensure_stream(js, spec)
    stored = 0
    for tid, model in tasks:
        stored += await publish_task(js, spec, {"id": tid, "model": model, "prompt": PROMPT, "max_tokens": MAX_TOKENS})
    await close(nc)
    return stored


async def read_outcomes(spec_path: Path, published: int, timeout: float) -> tuple[list[dict], list[dict]]:
    """Every stored result and dead letter, once there are ``published`` distinct ids among them (or at timeout)."""
    spec = load_swarm(spec_path).bus
    nc = await connect(spec)
    js = nc.jetstream()
    deadline = time.monotonic() + timeout
    while True:
        results = await collect(js, spec, spec.results_subject, expect=published + 1, timeout=2)
        dead = await collect(js, spec, spec.dead_subject, expect=published + 1, timeout=1)
        if len({m["id"] for m in results + dead}) >= published or time.monotonic() > deadline:
            break
    await asyncio.sleep(2 * ACK_WAIT_S + 1)  # a late duplicate would be stored by now
    results = await collect(js, spec, spec.results_subject, expect=published + 1, timeout=2)
    dead = await collect(js, spec, spec.dead_subject, expect=published + 1, timeout=1)
    await close(nc)
    return results, dead


def count_runs(journal: list[dict], killed_pids: set[int]) -> tuple[int, int, int]:
    """(runs, retries after a failed or killed run, runs twice) from the hosts' journal."""
    ends = {(e["pid"], e["id"], e["delivery"]): e["event"] for e in journal if e["event"] in ("answered", "failed",
                                                                                                "dead")}
    runs = sorted((e for e in journal if e["event"] == "run"), key=lambda e: e["t"])
    retries = twice = 0
    for i, r in enumerate(runs):
        earlier = [p for p in runs[:i] if p["id"] == r["id"]]
        if not earlier:
            continue
        outcomes = [ends.get((p["pid"], p["id"], p["delivery"])) for p in earlier]
        alive = [p for p, o in zip(earlier, outcomes, strict=True) if o is None and p["pid"] not in killed_pids]
        if "answered" in outcomes or alive:
            twice += 1
        else:
            retries += 1
    return len(runs), retries, twice


def run(out: Path) -> dict:
    t_start = time.monotonic()
    model = fetch(DEFAULT_MODEL, try_hub=False)
    work = Path(tempfile.mkdtemp(prefix="bus-chaos-"))
    spare = work / "spare.gguf"
    spare.write_bytes(model.read_bytes())
    journal = work / "journal.jsonl"
    events: list[str] = []

    def say(line: str) -> None:
        stamp = f"{time.monotonic() - t_start:6.1f}s"
        events.append(f"{stamp} {line}")
        print(f"[{stamp}] {line}", flush=True)

    nats_srv = LocalNats(store=work / "nats")
    base = free_block(30)
    spec_a = write_spec(work, "host-a", nats_srv.url, base, model, spare)
    spec_b = write_spec(work, "host-b", nats_srv.url, base + 15, model, spare)
    hosts: list[subprocess.Popen] = []
    tasks = [(f"auto-{i:02d}", "auto") for i in range(10)]
    published = asyncio.run(publish(nats_srv.url, spec_a, tasks))
    try:
        # 1. host A runs tasks and is killed (with its llama-servers) while it runs some
        a = start_host(spec_a, journal, work / "host-a.out")
        hosts.append(a)
        wait_for(lambda: len(host_events(journal, a.pid, "run")) >= 3, 180, "host A to start 3 runs")
        time.sleep(0.5)
        a_runs = host_events(journal, a.pid, "run")
        a.send_signal(signal.SIGKILL)
        a.wait()
        for pid in host_events(journal, a.pid, "up")[0]["llama_pids"].values():
            try:
                os.kill(pid, signal.SIGKILL)  # the machine went down: its llama-servers with it
            except ProcessLookupError:
                pass
        say(f"killed host A (pid {a.pid}) after it started {len(a_runs)} runs")

        # 2. host B takes over; nats-server restarts while it answers
        b = start_host(spec_b, journal, work / "host-b.out")
        hosts.append(b)
        wait_for(lambda: host_events(journal, b.pid, "up"), 180, "host B to load")
        say("host B up")
        wait_for(lambda: len(host_events(journal, b.pid, "run")) >= 3, 120, "host B to start 3 runs")
        published += asyncio.run(publish(nats_srv.url, spec_a, [(f"auto-{i:02d}", "auto") for i in range(10, 14)]))
        nats_srv.restart(down_s=2.0)
        say("restarted nats-server (down 2 s)")

        # 3. agent spare's llama-server dies and cannot load again; tasks named to it must be dead-lettered
        spare_pid = host_events(journal, b.pid, "up")[0]["llama_pids"]["spare"]
        unknown_arch_gguf(work / "broken.gguf").replace(spare)
        os.kill(spare_pid, signal.SIGKILL)
        say("agent spare: its GGUF replaced by an unknown architecture, its llama-server killed")
        published += asyncio.run(publish(nats_srv.url, spec_a, [(f"spare-{i}", "spare") for i in range(3)]))
        say(f"published {published} tasks in all")

        results, dead = asyncio.run(read_outcomes(spec_a, published, timeout=150))
        say(f"{len(results)} results and {len(dead)} dead letters stored")
        b.send_signal(signal.SIGTERM)
        b.wait(timeout=60)
    finally:
        for h in hosts:
            if h.poll() is None:
                h.kill()
                h.wait()
        nats_srv.close()

    n_runs, retries, run_twice = count_runs(read_journal(journal), {a.pid})
    result_ids, dead_ids = Counter(r["id"] for r in results), Counter(d["id"] for d in dead)
    all_ids = {t for t, _ in tasks} | {f"auto-{i:02d}" for i in range(10, 14)} | {f"spare-{i}" for i in range(3)}
    lost = sorted(all_ids - set(result_ids) - set(dead_ids))
    b_down = host_events(journal, hosts[1].pid, "down")
    summary = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()}: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} "
                   f"{platform.release()}, Python {platform.python_version()}",
        "model": model.name, "ack_wait_s": ACK_WAIT_S, "max_deliver": MAX_DELIVER, "max_tokens": MAX_TOKENS,
        "published": published, "completed": len(result_ids), "dead_lettered": len(dead_ids),
        "lost": len(lost), "lost_ids": lost,
        "runs": n_runs, "retries": retries, "run_twice": run_twice,
        "duplicate_results": sum(n - 1 for n in result_ids.values()),
        "duplicate_dead_letters": sum(n - 1 for n in dead_ids.values()),
        "both_result_and_dead": sorted(set(result_ids) & set(dead_ids)),
        "dead_letters": {d["id"]: d["reason"] for d in dead},
        "host_b": b_down[0] if b_down else {},
        "max_latency_ms": max((r["latency_ms"] for r in results), default=0.0),
        "wall_s": round(time.monotonic() - t_start, 1),
        "timeline": events,
    }
    write(out, summary)
    return summary


def write(out: Path, s: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stem = f"bus-chaos-{s['date'][:10]}"
    (out / f"{stem}.json").write_text(json.dumps(s, indent=2) + "\n")
    rows = [{"published": s["published"], "completed": s["completed"], "dead-lettered": s["dead_lettered"],
             "lost": s["lost"], "run twice": s["run_twice"], "runs": s["runs"],
             "retries (after a failed or killed run)": s["retries"], "duplicate results": s["duplicate_results"]}]
    dead = "\n".join(f"- `{k}`: {v}" for k, v in sorted(s["dead_letters"].items())) or "- none"
    timeline = "\n".join(f"    {line}" for line in s["timeline"])
    (out / f"{stem}.md").write_text(
        f"# Bus chaos benchmark, {s['date']}\n\n"
        f"Machine: {s['machine']}. Model {s['model']} (2 agents, 1 slot each), ack_wait {s['ack_wait_s']} s, "
        f"max_deliver {s['max_deliver']}, {s['max_tokens']} tokens per answer (longest answer "
        f"{s['max_latency_ms'] / 1000:.1f} s); wall {s['wall_s']} s. Faults: a bus-worker host SIGKILLed with its "
        "llama-servers mid-task, nats-server restarted (down 2 s) mid-run, an agent whose llama-server cannot load "
        "again (unknown architecture) with tasks named to it. Made by `benchmarks/bus_chaos.py`.\n\n"
        f"{markdown_table(rows)}\n\n"
        "*run twice*: a run of a task that started after a run of it answered, or while another run of it was "
        "still going; *retries*: runs after a failed run (agent down) or a run on the killed host (expected).\n\n"
        f"Dead letters:\n\n{dead}\n\nTimeline:\n\n{timeline}\n")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker_main(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/bus-chaos-cpu")
    s = run(ap.parse_args().out)
    print(json.dumps({k: v for k, v in s.items() if k not in ("timeline", "dead_letters")}, indent=2))


if __name__ == "__main__":
    main()
