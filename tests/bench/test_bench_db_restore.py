"""Benchmark: database restore (backup verification and row checks included) vs ``zstd -dc | mariadb``.

Runs only with ``pytest tests/bench --bench -s``. On the session's generated platform database
(``BENCH_LOG_ROWS`` log rows, default 2.7 million: about 700 MB of SQL), takes the project's
full backup and a plain ``mariadb-dump --single-transaction --databases db | zstd -3`` of the same
data, then loads each into an empty database and prints the times and their ratio (goal <= 0.8).
Only correctness is asserted: both loads reproduce every row.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
import sample_data

from aiplatform_ops.backup.database import DatabaseBackupSettings, take_full_backup
from aiplatform_ops.backup.mysql_target import MySQLTarget, defaults_file
from aiplatform_ops.restore.plan import ComponentStores, RestoreRequest, resolve_plan
from aiplatform_ops.restore.runner import RestoreEnvironment, execute_restore
from aiplatform_ops.storage.local import LocalStore

DB = "aiplatform_bench"  # created by the big_platform_db fixture


@pytest.fixture(scope="session")
def bench_db(big_platform_db, tmp_path_factory):
    """The session's generated platform database (tests/bench/conftest.py) and a scratch folder."""
    target, _ = big_platform_db
    yield target, tmp_path_factory.mktemp("bench-db")


def _shell(target: MySQLTarget, command: str) -> float:
    """Run ``command`` with ``$CNF`` (the defaults file) under ``set -o pipefail``; returns seconds."""
    with defaults_file(target) as cnf:
        clock = time.monotonic()
        subprocess.run(["bash", "-c", f"set -euo pipefail; {command}"], check=True, env={**os.environ, "CNF": str(cnf)})
        return time.monotonic() - clock


def test_restore_beats_zstd_pipe_into_mariadb(bench_db):
    target, folder = bench_db
    expected = sample_data.table_fingerprints(target, DB)
    store = LocalStore(folder / "db" / "daily")
    manifest = take_full_backup(target, store, DatabaseBackupSettings((DB,)))
    dump = folder / "dump.sql.zst"
    _shell(target, f'mariadb-dump --defaults-extra-file="$CNF" --single-transaction --databases {DB} | zstd -3 -q -o {dump}')
    raw = manifest.details["raw_bytes"]
    print(f"SQL {raw / 1e6:.0f} MB; backup parts {manifest.size / 1e6:.0f} MB; plain dump {dump.stat().st_size / 1e6:.0f} MB")

    target.query(f"DROP DATABASE `{DB}`")  # the baseline recreates it under its own name
    baseline = _shell(target, f'zstd -dc {dump} | mariadb --defaults-extra-file="$CNF"')
    assert sample_data.table_fingerprints(target, DB) == expected

    scratch = f"{DB}_restored"
    stores = {"database": ComponentStores(store)}
    clock = time.monotonic()
    request = RestoreRequest.from_params({"components": ["database"], "target": "scratch", "scratch_database": scratch,
                                          "dry_run": False, "confirm": scratch})
    plan = resolve_plan(request, stores, work_dir=folder / "restores", run_id="bench", mysql=target,
                        live_databases=[DB], threads=2)
    execute_restore(plan, RestoreEnvironment(stores, target), "bench")
    ours = time.monotonic() - clock
    try:
        assert sample_data.table_fingerprints(target, scratch) == expected
    finally:
        target.query(f"DROP DATABASE IF EXISTS `{scratch}`")
    cmd = ["mariadb", "--version"]
    version = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    print(f"\nzstd -dc dump.sql.zst | mariadb : {baseline:6.1f} s")
    print(f"aiplatform restore (sha256 check, 2 clients, row counts checked, scratch without binlog): {ours:6.1f} s")
    print(f"ratio {ours / baseline:.2f} (goal <= 0.8) on {os.cpu_count()} cores; {version}")
