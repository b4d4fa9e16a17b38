"""The source seam, shown by use and by count.

* The worked example: :mod:`tests.example_source` (one module) plus one registration line
  (a module name appended to :data:`aegis.sources.SOURCE_MODULES`) make a new source whose
  certificates a real :class:`LifecycleEngine` obtains, stores and renews on a ``Clock``.
* The count: outside ``aegis/sources/`` and the registry no code of ``aegis/`` spells a
  source's name (found with ``ast``, docstrings excluded).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from twisted.internet.task import Clock

import aegis
import aegis.sources
from aegis import events
from aegis.certs import sources
from aegis.certs.lifecycle import IssuerContext, LifecycleEngine
from aegis.certs.loading import load_record
from aegis.crypto.keywrap import KeyWrapper, MasterKey
from aegis.events import Event, EventPublisher
from aegis.store.records import HostFields
from aegis.store.sqlite import SQLiteStore
from aegis.testing.issuer import FakeIssuer
from aegis.threads import immediate_runner

EXAMPLE = "tests.example_source"
START = datetime(2026, 3, 1, tzinfo=UTC)
SOURCE_LITERALS = frozenset({"letsencrypt", "cloudflare_origin", "custom"})
AEGIS = Path(aegis.__file__).parent


@pytest.fixture
def example_source(monkeypatch: pytest.MonkeyPatch) -> Iterator[sources.SourceSpec]:
    """The registration line, then the registry loading every listed module."""
    monkeypatch.setattr(aegis.sources, "SOURCE_MODULES",
                        (*aegis.sources.SOURCE_MODULES, EXAMPLE))
    sources.load_sources()
    yield sources.get("fake")
    sources.unregister("fake")
    sys.modules.pop(EXAMPLE, None)


def test_worked_example_obtains_stores_and_renews(
    example_source: sources.SourceSpec, tmp_path: Path
) -> None:
    assert "fake-ca" in sources.ssl_modes() and sources.for_mode("fake-ca") == example_source
    clock = Clock()
    clock.advance(START.timestamp())
    store = SQLiteStore.open(tmp_path / "aegis.db", immediate_runner)
    wrapper = KeyWrapper(MasterKey.generate())
    publisher = EventPublisher(clock)
    seen: list[Event] = []
    publisher.subscribe(seen.append)
    context = IssuerContext(reactor=clock, clock=clock, store=store, wrapper=wrapper,
                            settings=None, events=publisher)
    assert example_source.issuer is not None
    issuer = example_source.issuer(context)
    assert isinstance(issuer, FakeIssuer)
    reloads: list[None] = []
    engine = LifecycleEngine(clock, store, wrapper, {issuer.source: issuer},
                             reload=lambda: reloads.append(None), publisher=publisher,
                             jitter=lambda: 0.5)
    store.transact_blocking(lambda txn: txn.add_host(HostFields(
        domain="app.example.test", upstream="http://127.0.0.1:1", ssl_mode="fake-ca")))

    engine.startService()
    clock.advance(0)
    state = engine.state("app.example.test")
    assert state is not None and state.status == "valid", state
    (record,) = store.transact_blocking(lambda txn: txn.list_certificates())
    assert (record.source, record.domains, record.auto_renew) == ("fake", ("app.example.test",),
                                                                  True)
    assert record.extra["issued_by"] == "fake-ca example-account"
    assert load_record(record, wrapper).id == record.id  # the sealed key opens and matches
    leaf = x509.load_pem_x509_certificates(record.chain_pem.encode())[0]
    leaf.verify_directly_issued_by(issuer.ca.intermediate)
    assert record.not_after - record.not_before == timedelta(days=6)
    assert state.renews_at == record.not_after - timedelta(days=3)  # half, under 10 days
    assert issuer.issue_calls == 1 and reloads == [None]

    clock.advance(timedelta(days=3).total_seconds() - 60)  # not yet
    assert issuer.issue_calls == 1
    clock.pump([30.0] * 4)  # past the renewal time: the one timer fires
    (renewed,) = store.transact_blocking(lambda txn: txn.list_certificates())
    assert issuer.issue_calls == 2
    assert renewed.id == record.id and renewed.fingerprint_sha256 != record.fingerprint_sha256
    assert renewed.not_before >= record.not_before + timedelta(days=3)
    names = [event.name for event in seen]
    assert names.index(events.CERT_OBTAINED) < names.index(events.CERT_RENEWED)
    engine.stopService()
    store.close()


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def source_literals(root: Path) -> list[str]:
    """``path:line: value`` of every source name spelled as a whole string constant in
    ``root``'s modules outside ``sources/`` and ``certs/sources.py``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative.startswith("sources/") or relative == "certs/sources.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and node.value in SOURCE_LITERALS
                    and id(node) not in docs):
                found.append(f"{relative}:{node.lineno}: {node.value}")
    return found


def test_no_source_is_named_outside_the_sources_and_the_registry() -> None:
    assert source_literals(AEGIS) == []


def test_the_count_sees_a_literal(tmp_path: Path) -> None:
    (tmp_path / "sources").mkdir()
    (tmp_path / "sources" / "acme.py").write_text('SOURCE = "letsencrypt"\n')
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "sources.py").write_text('MODE_BOUND = "custom"\n')
    (tmp_path / "tls.py").write_text(
        '"""Docstring naming custom."""\n\ndef f(s):\n    """custom"""\n'
        '    return s == "cloudflare_origin" or s.startswith("custom-")\n')
    assert source_literals(tmp_path) == ["tls.py:5: cloudflare_origin"]


def test_a_source_imported_alone_does_not_hide_the_others() -> None:
    """Importing one source's package (for its client, say) registers that source first;
    the registry must still load every listed module when asked."""
    code = ("import aegis.sources.cloudflare\n"
            "from aegis.certs import sources\n"
            "print(' '.join(sorted(sources.names())))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=AEGIS.parent, timeout=60)
    assert result.stdout.split() == sorted(s.name for s in sources.all_sources()
                                           if s.name != "fake")
