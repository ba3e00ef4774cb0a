"""The database password never shows: not in any process's argv (what ``ps`` shows every user), not
in a manifest, a log line or an XCom summary. It reaches the tools through a 0600 defaults file
that is gone afterwards, and a password full of quotes, backslashes, ``#``, ``;`` and spaces works."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
import sample_data
import sandbox
import yaml
from db_fixtures import settings_for

from aiplatform_ops.backup.database import take_database_backup
from aiplatform_ops.backup.mysql_target import MySQLTarget
from aiplatform_ops.operators.db_backup import DatabaseBackupOperator, backup_summary
from aiplatform_ops.restore.database import binlog_segments, load_full_backup, replay_binlogs
from aiplatform_ops.storage.local import LocalStore

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("mariadb-dump", "mariadb-binlog", "mariadb")


def sql_string(value: str) -> str:
    """A MariaDB string literal (default sql_mode: backslash escapes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Watcher(threading.Thread):
    """Polls every process's argv and the private temp folder every few milliseconds."""

    def __init__(self, secret: str, temp_dir: Path) -> None:
        super().__init__(daemon=True)
        self.secret, self.temp_dir = secret, temp_dir
        self.stop = threading.Event()
        self.leaks: list[list[str]] = []
        self.tools_seen: set[str] = set()
        self.defaults_modes: dict[str, int] = {}
        self.samples = 0

    def run(self) -> None:
        while not self.stop.is_set():
            for proc in psutil.process_iter(["cmdline"]):
                argv = proc.info.get("cmdline") or []
                if any(self.secret in arg for arg in argv):
                    self.leaks.append(argv)
                for arg in argv[:2]:  # the tool itself, or the shim script that runs it
                    if os.path.basename(arg) in TOOLS:
                        self.tools_seen.add(os.path.basename(arg))
            for path in self.temp_dir.rglob("aiplatform-ops-*.cnf"):
                with contextlib.suppress(FileNotFoundError):
                    self.defaults_modes[path.name] = stat.S_IMODE(path.stat().st_mode)
            self.samples += 1
            time.sleep(0.002)

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.join()


SHIM = """#!/bin/bash
# Lingers a moment with the tool's exact argv, so the watcher sees every invocation, then runs it.
sleep 0.15
exec /usr/bin/{tool} "$@"
"""


@pytest.fixture
def slow_tools(tmp_path: Path, monkeypatch) -> None:
    shims = tmp_path / "shims"
    shims.mkdir()
    for tool in TOOLS:
        if not Path("/usr/bin", tool).exists():
            pytest.fail(f"/usr/bin/{tool} is expected")
        (shims / tool).write_text(SHIM.format(tool=tool))
        (shims / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture
def nasty_user(mariadb):
    """A backup user whose password has quotes, backslashes, #, ; and spaces, plus a unique token."""
    token = uuid.uuid4().hex[:12]
    password = f'Tok{token} "dq" \'sq\' back\\slash \\n #hash ;semi end\\'
    user = f"bk_{token}"
    sandbox.root_sql(mariadb, f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY {sql_string(password)};"
                              f"GRANT ALL PRIVILEGES ON *.* TO '{user}'@'127.0.0.1';")
    yield MySQLTarget("127.0.0.1", mariadb.port, user, password), token
    sandbox.root_sql(mariadb, f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")


def test_the_password_never_shows_and_a_nasty_one_works_end_to_end(
    mariadb, platform_db, nasty_user, db_store: LocalStore, tmp_path: Path, monkeypatch, caplog, slow_tools,
):
    _, db = platform_db
    target, token = nasty_user
    assert target.query("SELECT CURRENT_USER()")[0][0].startswith(target.user)  # the password itself works
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    config = tmp_path / "config"
    config.mkdir()
    policy = yaml.safe_load((REPO / "include" / "config" / "backup_policy.yaml").read_text())
    policy["database_backup"].update(locations=[str(db_store.root)], databases=[db])
    (config / "backup_policy.yaml").write_text(yaml.safe_dump(policy))
    monkeypatch.setenv("AIPLATFORM_OPS_CONFIG_DIR", str(config))
    monkeypatch.setenv("AIRFLOW_CONN_AIPLATFORM_MYSQL", json.dumps({
        "conn_type": "mysql", "host": "127.0.0.1", "port": mariadb.port, "login": target.user,
        "password": target.password, "schema": db}))
    scratch = f"{db}_restored"
    caplog.set_level(logging.DEBUG)

    try:
        with Watcher(token, private_tmp) as watcher:
            full = take_database_backup(target, db_store, settings_for(db))
            sample_data.change_rows(target, db, 0.05, tag="secret")
            summary = DatabaseBackupOperator(task_id="take_backup").execute({})  # the incremental, as the DAG runs it
            expected = sample_data.table_fingerprints(target, db)
            incr = db_store.read_manifest(summary["backup_id"])
            load_full_backup(target, db_store.backup_dir(full.backup_id), full, database_map={db: scratch})
            replay_binlogs(target, binlog_segments([(db_store.backup_dir(incr.backup_id), incr)]), databases=[db],
                           database_map={db: scratch})
        restored = sample_data.table_fingerprints(target, scratch)
    finally:
        target.query(f"DROP DATABASE IF EXISTS `{scratch}`")

    # It worked, end to end, with that password.
    assert (full.type, incr.type) == ("full", "incremental")
    assert restored == expected
    # The watcher really watched the tools run ...
    assert watcher.samples > 10
    assert watcher.tools_seen == set(TOOLS), watcher.tools_seen
    # ... and never saw the password on a command line.
    assert watcher.leaks == []
    # Defaults files: private while they existed, all gone afterwards.
    assert watcher.defaults_modes, "no defaults file was ever seen"
    assert set(watcher.defaults_modes.values()) == {0o600}
    assert list(private_tmp.rglob("aiplatform-ops-*.cnf")) == []  # every defaults file was deleted
    # Nowhere in what is stored, logged or handed to XCom.
    for manifest in (full, incr):
        assert token not in manifest.to_json().decode()
        assert token not in json.dumps(backup_summary(manifest, 1.0))
    for path in db_store.root.rglob("manifest.json"):
        assert token not in path.read_text()
    assert token not in json.dumps(summary)
    assert caplog.records, "nothing was logged"
    for record in caplog.records:
        assert token not in record.getMessage()
        assert token not in str(record.args)
        assert token not in (record.exc_text or "")
    assert token not in caplog.text
