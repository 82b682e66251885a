"""Every llama-server this process starts is tracked until stopped, so an interrupted verb leaves none behind,
even one killed while its server was still loading (real llama-server, real SmolLM2)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from quantswarm.engine.server import LlamaServerEngine, live_server_pids
from router.program import RouterProgram, save_program
from router.router_config import RouterConfig
from router.swarm import load_swarm
from tests.procs import alive, llama_children


def test_live_servers_are_tracked_until_closed(smollm2, llama_server_bin):
    before = set(live_server_pids())
    a = LlamaServerEngine(str(smollm2), n_ctx=256, parallel=1, n_threads=1)
    try:
        assert set(live_server_pids()) - before == {a.pid}
    finally:
        a.close()
    assert set(live_server_pids()) == before and not alive(a.pid)


STOP_ALL = """
import sys
from quantswarm.engine.server import LlamaServerEngine, live_server_pids, stop_live_servers
engines = [LlamaServerEngine(sys.argv[1], n_ctx=256, parallel=1, n_threads=1) for _ in range(2)]
print(*live_server_pids())
print(stop_live_servers(), stop_live_servers(), len(live_server_pids()))
"""


def test_stop_live_servers_stops_every_one_once(smollm2, llama_server_bin):
    # in a child process: stopping "every live server" here would also stop other tests' servers
    res = subprocess.run([sys.executable, "-c", STOP_ALL, str(smollm2)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-1500:]
    pids, counts = res.stdout.splitlines()
    assert len(pids.split()) == 2 and counts == "2 0 0"
    assert not [p for p in map(int, pids.split()) if alive(p)]


def test_sigterm_while_the_router_server_loads_stops_it(smollm2, llama_server_bin, tmp_path):
    cfg = RouterConfig()
    swarm = load_swarm(cfg.swarm)
    prog = save_program(RouterProgram(swarm), tmp_path / "prog", {
        "optimizer": "labeled", "swarm": swarm.to_dict(), "agents": swarm.names, "rationale": False,
        "max_tokens": 24, "max_chars": 600, "router_model": str(smollm2)})
    proc = subprocess.Popen([sys.executable, "-m", "quantswarm.cli", "router", "route", "What is 17 * 23?",
                             "--program", str(prog)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    servers: set[int] = set()
    deadline = time.monotonic() + 120
    while not servers and time.monotonic() < deadline and proc.poll() is None:
        servers = llama_children(proc.pid)
        time.sleep(0.05)
    assert servers, f"no llama-server started: {proc.communicate()[1][-1500:] if proc.poll() is not None else ''}"
    proc.send_signal(signal.SIGTERM)  # most likely while it loads: no engine object exists yet to close
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-1500:]
    assert err.startswith(f"loading {prog} and starting its router llama-server ..."), err[-1500:]
    assert err.splitlines()[-1].startswith("terminated"), err[-1500:]
    time.sleep(0.5)
    assert not [p for p in servers if alive(p)], "llama-server left running"
