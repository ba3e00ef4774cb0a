"""Airflow adapters for the nightly database backup and the binary-log archive."""

from __future__ import annotations

import logging
import time
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from aiplatform_ops.backup.binlog import BinlogGapError
from aiplatform_ops.backup.database import (
    DatabaseBackupSettings,
    archive_binary_logs,
    take_database_backup,
)
from aiplatform_ops.config import load_backup_policy
from aiplatform_ops.operators.connections import MYSQL_CONN_ID, mysql_target
from aiplatform_ops.storage.local import LocalStore, LocationBusyError
from aiplatform_ops.storage.manifest import BackupManifest

log = logging.getLogger(__name__)


def backup_summary(manifest: BackupManifest, seconds: float) -> dict[str, Any]:
    """What the UI and the next tasks need to know of a backup (goes to XCom: no secrets)."""
    binlog = manifest.details.get("binlog", {})
    return {
        "backup_id": manifest.backup_id,
        "type": manifest.type,
        "chain_id": manifest.chain_id,
        "parent_id": manifest.parent_id,
        "size_bytes": manifest.size,
        "files": len(manifest.files),
        "seconds": round(seconds, 2),
        "binlog_end": binlog.get("end"),
        "pitr": manifest.details.get("pitr"),
        "reason": manifest.details.get("reason"),
    }


class _DatabaseBackupBase(BaseOperator):
    ui_color = "#e3f2fd"

    def __init__(self, *, mysql_conn_id: str = MYSQL_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mysql_conn_id = mysql_conn_id

    def _run(self, job: Any) -> BackupManifest | None:
        policy = load_backup_policy().database
        store = LocalStore(policy.locations.local)
        settings = DatabaseBackupSettings.from_policy(policy)
        started = time.monotonic()
        try:
            manifest = job(mysql_target(self.mysql_conn_id), store, settings)
        except BinlogGapError as exc:
            # Retrying cannot bring purged logs back; fail now so the alert goes out tonight.
            raise AirflowFailException(str(exc)) from None
        except LocationBusyError as exc:
            raise RuntimeError(str(exc)) from None
        self._seconds = time.monotonic() - started
        return manifest


class DatabaseBackupOperator(_DatabaseBackupBase):
    """Take tonight's database backup: a full one to start a chain, else an incremental."""

    def execute(self, context: Any) -> dict[str, Any]:
        manifest = self._run(take_database_backup)
        assert manifest is not None
        return backup_summary(manifest, self._seconds)


class BinlogArchiveOperator(_DatabaseBackupBase):
    """Ship the closed binary logs into the current chain; skipped when there is no chain yet."""

    def execute(self, context: Any) -> dict[str, Any]:
        manifest = self._run(archive_binary_logs)
        if manifest is None:
            raise AirflowSkipException("no chain to extend yet; the nightly backup starts one")
        return backup_summary(manifest, self._seconds)
