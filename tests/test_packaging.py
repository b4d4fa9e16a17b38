"""The package as users install it: a wheel in a fresh venv, and a plain editable install.

Twisted finds plugins by scanning ``twisted/plugins`` directories on ``sys.path``, so
``twistd aegis`` and ``--reactor=aegis`` work only if the installed files put
``twisted/plugins/aegis_plugin.py`` into such a directory (and no ``__init__.py`` beside it).

Only PyPI is reachable and nothing may download while the tests run, so the fresh venvs get
the dependencies already installed in the test environment through a ``.pth`` line pointing
at a view of its site-packages without Aegis itself (without the view, the checkout's own
editable install would answer, and the test could not fail).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.aegis_process import ROOT, AegisProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_SOURCES = ("aegis", "twisted", "setup.cfg", "pyproject.toml", "README.md")


def _dependency_view(where: Path) -> Path:
    """Symlinks to everything installed here except Aegis and the ``.pth`` files (an
    editable install's ``.pth`` would put a checkout on ``sys.path``)."""
    view = where / "deps"
    view.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name
        if name.startswith(("aegis", "__editable__")) or name.endswith(".pth"):
            continue
        (view / name).symlink_to(entry)
    return view


def _fresh_venv(where: Path, deps: Path) -> Path:
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
         "['purelib'])"], check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "dependencies.pth").write_text(f"{deps}\n")
    return venv


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_CONSTRAINT")}
    return subprocess.run([str(venv / "bin" / "python"), *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=180, check=False)


def _pip_install(venv: Path, *args: str, cwd: Path) -> None:
    result = _run(venv, "-m", "pip", "install", "--isolated", "--no-index",
                  "--no-build-isolation", "--disable-pip-version-check", "-q", *args, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr


def _twistd(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # the ``twistd`` script belongs to Twisted's installation; the same entry point here
    return _run(venv, "-c", "import sys; from twisted.scripts.twistd import run; "
                "sys.argv[0] = 'twistd'; run()", *args, cwd=cwd)


def _check_plugins(venv: Path, cwd: Path) -> None:
    maker = _twistd(venv, "-n", "aegis", "--help", cwd=cwd)
    assert maker.returncode == 0, maker.stdout + maker.stderr
    assert "Usage: twistd [options] aegis" in maker.stdout and "--https-listen" in maker.stdout
    reactors = _twistd(venv, "--help-reactors", cwd=cwd)
    assert reactors.returncode == 0, reactors.stderr
    assert any(line.split()[:1] == ["aegis"] for line in reactors.stdout.splitlines()), \
        reactors.stdout


def _where_aegis(venv: Path, cwd: Path) -> Path:
    found = _run(venv, "-c", "import aegis; print(aegis.__file__)", cwd=cwd)
    assert found.returncode == 0, found.stderr
    return Path(found.stdout.strip())


def test_wheel_in_a_fresh_venv_runs_twistd_and_aegis(tmp_path: Path) -> None:
    source = tmp_path / "source"
    for name in _SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns(
                "__pycache__", "dropin.cache"))
        else:
            shutil.copy2(ROOT / name, source / name)
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--isolated", "--no-deps", "--no-index",
         "--no-build-isolation", "--disable-pip-version-check", "-q", "-w", str(dist),
         str(source)], capture_output=True, text=True, timeout=180, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("aegis_proxy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/aegis_plugin.py" in names
    assert "twisted/__init__.py" not in names and "twisted/plugins/__init__.py" not in names
    assert "aegis/py.typed" in names and "aegis/admin/ui/index.html" in names

    venv = _fresh_venv(tmp_path, _dependency_view(tmp_path))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    # dependencies resolved (and found satisfied) from the view: no index, no download
    _pip_install(venv, "--find-links", str(dist), "aegis-proxy", cwd=outside)
    assert _where_aegis(venv, outside).is_relative_to(venv)
    _check_plugins(venv, outside)

    aegis = AegisProcess(outside, command=[str(venv / "bin" / "aegis")])
    aegis.env.pop("PYTHONPATH")
    try:
        aegis.start(expect=("HTTP listener", "HTTPS listener"))
        assert aegis.stop() == 0, aegis.text()
    finally:
        aegis.kill()
    assert "reactor: aegis.reactor.AegisReactor" in aegis.text()


def test_plain_editable_install_keeps_the_plugins(tmp_path: Path) -> None:
    """``pip install -e .`` (no compat mode), as tox's editable env does it."""
    venv = _fresh_venv(tmp_path, _dependency_view(tmp_path))
    source = tmp_path / "source"
    for name in _SOURCES:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).symlink_to(ROOT / name)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    _pip_install(venv, "-e", str(source), cwd=outside)
    assert _where_aegis(venv, outside).resolve() == (ROOT / "aegis" / "__init__.py").resolve()
    _check_plugins(venv, outside)
