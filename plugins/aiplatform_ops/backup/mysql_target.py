"""How the backup tools reach the platform's MySQL/MariaDB without exposing the password.

The password goes to ``mariadb-dump``, ``mariadb-binlog`` and ``mariadb`` through a 0600
``--defaults-extra-file`` deleted right after the call: never on a command line, where ``ps``
shows it to every user of the host.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class MySQLTarget:
    """Where a database server is and who we log in as. ``password`` never leaves this object
    except into a defaults file or the client library's connect call."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str | None = None

    def connect(self, database: str | None = None, **kwargs: Any) -> Any:
        """A MySQLdb (mysqlclient) connection, autocommit on."""
        import MySQLdb

        conn = MySQLdb.connect(
            host=self.host, port=self.port, user=self.user, password=self.password,
            database=database or "", charset="utf8mb4", autocommit=True, **kwargs,
        )
        return conn

    def query(self, sql: str, args: tuple | None = None, database: str | None = None) -> list[tuple]:
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        finally:
            conn.close()


def _quote_option(value: str) -> str:
    """Quote a value for a MySQL option file (backslash and double quote escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def secrets_dir() -> Path:
    """A folder only this user can enter, for the short-lived defaults files."""
    path = Path(tempfile.gettempdir()) / f"aiplatform-ops-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    if path.is_symlink() or path.stat().st_uid != os.getuid():
        raise PermissionError(f"{path} is not a private folder of this user; refusing to write secrets there")
    os.chmod(path, 0o700)
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_defaults_files(folder: Path) -> list[Path]:
    """Delete defaults files whose process died without cleaning up (a SIGKILL, an OOM kill)."""
    removed = []
    for path in folder.glob("aiplatform-ops-*.cnf"):
        try:
            pid = int(path.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if not _pid_alive(pid):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


@contextlib.contextmanager
def defaults_file(target: MySQLTarget) -> Generator[Path, None, None]:
    """A private ``[client]`` option file for one tool invocation, removed afterwards.

    It lives in a 0700 folder of this user; files left by a killed process are swept the next
    time any backup step starts.
    """
    folder = secrets_dir()
    sweep_defaults_files(folder)
    fd, name = tempfile.mkstemp(prefix=f"aiplatform-ops-{os.getpid()}-", suffix=".cnf", dir=folder)
    try:
        os.fchmod(fd, 0o600)
        body = (
            "[client]\n"
            f"host={_quote_option(target.host)}\n"
            f"port={target.port}\n"
            f"user={_quote_option(target.user)}\n"
            f"password={_quote_option(target.password)}\n"
            "protocol=TCP\n"
        )
        os.write(fd, body.encode())
        os.close(fd)
        fd = -1
        yield Path(name)
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def client_argv(tool: str, defaults: Path, *args: str) -> list[str]:
    """argv for a MariaDB/MySQL client tool; ``--defaults-extra-file`` must come first."""
    return [tool, f"--defaults-extra-file={defaults}", *args]
