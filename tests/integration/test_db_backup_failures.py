"""What goes wrong at night: a purged binary log, a killed or failing dump, a server without
binary logs. Each leaves either a good backup or nothing that looks like one, and says why."""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import sample_data
import sandbox
from db_fixtures import settings_for, target_for

from aiplatform_ops.backup.binlog import BackupError, BinlogGapError
from aiplatform_ops.backup.database import CHAIN_BROKEN, chain_broken, take_database_backup
from aiplatform_ops.storage.base import verify_backup
from aiplatform_ops.storage.local import STAGING, LocalStore

REPO = Path(__file__).resolve().parents[2]


def current_binlog(service: sandbox.Service) -> str:
    return sandbox.root_sql(service, "SHOW MASTER STATUS").split("\t")[0].strip()


def purge_all_but_current(service: sandbox.Service) -> str:
    """FLUSH, then PURGE up to the new current log, as an impatient DBA or expire_logs_days would.

    MariaDB keeps a log until InnoDB's binlog checkpoint has moved past it, and PURGE silently
    leaves it until then: repeat until only the current log is left.
    """
    sandbox.root_sql(service, "FLUSH BINARY LOGS")
    current = current_binlog(service)
    for _ in range(300):
        sandbox.root_sql(service, f"PURGE BINARY LOGS TO '{current}'")
        if sandbox.root_sql(service, "SHOW BINARY LOGS").split()[0] == current:
            return current
        time.sleep(0.1)
    raise AssertionError(f"the server would not purge its binary logs before {current}")


# --- a purged binary log --------------------------------------------------------------------------


def test_a_purged_binlog_fails_the_run_and_the_next_run_starts_a_new_chain(mariadb, platform_db, db_store, caplog):
    target, db = platform_db
    settings = settings_for(db)
    full = take_database_backup(target, db_store, settings)
    assert full.type == "full"
    sample_data.change_rows(target, db, 0.05, tag="lost")
    needed = full.details["binlog"]["end"]["file"]

    current = purge_all_but_current(mariadb)
    assert needed != current

    with pytest.raises(BinlogGapError) as err:
        take_database_backup(target, db_store, settings)
    message = str(err.value)
    assert needed in message
    assert "purged" in message
    assert "the next run takes a full backup" in message
    assert [m.backup_id for m in db_store.list_backups()] == [full.backup_id]
    assert chain_broken(db_store)["chain_id"] == full.backup_id

    sample_data.change_rows(target, db, 0.05, tag="after")
    with caplog.at_level(logging.INFO, logger="aiplatform_ops.backup.database"):
        fresh = take_database_backup(target, db_store, settings)
    assert fresh.type == "full" and fresh.chain_id == fresh.backup_id != full.chain_id
    assert needed in fresh.details["reason"] and "broken" in fresh.details["reason"]
    assert fresh.details["tables"][f"{db}.ai_training_log"] == sample_data.table_fingerprints(target, db)[
        "ai_training_log"][0]
    assert verify_backup(db_store, fresh) == []
    assert not (db_store.root / CHAIN_BROKEN).exists()

    # The new chain extends normally again.
    sample_data.change_rows(target, db, 0.01, tag="again")
    incr = take_database_backup(target, db_store, settings)
    assert incr.type == "incremental" and incr.parent_id == fresh.backup_id and incr.chain_id == fresh.backup_id


def test_the_operator_fails_at_once_on_a_purged_binlog(mariadb, platform_db, tmp_path, monkeypatch):
    """No retry can bring a purged log back: the task fails (no retry) with the same message."""
    from airflow.sdk.exceptions import AirflowFailException

    from aiplatform_ops.operators.db_backup import DatabaseBackupOperator

    target, db = platform_db
    config = tmp_path / "config"
    sandbox.write_sandbox_config(config, tmp_path / "root")
    policy = (config / "backup_policy.yaml").read_text().replace("databases: [aiplatform]", f"databases: [{db}]")
    (config / "backup_policy.yaml").write_text(policy)
    monkeypatch.setenv("AIPLATFORM_OPS_CONFIG_DIR", str(config))
    monkeypatch.setenv("AIRFLOW_CONN_AIPLATFORM_MYSQL", sandbox.mysql_conn_uri(mariadb, db))

    first = DatabaseBackupOperator(task_id="take_backup").execute({})
    assert first["type"] == "full"
    sample_data.change_rows(target, db, 0.02, tag="op")
    purge_all_but_current(mariadb)
    with pytest.raises(AirflowFailException, match="the next run takes a full backup"):
        DatabaseBackupOperator(task_id="take_backup").execute({})
    again = DatabaseBackupOperator(task_id="take_backup").execute({})
    assert again["type"] == "full" and again["backup_id"] != first["backup_id"]


# --- a killed dump ---------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {plugins!r})
    from aiplatform_ops.backup.database import DatabaseBackupSettings, take_database_backup
    from aiplatform_ops.backup.mysql_target import MySQLTarget
    from aiplatform_ops.storage.local import LocalStore
    spec = json.loads(os.environ["BACKUP_SPEC"])
    target = MySQLTarget("127.0.0.1", spec["port"], spec["user"], spec["password"])
    take_database_backup(target, LocalStore(spec["root"]), DatabaseBackupSettings((spec["db"],), compression_level=19))
    print("FINISHED")
""")


@pytest.fixture
def big_db(mariadb):
    """A database whose dump takes a moment (compression level 19 in the child makes it slower)."""
    target = target_for(mariadb)
    name = f"aiplatform_big_{uuid.uuid4().hex[:8]}"
    sample_data.apply_schema(target, name)
    sample_data.populate(target, name, log_rows=150_000)
    yield target, name
    target.query(f"DROP DATABASE IF EXISTS `{name}`")


def staged_bytes(store: LocalStore) -> int:
    staging = store.root / STAGING
    if not staging.exists():
        return 0
    return sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())


def test_a_killed_backup_leaves_nothing_listed_and_the_next_run_cleans_up(
    mariadb, big_db, db_store, tmp_path, caplog, monkeypatch
):
    target, db = big_db
    tmpdir = tmp_path / "child-tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir), "BACKUP_SPEC": json.dumps({
        "port": target.port, "user": target.user, "password": target.password, "root": str(db_store.root), "db": db})}
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(plugins=str(REPO / "plugins"))], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while staged_bytes(db_store) < 200_000 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert child.poll() is None, f"the backup finished before it could be killed: {child.communicate()}"
        assert staged_bytes(db_store) > 0
        os.killpg(child.pid, signal.SIGKILL)  # the worker and its mariadb-dump, as an OOM kill or a lost node
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        out, _ = child.communicate()
    assert b"FINISHED" not in out
    # A SIGKILL gives no chance to delete the defaults file; what is left must at least be private,
    # and the next backup step sweeps it.
    leftovers = list(tmpdir.rglob("aiplatform-ops-*.cnf"))
    for leftover in leftovers:
        assert stat.S_IMODE(leftover.stat().st_mode) == 0o600
        assert stat.S_IMODE(leftover.parent.stat().st_mode) == 0o700
    assert staged_bytes(db_store) > 0  # the half-written backup is there ...
    assert db_store.list_backups() == []  # ... but nothing lists it
    assert [p.name for p in db_store.root.iterdir() if not p.name.startswith(".")] == []

    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))  # the next run on the same worker
    with caplog.at_level(logging.WARNING, logger="aiplatform_ops.storage.local"):
        manifest = take_database_backup(target, db_store, settings_for(db))
    assert any("leftover of an interrupted run" in r.getMessage() for r in caplog.records)
    assert manifest.type == "full"
    assert [m.backup_id for m in db_store.list_backups()] == [manifest.backup_id]
    assert list((db_store.root / STAGING).iterdir()) == []
    for leftover in leftovers:
        assert not leftover.exists(), "a dead process's defaults file must not outlive the next run"
    assert verify_backup(db_store, manifest) == []
    assert manifest.details["tables"][f"{db}.ai_training_log"] == 150_000


# --- a dump that fails part-way --------------------------------------------------------------------

FAKE_DUMP = """#!/bin/bash
# Stands in for mariadb-dump: runs the real one, then misbehaves as MODE says.
real=/usr/bin/mariadb-dump
if [ "$1" = "--version" ]; then exec "$real" "$@"; fi
out=$(mktemp)
"$real" "$@" > "$out" || exit 2
size=$(stat -c %s "$out")
case "{mode}" in
  half-fail) head -c $((size / 2)) "$out"; rm -f "$out"; exit 1 ;;
  half-ok)   head -c $((size / 2)) "$out"; rm -f "$out"; exit 0 ;;
  whole-fail) cat "$out"; rm -f "$out"; echo "mysqldump: Error 2013: Lost connection" >&2; exit 1 ;;
  no-trailer) grep -v '^-- Dump completed' "$out"; rm -f "$out"; exit 0 ;;
esac
"""


@pytest.mark.parametrize("mode, reason", [
    ("half-fail", "status 1"),  # cut short and failed: the dump's own status is reported
    ("half-ok", "incomplete"),  # cut short, yet status 0: the missing trailer gives it away
    ("no-trailer", "cut short"),  # everything but the completion line, status 0
    ("whole-fail", "status 1"),  # all the output arrived, but the dump itself failed
])
def test_a_dump_failing_part_way_fails_the_backup(platform_db, db_store, tmp_path, monkeypatch, mode, reason):
    target, db = platform_db
    if not Path("/usr/bin/mariadb-dump").exists():
        pytest.fail("the real mariadb-dump is expected at /usr/bin/mariadb-dump")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "mariadb-dump"
    fake.write_text(FAKE_DUMP.replace("{mode}", mode))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")

    with pytest.raises(BackupError, match=reason):
        take_database_backup(target, db_store, settings_for(db))
    assert db_store.list_backups() == []
    assert [p.name for p in db_store.root.iterdir() if not p.name.startswith(".")] == []

    monkeypatch.undo()  # the real dump is back: the next run cleans up and succeeds
    manifest = take_database_backup(target, db_store, settings_for(db))
    assert manifest.type == "full" and [m.backup_id for m in db_store.list_backups()] == [manifest.backup_id]
    assert list((db_store.root / STAGING).iterdir()) == []


# --- a server without binary logs ------------------------------------------------------------------


@pytest.fixture(scope="module")
def mariadb_without_binlogs(tmp_path_factory):
    service = sandbox.start_mariadb(tmp_path_factory.mktemp("nobinlog"), binlog=False)
    yield service
    service.stop()


def test_a_server_without_binary_logs_gets_full_backups_and_a_warning(mariadb_without_binlogs, db_store, caplog):
    target = target_for(mariadb_without_binlogs)
    assert target.query("SELECT @@GLOBAL.log_bin")[0][0] == 0
    db = "aiplatform_nobinlog"
    sample_data.apply_schema(target, db)
    sample_data.populate(target, db, log_rows=500)
    settings = settings_for(db)

    with caplog.at_level(logging.INFO):
        first = take_database_backup(target, db_store, settings)
        sample_data.change_rows(target, db, 0.1, tag="nobinlog")
        second = take_database_backup(target, db_store, settings)
    assert (first.type, second.type) == ("full", "full")
    assert second.chain_id == second.backup_id != first.chain_id
    for manifest in (first, second):
        assert manifest.details["pitr"] is False
        assert manifest.details["binlog"]["enabled"] is False and manifest.details["binlog"]["end"] is None
        assert verify_backup(db_store, manifest) == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "binary logging is off" in r.getMessage()]
    assert len(warnings) == 2
    assert second.details["tables"][f"{db}.ai_training_log"] == sample_data.table_fingerprints(target, db)[
        "ai_training_log"][0]
