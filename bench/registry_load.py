"""Registry load and lookup benchmark (issue 4): ``python bench/registry_load.py``.

Stores N certificates (each with its own ECDSA P-256 key, sealed with AES-256-GCM, signed by
one CA whose certificate is stored in the chain) in a real SQLite file, then times:

* reading every record in one transaction;
* building the registry snapshot: decrypting every key, parsing every chain, indexing;
* lookups (exact hits, wildcard hits, misses) with 100 versus N certificates loaded,
  to show a lookup costs the same whatever the number of certificates.

Prints a table; the figures for this machine class are recorded in docs/certificates.md.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aegis.certs.index import Snapshot, build_snapshot
from aegis.certs.validate import validate_pair
from aegis.crypto.keywrap import KeyWrapper, MasterKey
from aegis.interfaces import IStoreTransaction
from aegis.store._runner import immediate_runner
from aegis.store.records import CertificateFields, CertificateRecord
from aegis.store.sqlite import SQLiteStore

NOW = datetime.now(UTC)


def make_fields(count: int, wrapper: KeyWrapper) -> list[CertificateFields]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    out = []
    for i in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        names = [f"host{i}.bench.example"]
        if i % 10 == 0:
            names.append(f"*.w{i}.bench.example")
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=1))
            .not_valid_after(NOW + timedelta(days=30 + i % 300))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        validated = validate_pair([leaf, ca], key, now=NOW, trust_roots=[ca])
        out.append(validated.to_fields(wrapper))
    return out


def lookup_names(count: int) -> list[str]:
    """Exact hits, wildcard hits and misses, in equal parts, among the first ``count``."""
    rng = random.Random(4)
    names = []
    for _ in range(1000):
        i = rng.randrange(count)
        names += [f"host{i}.bench.example", f"x.w{i - i % 10}.bench.example", f"no{i}.example"]
    return names


def lookup_ns(snapshot: Snapshot, names: list[str], rounds: int = 100_000) -> float:
    lookup, now, size = snapshot.lookup, NOW, len(names)
    started = time.perf_counter()
    for n in range(rounds):
        lookup(names[n % size], now)
    return (time.perf_counter() - started) / rounds * 1e9


def compare_lookups(
    records: list[CertificateRecord], wrapper: KeyWrapper, small: int
) -> tuple[float, float]:
    """Best of 7 alternating runs each, so background load hits both sizes alike."""
    sizes = (small, len(records))
    cases = [(build_snapshot(records[:n], wrapper), lookup_names(n)) for n in sizes]
    best = [float("inf"), float("inf")]
    for _ in range(7):
        for index, (snapshot, names) in enumerate(cases):
            best[index] = min(best[index], lookup_ns(snapshot, names))
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    wrapper = KeyWrapper(MasterKey.generate())
    directory = args.dir or Path(tempfile.mkdtemp(prefix="aegis-bench-"))
    path = directory / "aegis.db"

    started = time.perf_counter()
    fields = make_fields(args.count, wrapper)
    generated = time.perf_counter() - started

    store = SQLiteStore.open(path, immediate_runner)

    def insert(txn: IStoreTransaction) -> None:
        for f in fields:
            txn.add_certificate(f)

    started = time.perf_counter()
    store.transact_blocking(insert)
    inserted = time.perf_counter() - started
    store.close()

    # A fresh process-like start: reopen the file, read, build.
    started = time.perf_counter()
    store = SQLiteStore.open(path, immediate_runner)
    records = store.transact_blocking(lambda txn: txn.list_certificates())
    read = time.perf_counter() - started
    started = time.perf_counter()
    snapshot = build_snapshot(records, wrapper)
    built = time.perf_counter() - started
    store.close()
    assert len(snapshot.by_id) == args.count and not snapshot.problems

    small = min(100, args.count)
    per_small, per_large = compare_lookups(records, wrapper, small)

    print(f"certificates            {args.count}")
    print(f"database                {path} ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"generate + validate     {generated:.2f} s (setup, not part of the load)")
    print(f"insert (1 transaction)  {inserted:.2f} s")
    print(f"open + read records     {read:.3f} s")
    print(f"build snapshot          {built:.3f} s (decrypt {args.count} keys, parse chains, index)")
    print(f"load total              {read + built:.3f} s  (target < 5 s)")
    print(f"lookup, {small:>6} certs    {per_small:.0f} ns (best of 7 x 100,000)")
    print(f"lookup, {args.count:>6} certs    {per_large:.0f} ns (best of 7 x 100,000)")


if __name__ == "__main__":
    main()
