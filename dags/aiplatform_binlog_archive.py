"""Manual §2.1.1, recovery point: ship closed binary logs into the current chain between nights."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from aiplatform_ops.config import load_backup_policy
from aiplatform_ops.operators.backup_copies import CopyBackupsToS3Operator, VerifyBackupOperator
from aiplatform_ops.operators.db_backup import BinlogArchiveOperator
from aiplatform_ops.operators.defaults import START_DATE, default_args

policy = load_backup_policy().database
interval = policy.binlog_archive_interval_minutes

DOC = f"""
# Binary log archive

Every {interval or "(disabled)"} minutes (`binlog_archive_interval_minutes` in
`include/config/backup_policy.yaml`) this flushes the server's binary log and adds the closed
logs to the current backup chain as a small incremental backup, so point-in-time recovery
reaches within that interval of a failure. It is the nightly incremental, run more often; it never
starts a chain (skipped until the nightly `aiplatform_db_backup` has made one) and never runs at the
same moment as the nightly backup (both hold the backup folder's lock).
"""

with DAG(
    dag_id="aiplatform_binlog_archive",
    schedule=timedelta(minutes=interval) if interval else None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(retries=1),
    doc_md=DOC,
    tags=["aiplatform", "backup", "database"],
) as dag:
    archive = BinlogArchiveOperator(task_id="archive_binlogs")
    copy = CopyBackupsToS3Operator(task_id="copy_to_s3", kind="database")
    verify = VerifyBackupOperator(
        task_id="verify_copies", kind="database",
        backup_id="{{ ti.xcom_pull(task_ids='archive_binlogs')['backup_id'] }}",
    )

    archive >> copy >> verify
