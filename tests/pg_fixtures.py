"""pytest fixtures for a real PostgreSQL server (a pytest plugin, see tests/conftest.py).

``postgres_cluster`` is one throwaway cluster per test session (per xdist worker), started
only when a test asks for it and stopped at the end; ``postgres_url`` is a fresh, empty
database in it for each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aegis.testing.postgres import PostgresCluster, postgres_available, start_postgres


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    if not postgres_available():
        pytest.skip("PostgreSQL is not installed (Debian package postgresql; scripts/test "
                    "installs it)")
    cluster = start_postgres()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A new empty database; a test that stopped the cluster gets it started again."""
    if not postgres_cluster.running():
        postgres_cluster.start()
    return postgres_cluster.create_database()
