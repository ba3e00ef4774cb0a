"""Manual §2.1.3, part one: watch the config set and announce each change as an Asset event."""

from __future__ import annotations

from airflow.sdk import DAG

from aiplatform_ops.config import load_backup_policy
from aiplatform_ops.operators.config_backup import CONFIG_ASSET, DetectConfigChangeOperator
from aiplatform_ops.operators.defaults import START_DATE, default_args

policy = load_backup_policy().config

DOC = f"""
# Config change watch

Every `{policy.watch_schedule}` hashes the config set ({", ".join(f"`{p}`" for p in policy.paths)};
excluded: {", ".join(f"`{e}`" for e in policy.exclude) or "nothing"}): each file's path, type,
permissions, owner and sha256, not mtimes, so touching a file is not a change.

- **detect_config_change** succeeds and updates the asset `{CONFIG_ASSET.name}` only when the
  content differs from the newest stored version; `aiplatform_config_backup` runs on that event.
  Otherwise the task is *skipped* (no event). A change announced but not stored within an hour
  (its backup failed) is announced again.

Nothing to restore here: see `aiplatform_config_backup`.
"""

with DAG(
    dag_id="aiplatform_config_watch",
    schedule=policy.watch_schedule,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(retries=1),
    doc_md=DOC,
    tags=["aiplatform", "backup", "config", "watch"],
) as dag:
    DetectConfigChangeOperator(task_id="detect_config_change", outlets=[CONFIG_ASSET])
