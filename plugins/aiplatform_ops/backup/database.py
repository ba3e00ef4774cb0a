"""Nightly database backups (manual §2.1.1): a full dump starts a chain, binary logs extend it.

A chain is one full backup (a consistent ``mariadb-dump`` split per table) followed by
incrementals, each holding the closed binary logs written since the previous backup ended. A
restore loads the full dump and replays the chain's binary logs up to any point in time.

Every backup is written into a hidden staging folder and appears, manifest last, by one rename:
a run killed at any moment leaves nothing that looks like a backup, and the next run cleans up.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import queue
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import zstandard

from aiplatform_ops.backup.binlog import (
    BackupError,
    BinlogCoordinate,
    BinlogGapError,
    binary_logs,
    binlog_enabled,
    fetch_binlogs,
    flush_binary_logs,
    gtid_at,
    logs_to_archive,
)
from aiplatform_ops.backup.compress import compress_file
from aiplatform_ops.backup.dump_stream import DumpFormatError, split_dump
from aiplatform_ops.backup.mysql_target import MySQLTarget, client_argv, defaults_file
from aiplatform_ops.config import DatabaseBackupPolicy
from aiplatform_ops.storage.local import LocalStore, write_durably
from aiplatform_ops.storage.manifest import BackupManifest, FileEntry, iso, utc_now
from aiplatform_ops.storage.retention import chains

log = logging.getLogger(__name__)

CHAIN_BROKEN = ".chain-broken.json"
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
DUMP_OPTIONS = (
    "--single-transaction",
    "--master-data=2",
    "--gtid",
    "--routines",
    "--events",
    "--triggers",
    "--quick",
    "--max-allowed-packet=1G",
)


@dataclass(frozen=True)
class DatabaseBackupSettings:
    """The parts of the policy a database backup needs."""

    databases: tuple[str, ...]
    compression_level: int = 3
    full_backup_weekday: int | None = None
    max_chain_length: int = 7

    @classmethod
    def from_policy(cls, policy: DatabaseBackupPolicy) -> DatabaseBackupSettings:
        return cls(policy.databases, policy.compression_level, policy.full_backup_weekday, policy.max_chain_length)


@functools.cache
def tool_versions() -> dict[str, str]:
    """Versions of the tools that wrote a backup, recorded in its manifest."""
    versions = {"zstd": "libzstd " + ".".join(map(str, zstandard.ZSTD_VERSION))}
    for tool in ("mariadb-dump", "mariadb-binlog"):
        try:
            out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False).stdout
            versions[tool] = out.strip().splitlines()[0] if out.strip() else "unknown"
        except FileNotFoundError:
            versions[tool] = "not installed"
    return versions


def server_facts(target: MySQLTarget) -> dict[str, object]:
    version, hostname, server_id = target.query("SELECT VERSION(), @@hostname, @@server_id")[0]
    return {"version": version, "hostname": hostname, "server_id": int(server_id)}


# --- chain state -------------------------------------------------------------------------------

def newest_chain(store: LocalStore) -> list[BackupManifest]:
    """The newest chain of database backups in ``store`` (full first), or ``[]``."""
    grouped = chains(m for m in store.list_backups() if m.kind == "database")
    if not grouped:
        return []
    members = max(grouped.values(), key=lambda c: (c[-1].started_at, c[-1].backup_id))
    return members if members[0].type == "full" else []


def mark_chain_broken(store: LocalStore, chain_id: str | None, reason: str) -> None:
    """Remember that the chain cannot be extended, so the next run starts a new one."""
    store.root.mkdir(parents=True, exist_ok=True)
    write_durably(store.root / CHAIN_BROKEN, json.dumps({"chain_id": chain_id, "reason": reason}).encode())


def chain_broken(store: LocalStore) -> dict | None:
    path = store.root / CHAIN_BROKEN
    return json.loads(path.read_text()) if path.exists() else None


def choose_backup_type(
    chain: list[BackupManifest], broken: dict | None, binlog_on: bool, settings: DatabaseBackupSettings, now: datetime
) -> tuple[str, str]:
    """Full or incremental tonight, and why (the reason goes into the log and the manifest)."""
    if not binlog_on:
        return "full", "the server writes no binary logs, so only full backups are possible"
    if not chain:
        return "full", "no complete chain exists yet"
    if broken:
        return "full", f"the previous chain is broken: {broken['reason']}"
    head = chain[0]
    if not head.details.get("binlog", {}).get("end"):
        return "full", f"chain {head.backup_id} has no binary log position to continue from"
    if tuple(head.details.get("databases", ())) != settings.databases:
        return "full", f"the policy's databases changed from {head.details.get('databases')} to {list(settings.databases)}"
    if len(chain) - 1 >= settings.max_chain_length:
        return "full", f"chain {head.backup_id} already has {len(chain) - 1} incrementals (max_chain_length)"
    weekday = settings.full_backup_weekday
    if weekday is not None and now.weekday() == weekday and head.started.date() != now.date():
        return "full", "today is the policy's full-backup weekday"
    return "incremental", f"extends chain {head.backup_id} ({len(chain) - 1} incrementals so far)"


# --- full backup ---------------------------------------------------------------------------------

def read_ahead(stream: BinaryIO, chunk_size: int = 4 << 20, depth: int = 8) -> Iterator[bytes]:
    """Read a pipe in a thread while the caller compresses, so the dump never waits on us.

    At most ``depth`` chunks wait in memory (32 MB by default), whatever the database size.
    """
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def pump() -> None:
        try:
            while not stop.is_set():
                chunk = stream.read(chunk_size)
                if not chunk:
                    break
                chunks.put(chunk)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            chunks.put(exc)
        finally:
            chunks.put(None)

    reader = threading.Thread(target=pump, name="dump-reader", daemon=True)
    reader.start()
    try:
        while (item := chunks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while reader.is_alive():
            try:
                chunks.get_nowait()
            except queue.Empty:
                reader.join(0.05)


BINLOG_DUMP_OPTIONS = ("--master-data=2", "--gtid")  # mariadb-dump fails with these when log_bin is off


def _dump(target: MySQLTarget, databases: tuple[str, ...], folder: Path, level: int, binlog_on: bool = True):
    """Run ``mariadb-dump`` into the splitter; fails if the dump fails, even part-way."""
    options = [o for o in DUMP_OPTIONS if binlog_on or o not in BINLOG_DUMP_OPTIONS]
    format_error: DumpFormatError | None = None
    with defaults_file(target) as cnf, tempfile.TemporaryFile() as stderr:
        argv = client_argv("mariadb-dump", cnf, *options, "--databases", *databases)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr)
        with contextlib.suppress(OSError):  # a bigger pipe: fewer wake-ups for both sides
            fcntl.fcntl(proc.stdout.fileno(), F_SETPIPE_SZ, 1 << 20)  # type: ignore[union-attr]
        try:
            result = split_dump(read_ahead(proc.stdout), folder, level)  # type: ignore[arg-type]
        except DumpFormatError as exc:
            format_error = exc  # read to EOF but incomplete: a failed dump's own error says more
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()  # type: ignore[union-attr]
        status = proc.wait()
        stderr.seek(0)
        errors = stderr.read().decode(errors="replace").strip()
    if status != 0:
        raise BackupError(f"mariadb-dump failed with status {status}: {errors[-2000:]}")
    if format_error is not None:
        raise format_error
    return result


def take_full_backup(
    target: MySQLTarget, store: LocalStore, settings: DatabaseBackupSettings, *, reason: str = "", now: datetime | None = None
) -> BackupManifest:
    """One consistent dump of the policy's databases, split per table, as a new chain."""
    started = now or utc_now()
    backup_id = store.new_backup_id(started, "full")
    staging = store.staging_dir(backup_id)
    binlog_on = binlog_enabled(target)
    server = server_facts(target)
    try:
        dump = _dump(target, settings.databases, staging, settings.compression_level, binlog_on)
    except DumpFormatError as exc:
        raise BackupError(f"mariadb-dump output is incomplete: {exc}") from None
    end = None
    if binlog_on:
        if dump.binlog_file is None or dump.binlog_position is None:
            raise BackupError("binary logging is on but the dump recorded no binary log position")
        end = BinlogCoordinate(dump.binlog_file, dump.binlog_position)
    tables = {f"{p.database}.{p.table}": p.rows for p in dump.parts if p.section == "table"}
    files = [
        FileEntry(p.name, p.size, p.sha256, {"section": p.section, "database": p.database, "table": p.table,
                                             "rows": p.rows, "raw_bytes": p.raw_bytes,
                                             "opens_database": p.opens_database})
        for p in dump.parts
    ]
    manifest = BackupManifest(
        backup_id=backup_id, kind="database", type="full", started_at=iso(started), finished_at=iso(utc_now()),
        files=files, parent_id=None, chain_id=backup_id,
        details={
            "databases": list(settings.databases),
            "reason": reason,
            "server": server,
            "tools": tool_versions(),
            "binlog": {
                "enabled": binlog_on,
                "start": end.as_dict() if end else None,
                "end": end.as_dict() if end else None,
                "gtid_start": dump.gtid,
                "gtid_end": dump.gtid,
            },
            "pitr": binlog_on,
            "tables": tables,
            "raw_bytes": dump.raw_bytes,
            "compression": {"format": "zstd", "level": settings.compression_level},
        },
    )
    store.commit(staging, manifest)
    (store.root / CHAIN_BROKEN).unlink(missing_ok=True)
    log.info("full backup %s: %d tables, %d bytes stored (%d raw), binlog %s", backup_id, len(tables),
             manifest.size, dump.raw_bytes, end)
    return manifest


# --- incremental backup --------------------------------------------------------------------------

def take_incremental_backup(
    target: MySQLTarget, store: LocalStore, settings: DatabaseBackupSettings, chain: list[BackupManifest],
    *, reason: str = "", now: datetime | None = None,
) -> BackupManifest:
    """The closed binary logs since the chain's end, fetched from the server as a client."""
    started = now or utc_now()
    parent = chain[-1]
    since = BinlogCoordinate.from_dict(parent.details["binlog"]["end"])
    flush_binary_logs(target)
    logs = binary_logs(target)
    wanted = logs_to_archive(since, logs)
    backup_id = store.new_backup_id(started, "incr")
    staging = store.staging_dir(backup_id)
    raw_dir = staging / ".raw"
    first_from = since.position if wanted and wanted[0][0] == since.file else None
    fetched = fetch_binlogs(target, [name for name, _ in wanted], raw_dir, first_from)
    files = []
    for (name, size), path in zip(wanted, fetched, strict=True):
        trimmed_from = first_from if name == since.file else None
        if trimmed_from is None and path.stat().st_size != size:
            raise BackupError(f"binary log {name}: fetched {path.stat().st_size} bytes, the server lists {size}")
        packed = compress_file(path, staging / f"{name}.zst", settings.compression_level)
        path.unlink()
        files.append(FileEntry(f"{name}.zst", packed.size, packed.sha256,
                               {"binlog": name, "raw_bytes": packed.raw_bytes, "server_size": size,
                                "fetched_from_position": trimmed_from, "start_position": None}))
    raw_dir.rmdir()
    end = BinlogCoordinate(wanted[-1][0], wanted[-1][1]) if wanted else since
    manifest = BackupManifest(
        backup_id=backup_id, kind="database", type="incremental", started_at=iso(started),
        finished_at=iso(utc_now()), files=files, parent_id=parent.backup_id, chain_id=chain[0].backup_id,
        details={
            "databases": list(settings.databases),
            "reason": reason,
            "server": server_facts(target),
            "tools": tool_versions(),
            "binlog": {
                "enabled": True,
                "start": since.as_dict(),
                "end": end.as_dict(),
                "gtid_start": parent.details["binlog"].get("gtid_end"),
                "gtid_end": gtid_at(target, end),
            },
            "pitr": True,
            "chain_position": len(chain),
            "compression": {"format": "zstd", "level": settings.compression_level},
        },
    )
    store.commit(staging, manifest)
    log.info("incremental backup %s on chain %s: %d binary logs (%s), %d bytes stored, end %s", backup_id,
             chain[0].backup_id, len(files), ", ".join(n for n, _ in wanted) or "none new", manifest.size, end)
    return manifest


# --- the jobs the DAGs run ----------------------------------------------------------------------

def _extend_chain(target: MySQLTarget, store: LocalStore, settings: DatabaseBackupSettings,
                  chain: list[BackupManifest], reason: str, now: datetime | None) -> BackupManifest:
    try:
        return take_incremental_backup(target, store, settings, chain, reason=reason, now=now)
    except BinlogGapError as exc:
        mark_chain_broken(store, chain[0].backup_id, str(exc))
        raise BinlogGapError(
            f"chain {chain[0].backup_id} cannot be extended: {exc}. Point-in-time recovery after "
            f"{chain[-1].finished_at} is not possible from this chain; the next run takes a full backup."
        ) from None


def take_database_backup(
    target: MySQLTarget, store: LocalStore, settings: DatabaseBackupSettings, now: datetime | None = None
) -> BackupManifest:
    """The nightly job: clean leftovers, choose full or incremental, take it."""
    with store.lock("database backup"):
        store.clean_leftovers()
        now = now or utc_now()
        binlog_on = binlog_enabled(target)
        if not binlog_on:
            log.warning("binary logging is off on %s:%s: taking a full backup; point-in-time recovery is "
                        "impossible until log_bin is enabled", target.host, target.port)
        chain = newest_chain(store)
        kind, reason = choose_backup_type(chain, chain_broken(store), binlog_on, settings, now)
        log.info("database backup: %s, because %s", kind, reason)
        if kind == "full":
            return take_full_backup(target, store, settings, reason=reason, now=now)
        return _extend_chain(target, store, settings, chain, reason, now)


def archive_binary_logs(
    target: MySQLTarget, store: LocalStore, settings: DatabaseBackupSettings, now: datetime | None = None
) -> BackupManifest | None:
    """Between nightly runs: ship the closed binary logs into the current chain (same mechanism).

    Returns ``None`` (and says why) when there is no chain to extend: the nightly run starts one.
    """
    with store.lock("binary log archive"):
        store.clean_leftovers()
        if not binlog_enabled(target):
            log.warning("binary logging is off: nothing to archive")
            return None
        chain = newest_chain(store)
        broken = chain_broken(store)
        if not chain or broken or not chain[0].details.get("binlog", {}).get("end"):
            log.warning("no chain to extend%s; the nightly backup will start one",
                        f" (broken: {broken['reason']})" if broken else "")
            return None
        return _extend_chain(target, store, settings, chain, "binary log archive interval", now)
