"""Operators every kind of backup shares: copy to S3, verify both copies, apply retention.

Each reads its kind's policy (``database``, ``files`` or ``config``) when it runs, never at parse
time, and talks to S3 through the ``aiplatform_s3`` connection.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from aiplatform_ops.config import Locations, load_backup_policy
from aiplatform_ops.operators.connections import S3_CONN_ID, all_stores, backup_stores
from aiplatform_ops.storage.base import verify_backup
from aiplatform_ops.storage.manifest import utc_now
from aiplatform_ops.storage.replicate import VerificationError, sync_to_remote
from aiplatform_ops.storage.retention import apply_retention, plan_by_age, plan_by_count

log = logging.getLogger(__name__)

KINDS = ("database", "files", "config")


def kind_policy(kind: str) -> Any:
    """The policy section of one kind of backup."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    policy = load_backup_policy()
    return {"database": policy.database, "files": policy.files, "config": policy.config}[kind]


def kind_stores(kind: str, s3_conn_id: str = S3_CONN_ID):
    policy = kind_policy(kind)
    locations: Locations = policy.locations
    return policy, *backup_stores(locations, policy.s3_server_side_encryption, s3_conn_id)


class CopyBackupsToS3Operator(BaseOperator):
    """Upload every local backup of a kind that S3 lacks, each copy read back and verified.

    Running it after an S3 outage uploads everything the failed runs left only on local disk.
    """

    ui_color = "#e0f2f1"

    def __init__(self, *, kind: str, s3_conn_id: str = S3_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind, self.s3_conn_id = kind, s3_conn_id

    def execute(self, context: Any) -> dict[str, list[str]]:
        _, local, remote = kind_stores(self.kind, self.s3_conn_id)
        if remote is None:
            log.info("the %s policy names no S3 location: nothing to copy", self.kind)
            return {"uploaded": [], "present": []}
        report = sync_to_remote(local, remote)
        log.info("%s: %d uploaded, %d already present, %d leftovers cleaned", remote.url, len(report.uploaded),
                 len(report.present), len(report.cleaned))
        return {"uploaded": report.uploaded, "present": report.present}


class VerifyBackupOperator(BaseOperator):
    """Re-read one backup in every location and check each file's size and sha256 against the manifest."""

    template_fields: Sequence[str] = ("backup_id",)
    ui_color = "#e8f5e9"

    def __init__(self, *, kind: str, backup_id: str, s3_conn_id: str = S3_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind, self.backup_id, self.s3_conn_id = kind, backup_id, s3_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        _, local, remote = kind_stores(self.kind, self.s3_conn_id)
        problems: list[str] = []
        checked = []
        for store in all_stores(local, remote):
            if not store.has_backup(self.backup_id):
                problems.append(f"{store.url}: backup {self.backup_id} is missing")
                continue
            manifest = store.read_manifest(self.backup_id)
            problems += [str(p) for p in verify_backup(store, manifest)]
            checked.append(store.url)
            log.info("%s/%s: %d files checked against the manifest", store.url, self.backup_id, len(manifest.files))
        if problems:
            raise VerificationError(problems)
        return {"backup_id": self.backup_id, "verified": checked}


class ApplyRetentionOperator(BaseOperator):
    """Apply the policy's retention in each location; ``dry_run`` only logs what would go."""

    template_fields: Sequence[str] = ("dry_run",)
    ui_color = "#fff3e0"

    def __init__(self, *, kind: str, dry_run: bool | str = False, s3_conn_id: str = S3_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind, self.dry_run, self.s3_conn_id = kind, dry_run, s3_conn_id

    def execute(self, context: Any) -> dict[str, list[str]]:
        policy, local, remote = kind_stores(self.kind, self.s3_conn_id)
        dry_run = self.dry_run in (True, "True", "true", "1")
        deleted: dict[str, list[str]] = {}
        for store in all_stores(local, remote):
            manifests = [m for m in store.list_backups() if m.kind == self.kind]
            if self.kind == "config":
                plan = plan_by_count(store.url, manifests, policy.retention_versions)
            else:
                plan = plan_by_age(store.url, manifests, policy.retention_days, utc_now())
            deleted[store.url] = apply_retention(store, plan, dry_run=dry_run)
        return deleted
