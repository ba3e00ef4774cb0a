"""Database restore primitives: load a full backup, then replay binary logs to a point in time.

The full backup's serial parts (databases, views, routines) load in dump order; the table parts
between them load in parallel, one ``mariadb`` client each, as myloader does. A large table is
itself loaded by several clients: its structure first, then its ``INSERT`` statements dealt out
in batches (rows never hold a raw newline in a dump, so statements end at ``;\n`` before the next
``INSERT INTO``), then its triggers. The binary logs of the whole range are replayed through one
``mariadb-binlog ... | mariadb`` invocation, because a temporary table or a transaction can span
files; ``--start-position`` applies to the first file.

A rehearsal into a scratch database may skip the binary log (``sql_log_bin=0``) when the user may
set it: a scratch copy has no business in the chain the next backup archives, nor on replicas.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aiplatform_ops.backup.compress import CHUNK, open_decompressed
from aiplatform_ops.backup.mysql_target import MySQLTarget, client_argv, defaults_file
from aiplatform_ops.storage.manifest import BackupManifest, FileEntry

log = logging.getLogger(__name__)

MARIADB_OPTIONS = ("--binary-mode", "--max-allowed-packet=1G", "--batch")
NO_BINLOG = "SET SESSION sql_log_bin=0"
SPLIT_MIN_BYTES = 32 << 20  # tables larger than this (uncompressed) are loaded by several clients
BATCH_BYTES = 8 << 20
STATEMENT_START = b"\nINSERT INTO "
LOCK_LINE = re.compile(rb"^LOCK TABLES [^\n]*WRITE;\n", re.M)
UNLOCK_LINE = re.compile(rb"^UNLOCK TABLES;\n", re.M)


class RestoreError(RuntimeError):
    """A restore step failed; the message says which and why."""


def quote_name(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def check_identifier(name: str, what: str = "database name") -> str:
    """A plain MySQL identifier (letters, digits, ``_`` and ``$``; at most 64): safe to quote anywhere."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_$]{1,64}", name) or name.isdigit():
        raise RestoreError(f"{what} {name!r} is not a plain identifier (letters, digits, _ and $; at most 64)")
    return name


def database_exists(target: MySQLTarget, name: str) -> bool:
    rows = target.query("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = %s", (name,))
    return bool(rows[0][0])


def drop_database(target: MySQLTarget, name: str) -> None:
    target.query(f"DROP DATABASE IF EXISTS {quote_name(check_identifier(name))}")


def table_row_counts(target: MySQLTarget, name: str) -> dict[str, int]:
    """``{"table": rows}`` of every base table, counted exactly."""
    tables = [r[0] for r in target.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE' "
        "ORDER BY table_name", (name,))]
    return {t: int(target.query(f"SELECT COUNT(*) FROM {quote_name(name)}.{quote_name(t)}")[0][0]) for t in tables}


def may_skip_binlog(target: MySQLTarget) -> bool:
    """Whether this user may turn the binary log off for its session (SUPER or BINLOG ADMIN)."""
    conn = target.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(NO_BINLOG)
        return True
    except Exception:  # noqa: BLE001 - any refusal means no
        return False
    finally:
        conn.close()


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


def _client_options(init_command: str | None) -> tuple[str, ...]:
    return (*MARIADB_OPTIONS, f"--init-command={init_command}") if init_command else MARIADB_OPTIONS


def _run_client(target: MySQLTarget, chunks: Iterator[bytes], what: str, init_command: str | None = None) -> None:
    with defaults_file(target) as cnf, tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(client_argv("mariadb", cnf, *_client_options(init_command)), stdin=subprocess.PIPE,
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
    split_tables: int = 0


class _Worker:
    """One ``mariadb`` client fed from a queue by its own thread (pipe writes release the GIL)."""

    def __init__(self, target: MySQLTarget, head: bytes, what: str, init_command: str | None) -> None:
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(target, head, what, init_command), daemon=True)
        self.thread.start()

    def _chunks(self, head: bytes) -> Iterator[bytes]:
        yield head
        while (item := self.queue.get()) is not None:
            yield item

    def _run(self, target: MySQLTarget, head: bytes, what: str, init_command: str | None) -> None:
        try:
            _run_client(target, self._chunks(head), what, init_command)
        except BaseException as exc:  # noqa: BLE001 - handed to the feeding thread
            self.error = exc
            while self.queue.get() is not None:  # drain so the feeder never blocks
                pass

    def put(self, item: bytes | None) -> None:
        if self.error is not None and item is not None:
            raise self.error
        self.queue.put(item)

    def join(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


def _load_table_split(
    target: MySQLTarget, folder: Path, entry: FileEntry, preamble: bytes, database_map: dict[str, str],
    clients: int, init_command: str | None,
) -> None:
    """Structure on one client, the ``INSERT`` statements in batches over ``clients``, then the rest."""
    database = entry.meta["database"]
    use = f"\nUSE {quote_name(database_map.get(database, database))};\n".encode()
    with open_decompressed(folder / entry.name) as stream:
        head, buffer = _read_until_data(stream)
        _run_client(target, iter([preamble, use, LOCK_LINE.sub(b"", head)]), f"{entry.name} (structure)", init_command)
        workers = [_Worker(target, preamble + use, f"{entry.name} (rows, client {i + 1})", init_command)
                   for i in range(clients)]
        turn, batch, tail = 0, [], b""
        try:
            while True:
                chunk = stream.read(CHUNK)
                buffer += chunk
                cut = buffer.rfind(b";" + STATEMENT_START) if chunk else -1
                if chunk and cut < 0:
                    continue
                if not chunk:  # end of the part: only the last statement is left, then the trailer
                    end = buffer.find(b";\n")  # rows hold no raw newline: the first ";\n" ends it
                    if end < 0:
                        raise RestoreError(f"{entry.name}: the last INSERT statement is cut short")
                    cut, tail = end, buffer[end + 2:]
                batch.append(buffer[:cut + 2])
                buffer = buffer[cut + 2:]
                if sum(map(len, batch)) >= BATCH_BYTES or not chunk:
                    workers[turn % clients].put(b"".join(batch))
                    turn, batch = turn + 1, []
                if not chunk:
                    break
        finally:
            for worker in workers:
                worker.put(None)
            for worker in workers:
                worker.join()
    rest = UNLOCK_LINE.sub(b"", tail)
    if rest.strip():
        _run_client(target, iter([preamble, use, rest]), f"{entry.name} (after the rows)", init_command)


def _read_until_data(stream: BinaryIO) -> tuple[bytes, bytes]:
    """Everything before the first ``INSERT INTO`` of a table part, and the data read after it."""
    buffer = b""
    while True:
        chunk = stream.read(CHUNK)
        buffer += chunk
        at = buffer.find(STATEMENT_START)
        if at >= 0:
            return buffer[:at + 1], buffer[at + 1:]
        if not chunk:
            raise RestoreError("a table part meant for a split load holds no INSERT statement")


def load_full_backup(
    target: MySQLTarget, folder: Path, manifest: BackupManifest, *,
    database_map: dict[str, str] | None = None, threads: int = 2, skip_binlog: bool = False,
    split_min_bytes: int = SPLIT_MIN_BYTES,
) -> LoadReport:
    """Load a verified full backup from ``folder``; ``database_map`` renames databases (a rehearsal).

    Tables load ``threads`` at a time; a table of more than ``split_min_bytes`` of SQL is loaded by
    ``threads`` clients at once. ``skip_binlog`` keeps the load out of the binary log.
    """
    if manifest.kind != "database" or manifest.type != "full":
        raise RestoreError(f"{manifest.backup_id} is a {manifest.type} {manifest.kind} backup, not a full database backup")
    database_map = database_map or {}
    init_command = NO_BINLOG if skip_binlog else None
    threads = max(threads, 1)
    preamble_entries = [f for f in manifest.files if f.meta.get("section") == "preamble"]
    preamble = b""
    for entry in preamble_entries:
        with open_decompressed(folder / entry.name) as stream:
            preamble += stream.read()
    report = LoadReport()
    batch: list[FileEntry] = []

    def load(entry: FileEntry) -> None:
        _run_client(target, _part_stream(folder, entry, preamble, database_map), entry.name, init_command)

    def flush_batch(pool: ThreadPoolExecutor) -> None:
        large = [e for e in batch if threads > 1 and int(e.meta.get("raw_bytes", 0)) > split_min_bytes]
        small = [e for e in batch if e not in large]
        futures = [pool.submit(load, e) for e in sorted(small, key=lambda e: -int(e.meta.get("raw_bytes", 0)))]
        for entry in large:
            _load_table_split(target, folder, entry, preamble, database_map, threads, init_command)
        for future in futures:
            future.result()
        report.tables += len(batch)
        report.split_tables += len(large)
        batch.clear()

    with ThreadPoolExecutor(max_workers=threads) as pool:
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
    log.info("loaded full backup %s: %d parts, %d tables (%d split over %d clients), %d bytes of SQL",
             manifest.backup_id, report.parts, report.tables, report.split_tables, threads, report.raw_bytes)
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
    stop_position: int | None = None, skip_binlog: bool = False,
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
        # The chain's first log is stored from the full backup's position on, so its GTID state
        # does not start where the server's did; continuity is checked by the chain's manifests.
        args.append("--skip-gtid-strict-mode")
        if stop_datetime:
            args.append(f"--stop-datetime={stop_datetime}")
        if stop_position:
            args.append(f"--stop-position={stop_position}")
        env = {**os.environ, "TZ": "UTC"}
        with defaults_file(target) as cnf, tempfile.TemporaryFile() as err1, tempfile.TemporaryFile() as err2:
            reader = subprocess.Popen(["mariadb-binlog", "--no-defaults", *args, *paths], stdout=subprocess.PIPE,
                                      stderr=err1, env=env)
            loader = subprocess.Popen(client_argv("mariadb", cnf, *_client_options(NO_BINLOG if skip_binlog else None)),
                                      stdin=reader.stdout,
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
