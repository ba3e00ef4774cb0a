"""Manual §2.1.2: the platform's file trees, backed up in full every week, kept 90 days."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from aiplatform_ops.config import load_backup_policy
from aiplatform_ops.operators.backup_copies import (
    ApplyRetentionOperator,
    CopyBackupsToS3Operator,
    VerifyBackupOperator,
)
from aiplatform_ops.operators.defaults import START_DATE, deadline_alert, default_args
from aiplatform_ops.operators.file_backup import FileBackupOperator

policy = load_backup_policy().files

DOC = f"""
# Weekly file backup

Backs up {", ".join(f"`{r}`" for r in policy.roots)} in full at `{policy.schedule}` into
{" and ".join(f"`{u}`" for u in policy.locations.urls())}, keeping {policy.retention_days} days
(from `include/config/backup_policy.yaml`; excluded: {", ".join(f"`{e}`" for e in policy.exclude) or "nothing"}).

1. **take_backup**: cleans what an interrupted run left, then one streaming pass: tar
   (POSIX/pax: permissions, owners, nanosecond mtimes, symlinks kept as links) → zstd level
   {policy.compression_level} → sha256, cut into parts of {policy.part_size_mb} MiB. Every archived
   file is listed with size, mtime and sha256 in `contents.jsonl.zst`. Files that changed or
   vanished while read are reported in the manifest; unreadable files fail the run
   (`allow_unreadable: {str(policy.allow_unreadable).lower()}`). `manifest.json` is written last.
2. **copy_to_s3**: uploads every local backup S3 lacks (also catching up after an S3 outage),
   reading each copy back to check it.
3. **verify_copies**: re-reads this backup in both locations against its `manifest.json`.
4. **apply_retention**: deletes backups older than {policy.retention_days} days in each location
   (the newest is always kept). Trigger with `dry_run_retention` to only see what would go.

**To restore** a tree: fetch a verified copy and extract it safely (absolute paths, `..`, links
out of the target and device entries are refused; every file is checked against its sha256; the
target is swapped in whole at the end, or left as it was on any error):

```python
from aiplatform_ops.config import load_backup_policy
from aiplatform_ops.operators.connections import all_stores, backup_stores
from aiplatform_ops.restore.extract import restore_file_backup
from aiplatform_ops.storage.replicate import fetch_backup
files = load_backup_policy().files
stores = all_stores(*backup_stores(files.locations, files.s3_server_side_encryption))
folder, manifest = fetch_backup(stores, "<backup id>")   # first intact copy, local or S3
restore_file_backup(folder, manifest, "/app/aiplatform/data", root="/app/aiplatform/data")
```

or by hand: `cat <id>/archive.tar.zst.* | zstd -dc | tar -xpf - -C /restore/here` (plain GNU tar
reads the archive; it does not check the per-file sha256).
"""

with DAG(
    dag_id="aiplatform_file_backup",
    schedule=policy.schedule,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    deadline=deadline_alert(policy.deadline, "the weekly file backup"),
    doc_md=DOC,
    tags=["aiplatform", "backup", "files"],
    params={
        "dry_run_retention": Param(False, type="boolean", title="Retention dry run",
                                   description="Only log which expired backups retention would delete."),
    },
) as dag:
    backup = FileBackupOperator(task_id="take_backup")
    copy = CopyBackupsToS3Operator(task_id="copy_to_s3", kind="files")
    verify = VerifyBackupOperator(
        task_id="verify_copies", kind="files",
        backup_id="{{ ti.xcom_pull(task_ids='take_backup')['backup_id'] }}",
    )
    retention = ApplyRetentionOperator(
        task_id="apply_retention", kind="files", dry_run="{{ params.dry_run_retention }}",
    )

    backup >> copy >> verify >> retention
