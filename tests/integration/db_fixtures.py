"""Fixtures for database backup tests: a platform database on the test MariaDB and its target."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sample_data
import sandbox

from aiplatform_ops.backup.database import DatabaseBackupSettings
from aiplatform_ops.backup.mysql_target import MySQLTarget
from aiplatform_ops.storage.local import LocalStore


def target_for(service: sandbox.Service, database: str | None = None) -> MySQLTarget:
    return MySQLTarget("127.0.0.1", service.port, service.extra["user"], service.extra["password"], database)


@pytest.fixture
def platform_db(mariadb: sandbox.Service) -> Iterator[tuple[MySQLTarget, str]]:
    """A freshly populated platform database with a unique name, dropped afterwards."""
    name = f"aiplatform_{uuid.uuid4().hex[:8]}"
    target = target_for(mariadb)
    sample_data.apply_schema(target, name)
    sample_data.populate(target, name, log_rows=3000)
    yield target, name
    target.query(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def db_store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "backup" / "db" / "daily")


def settings_for(database: str, **overrides: object) -> DatabaseBackupSettings:
    values = {"databases": (database,), "compression_level": 3, "full_backup_weekday": None, "max_chain_length": 7}
    values.update(overrides)
    return DatabaseBackupSettings(**values)  # type: ignore[arg-type]
