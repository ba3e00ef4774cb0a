"""Manual §2.2: restore the platform from its backups, verify it, roll back on any failure."""

from __future__ import annotations

from airflow.sdk import DAG, Param, chain

from aiplatform_ops.operators.defaults import START_DATE, default_args
from aiplatform_ops.operators.restore import (
    DryRunGateOperator,
    RestoreOperator,
    RestorePlanOperator,
    RestoreRecordOperator,
    RollbackOperator,
)
from aiplatform_ops.operators.verify import verify_system_group

DOC = """
# Restore the AI platform (manual §2.2)

**Dry run by default.** Trigger with the form; read the plan in the `plan` task's log; then
trigger again with `dry_run` off and `confirm` set to the target's name (the database name for a
live restore, e.g. `aiplatform`; the scratch database, or the scratch folder, for a rehearsal).

1. **plan**: resolves `latest` or the chosen backup ids; for a point in time, the newest full
   backup before it and the binary logs up to it; reads each backup from the local copy or, when
   that is missing or damaged, from S3, checking every file's sha256; checks the targets exist,
   the confirmation, and that no backup of a chosen component is running. Any bad input fails
   here, **before anything is stopped**.
2. **dry_run_gate**: a dry run ends here (the rest is skipped).
3. **restore**: stop the services → safety snapshot (database dump; files and config moved aside)
   → database (parallel load, row counts checked against the manifest, one `mariadb-binlog |
   mariadb` replay up to the point in time) → files → config → start the services. Any failure
   rolls back: snapshot put back, services that ran started again; the task fails saying so.
4. **verify_system**: the system verification (service status, data integrity against the
   backup's row counts, core functions, metrics; data integrity only for a scratch target).
5. **rollback**: runs only if something failed; undoes a restore whose verification failed.
6. **record**: writes `<database backup folder>/../restores/<run>.json` (who, what, which backup,
   how long, the result) and fails the run unless the restore was verified.

One restore at a time (`max_active_runs=1`), and never while a backup of the same component runs
(the backup folder's lock). No task retries by itself; clearing a task re-runs it safely.
"""

with DAG(
    dag_id="aiplatform_restore",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(retries=0),
    doc_md=DOC,
    tags=["aiplatform", "restore"],
    params={
        "components": Param(["database", "files", "config"], type="array", title="Components",
                            items={"type": "string", "enum": ["database", "files", "config"]},
                            examples=["database", "files", "config"],
                            description="What to restore (manual §2.2.1 steps 2-4); any subset."),
        "database_backup": Param("latest", type="string", title="Database backup",
                                 description="'latest' or a backup id such as 20261128T020000Z-full or "
                                             "20261129T020000Z-incr (restores the chain up to it)."),
        "files_backup": Param("latest", type="string", title="File backup",
                              description="'latest' or a file backup id (…Z-files)."),
        "config_backup": Param("latest", type="string", title="Config backup",
                               description="'latest' or a config version id (…Z-config)."),
        "point_in_time": Param(None, type=["null", "string"], format="date-time", title="Point in time (UTC)",
                               description="Database only: restore the state at this moment (to the second; "
                                           "events of that second are not replayed). Empty: the newest state."),
        "target": Param("live", type="string", enum=["live", "scratch"], title="Target",
                        description="live: overwrite the platform (services are stopped). scratch: a rehearsal "
                                    "into the scratch database / folder below; no service is touched."),
        "scratch_database": Param("aiplatform_restore_test", type="string", title="Scratch database",
                                  description="For target scratch: the database to restore into (created; "
                                              "replaced if it exists). Never a live database."),
        "scratch_folder": Param("/backup/restores/scratch", type="string", title="Scratch folder",
                                description="For target scratch: files go to <folder>/files, config to "
                                            "<folder>/config. Its parent folder must exist."),
        "dry_run": Param(True, type="boolean", title="Dry run",
                         description="On: only plan and verify the backups; nothing is stopped or changed."),
        "confirm": Param(None, type=["null", "string"], title="Confirm target",
                         description="With dry run off: type the target's name (the database name for live, "
                                     "the scratch database, or the scratch folder for files/config only)."),
    },
) as dag:
    plan = RestorePlanOperator(task_id="plan")
    gate = DryRunGateOperator(task_id="dry_run_gate")
    restore = RestoreOperator(task_id="restore")
    verify = verify_system_group(
        groups="{{ (ti.xcom_pull(task_ids='restore') or {}).get('verify_groups') }}",
        expectations="{{ (ti.xcom_pull(task_ids='restore') or {}).get('expectations') }}",
    )
    rollback = RollbackOperator(task_id="rollback")
    record = RestoreRecordOperator(task_id="record")

    chain(plan, gate, restore, verify, rollback, record)
