"""The server's binary logs: which ones an incremental backup needs, and fetching them as a client.

Binary logs are read with ``mariadb-binlog --read-from-remote-server --raw`` so the worker needs
no access to the database host's disk. Only closed logs are fetched (``FLUSH BINARY LOGS``
first), so a stored log never changes afterwards.
"""

from __future__ import annotations

import logging
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from aiplatform_ops.backup.mysql_target import MySQLTarget, client_argv, defaults_file

log = logging.getLogger(__name__)


class BinlogGapError(RuntimeError):
    """A binary log the chain needs is gone from the server: point-in-time recovery has a hole."""


class BackupError(RuntimeError):
    """A backup step failed; the message says which and why."""


@dataclass(frozen=True)
class BinlogCoordinate:
    """A position in the server's binary log stream: everything before it is covered."""

    file: str
    position: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BinlogCoordinate:
        return cls(str(data["file"]), int(data["position"]))


def log_index(name: str) -> int:
    match = re.search(r"\.(\d+)$", name)
    if not match:
        raise ValueError(f"{name!r} is not a binary log file name (expected NAME.000123)")
    return int(match.group(1))


def binlog_enabled(target: MySQLTarget) -> bool:
    rows = target.query("SELECT @@GLOBAL.log_bin")
    return bool(rows and int(rows[0][0]) == 1)


def binary_logs(target: MySQLTarget) -> list[tuple[str, int]]:
    """``SHOW BINARY LOGS``: (file, size) oldest first; the last one is the server's current log."""
    return [(str(name), int(size)) for name, size, *_ in target.query("SHOW BINARY LOGS")]


def flush_binary_logs(target: MySQLTarget) -> None:
    target.query("FLUSH BINARY LOGS")


def gtid_at(target: MySQLTarget, coordinate: BinlogCoordinate) -> str | None:
    """The GTID state at a binlog coordinate (MariaDB ``BINLOG_GTID_POS``), if the server knows it."""
    try:
        rows = target.query("SELECT BINLOG_GTID_POS(%s, %s)", (coordinate.file, coordinate.position))
    except Exception:  # noqa: BLE001 - MySQL has no BINLOG_GTID_POS; the GTID is optional there
        return None
    return rows[0][0] if rows and rows[0][0] is not None else None


def logs_to_archive(since: BinlogCoordinate, logs: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The closed logs holding events after ``since``; raises :class:`BinlogGapError` on a hole.

    ``logs`` is ``SHOW BINARY LOGS`` taken right after ``FLUSH BINARY LOGS``: its last entry is
    the new, empty current log and is never archived.
    """
    if not logs:
        raise BinlogGapError("the server lists no binary logs")
    closed = logs[:-1]
    names = {name for name, _ in logs}
    if since.file not in names:
        oldest = logs[0][0]
        raise BinlogGapError(
            f"binary log {since.file} (needed from position {since.position}) is no longer on the server; "
            f"its oldest log is {oldest}: the logs in between were purged before they were archived"
        )
    start = log_index(since.file)
    wanted = [(name, size) for name, size in closed if log_index(name) >= start]
    if wanted and wanted[0][0] == since.file and since.position >= wanted[0][1]:
        if since.position > wanted[0][1]:
            raise BinlogGapError(
                f"binary log {since.file} is {wanted[0][1]} bytes on the server but the chain reached "
                f"position {since.position}: the server's binary logs were reset"
            )
        wanted = wanted[1:]
    indexes = [log_index(name) for name, _ in wanted]
    if indexes and indexes != list(range(indexes[0], indexes[0] + len(indexes))):
        raise BinlogGapError(f"binary logs are not contiguous on the server: {[n for n, _ in wanted]}")
    return wanted


def _fetch(target: MySQLTarget, names: list[str], folder: Path, start_position: int | None) -> None:
    with defaults_file(target) as cnf:
        argv = client_argv("mariadb-binlog", cnf, "--read-from-remote-server", "--raw", f"--result-file={folder}/")
        if start_position:
            argv.append(f"--start-position={start_position}")
        result = subprocess.run([*argv, *names], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"mariadb-binlog could not fetch {', '.join(names)}: {result.stderr.strip()[-2000:]}")


def fetch_binlogs(target: MySQLTarget, names: list[str], folder: Path, first_from: int | None = None) -> list[Path]:
    """Copy closed binary logs from the server into ``folder``.

    With ``first_from``, the first log is fetched from that position on (the server prepends its
    format description), so the chain's first incremental does not store again what the full
    dump already holds. Positions inside such a trimmed file no longer match the server's.
    """
    if not names:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    if first_from:
        _fetch(target, names[:1], folder, first_from)
        names_left = names[1:]
    else:
        names_left = names
    if names_left:
        _fetch(target, names_left, folder, None)
    paths = [folder / name for name in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise BackupError(f"mariadb-binlog did not write {', '.join(missing)}")
    return paths
