"""File and config backups, a dry-run restore and the drill, each run whole through dag.test()."""

from __future__ import annotations

import json

from conftest import run_dag

from aiplatform_ops.config import load_backup_policy
from aiplatform_ops.storage.local import LocalStore


def test_backups_restore_plan_and_drill_run_end_to_end(dag_environment):
    target, database = dag_environment
    policy = load_backup_policy()
    assert set(run_dag("aiplatform_db_backup").values()) == {"success"}
    assert set(run_dag("aiplatform_file_backup").values()) == {"success"}
    assert run_dag("aiplatform_config_watch") == {"detect_config_change": "success"}
    assert set(run_dag("aiplatform_config_backup").values()) == {"success"}
    for kind, locations in (("files", policy.files.locations), ("config", policy.config.locations)):
        assert [m.kind for m in LocalStore(locations.local).list_backups()] == [kind]

    # A dry run plans and checks every backup, then stops: nothing is stopped, restored or verified.
    before = {t: n for t, n in target.query(
        "SELECT table_name, table_rows FROM information_schema.tables WHERE table_schema = %s", (database,))}
    dry = run_dag("aiplatform_restore", {"components": ["database", "files", "config"], "dry_run": True})
    assert dry["plan"] == "success" and dry["record"] == "success"
    assert dry["restore"] == "skipped" and dry["rollback"] == "skipped"
    assert {t: n for t, n in target.query(
        "SELECT table_name, table_rows FROM information_schema.tables WHERE table_schema = %s", (database,))} == before

    assert run_dag("aiplatform_restore_drill") == {"drill": "success"}
    restores = policy.database.locations.local.parent / "restores"
    drill = json.loads((restores / "latest-drill.json").read_text())
    assert drill["result"] == "passed"
    assert set(drill["recovery_seconds"]) == {"database", "files", "config"}
    assert not target.query("SHOW DATABASES LIKE 'aiplatform_restore_drill'"), "the drill drops its scratch copy"
