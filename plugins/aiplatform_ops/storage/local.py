"""Backups in a local folder: ``<root>/<backup_id>/`` appears whole, by one rename, or not at all."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Generator
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from aiplatform_ops.storage.base import StorageError
from aiplatform_ops.storage.manifest import (
    MANIFEST_NAME,
    BackupManifest,
    ManifestError,
    check_backup_id,
    new_backup_id,
)

log = logging.getLogger(__name__)

STAGING = ".incomplete"
LOCK = ".lock"


class LocationBusyError(RuntimeError):
    """Another backup, archive or restore is working on this location right now."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes) -> None:
    """Write a small file and make it survive a power cut before anyone relies on it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class LocalStore:
    """A local backup folder. Work in progress lives under ``.incomplete/`` until committed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    @contextlib.contextmanager
    def lock(self, purpose: str) -> Generator[None, None, None]:
        """Hold the location's lock for one job; a second job fails at once with who holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise LocationBusyError(f"{self.root} is busy: {holder}; try again when it has finished") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"{purpose} (pid {os.getpid()})\n")
            handle.flush()
            try:
                yield
            finally:
                handle.seek(0)
                handle.truncate()
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _dir(self, backup_id: str) -> Path:
        return self.root / check_backup_id(backup_id)

    def new_backup_id(self, started: datetime, suffix: str) -> str:
        """A time-ordered id not yet used here (two backups in one second get the next second)."""
        while True:
            backup_id = new_backup_id(started, suffix)
            if not self._dir(backup_id).exists() and not (self.root / STAGING / backup_id).exists():
                return backup_id
            started += timedelta(seconds=1)

    def staging_dir(self, backup_id: str) -> Path:
        """A fresh folder to write a new backup into, invisible to listing until committed."""
        path = self.root / STAGING / check_backup_id(backup_id)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True, mode=0o700)
        return path

    def commit(self, staging: Path, manifest: BackupManifest) -> Path:
        """Write the manifest last, then move the finished folder into the listing in one rename."""
        for entry in manifest.files:
            if not (staging / entry.name).is_file():
                raise StorageError(f"{staging}: {entry.name} is in the manifest but was not written")
        write_durably(staging / MANIFEST_NAME, manifest.to_json())
        final = self._dir(manifest.backup_id)
        if final.exists():
            raise StorageError(f"{final} already exists; backup ids must be unique")
        os.rename(staging, final)
        _fsync_dir(self.root)
        return final

    def backup_dir(self, backup_id: str) -> Path:
        return self._dir(backup_id)

    def list_backups(self) -> list[BackupManifest]:
        if not self.root.is_dir():
            return []
        found = []
        for child in sorted(self.root.iterdir()):
            if child.name.startswith(".") or not (child / MANIFEST_NAME).is_file():
                continue
            try:
                found.append(self.read_manifest(child.name))
            except (ManifestError, OSError) as exc:
                log.error("%s: ignored, its manifest is unreadable: %s", child, exc)
        return sorted(found, key=lambda m: (m.started_at, m.backup_id))

    def has_backup(self, backup_id: str) -> bool:
        return (self._dir(backup_id) / MANIFEST_NAME).is_file()

    def read_manifest(self, backup_id: str) -> BackupManifest:
        path = self._dir(backup_id) / MANIFEST_NAME
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ManifestError(f"{path}: no such backup") from None
        manifest = BackupManifest.from_json(raw, str(path))
        if manifest.backup_id != backup_id:
            raise ManifestError(f"{path}: names backup {manifest.backup_id}, expected {backup_id}")
        return manifest

    def open_file(self, backup_id: str, name: str) -> BinaryIO:
        return open(self._dir(backup_id) / name, "rb")

    def file_path(self, backup_id: str, name: str) -> Path:
        return self._dir(backup_id) / name

    def store_backup(self, source_dir: Path, manifest: BackupManifest) -> None:
        """Copy a finished backup from another folder (for example one fetched from S3)."""
        staging = self.staging_dir(manifest.backup_id)
        for entry in manifest.files:
            target = staging / entry.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source_dir / entry.name, target)
        self.commit(staging, manifest)

    def delete_backup(self, backup_id: str) -> None:
        path = self._dir(backup_id)
        if not path.exists():
            return
        (path / MANIFEST_NAME).unlink(missing_ok=True)
        _fsync_dir(path)
        trash = self.root / STAGING / f"{backup_id}.deleting"
        (self.root / STAGING).mkdir(exist_ok=True)
        if trash.exists():
            shutil.rmtree(trash)
        os.rename(path, trash)
        shutil.rmtree(trash)

    def clean_leftovers(self) -> list[str]:
        removed = []
        staging = self.root / STAGING
        if staging.is_dir():
            for child in staging.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
                removed.append(str(child))
        if self.root.is_dir():
            for child in self.root.iterdir():
                if child.is_dir() and not child.name.startswith(".") and not (child / MANIFEST_NAME).exists():
                    shutil.rmtree(child)
                    removed.append(str(child))
        for path in removed:
            log.warning("removed leftover of an interrupted run: %s", path)
        return removed
