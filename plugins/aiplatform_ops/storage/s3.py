"""Backups under an S3 prefix: ``<prefix>/<backup_id>/<files>``, ``manifest.json`` uploaded last.

Works with any S3 API (AWS, MinIO, the sandbox's moto server); the client comes from the
amazon provider's ``S3Hook`` so credentials stay in the ``aiplatform_s3`` connection.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, BinaryIO

from aiplatform_ops.storage.base import StorageError
from aiplatform_ops.storage.manifest import (
    MANIFEST_NAME,
    BackupManifest,
    ManifestError,
    check_backup_id,
)

log = logging.getLogger(__name__)

PART_SIZE = 64 * 1024 * 1024


class S3Store:
    """One bucket and prefix. ``client`` is a boto3 S3 client (``S3Hook.get_conn()``)."""

    def __init__(self, client: Any, bucket: str, prefix: str, server_side_encryption: str | None = None) -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")
        self.sse = server_side_encryption
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def _key(self, backup_id: str, name: str = "") -> str:
        parts = [p for p in (self.prefix, check_backup_id(backup_id), name) if p]
        return "/".join(parts)

    def _extra(self) -> dict[str, str]:
        return {"ServerSideEncryption": self.sse} if self.sse else {}

    def _ids(self) -> dict[str, set[str]]:
        """Every backup folder under the prefix and the names of the objects in it."""
        base = f"{self.prefix}/" if self.prefix else ""
        found: dict[str, set[str]] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
            for obj in page.get("Contents", []):
                rest = obj["Key"][len(base):]
                if "/" in rest:
                    backup_id, name = rest.split("/", 1)
                    found.setdefault(backup_id, set()).add(name)
        return found

    def list_backups(self) -> list[BackupManifest]:
        found = []
        for backup_id, names in sorted(self._ids().items()):
            if MANIFEST_NAME not in names:
                continue
            try:
                found.append(self.read_manifest(backup_id))
            except (ManifestError, StorageError) as exc:
                log.error("%s/%s: ignored, its manifest is unreadable: %s", self.url, backup_id, exc)
        return sorted(found, key=lambda m: (m.started_at, m.backup_id))

    def has_backup(self, backup_id: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(backup_id, MANIFEST_NAME))
            return True
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def read_manifest(self, backup_id: str) -> BackupManifest:
        with self.open_file(backup_id, MANIFEST_NAME) as stream:
            manifest = BackupManifest.from_json(stream.read(), f"{self.url}/{backup_id}/{MANIFEST_NAME}")
        if manifest.backup_id != backup_id:
            raise ManifestError(f"{self.url}/{backup_id}: manifest names {manifest.backup_id}")
        return manifest

    def open_file(self, backup_id: str, name: str) -> BinaryIO:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(backup_id, name))
        except self.client.exceptions.NoSuchKey:
            raise StorageError(f"{self.url}/{backup_id}/{name}: no such object") from None
        return response["Body"]

    def store_backup(self, source_dir: Path, manifest: BackupManifest) -> None:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE)
        for entry in manifest.files:
            self.client.upload_file(
                str(source_dir / entry.name),
                self.bucket,
                self._key(manifest.backup_id, entry.name),
                ExtraArgs=self._extra() or None,
                Config=config,
            )
        self.client.put_object(
            Bucket=self.bucket,
            Key=self._key(manifest.backup_id, MANIFEST_NAME),
            Body=manifest.to_json(),
            ContentType="application/json",
            **self._extra(),
        )

    def _delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def delete_backup(self, backup_id: str) -> None:
        names = self._ids().get(backup_id, set())
        if MANIFEST_NAME in names:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(backup_id, MANIFEST_NAME))
        self._delete_keys([self._key(backup_id, n) for n in sorted(names - {MANIFEST_NAME})])

    def clean_leftovers(self) -> list[str]:
        removed = []
        for backup_id, names in self._ids().items():
            if MANIFEST_NAME not in names:
                self._delete_keys([self._key(backup_id, n) for n in sorted(names)])
                removed.append(f"{self.url}/{backup_id}")
                log.warning("removed leftover of an interrupted upload: %s/%s", self.url, backup_id)
        return removed
