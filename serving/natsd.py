"""A local nats-server with JetStream on a free loopback port (for tests, `bench --start-nats` and demos)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from quantswarm.engine.server import free_port, stop_process
from quantswarm.errors import ConfigError


class LocalNats:
    """``nats-server -js`` on 127.0.0.1 with a temporary store directory; ``close()`` stops it and removes the store."""

    def __init__(self, port: int | None = None, binary: str | None = None, startup_timeout: float = 10.0):
        exe = binary or shutil.which("nats-server") or ("/usr/sbin/nats-server"
                                                        if Path("/usr/sbin/nats-server").exists() else None)
        if exe is None:
            raise ConfigError("nats-server is not installed: `apt-get install nats-server` (or `make nats`)")
        self.port = port or free_port()
        self.store = Path(tempfile.mkdtemp(prefix="quantswarm-nats-"))
        self.url = f"nats://127.0.0.1:{self.port}"
        self._log = open(self.store / "nats.log", "w")
        cmd = [exe, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store / "js")]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ConfigError(f"nats-server exited ({self.proc.returncode}): "
                                  f"{(self.store / 'nats.log').read_text()[-300:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.close()
        raise ConfigError(f"nats-server did not listen on 127.0.0.1:{self.port} within {startup_timeout:.0f} s")

    def close(self) -> None:
        stop_process(self.proc)
        self._log.close()
        shutil.rmtree(self.store, ignore_errors=True)

    def __enter__(self) -> LocalNats:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
