"""Start the real ``axon serve`` in a subprocess on a free loopback port, stop it cleanly.

Used by ``axon bench``, ``axon quickstart`` and the tests: all of them want a real server process
(its own CPU, its own signals), never one inside their own event loop.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_ANNOUNCE = re.compile(r"axon: serving \d+ model version\(s\) on \S+:(\d+)"
                       r"(?:; http on https?://\S+:(\d+))?"
                       r"(?:; metrics on http://\S+:(\d+)/metrics)?$", re.MULTILINE)


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    metrics_port: int | None = None
    """Port of the Prometheus endpoint on 127.0.0.1 (None: started with --no-metrics)."""
    http_port: int | None = None
    """Port of the HTTP/REST binding on 127.0.0.1 (None: started with --no-http)."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_address(self) -> str:
        """``127.0.0.1:PORT`` of the HTTP/REST port; raises if it has none."""
        if self.http_port is None:
            raise ServerFailedError("this server was started without HTTP (--no-http)")
        return f"127.0.0.1:{self.http_port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (plain HTTP; a TLS server's is https)."""
        return f"http://{self.http_address}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as an orchestrator would; return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def free_port() -> int:
    """A loopback port free now, for a server that must come back on the same address."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free now: each probe stays bound until all are
    chosen, since ports probed one after another can come back the same."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def start_server(repository: Path, log_path: Path, *flags: str,
                 env: dict[str, str] | None = None, timeout: float = 60,
                 launcher: Sequence[str] = (sys.executable, "-m", "axon.cli"),
                 ) -> ServerProcess:
    """``axon serve`` on 127.0.0.1, port 0 (HTTP and metrics too); returns once it has
    announced its ports.

    ``launcher`` is the command that runs the ``axon`` CLI with the arguments that follow.
    """
    log = log_path.open("wb")
    process = subprocess.Popen(
        [*launcher, "serve", "--model-repository", str(repository),
         "--address", "127.0.0.1:0", "--http-address", "127.0.0.1:0",
         "--metrics-address", "127.0.0.1:0", *flags],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _ANNOUNCE.search(log_path.read_text(errors="replace"))
        if match:
            return ServerProcess(process, int(match[1]), log_path,
                                 int(match[3]) if match[3] else None,
                                 int(match[2]) if match[2] else None)
        if process.poll() is not None:
            raise ServerFailedError(f"axon serve exited with {process.returncode}:\n"
                               f"{log_path.read_text(errors='replace')}")
        time.sleep(0.05)
    process.kill()
    raise ServerFailedError(f"axon serve did not start in {timeout} s:\n{log_path.read_text()}")


@contextmanager
def running_server(repository: Path, log_path: Path, *flags: str,
                   env: dict[str, str] | None = None,
                   launcher: Sequence[str] = (sys.executable, "-m", "axon.cli"),
                   ) -> Iterator[ServerProcess]:
    """A server for the block; afterwards it must stop cleanly on SIGTERM, or this raises."""
    server = start_server(repository, log_path, *flags, env=env, launcher=launcher)
    try:
        yield server
    finally:
        alive = server.process.poll() is None
        status = server.stop()
    if not alive:
        raise ServerFailedError(f"the server died while in use:\n{server.log()}")
    if status != 0:
        raise ServerFailedError(f"the server exited with {status} on SIGTERM:\n{server.log()}")
    if "Traceback" in server.log():
        raise ServerFailedError(f"the server logged a traceback:\n{server.log()}")


class ServerFailedError(RuntimeError):
    """The server process did not start, died, or did not stop cleanly."""
