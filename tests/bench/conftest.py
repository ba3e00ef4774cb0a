"""Benchmark fixtures: one generated platform database of at least 500 MB per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import sample_data
import sandbox

from aiplatform_ops.backup.mysql_target import MySQLTarget

BENCH_LOG_ROWS = int(os.environ.get("BENCH_LOG_ROWS", "2700000"))  # about 560 MB of dump


@pytest.fixture(scope="session")
def big_platform_db(mariadb: sandbox.Service) -> Iterator[tuple[MySQLTarget, str]]:
    """The platform schema with ``BENCH_LOG_ROWS`` training-log rows, dropped after the session."""
    target = MySQLTarget("127.0.0.1", mariadb.port, mariadb.extra["user"], mariadb.extra["password"])
    database = "aiplatform_bench"
    target.query(f"DROP DATABASE IF EXISTS `{database}`")
    sample_data.apply_schema(target, database)
    sample_data.populate(target, database, log_rows=BENCH_LOG_ROWS)
    yield target, database
    target.query(f"DROP DATABASE IF EXISTS `{database}`")
