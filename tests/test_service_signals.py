"""A running ``aegis run`` and the signals operators send it: SIGUSR1 (logrotate), SIGHUP."""

from __future__ import annotations

import http.client
import re
import signal
from pathlib import Path

import pytest

from tests.aegis_process import AegisProcess

pytestmark = pytest.mark.integration

_COMBINED = re.compile(
    r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /r(?P<n>\d+) HTTP/1\.1" '
    r'404 \d+ "-" "aegis-test"$')


def _requests(port: int, numbers: range) -> None:
    """Keep-alive requests for an unknown host: Aegis answers 404 itself and logs each."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for n in numbers:
            conn.request("GET", f"/r{n}", headers={"Host": "nowhere.test",
                                                   "User-Agent": "aegis-test"})
            response = conn.getresponse()
            response.read()
            assert response.status == 404
    finally:
        conn.close()


def _numbers(path: Path) -> list[int]:
    found = []
    for line in path.read_text().splitlines():
        match = _COMBINED.match(line)
        assert match, line
        found.append(int(match["n"]))
    return found


def test_logrotate_rename_and_sigusr1_lose_no_line(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    aegis = AegisProcess(tmp_path, env={"AEGIS_ACCESS_LOG": str(log)})
    try:
        aegis.start()
        port = aegis.ports["HTTP listener"]
        _requests(port, range(0, 50))
        log.rename(tmp_path / "access.log.1")  # what logrotate does, then its postrotate:
        assert aegis.process is not None
        aegis.process.send_signal(signal.SIGUSR1)
        aegis.wait_for(f"reopened the log {log}")
        _requests(port, range(50, 100))
        assert aegis.stop() == 0, aegis.text()
    finally:
        aegis.kill()
    assert _numbers(tmp_path / "access.log.1") == list(range(50))
    assert _numbers(log) == list(range(50, 100))  # the last batch flushed at shutdown
    assert "GET /r" not in aegis.text()  # the file, not stdout


def test_access_log_on_stdout_by_default_and_off(tmp_path: Path) -> None:
    for setting, expected in ((None, True), ("off", False)):
        workdir = tmp_path / str(setting)
        workdir.mkdir()
        aegis = AegisProcess(workdir, env={"AEGIS_ACCESS_LOG": setting} if setting else None)
        try:
            aegis.start()
            _requests(aegis.ports["HTTP listener"], range(3))
            assert aegis.stop() == 0, aegis.text()
        finally:
            aegis.kill()
        lines = [line for line in aegis.text().splitlines() if "GET /r" in line]
        assert [bool(_COMBINED.match(line)) for line in lines] == [True] * (3 if expected else 0)
