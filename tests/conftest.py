from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Broker, Postgres


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def broker(log_dir: Path) -> Iterator[Broker]:
    b = Broker(log_dir).start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def postgres(log_dir: Path) -> Iterator[Postgres]:
    pg = Postgres(log_dir).start()
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind: the cluster runs PostgreSQL, the `local` target SQLite."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'metalmart.db'}"
    return request.getfixturevalue("postgres").new_database()
