"""The manifest: the completion marker of every stored backup.

A backup is a folder (or S3 prefix) whose ``manifest.json`` is written last. Without it nothing
is a backup: not for listing, restore or retention. The manifest lists every file with its size
and sha256 so any copy can be proved intact, and holds what a restore needs to know.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
BACKUP_ID_PATTERN = r"[0-9]{8}T[0-9]{6}Z-[a-z0-9\-]+"
CHUNK = 1 << 20


class ManifestError(ValueError):
    """A manifest is missing, unreadable or inconsistent."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def new_backup_id(started: datetime, suffix: str) -> str:
    """Sortable id such as ``20261128T020000Z-full``: the listing order is the time order."""
    return f"{started.astimezone(UTC):%Y%m%dT%H%M%SZ}-{suffix}"


def check_backup_id(backup_id: str) -> str:
    if not isinstance(backup_id, str) or not re.fullmatch(BACKUP_ID_PATTERN, backup_id):
        raise ManifestError(f"backup id {backup_id!r} is not of the form YYYYMMDDTHHMMSSZ-name")
    return backup_id


def sha256_stream(stream: BinaryIO) -> tuple[int, str]:
    """Size and sha256 of everything left in ``stream``, read in bounded chunks."""
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def sha256_file(path: Path) -> tuple[int, str]:
    with open(path, "rb") as stream:
        return sha256_stream(stream)


@dataclass
class FileEntry:
    """One stored file: its name inside the backup, size and sha256, plus kind-specific facts."""

    name: str
    size: int
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or self.name.startswith("/") or ".." in Path(self.name).parts:
            raise ManifestError(f"file name {self.name!r} must be a relative path inside the backup")
        if self.name == MANIFEST_NAME:
            raise ManifestError(f"file name {MANIFEST_NAME} is reserved")
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ManifestError(f"file {self.name}: sha256 {self.sha256!r} is not 64 hex digits")


@dataclass
class BackupManifest:
    """What a stored backup holds. ``details`` carries what its kind needs for a restore."""

    backup_id: str
    kind: str
    type: str
    started_at: str
    finished_at: str
    files: list[FileEntry]
    parent_id: str | None = None
    chain_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        check_backup_id(self.backup_id)
        if self.kind not in ("database", "files", "config"):
            raise ManifestError(f"backup {self.backup_id}: unknown kind {self.kind!r}")
        if self.type not in ("full", "incremental"):
            raise ManifestError(f"backup {self.backup_id}: unknown type {self.type!r}")
        if self.type == "incremental" and not self.parent_id:
            raise ManifestError(f"backup {self.backup_id}: an incremental backup needs a parent")
        names = [f.name for f in self.files]
        if len(names) != len(set(names)):
            raise ManifestError(f"backup {self.backup_id}: a file is listed twice")

    @property
    def started(self) -> datetime:
        return parse_iso(self.started_at)

    @property
    def finished(self) -> datetime:
        return parse_iso(self.finished_at)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, name: str) -> FileEntry:
        for entry in self.files:
            if entry.name == name:
                return entry
        raise ManifestError(f"backup {self.backup_id} has no file {name!r}")

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes | str, where: str = "manifest") -> BackupManifest:
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise TypeError("not an object")
            if data.get("format") != FORMAT_VERSION:
                raise ManifestError(f"{where}: unsupported format {data.get('format')!r}")
            files = [FileEntry(**f) for f in data.pop("files")]
            return cls(files=files, **data)
        except ManifestError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise ManifestError(f"{where}: not a valid manifest ({exc})") from None
