"""A local nats-server with JetStream on loopback: on a free port with a temporary store (tests, benches), or on
a given port with a kept store (``quantswarm serve`` when the bus URL is the default local one)."""

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
    """``nats-server -js`` on 127.0.0.1; ``close()`` stops it.

    ``store``: the JetStream store folder, kept after ``close()`` (tasks survive a restart); without it a
    temporary folder is used and removed. Raises ConfigError (one line) when the server does not start.
    """

    def __init__(self, port: int | None = None, binary: str | None = None, startup_timeout: float = 10.0,
                 store: str | Path | None = None):
        exe = binary or shutil.which("nats-server") or ("/usr/sbin/nats-server"
                                                        if Path("/usr/sbin/nats-server").exists() else None)
        if exe is None:
            raise ConfigError("nats-server is not installed: `apt-get install nats-server` (or `make nats`)")
        self.port = port or free_port()
        self.keep = store is not None
        self.store = Path(store) if store is not None else Path(tempfile.mkdtemp(prefix="quantswarm-nats-"))
        self.store.mkdir(parents=True, exist_ok=True)
        self.url = f"nats://127.0.0.1:{self.port}"
        self._exe, self._timeout = exe, startup_timeout
        self._log = open(self.store / "nats.log", "a")
        self._start()

    def _start(self) -> None:
        cmd = [self._exe, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store / "js")]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ConfigError(f"nats-server exited ({self.proc.returncode}): "
                                  f"{(self.store / 'nats.log').read_text()[-300:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.close()
        raise ConfigError(f"nats-server did not listen on 127.0.0.1:{self.port} within {self._timeout:.0f} s")

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the server, stay down ``down_s`` seconds, start it again on the same port and store."""
        stop_process(self.proc)
        time.sleep(down_s)
        self._start()

    def close(self) -> None:
        stop_process(self.proc)
        self._log.close()
        if not self.keep:
            shutil.rmtree(self.store, ignore_errors=True)

    def __enter__(self) -> LocalNats:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
