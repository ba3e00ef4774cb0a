"""The demo's disaster scene: back up, drop a table, restore, verify, report the recovery time.

Calls the same plain functions as ``aiplatform_restore`` (no scheduler): a live restore of the
newest chain, confirmed with the database's name, no services in the sandbox.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO / "plugins", REPO / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import sample_data  # noqa: E402

from aiplatform_ops.backup.database import DatabaseBackupSettings, take_database_backup  # noqa: E402
from aiplatform_ops.backup.mysql_target import MySQLTarget  # noqa: E402
from aiplatform_ops.restore.plan import ComponentStores, RestoreRequest, resolve_plan  # noqa: E402
from aiplatform_ops.restore.runner import RestoreEnvironment, execute_restore  # noqa: E402
from aiplatform_ops.storage.local import LocalStore  # noqa: E402


def disaster_scene(target: MySQLTarget, database: str, backup_folder: Path, *, table: str = "ai_training_log",
                   threads: int = 2, say=print) -> float:
    """Back up ``database``, drop ``table``, restore it live, verify every row; returns the restore's seconds."""
    store = LocalStore(Path(backup_folder))
    manifest = take_database_backup(target, store, DatabaseBackupSettings((database,)))
    before = sample_data.table_fingerprints(target, database)
    say(f"backup {manifest.backup_id} ({manifest.type}) taken; now: DROP TABLE {table}")
    target.query(f"DROP TABLE `{database}`.`{table}`")
    clock = time.monotonic()
    request = RestoreRequest.from_params({"components": ["database"], "dry_run": False, "confirm": database},
                                         triggered_by="make demo")
    stores = {"database": ComponentStores(store)}
    plan = resolve_plan(request, stores, work_dir=store.root.parent / "restores", run_id=f"demo-{int(time.time())}",
                        mysql=target, live_databases=[database], threads=threads)
    say(plan.describe())
    execute_restore(plan, RestoreEnvironment(stores, target), plan.created_at)
    seconds = time.monotonic() - clock
    after = sample_data.table_fingerprints(target, database)
    if after != before:
        raise RuntimeError(f"restore verification failed: {sorted(k for k in before if before[k] != after.get(k))}")
    say(f"restored and verified: {len(after)} tables, every row as backed up; recovery time {seconds:.1f} s")
    return seconds
