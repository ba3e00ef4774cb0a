"""Config backups (manual §2.1.3): a new version on every change, the last 10 kept.

The config set is the list of paths in the policy (nginx, Kubernetes manifests, Redis, service
and JVM settings). Its content hash covers each entry's path, type, permissions, owner and the
sha256 of its bytes (or a link's target), not mtimes: touching a file changes nothing, editing
one byte does. A version is a small archive of the whole set (the same pax/zstd format and
``contents.jsonl.zst`` listing as a file backup) whose manifest records the content hash and what
was added, removed or changed since the previous version. A backup whose content equals the
newest version's is not a new version.

The task log shows a unified diff of the changed text files with secret values masked
(values of keys such as password, secret, token, key, auth).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiplatform_ops.backup.files import ARCHIVE_NAME, CONTENTS_NAME, MiB, scan_tree, write_archive
from aiplatform_ops.restore.extract import ExtractReport, TarReader, archive_parts, safe_extract, zstd_tar_stream
from aiplatform_ops.storage.local import LocalStore, write_durably
from aiplatform_ops.storage.manifest import BackupManifest, iso, parse_iso, utc_now

log = logging.getLogger(__name__)

WATCH_STATE = ".config-watch.json"
RESEND_AFTER = timedelta(hours=1)
DIFF_MAX_FILE = 1 * MiB
DIFF_MAX_LINES = 2000
MASK = "****"


class ConfigBackupError(RuntimeError):
    """The config set could not be backed up."""


# --------------------------------------------------------------------------------------------
# Content hash


def _fingerprint(entry: dict[str, Any]) -> str:
    what = entry.get("sha256") or entry.get("link") or ""
    return f"{entry['type']}\0{entry['mode']:o}\0{entry['uid']}:{entry['gid']}\0{what}"


def content_hash(entries: Iterable[dict[str, Any]]) -> str:
    """sha256 over every entry's path, type, mode, owner and content hash (or link), not mtimes."""
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e["path"]):
        digest.update(f"{entry['path']}\0{_fingerprint(entry)}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


@dataclass
class ConfigSnapshot:
    entries: list[dict[str, Any]]
    content_hash: str
    missing: list[str]


def scan_config_set(paths: Iterable[Path], exclude: Iterable[str] = ()) -> ConfigSnapshot:
    """Hash the config set as it is on disk now (nothing is written)."""
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not os.path.lexists(p)]
    if len(missing) == len(paths):
        raise ConfigBackupError(f"none of the config paths exist: {', '.join(missing)}")
    entries, _ = scan_tree([p for p in paths if str(p) not in missing], exclude=exclude)
    return ConfigSnapshot(entries, content_hash(entries), missing)


@dataclass
class Changes:
    previous_id: str | None
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"previous_id": self.previous_id, "added": self.added, "removed": self.removed, "changed": self.changed}

    def summary(self) -> str:
        return f"{len(self.added)} added, {len(self.removed)} removed, {len(self.changed)} changed"


def compare_entries(previous_id: str | None, old: list[dict[str, Any]], new: list[dict[str, Any]]) -> Changes:
    before = {e["path"]: _fingerprint(e) for e in old}
    after = {e["path"]: _fingerprint(e) for e in new}
    changes = Changes(previous_id)
    changes.added = sorted(p for p in after if p not in before)
    changes.removed = sorted(p for p in before if p not in after)
    changes.changed = sorted(p for p in after if p in before and after[p] != before[p])
    return changes


# --------------------------------------------------------------------------------------------
# Secrets in diffs

_SECRET_WORD = r"(?:pass(?:word|wd|phrase)?|secret|token|api[_-]?key|key|auth|credentials?)"
_KEY_VALUE = re.compile(
    rf"(?i)(?P<key>[A-Za-z0-9_.\-]*{_SECRET_WORD}[A-Za-z0-9_.\-]*)(?P<sep>\s*[:=]\s*|\s+)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s;,#\"']+)"
)
_SECRET_NAME = re.compile(rf"(?i)^\s*-?\s*name\s*:\s*\S*{_SECRET_WORD}")
_VALUE_LINE = re.compile(r"(?i)^(?P<key>\s*value\s*:\s*)(?P<value>.+)$")


def _mask_value(match: re.Match[str]) -> str:
    value = match.group("value")
    value = value[0] + MASK + value[0] if value[0] in "\"'" else MASK
    return f"{match.group('key')}{match.group('sep')}{value}"


def mask_secrets(text: str) -> str:
    """The text with the values of secret-looking keys replaced by ``****``.

    Covers ``key = value``, ``key: value``, ``key value`` (Redis ``requirepass``), JVM
    ``-Dsome.password=value`` and Kubernetes ``- name: DB_PASSWORD`` / ``value: ...`` pairs.
    """
    lines = text.splitlines(keepends=True)
    masked = []
    secret_name_above = False
    for line in lines:
        if secret_name_above and (m := _VALUE_LINE.match(line.rstrip("\n"))):
            line = f"{m.group('key')}{MASK}" + ("\n" if line.endswith("\n") else "")
        else:
            line = _KEY_VALUE.sub(_mask_value, line)
        secret_name_above = bool(_SECRET_NAME.match(line))
        masked.append(line)
    return "".join(masked)


def _text(data: bytes | None) -> str | None:
    if data is None:
        return ""
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def unified_diff(old_files: dict[str, bytes], new_files: dict[str, bytes], changes: Changes) -> str:
    """A unified diff of the added, removed and changed text files, secrets masked."""
    out: list[str] = []
    for path in sorted({*changes.added, *changes.removed, *changes.changed}):
        old, new = old_files.get(path), new_files.get(path)
        if path in changes.changed and (old is None or new is None):
            out.append(f"--- {path}: type, permissions or owner changed, or too large to show\n")
            continue
        old_text, new_text = _text(old), _text(new)
        if old_text is None or new_text is None:
            out.append(f"--- {path}: binary file changed\n")
            continue
        old_masked, new_masked = mask_secrets(old_text), mask_secrets(new_text)
        if old_masked == new_masked:
            out.append(f"--- {path}: only permissions, owner or masked secret values changed\n")
            continue
        out.extend(difflib.unified_diff(
            old_masked.splitlines(keepends=True), new_masked.splitlines(keepends=True),
            fromfile=f"a/{path}", tofile=f"b/{path}",
        ))
    if len(out) > DIFF_MAX_LINES:
        out = out[:DIFF_MAX_LINES] + [f"... diff cut at {DIFF_MAX_LINES} lines\n"]
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)


def read_archive_files(parts: list[Path], names: set[str], max_size: int = DIFF_MAX_FILE) -> dict[str, bytes]:
    """The bytes of the regular files ``names`` (up to ``max_size`` each) from an archive."""
    found: dict[str, bytes] = {}
    if not names:
        return found
    with zstd_tar_stream(parts) as stream:
        reader = TarReader(stream)
        for member in reader:
            name = member.name.rstrip("/")
            if name in names and member.isreg() and member.size <= max_size:
                found[name] = reader.read(member.size)
    return found


# --------------------------------------------------------------------------------------------
# Versions


def config_versions(local: LocalStore) -> list[BackupManifest]:
    return [m for m in local.list_backups() if m.kind == "config"]


def latest_version(local: LocalStore) -> BackupManifest | None:
    versions = config_versions(local)
    return versions[-1] if versions else None


@dataclass
class ConfigBackupResult:
    manifest: BackupManifest
    new_version: bool
    changes: Changes
    diff: str = ""


def take_config_backup(
    paths: Iterable[Path],
    local: LocalStore,
    *,
    exclude: Iterable[str] = (),
    started: datetime | None = None,
) -> ConfigBackupResult:
    """Store the config set as a new version, unless its content equals the newest version's."""
    paths, exclude = [Path(p) for p in paths], tuple(exclude)
    with local.lock("config backup"):
        local.clean_leftovers()
        return _take_config_backup(paths, local, exclude, started or utc_now())


def _take_config_backup(paths: list[Path], local: LocalStore, exclude: tuple[str, ...],
                        started: datetime) -> ConfigBackupResult:
    missing = [str(p) for p in paths if not os.path.lexists(p)]
    present = [p for p in paths if str(p) not in missing]
    if not present:
        raise ConfigBackupError(f"none of the config paths exist: {', '.join(missing)}")
    for path in missing:
        log.warning("config path %s does not exist; left out of this version", path)
    previous = latest_version(local)
    backup_id = local.new_backup_id(started, "config")
    staging = local.staging_dir(backup_id)
    try:
        entries: list[dict[str, Any]] = []
        result = write_archive(present, staging, exclude=exclude, part_size=1024 * MiB, threads=0,
                               on_entry=entries.append)
        if result.unreadable.total:
            raise ConfigBackupError("config files could not be read: " + "; ".join(
                f"{u['path']} ({u['error']})" for u in result.unreadable.items))
        digest = content_hash(entries)
        old_entries = previous.details.get("entries", []) if previous else []
        changes = compare_entries(previous.backup_id if previous else None, old_entries, entries)
        if previous is not None and previous.details.get("content_hash") == digest:
            shutil.rmtree(staging)
            log.info("config set unchanged since version %s (content %s): no new version",
                     previous.backup_id, digest[:12])
            return ConfigBackupResult(previous, False, changes)
        diff = ""
        if previous is not None:
            wanted = {*changes.changed, *changes.removed, *changes.added}
            try:
                old_files = read_archive_files(archive_parts(local.backup_dir(previous.backup_id), previous), wanted)
            except (OSError, RuntimeError, ValueError) as exc:
                log.warning("cannot read version %s for the diff: %s", previous.backup_id, exc)
                old_files = {}
            new_files = read_archive_files([staging / p.name for p in result.parts], wanted)
            diff = unified_diff(old_files, new_files, changes)
        manifest = BackupManifest(
            backup_id=backup_id, kind="config", type="full", started_at=iso(started), finished_at=iso(utc_now()),
            files=[*result.parts, result.contents],
            details={
                "content_hash": digest,
                "paths": [str(p) for p in paths],
                "missing_paths": missing,
                "exclude": list(exclude),
                "entries": entries,
                "changes": changes.as_dict(),
                "archive": {"name": ARCHIVE_NAME, "format": "pax", "compression": "zstd"},
                "contents": CONTENTS_NAME,
                "restore": "aiplatform_ops.backup.config_set.restore_config_version",
            },
        )
        local.commit(staging, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if previous is None:
        log.info("config version %s: first version, %d entries (content %s)", backup_id, len(entries), digest[:12])
    else:
        log.info("config version %s: %s since %s (content %s)", backup_id, changes.summary(), previous.backup_id,
                 digest[:12])
    for what in ("added", "removed", "changed"):
        for path in getattr(changes, what):
            log.info("  %s: %s", what, path)
    if diff:
        log.info("diff of the text files (secret values masked):\n%s", diff)
    return ConfigBackupResult(manifest, True, changes, diff)


def restore_config_version(folder: Path, manifest: BackupManifest, target: Path, *,
                           path: str | Path | None = None) -> ExtractReport:
    """Restore a config version (its files in ``folder``) into ``target``; with ``path`` (one of
    the config paths, a folder) only that folder, its content becoming ``target``."""
    parts = archive_parts(folder, manifest)
    prefix = str(path).lstrip("/") if path is not None else None
    return safe_extract(lambda: zstd_tar_stream(parts), target, expected=manifest.details.get("entries"),
                        prefix=prefix, validate_first=True)


# --------------------------------------------------------------------------------------------
# The watch


@dataclass
class ChangeCheck:
    changed: bool
    content_hash: str
    latest_id: str | None
    reason: str
    missing: list[str] = field(default_factory=list)


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def detect_change(
    paths: Iterable[Path],
    local: LocalStore,
    *,
    exclude: Iterable[str] = (),
    now: datetime | None = None,
    resend_after: timedelta = RESEND_AFTER,
) -> ChangeCheck:
    """Has the config set changed since the newest stored version?

    Announces each content once: the hash last announced is kept in ``<local>/.config-watch.json``.
    A content announced but still not stored as a version after ``resend_after`` (the backup
    failed) is announced again.
    """
    now = now or utc_now()
    snapshot = scan_config_set(paths, exclude)
    latest = latest_version(local)
    latest_hash = latest.details.get("content_hash") if latest else None
    latest_id = latest.backup_id if latest else None
    state_path = local.root / WATCH_STATE
    state = _read_state(state_path)
    current = snapshot.content_hash
    if current == latest_hash:
        return ChangeCheck(False, current, latest_id, f"unchanged since version {latest_id}", snapshot.missing)
    announced = state.get("content_hash") == current
    if announced:
        try:
            since = now - parse_iso(state["announced_at"])
        except (KeyError, ValueError):
            since = resend_after
        if since < resend_after:
            return ChangeCheck(False, current, latest_id,
                               f"change {current[:12]} already announced at {state.get('announced_at')}; "
                               "its backup has not finished yet", snapshot.missing)
    local.root.mkdir(parents=True, exist_ok=True)
    write_durably(state_path, json.dumps({"content_hash": current, "announced_at": iso(now)}).encode())
    reason = (f"config set differs from version {latest_id}" if latest_id else "no config version stored yet")
    if announced:
        reason += f"; announced again, no version stored within {resend_after}"
    return ChangeCheck(True, current, latest_id, reason, snapshot.missing)
