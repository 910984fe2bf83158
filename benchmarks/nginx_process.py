"""Debian's nginx run with the repository's L7 config (deploy/nginx/nginx.conf) in front of
replicas on loopback ports: for the tests and the scale-out benchmark."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from functools import cache
from pathlib import Path

from axon.errors import AxonError

NGINX_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "nginx.conf"
_UPSTREAM = re.compile(r"^(\s*)server axon:8001 (.*);$", re.MULTILINE)
_LISTEN = re.compile(r"^(\s*)listen 8080;$", re.MULTILINE)
_HTTP2 = re.compile(r"^[ \t]*http2 on;\n", re.MULTILINE)
_PLAIN_LISTEN = re.compile(r"^([ \t]*listen [^;\s]+);$", re.MULTILINE)
HTTP2_DIRECTIVE_SINCE = (1, 25, 1)
"""The nginx release that brought ``http2 on;`` and deprecated ``listen ... http2``. The
shipped config uses the new form (compose runs nginx 1.27); Debian 12's nginx, which the tests
run, is 1.22 and knows only the old one."""


class ProxyError(AxonError):
    """nginx could not be configured or started."""


def loopback_config(upstreams: list[int], listen: int, folder: Path) -> Path:
    """The repository's config with loopback upstreams, port, pid file and error log, written
    into ``folder``, in the form the installed nginx reads (``for_installed_nginx``). Only the
    upstream servers, the listen address and that form change."""
    text = NGINX_CONFIG.read_text()
    if len(_UPSTREAM.findall(text)) != 1 or len(_LISTEN.findall(text)) != 1 \
            or len(_HTTP2.findall(text)) != 1:
        raise ProxyError(f"{NGINX_CONFIG}: expected one 'server axon:8001', one "
                         "'listen 8080;' and one 'http2 on;' line")
    text = _UPSTREAM.sub(lambda m: "\n".join(f"{m[1]}server 127.0.0.1:{port} {m[2]};"
                                             for port in upstreams), text)
    text = _LISTEN.sub(lambda m: f"{m[1]}listen 127.0.0.1:{listen};", text)
    path = folder / "nginx.conf"
    path.write_text(f"pid {folder}/nginx.pid;\nerror_log {folder}/error.log notice;\n"
                    f"{for_installed_nginx(text)}")
    return path


def for_installed_nginx(text: str) -> str:
    """``text`` as the installed nginx reads it: unchanged from 1.25.1 on, in the old HTTP/2
    form (``legacy_http2_form``) before."""
    return text if nginx_version() >= HTTP2_DIRECTIVE_SINCE else legacy_http2_form(text)


def legacy_http2_form(text: str) -> str:
    """nginx < 1.25.1's spelling of a config with one server block: the ``http2 on;`` line
    dropped and ``http2`` added to its plain ``listen`` lines instead. Everything else is kept
    as it is."""
    if not _HTTP2.search(text):
        return text
    return _PLAIN_LISTEN.sub(lambda m: f"{m[1]} http2;", _HTTP2.sub("", text))


@cache
def nginx_version(binary: str = "nginx") -> tuple[int, ...]:
    """The installed nginx's version, from ``nginx -v`` (which writes it on stderr)."""
    try:
        shown = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=30,
                               check=False)
    except OSError as error:
        raise ProxyError(f"cannot run {binary} -v: {error.strerror or error}") from error
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", shown.stderr + shown.stdout)
    if found is None:
        raise ProxyError(f"no version in the output of {binary} -v: {shown.stderr.strip()}")
    return tuple(int(part) for part in found.groups())


class NginxProcess:
    """``nginx -g 'daemon off;'`` with ``config``; returns once it accepts connections."""

    def __init__(self, config: Path, port: int, timeout: float = 10) -> None:
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.error_log = config.parent / "error.log"
        self.process = subprocess.Popen(
            ["nginx", "-p", str(config.parent), "-c", str(config), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                raise ProxyError(f"nginx exited with {self.process.returncode}: {stderr}")
            if time.monotonic() > deadline:
                self.stop()
                raise ProxyError("nginx did not start listening")
            time.sleep(0.05)

    def pids(self) -> list[int]:
        """The master and its workers (for CPU accounting)."""
        workers = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                   and _parent(p) == self.process.pid]
        return [self.process.pid, *workers]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
        self.process.wait(timeout=30)


def _parent(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
