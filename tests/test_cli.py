"""The ``aegis`` command and the twistd plugin, run as real processes."""

from __future__ import annotations

import http.client
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aegis.config import SETTINGS
from tests.aegis_process import ROOT, AegisProcess, run_aegis


def test_plugin_is_discoverable() -> None:
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins

    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
    assert "aegis" in makers
    assert makers["aegis"].module == "aegis.tap" or makers["aegis"].module.__name__ == "aegis.tap"


def test_reactor_plugin_is_discoverable() -> None:
    from twisted.application.reactors import IReactorInstaller
    from twisted.plugin import getPlugins

    installers = {each.shortName: each for each in getPlugins(IReactorInstaller)}
    assert installers["aegis"].moduleName == "aegis.reactor"


def test_no_init_in_twisted_plugins() -> None:
    assert not (ROOT / "twisted" / "__init__.py").exists()
    assert not (ROOT / "twisted" / "plugins" / "__init__.py").exists()


def test_twistd_help_lists_options(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twisted", "aegis", "--help"], cwd=tmp_path, text=True,
        capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
    )
    assert result.returncode == 0, result.stderr
    for spec in SETTINGS:
        assert f"--{spec.option}" in result.stdout


def test_aegis_help(tmp_path: Path) -> None:
    top = run_aegis(tmp_path, "--help")
    assert top.returncode == 0
    for command in ("run", "rotate-key", "generate-key"):
        assert command in top.stdout
    run_help = run_aegis(tmp_path, "run", "--help")
    assert run_help.returncode == 0
    for spec in SETTINGS:
        assert f"--{spec.option}" in run_help.stdout and spec.env in run_help.stdout


@pytest.mark.parametrize(
    ("env", "args", "needle"),
    [
        ({"AEGIS_HTTP_LISTEN": "tcp:99999"}, [], "AEGIS_HTTP_LISTEN"),
        ({}, ["--https-listen", "nonsense"], "--https-listen"),
        ({"AEGIS_SSL_KEY": "1234"}, [], "AEGIS_SSL_KEY"),
        ({"AEGIS_ACCESS_LOG": "/nonexistent/access.log"}, [], "AEGIS_ACCESS_LOG"),
        ({}, ["--access-log-format", "common"], "--access-log-format"),
        ({"AEGIS_LOG_LEVEL": "loud"}, [], "AEGIS_LOG_LEVEL"),
        ({"AEGIS_LOG_FORMAT": "yaml"}, [], "AEGIS_LOG_FORMAT"),
    ],
)
def test_bad_configuration_is_one_line_exit_2(
    tmp_path: Path, env: dict[str, str], args: list[str], needle: str
) -> None:
    result = run_aegis(tmp_path, "run", *args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "data").exists()


def test_unknown_command(tmp_path: Path) -> None:
    result = run_aegis(tmp_path, "frobnicate")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def _generate_key(tmp_path: Path) -> str:
    result = run_aegis(tmp_path, "generate-key")
    key = result.stdout.strip()
    assert result.returncode == 0 and len(key) == 64
    return key


@pytest.mark.slow
def test_run_answers_http_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    aegis = AegisProcess(tmp_path)
    aegis.start()
    try:
        port = aegis.ports["HTTP listener"]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/", headers={"Host": "nothing.example"})
        response = connection.getresponse()
        assert response.status == 404
        assert b"no proxy host" in response.read()
        # an idle keep-alive connection must not hold up shutdown
        started = time.monotonic()
        assert aegis.stop() == 0
        assert time.monotonic() - started < 8
        assert "Traceback" not in aegis.text()
    finally:
        aegis.kill()
    assert "AEGIS_SSL_KEY is not set" in aegis.text()
    assert "reactor: aegis.reactor.AegisReactor" in aegis.text()  # installed by aegis.launch
    database = tmp_path / "data" / "aegis.db"
    assert oct(database.stat().st_mode & 0o777) == "0o600"


@pytest.mark.slow
def test_wrong_key_refuses_to_start_and_leaves_database_untouched(tmp_path: Path) -> None:
    key = _generate_key(tmp_path)
    aegis = AegisProcess(tmp_path, env={"AEGIS_SSL_KEY": key})
    aegis.start()
    assert aegis.stop() == 0
    database = tmp_path / "data" / "aegis.db"
    before = database.read_bytes()
    wrong = run_aegis(tmp_path, "run", env={"AEGIS_SSL_KEY": _generate_key(tmp_path)})
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == "aegis: error: AEGIS_SSL_KEY does not match this database"
    assert database.read_bytes() == before
    forgot = run_aegis(tmp_path, "run", env={"AEGIS_SSL_KEY": ""})
    assert forgot.returncode == 2 and "AEGIS_SSL_KEY" in forgot.stderr
    assert database.read_bytes() == before


@pytest.mark.slow
def test_second_instance_on_same_data_refused(tmp_path: Path) -> None:
    aegis = AegisProcess(tmp_path)
    aegis.start()
    try:
        second = run_aegis(tmp_path, "run")
        assert second.returncode == 2
        assert "another Aegis process" in second.stderr
        rotate = run_aegis(tmp_path, "rotate-key")
        assert rotate.returncode == 2
    finally:
        assert aegis.stop() == 0


@pytest.mark.slow
def test_rotate_key_moves_key_into_environment(tmp_path: Path) -> None:
    aegis = AegisProcess(tmp_path)
    aegis.start()
    assert aegis.stop() == 0
    database = tmp_path / "data" / "aegis.db"
    new_key = _generate_key(tmp_path)
    rotated = run_aegis(tmp_path, "rotate-key", env={"AEGIS_SSL_NEW_KEY": new_key})
    assert rotated.returncode == 0, rotated.stderr
    assert new_key not in rotated.stdout + rotated.stderr
    db = sqlite3.connect(database)
    assert db.execute("SELECT value FROM settings WHERE name = 'ssl_key'").fetchone() is None
    db.close()
    restarted = AegisProcess(tmp_path, env={"AEGIS_SSL_KEY": new_key})
    restarted.start()
    assert restarted.stop() == 0
    assert "AEGIS_SSL_KEY is not set" not in restarted.text()
    refused = run_aegis(tmp_path, "run")  # the key now lives only in the environment
    assert refused.returncode == 2 and "AEGIS_SSL_KEY" in refused.stderr


def test_port_in_use_exits_non_zero(tmp_path: Path) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        result = run_aegis(
            tmp_path, "run",
            env={"AEGIS_HTTP_LISTEN": f"tcp:{port}:interface=127.0.0.1",
                 "AEGIS_HTTPS_LISTEN": "tcp:0:interface=127.0.0.1",
                 "AEGIS_ADMIN_LISTEN": "tcp:0:interface=127.0.0.1"},
            timeout=30,
        )
    finally:
        blocker.close()
    assert result.returncode == 1
    assert "could not listen" in result.stdout
