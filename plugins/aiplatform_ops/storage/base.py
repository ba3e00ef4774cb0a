"""What every backup location offers, local folder or S3 prefix alike."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from aiplatform_ops.storage.manifest import BackupManifest, FileEntry, sha256_stream

log = logging.getLogger(__name__)


class StorageError(RuntimeError):
    """A location could not be read or written."""


@dataclass(frozen=True)
class FileProblem:
    """Why one stored file does not match its manifest entry."""

    location: str
    backup_id: str
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.location}/{self.backup_id}/{self.name}: {self.reason}"


class BackupStore(Protocol):
    """A place that keeps backups: ``<root>/<backup_id>/<files>`` plus ``manifest.json`` last."""

    url: str

    def list_backups(self) -> list[BackupManifest]:
        """Complete backups (those with a readable manifest), oldest first."""
        ...

    def has_backup(self, backup_id: str) -> bool: ...

    def read_manifest(self, backup_id: str) -> BackupManifest: ...

    def open_file(self, backup_id: str, name: str) -> BinaryIO:
        """A binary stream of one stored file; the caller closes it."""
        ...

    def store_backup(self, source_dir: Path, manifest: BackupManifest) -> None:
        """Copy a finished backup folder here: files first, manifest last."""
        ...

    def delete_backup(self, backup_id: str) -> None:
        """Remove a backup, manifest first so a half-deleted one is never listed."""
        ...

    def clean_leftovers(self) -> list[str]:
        """Remove what interrupted runs left behind (no manifest); returns what was removed."""
        ...


def verify_file(store: BackupStore, manifest: BackupManifest, entry: FileEntry) -> FileProblem | None:
    """Read one stored file back and compare size and sha256 with the manifest."""
    try:
        with store.open_file(manifest.backup_id, entry.name) as stream:
            size, digest = sha256_stream(stream)
    except (OSError, StorageError) as exc:
        return FileProblem(store.url, manifest.backup_id, entry.name, f"cannot be read: {exc}")
    if size != entry.size:
        return FileProblem(store.url, manifest.backup_id, entry.name, f"size {size}, manifest says {entry.size}")
    if digest != entry.sha256:
        return FileProblem(store.url, manifest.backup_id, entry.name, "sha256 differs from the manifest")
    return None


def verify_backup(store: BackupStore, manifest: BackupManifest) -> list[FileProblem]:
    """Every file of one backup in one location, read back and checked against the manifest."""
    problems = [p for entry in manifest.files if (p := verify_file(store, manifest, entry))]
    for problem in problems:
        log.error("verification failed: %s", problem)
    return problems
