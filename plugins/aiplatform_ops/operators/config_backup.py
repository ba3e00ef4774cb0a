"""Airflow adapters for config backups (manual §2.1.3): the watch and the backup it triggers."""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Asset, BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from aiplatform_ops.backup.config_set import detect_change, take_config_backup
from aiplatform_ops.config import load_backup_policy
from aiplatform_ops.storage.local import LocalStore

log = logging.getLogger(__name__)

#: Updated by ``aiplatform_config_watch`` each time the config set's content changes;
#: ``aiplatform_config_backup`` is scheduled on it.
CONFIG_ASSET = Asset(name="aiplatform_config_set", uri="aiplatform://config-set", group="config")


class DetectConfigChangeOperator(BaseOperator):
    """Hash the config set; emit an event on ``CONFIG_ASSET`` only when its content changed.

    Unchanged: the task is skipped, and a skipped task emits no asset event, so the backup DAG
    runs once per change. Give it ``outlets=[CONFIG_ASSET]``.
    """

    ui_color = "#fffde7"

    def execute(self, context: Any) -> dict[str, Any]:
        policy = load_backup_policy().config
        check = detect_change(policy.paths, LocalStore(policy.locations.local), exclude=policy.exclude)
        for path in check.missing:
            log.warning("config path %s does not exist", path)
        if not check.changed:
            raise AirflowSkipException(check.reason)
        log.info("config set changed (content %s): %s", check.content_hash[:12], check.reason)
        context["outlet_events"][CONFIG_ASSET].extra = {
            "content_hash": check.content_hash, "previous_version": check.latest_id, "reason": check.reason,
        }
        return {"content_hash": check.content_hash, "previous_version": check.latest_id, "reason": check.reason}


class ConfigBackupOperator(BaseOperator):
    """Store the config set as a new version unless it equals the newest one; logs the masked diff."""

    ui_color = "#ede7f6"

    def execute(self, context: Any) -> dict[str, Any]:
        policy = load_backup_policy().config
        result = take_config_backup(policy.paths, LocalStore(policy.locations.local), exclude=policy.exclude)
        changes = result.changes
        return {
            "backup_id": result.manifest.backup_id,
            "new_version": result.new_version,
            "content_hash": result.manifest.details.get("content_hash"),
            "added": len(changes.added),
            "removed": len(changes.removed),
            "changed": len(changes.changed),
        }
