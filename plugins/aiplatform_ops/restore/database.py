"""Database restore primitives: load a full backup, then replay binary logs to a point in time.

The full backup's serial parts (databases, views, routines) load in dump order; the table parts
between them load in parallel, one ``mariadb`` client each, as myloader does. The binary logs of
the whole range are replayed through one ``mariadb-binlog ... | mariadb`` invocation, because a
temporary table or a transaction can span files; ``--start-position`` applies to the first file.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aiplatform_ops.backup.compress import CHUNK, open_decompressed
from aiplatform_ops.backup.mysql_target import MySQLTarget, client_argv, defaults_file
from aiplatform_ops.storage.manifest import BackupManifest, FileEntry

log = logging.getLogger(__name__)

MARIADB_OPTIONS = ("--binary-mode", "--max-allowed-packet=1G", "--batch")


class RestoreError(RuntimeError):
    """A restore step failed; the message says which and why."""


def quote_name(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _rename_database_statements(sql: bytes, database_map: dict[str, str]) -> bytes:
    """Point ``CREATE DATABASE``/``USE`` lines of a serial part at the restore target's names."""
    for source, target in database_map.items():
        old, new = quote_name(source).encode(), quote_name(target).encode()
        pattern = re.compile(rb"^((?:CREATE DATABASE [^\n]*?|USE |-- Current Database: ))" + re.escape(old), re.M)
        sql = pattern.sub(lambda m, new=new: m.group(1) + new, sql)
    return sql


def _part_stream(folder: Path, entry: FileEntry, preamble: bytes, database_map: dict[str, str]) -> Iterator[bytes]:
    """The SQL one client gets for one part: session settings, ``USE``, the part's statements."""
    yield preamble
    database = entry.meta.get("database")
    if database and not entry.meta.get("opens_database"):
        yield f"\nUSE {quote_name(database_map.get(database, database))};\n".encode()
    with open_decompressed(folder / entry.name) as stream:
        if entry.meta.get("section") == "serial" and database_map:
            yield _rename_database_statements(stream.read(), database_map)
            return
        while chunk := stream.read(CHUNK):
            yield chunk


def _run_client(target: MySQLTarget, chunks: Iterator[bytes], what: str) -> None:
    with defaults_file(target) as cnf, tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(client_argv("mariadb", cnf, *MARIADB_OPTIONS), stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            for chunk in chunks:
                proc.stdin.write(chunk)  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        status = proc.wait()
        stderr.seek(0)
        errors = stderr.read().decode(errors="replace").strip()
    if status != 0:
        raise RestoreError(f"loading {what} failed (mariadb status {status}): {errors[-2000:]}")


@dataclass
class LoadReport:
    parts: int = 0
    tables: int = 0
    raw_bytes: int = 0


def load_full_backup(
    target: MySQLTarget, folder: Path, manifest: BackupManifest, *,
    database_map: dict[str, str] | None = None, threads: int = 2,
) -> LoadReport:
    """Load a verified full backup from ``folder``; ``database_map`` renames databases (a rehearsal)."""
    if manifest.kind != "database" or manifest.type != "full":
        raise RestoreError(f"{manifest.backup_id} is a {manifest.type} {manifest.kind} backup, not a full database backup")
    database_map = database_map or {}
    preamble_entries = [f for f in manifest.files if f.meta.get("section") == "preamble"]
    preamble = b""
    for entry in preamble_entries:
        with open_decompressed(folder / entry.name) as stream:
            preamble += stream.read()
    report = LoadReport()
    batch: list[FileEntry] = []

    def load(entry: FileEntry) -> None:
        _run_client(target, _part_stream(folder, entry, preamble, database_map), entry.name)

    def flush_batch(pool: ThreadPoolExecutor) -> None:
        for future in [pool.submit(load, e) for e in batch]:
            future.result()
        report.tables += len(batch)
        batch.clear()

    with ThreadPoolExecutor(max_workers=max(threads, 1)) as pool:
        for entry in manifest.files:
            section = entry.meta.get("section")
            report.raw_bytes += int(entry.meta.get("raw_bytes", 0))
            if section == "preamble":
                continue
            report.parts += 1
            if section == "table":
                batch.append(entry)
                continue
            flush_batch(pool)
            load(entry)
        flush_batch(pool)
    log.info("loaded full backup %s: %d parts, %d tables, %d bytes of SQL", manifest.backup_id,
             report.parts, report.tables, report.raw_bytes)
    return report


@dataclass(frozen=True)
class BinlogSegment:
    """One stored binary log and where its replay starts (only the chain's first file has one)."""

    path: Path
    name: str
    start_position: int | None = None


def binlog_segments(chain: list[tuple[Path, BackupManifest]]) -> list[BinlogSegment]:
    """The binary logs of a chain's incrementals in replay order, each at most once."""
    segments: dict[str, BinlogSegment] = {}
    for folder, manifest in chain:
        if manifest.type != "incremental":
            continue
        for entry in manifest.files:
            name = entry.meta["binlog"]
            if name not in segments:
                segments[name] = BinlogSegment(folder / entry.name, name, entry.meta.get("start_position"))
    return list(segments.values())


def replay_binlogs(
    target: MySQLTarget, segments: list[BinlogSegment], *, databases: list[str],
    database_map: dict[str, str] | None = None, stop_datetime: str | None = None,
    stop_position: int | None = None,
) -> None:
    """Replay binary logs through one ``mariadb-binlog | mariadb`` pipe, stopping where asked.

    ``stop_datetime`` is UTC (``YYYY-MM-DD HH:MM:SS``); ``stop_position`` applies to the last file.
    Only events of ``databases`` are applied, renamed by ``database_map`` for a rehearsal.
    """
    if not segments:
        return
    database_map = database_map or {}
    if len(databases) != 1:
        raise RestoreError("binary log replay filters one database at a time; restore each database separately")
    with tempfile.TemporaryDirectory(prefix="binlog-replay-") as tmp:
        paths = []
        for segment in segments:
            plain = Path(tmp) / segment.name
            with open_decompressed(segment.path) as src, open(plain, "wb") as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
            paths.append(str(plain))
        source = databases[0]
        args = [f"--database={source}"]  # mariadb-binlog filters on the original name, then rewrites
        if source in database_map:
            args.append(f"--rewrite-db={source}->{database_map[source]}")
        if segments[0].start_position:
            args.append(f"--start-position={segments[0].start_position}")
        if stop_datetime:
            args.append(f"--stop-datetime={stop_datetime}")
        if stop_position:
            args.append(f"--stop-position={stop_position}")
        env = {**os.environ, "TZ": "UTC"}
        with defaults_file(target) as cnf, tempfile.TemporaryFile() as err1, tempfile.TemporaryFile() as err2:
            reader = subprocess.Popen(["mariadb-binlog", "--no-defaults", *args, *paths], stdout=subprocess.PIPE,
                                      stderr=err1, env=env)
            loader = subprocess.Popen(client_argv("mariadb", cnf, *MARIADB_OPTIONS), stdin=reader.stdout,
                                      stdout=subprocess.DEVNULL, stderr=err2)
            reader.stdout.close()  # type: ignore[union-attr]
            load_status, read_status = loader.wait(), reader.wait()
            err1.seek(0)
            err2.seek(0)
            read_errors, load_errors = err1.read().decode(errors="replace"), err2.read().decode(errors="replace")
    if read_status != 0:
        raise RestoreError(f"mariadb-binlog failed (status {read_status}): {read_errors.strip()[-2000:]}")
    if load_status != 0:
        raise RestoreError(f"replaying binary logs failed (mariadb status {load_status}): {load_errors.strip()[-2000:]}")
    log.info("replayed %d binary logs (%s .. %s)%s", len(segments), segments[0].name, segments[-1].name,
             f" up to {stop_datetime} UTC" if stop_datetime else "")
