"""Last in the suite: nothing secret anywhere (ACCEPTANCE 13, 39; issue 17's audit).

Searched: the process's whole log, the database files, the cache directory (except the key
files of the local CA, the admin UI and the proxy fallback, which the spec names and which
must be 0600), and every response the suite received. Looked for: ``PRIVATE KEY``, a line of
every test key's base64 body, the admin token and the Cloudflare token."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.e2e.conftest import Stack

SPEC_KEY_FILES = {"aegis-local-ca.key", "admin-ui-self-signed.key", "proxy-self-signed.key"}


def test_nothing_secret_in_logs_database_cache_or_responses(stack: Stack) -> None:
    needles = [b"PRIVATE KEY", *stack.secrets]
    assert len(stack.secrets) >= 4 and len(stack.responses) > 50
    places: dict[str, bytes] = {"log": stack.aegis.text().encode()}
    data = stack.aegis.workdir / "data"
    for path in data.iterdir():
        if path.name.startswith("aegis.db"):
            places[str(path)] = path.read_bytes()
    cache = stack.aegis.workdir / ".cache"
    for path in cache.rglob("*"):
        if path.is_file():
            if path.name in SPEC_KEY_FILES:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
                continue
            places[str(path)] = path.read_bytes()
    for directory in (data, cache / "ssl"):  # the spec: both 0700
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    for index, response in enumerate(stack.responses):
        places[f"response {index}"] = response
    found = [(where, needle[:12]) for where, content in places.items() for needle in needles
             if needle in content]
    assert not found, found
    assert Path(data / "aegis.db").exists()
