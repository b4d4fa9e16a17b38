"""Run ``aegis run`` as a real process, the way a user does, on ephemeral ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"(?P<what>[\w -]+?) listening on (?P<host>[^\s]*):(?P<port>\d+)")


class AegisProcess:
    """``aegis run`` in ``workdir`` with every listener on port 0; ``ports`` maps each
    listener's description (e.g. "HTTP listener") to the port it bound."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None,
                 args: list[str] | None = None, command: list[str] | None = None) -> None:
        self.workdir = workdir
        # how ``aegis`` is started: the checkout's package by default, or e.g. the console
        # script of an installed wheel
        self.command = command or [sys.executable, "-m", "aegis"]
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "AEGIS_HTTP_LISTEN": "tcp:0:interface=127.0.0.1",
            "AEGIS_HTTPS_LISTEN": "tcp:0:interface=127.0.0.1",
            "AEGIS_ADMIN_LISTEN": "tcp:0:interface=127.0.0.1",
            **(env or {}),
        }
        self.args = args or []
        self.output: list[str] = []
        self.ports: dict[str, int] = {}
        self.process: subprocess.Popen[str] | None = None
        self._changed = threading.Condition()

    def start(self, expect: tuple[str, ...] = ("HTTP listener",), timeout: float = 30) -> None:
        self.process = subprocess.Popen(
            [*self.command, "run", *self.args],
            cwd=self.workdir, env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        with self._changed:
            while "Aegis is ready" not in self.text() or not all(
                name in self.ports for name in expect
            ):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("aegis did not start:\n" + self.text())
                self._changed.wait(0.1)

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.output.append(line)
                found = _LISTENING.search(line)
                if found:
                    self.ports[found["what"].strip()] = int(found["port"])
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while text not in self.text():
                if time.monotonic() > deadline:
                    raise AssertionError(f"{text!r} not in output:\n{self.text()}")
                self._changed.wait(0.1)

    def text(self) -> str:
        return "".join(self.output)

    def stop(self, timeout: float = 20) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def run_aegis(workdir: Path, *args: str, env: dict[str, str] | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run an ``aegis`` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "aegis", *args], cwd=workdir, text=True, capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=timeout,
        check=False,
    )
