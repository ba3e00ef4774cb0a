"""Manual §2.1.1: the platform database, backed up every night, incrementally, kept 30 days."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from aiplatform_ops.config import load_backup_policy
from aiplatform_ops.operators.backup_copies import (
    ApplyRetentionOperator,
    CopyBackupsToS3Operator,
    VerifyBackupOperator,
)
from aiplatform_ops.operators.db_backup import DatabaseBackupOperator
from aiplatform_ops.operators.defaults import START_DATE, deadline_alert, default_args

policy = load_backup_policy().database

DOC = f"""
# Nightly database backup

Backs up the platform's MySQL/MariaDB databases ({", ".join(policy.databases)}) at
`{policy.schedule}` into {" and ".join(f"`{u}`" for u in policy.locations.urls())},
keeping {policy.retention_days} days (from `include/config/backup_policy.yaml`).

1. **take_backup**: a full backup (one consistent `mariadb-dump`, one zstd part per table)
   starts a chain on the first run, on {policy.full_backup_weekday if policy.full_backup_weekday is not None
   else "no fixed"} weekday (0 = Monday), after {policy.max_chain_length} incrementals, or after a gap;
   otherwise an incremental backup fetches the closed binary logs since the chain's end.
   A purged binary log fails the run at once (no retry) with the reason; the next run starts a new chain.
2. **copy_to_s3**: uploads every local backup S3 lacks (also catching up after an S3 outage),
   reading each copy back to check it.
3. **verify_copies**: re-reads tonight's backup in both locations against its `manifest.json`.
4. **apply_retention**: expires whole chains older than {policy.retention_days} days; never a base
   a kept incremental needs. Trigger with `dry_run_retention` to only see what would go.

**To restore**, trigger `aiplatform_restore` (dry run by default). Each backup is a folder
`<id>/` with `manifest.json` written last; a folder without it is not a backup.
"""

with DAG(
    dag_id="aiplatform_db_backup",
    schedule=policy.schedule,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    deadline=deadline_alert(policy.deadline, "the nightly database backup"),
    doc_md=DOC,
    tags=["aiplatform", "backup", "database"],
    params={
        "dry_run_retention": Param(False, type="boolean", title="Retention dry run",
                                   description="Only log which expired backups retention would delete."),
    },
) as dag:
    backup = DatabaseBackupOperator(task_id="take_backup")
    copy = CopyBackupsToS3Operator(task_id="copy_to_s3", kind="database")
    verify = VerifyBackupOperator(
        task_id="verify_copies", kind="database",
        backup_id="{{ ti.xcom_pull(task_ids='take_backup')['backup_id'] }}",
    )
    retention = ApplyRetentionOperator(
        task_id="apply_retention", kind="database", dry_run="{{ params.dry_run_retention }}",
    )

    backup >> copy >> verify >> retention
