"""Trust roots for ``chain_complete``: read from the first usable bundle, never fatal."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from aegis.certs.trust import SYSTEM_BUNDLES, load_trust_roots
from aegis.certs.validate import validate_upload
from tests.test_certs_helpers import NOW, trustme_pair


def test_first_readable_bundle_wins(tmp_path: Path) -> None:
    ca = trustme.CA()
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not pem")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ca.cert_pem.bytes())
    roots = load_trust_roots([tmp_path / "missing.pem", garbage, bundle])
    assert len(roots) == 1
    pair = trustme_pair(ca.create_child_ca(), "app.example.com")
    assert validate_upload(pair.cert_pem, pair.key_pem, now=NOW, trust_roots=roots).chain_complete
    assert not validate_upload(pair.cert_pem, pair.key_pem, now=NOW).chain_complete


def test_no_bundle_means_no_roots(tmp_path: Path) -> None:
    assert load_trust_roots([tmp_path / "nothing"]) == ()


def test_system_bundle_loads_when_present() -> None:
    if not any(path.exists() for path in SYSTEM_BUNDLES):
        pytest.skip("no system CA bundle on this machine")
    assert len(load_trust_roots()) > 10
