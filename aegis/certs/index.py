"""The registry's immutable snapshot: every usable certificate, indexed by hostname.

A snapshot is built whole (off the reactor thread) and never changed afterwards, so the TLS
handshake path can read it without locks: the registry swaps in a new one atomically.

Index: ``exact`` maps a concrete name to its certificates; ``wildcard`` maps the parent
domain of a wildcard (``example.com`` for ``*.example.com``) to its certificates. A lookup
is two dictionary reads, whatever the number of certificates. Each candidate list is sorted
once, at build time, by expiry (latest first), so selection only has to skip certificates
that are not valid at the moment of the handshake.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from aegis.certs.loading import UnusableCertificate, load_record
from aegis.certs.model import LoadedCertificate
from aegis.crypto.keywrap import KeyWrapper
from aegis.names import is_wildcard, wildcard_parent
from aegis.store.records import CertificateRecord

Version = tuple[str, str, bytes]


@dataclass(frozen=True)
class Problem:
    """Why a stored certificate is not in the index (``reason`` is a stable code)."""

    reason: str
    message: str


def _version(record: CertificateRecord) -> Version:
    """What identifies a record's content: any change to the sealed key or the chain (even
    one keeping uid and timestamps to the second) makes the record load again."""
    digest = hashlib.sha256(record.key_sealed)
    digest.update(record.chain_pem.encode("utf-8", "replace"))
    return (record.uid, record.fingerprint_sha256, digest.digest())


@dataclass(frozen=True, eq=False)
class Snapshot:
    """One consistent view of the stored certificates. Never mutated after construction."""

    by_id: Mapping[int, LoadedCertificate] = field(default_factory=dict)
    problems: Mapping[int, Problem] = field(default_factory=dict)
    exact: Mapping[str, tuple[LoadedCertificate, ...]] = field(default_factory=dict, repr=False)
    wildcard: Mapping[str, tuple[LoadedCertificate, ...]] = field(default_factory=dict, repr=False)
    versions: Mapping[int, Version] = field(default_factory=dict, repr=False)

    def lookup(
        self, name: str, now: datetime, sources: frozenset[str] | None = None
    ) -> LoadedCertificate | None:
        """The best certificate for the normalised concrete ``name``, valid at ``now``.

        Order: an exact name, then a wildcard (each: latest expiry first); only certificates
        valid at ``now`` and, if ``sources`` is given, of one of those sources. None when
        there is none: an expired or not-yet-valid certificate is never returned, so it can
        never be chosen over a valid one. Never raises, never does I/O.
        """
        try:
            parent = wildcard_parent(name)
            groups = (
                self.exact.get(name, ()),
                self.wildcard.get(parent, ()) if parent is not None else (),
            )
            for group in groups:
                for certificate in group:
                    if certificate.valid_at(now) and (
                        sources is None or certificate.source in sources
                    ):
                        return certificate
        except Exception:
            return None
        return None

    def get(self, cert_id: int) -> LoadedCertificate | None:
        return self.by_id.get(cert_id)


def build_snapshot(
    records: Iterable[CertificateRecord],
    wrapper: KeyWrapper,
    previous: Snapshot | None = None,
) -> Snapshot:
    """Load ``records`` into a new snapshot; CPU-bound, safe on any thread.

    Records unchanged since ``previous`` (same uid, fingerprint, sealed key and chain) reuse its
    loaded certificate, so a reload after one upload decrypts one key, not all of them.
    """
    by_id: dict[int, LoadedCertificate] = {}
    problems: dict[int, Problem] = {}
    versions: dict[int, Version] = {}
    exact: dict[str, list[LoadedCertificate]] = {}
    wildcard: dict[str, list[LoadedCertificate]] = {}
    for record in records:
        version = _version(record)
        reused = None
        if previous is not None and previous.versions.get(record.id) == version:
            reused = previous.by_id.get(record.id)
        if reused is None:
            try:
                reused = load_record(record, wrapper)
            except UnusableCertificate as exc:
                problems[record.id] = Problem(exc.reason, str(exc))
                continue
            except Exception:
                problems[record.id] = Problem("load_failed", "the record could not be loaded")
                continue
        by_id[record.id] = reused
        versions[record.id] = version
        for name in reused.names:
            if is_wildcard(name):
                wildcard.setdefault(name[2:], []).append(reused)
            else:
                exact.setdefault(name, []).append(reused)

    def ranked(
        groups: dict[str, list[LoadedCertificate]],
    ) -> dict[str, tuple[LoadedCertificate, ...]]:
        return {
            name: tuple(sorted(group, key=lambda c: (c.not_after, c.id or 0), reverse=True))
            for name, group in groups.items()
        }

    return Snapshot(
        by_id=MappingProxyType(by_id),
        problems=MappingProxyType(problems),
        exact=MappingProxyType(ranked(exact)),
        wildcard=MappingProxyType(ranked(wildcard)),
        versions=MappingProxyType(versions),
    )


@dataclass(frozen=True)
class Changes:
    """What differs between two snapshots, by certificate id."""

    added: tuple[int, ...]
    removed: tuple[int, ...]
    replaced: tuple[int, ...]
    newly_unusable: tuple[int, ...]


def diff(old: Snapshot, new: Snapshot) -> Changes:
    old_ids, new_ids = set(old.by_id), set(new.by_id)
    return Changes(
        added=tuple(sorted(new_ids - old_ids)),
        removed=tuple(sorted(old_ids - new_ids)),
        replaced=tuple(sorted(i for i in old_ids & new_ids if old.versions[i] != new.versions[i])),
        newly_unusable=tuple(
            sorted(i for i, p in new.problems.items() if old.problems.get(i) != p)
        ),
    )
