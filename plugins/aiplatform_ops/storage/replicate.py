"""Keep every backup in both locations of its policy, each copy read back and verified."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from aiplatform_ops.storage.base import BackupStore, FileProblem, verify_backup
from aiplatform_ops.storage.local import LocalStore
from aiplatform_ops.storage.manifest import BackupManifest

log = logging.getLogger(__name__)


class VerificationError(RuntimeError):
    """A stored copy does not match its manifest."""

    def __init__(self, problems: list[FileProblem] | list[str]) -> None:
        self.problems = problems
        super().__init__("verification failed: " + "; ".join(str(p) for p in problems))


@dataclass
class SyncReport:
    """What one sync did: backups copied to the remote, and ones already there."""

    uploaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)


def upload_backup(local: LocalStore, remote: BackupStore, manifest: BackupManifest) -> None:
    """Copy one local backup to ``remote`` (manifest last) and verify the copy by reading it back."""
    remote.store_backup(local.backup_dir(manifest.backup_id), manifest)
    problems = verify_backup(remote, manifest)
    if problems:
        raise VerificationError(problems)
    log.info("copied %s to %s (%d files, %d bytes), verified", manifest.backup_id, remote.url,
             len(manifest.files), manifest.size)


def sync_to_remote(local: LocalStore, remote: BackupStore) -> SyncReport:
    """Upload every local backup the remote lacks, so a run after an S3 outage catches up."""
    report = SyncReport(cleaned=remote.clean_leftovers())
    for manifest in local.list_backups():
        if remote.has_backup(manifest.backup_id):
            report.present.append(manifest.backup_id)
            continue
        upload_backup(local, remote, manifest)
        report.uploaded.append(manifest.backup_id)
    return report


def _download(store: BackupStore, manifest: BackupManifest, name: str, target: Path) -> FileProblem | None:
    """Copy one file to ``target`` while hashing it, so what lands on disk is what was checked."""
    entry = manifest.file(name)
    path = target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with store.open_file(manifest.backup_id, name) as src, open(path, "wb") as dst:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            dst.write(chunk)
    if size != entry.size or digest.hexdigest() != entry.sha256:
        return FileProblem(store.url, manifest.backup_id, name, "size or sha256 differs from the manifest")
    return None


def fetch_backup(stores: list[BackupStore], backup_id: str, into: Path | None = None) -> tuple[Path, BackupManifest]:
    """A verified copy of one backup in a local folder, from the first location that has it intact.

    A local copy is verified in place; a remote one is downloaded and hashed on the way. A copy
    that fails is reported and the next location is tried; if none is intact, raises
    :class:`VerificationError`.
    """
    problems: list[FileProblem] = []
    for store in stores:
        if not store.has_backup(backup_id):
            continue
        manifest = store.read_manifest(backup_id)
        if isinstance(store, LocalStore):
            found = verify_backup(store, manifest)
            if not found:
                return store.backup_dir(backup_id), manifest
        else:
            target = Path(into or tempfile.mkdtemp(prefix=f"fetch-{backup_id}-"))
            found = [p for entry in manifest.files if (p := _download(store, manifest, entry.name, target))]
            if not found:
                return target, manifest
        problems += found
        log.error("%s: copy of %s is damaged, trying the next location", store.url, backup_id)
    if problems:
        raise VerificationError(problems)
    raise FileNotFoundError(f"backup {backup_id} is in none of: {', '.join(s.url for s in stores)}")
