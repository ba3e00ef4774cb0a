"""Airflow adapter for the weekly file backup (manual §2.1.2)."""

from __future__ import annotations

import logging
import time
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from aiplatform_ops.backup.files import UnreadableFilesError, take_full_backup
from aiplatform_ops.config import load_backup_policy
from aiplatform_ops.storage.local import LocalStore

log = logging.getLogger(__name__)


class FileBackupOperator(BaseOperator):
    """Take a full backup of the policy's file trees into the local backup folder.

    Returns a small summary (XCom): backup id, sizes, counts and what changed while it was read.
    Unreadable files fail the task without retries (a retry cannot fix permissions) unless the
    policy sets ``allow_unreadable``.
    """

    ui_color = "#ede7f6"

    def execute(self, context: Any) -> dict[str, Any]:
        policy = load_backup_policy().files
        local = LocalStore(policy.locations.local)
        started = time.monotonic()
        try:
            manifest = take_full_backup(
                policy.roots, local, exclude=policy.exclude, part_size_mb=policy.part_size_mb,
                compression_level=policy.compression_level, allow_unreadable=policy.allow_unreadable,
            )
        except UnreadableFilesError as exc:
            raise AirflowFailException(str(exc)) from None
        counts = manifest.details["counts"]
        return {
            "backup_id": manifest.backup_id,
            "size_bytes": manifest.size,
            "parts": manifest.details["archive"]["parts"],
            "files": counts["files"],
            "bytes": counts["bytes"],
            "changed_while_read": counts["changed"],
            "vanished": counts["vanished"],
            "unreadable": counts["unreadable"],
            "seconds": round(time.monotonic() - started, 2),
            "since_previous": {k: v for k, v in manifest.details.get("since_previous", {}).items() if k != "examples"},
        }
