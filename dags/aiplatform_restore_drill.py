"""Manual §2.2, proved every week: the newest backups restore, and how long that takes."""

from __future__ import annotations

from airflow.sdk import DAG

from aiplatform_ops.operators.defaults import START_DATE, default_args
from aiplatform_ops.operators.restore import RestoreDrillOperator, drill_settings

settings = drill_settings()

DOC = f"""
# Weekly restore drill

At `{settings["schedule"]}` (optional `restore_drill.schedule` in `backup_policy.yaml`):

1. **drill**: restores the newest database chain into the scratch database
   `{settings["scratch_database"]}`, the newest file backup and config version into scratch
   folders (under `<database backup folder>/../restores/drill-scratch` unless
   `restore_drill.scratch_folder` says otherwise), with the same code and checks as a real
   restore (every file's sha256; the full backup's row counts against its manifest before the
   binary logs are replayed; every extracted file against its listing). It records the time each
   restore took (the measured recovery time) in `restores/drill-<run>.json` and
   `restores/latest-drill.json`, drops the scratch copies, and fails if any backup cannot be
   restored. No live database, file or service is touched.
"""

with DAG(
    dag_id="aiplatform_restore_drill",
    schedule=settings["schedule"],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(retries=0),
    doc_md=DOC,
    tags=["aiplatform", "restore", "drill"],
) as dag:
    RestoreDrillOperator(task_id="drill")
