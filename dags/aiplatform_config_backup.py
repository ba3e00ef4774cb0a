"""Manual §2.1.3, part two: a config version for every change, the last versions kept."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from aiplatform_ops.config import load_backup_policy
from aiplatform_ops.operators.backup_copies import (
    ApplyRetentionOperator,
    CopyBackupsToS3Operator,
    VerifyBackupOperator,
)
from aiplatform_ops.operators.config_backup import CONFIG_ASSET, ConfigBackupOperator
from aiplatform_ops.operators.defaults import START_DATE, default_args

policy = load_backup_policy().config

DOC = f"""
# Config backup (one version per change)

Runs on each event of the asset `{CONFIG_ASSET.name}` (sent by `aiplatform_config_watch`) or by hand.
Keeps the last {policy.retention_versions} versions of {", ".join(f"`{p}`" for p in policy.paths)} in
{" and ".join(f"`{u}`" for u in policy.locations.urls())} (from `include/config/backup_policy.yaml`).

1. **take_backup**: archives the config set (pax + zstd, with sha256 per file). Content equal to
   the newest version's makes no new version. The manifest lists what was added, removed or
   changed since the previous version; the log shows a unified diff of the text files with
   secret values masked.
2. **copy_to_s3**, 3. **verify_copies**: both copies read back against `manifest.json`.
4. **apply_retention**: keeps the newest {policy.retention_versions} versions per location
   (`dry_run_retention` only logs).

**To restore** a version (each is `<id>/` with `manifest.json`; `details.content_hash` and
`details.changes` say what it holds):

```python
from aiplatform_ops.backup.config_set import restore_config_version
from aiplatform_ops.config import load_backup_policy
from aiplatform_ops.operators.connections import all_stores, backup_stores
from aiplatform_ops.storage.replicate import fetch_backup
config = load_backup_policy().config
stores = all_stores(*backup_stores(config.locations, config.s3_server_side_encryption))
folder, manifest = fetch_backup(stores, "<version id>")
restore_config_version(folder, manifest, "/etc/nginx/conf.d", path="/etc/nginx/conf.d")
```

The archive is validated completely before anything is written; the target folder is swapped
in whole at the end. Reload the service afterwards (`nginx -s reload`, a rollout restart ...).
"""

with DAG(
    dag_id="aiplatform_config_backup",
    schedule=[CONFIG_ASSET],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    doc_md=DOC,
    tags=["aiplatform", "backup", "config"],
    params={
        "dry_run_retention": Param(False, type="boolean", title="Retention dry run",
                                   description="Only log which old versions retention would delete."),
    },
) as dag:
    backup = ConfigBackupOperator(task_id="take_backup")
    copy = CopyBackupsToS3Operator(task_id="copy_to_s3", kind="config")
    verify = VerifyBackupOperator(
        task_id="verify_copies", kind="config",
        backup_id="{{ ti.xcom_pull(task_ids='take_backup')['backup_id'] }}",
    )
    retention = ApplyRetentionOperator(
        task_id="apply_retention", kind="config", dry_run="{{ params.dry_run_retention }}",
    )

    backup >> copy >> verify >> retention
