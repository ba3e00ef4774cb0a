"""Split one ``mariadb-dump`` stream into per-table parts while it flows, compressing and hashing.

One consistent dump (``--single-transaction``) is the only way to get all tables at the same
point in time, but one big file can only be loaded by one ``mariadb`` client. Cutting the stream
at the dump's own section markers gives one compressed part per table (loadable in parallel, as
myloader does) without ever holding an uncompressed copy on disk or more than one chunk in memory.

Sections, in dump order: a preamble (session settings), then serial parts (CREATE DATABASE, USE,
view placeholders, events, routines, final views, trailer) and table parts (structure, data,
triggers). A restore loads serial parts in order and the table parts between two serial parts
in parallel.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from aiplatform_ops.backup.compress import CompressingWriter

SECTION = b"\n--\n-- "
DATA_TITLE = b"Dumping data for table "
DATA_END = b"\nUNLOCK TABLES;\n"
ROW = b"\n("
COMPLETED = re.compile(rb"\n-- Dump completed(?: on [^\n]*)?\n?$")
CURRENT_DB = re.compile(rb"Current Database: `((?:[^`]|``)+)`")
TABLE = re.compile(rb"Table structure for table `((?:[^`]|``)+)`")
BINLOG_COORDS = re.compile(rb"CHANGE MASTER TO MASTER_LOG_FILE='([^']+)', MASTER_LOG_POS=(\d+)")
GTID_POS = re.compile(rb"SET GLOBAL gtid_slave_pos='([^']*)'")
KEEP = len(SECTION) + 512  # a marker and its title line always fit


class DumpFormatError(RuntimeError):
    """The dump stream is not what ``mariadb-dump`` writes, or it was cut short."""


@dataclass
class DumpPart:
    """One compressed part of the dump as written to disk."""

    name: str
    section: str  # "preamble" | "serial" | "table"
    database: str | None
    table: str | None = None
    opens_database: bool = False  # starts with the dump's CREATE DATABASE / USE for its database
    rows: int = 0
    size: int = 0
    sha256: str = ""
    raw_bytes: int = 0


@dataclass
class DumpResult:
    parts: list[DumpPart] = field(default_factory=list)
    binlog_file: str | None = None
    binlog_position: int | None = None
    gtid: str | None = None

    @property
    def raw_bytes(self) -> int:
        return sum(p.raw_bytes for p in self.parts)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", lambda m: f"%{ord(m.group()):02x}", name)


class DumpSplitter:
    """Feed it the dump's bytes in any chunking; it writes one ``.sql.zst`` per part into ``folder``."""

    def __init__(self, folder: Path, level: int = 3) -> None:
        self.folder, self.level = folder, level
        self.result = DumpResult()
        self.buffer = b""
        self.in_data = False
        self.database: str | None = None
        self.writer: CompressingWriter | None = None
        self.part: DumpPart | None = None
        self.tail = b""
        self._open("preamble", None, None)

    def _open(self, section: str, database: str | None, table: str | None) -> None:
        self._close_part()
        index = len(self.result.parts)
        label = {"preamble": "preamble", "serial": f"{database or 'server'}-serial"}.get(section)
        if section == "table":
            label = f"{database}.{table}"
        part = DumpPart(f"{index:05d}-{_safe(label or section)}.sql.zst", section, database, table)
        self.result.parts.append(part)
        self.part = part
        self.writer = CompressingWriter(self.folder / part.name, self.level)

    def _close_part(self) -> None:
        if self.writer is not None and self.part is not None:
            self.writer.close()
            self.part.size, self.part.sha256, self.part.raw_bytes = (
                self.writer.size, self.writer.sha256, self.writer.raw_bytes)
        self.writer = None

    def _write(self, data: bytes) -> None:
        assert self.writer is not None and self.part is not None
        if self.in_data:
            self.part.rows += data.count(ROW)
        self.writer.write(data)

    def _section_start(self, title: bytes) -> None:
        """A ``--\\n-- Title`` marker begins at the start of the buffer: switch parts if needed."""
        if title.startswith(DATA_TITLE):
            return
        if title.startswith(b"Table structure for table "):
            match = TABLE.match(title)
            if not match:
                raise DumpFormatError(f"unreadable table marker: {title[:80]!r}")
            self._open("table", self.database, match.group(1).decode().replace("``", "`"))
            return
        match = CURRENT_DB.match(title)
        if self.part is not None and self.part.section == "preamble" and not match:
            return
        if match:
            self.database = match.group(1).decode().replace("``", "`")
        part = self.part
        if part is None or part.section != "serial" or (match and part.database != self.database):
            self._open("serial", self.database, None)
            assert self.part is not None
            self.part.opens_database = bool(match)

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        self.tail = (self.tail + chunk)[-4096:]
        self._drain(final=False)

    def _drain(self, final: bool) -> None:
        buf = self.buffer
        pos = 0
        while True:
            if self.in_data:
                end = buf.find(DATA_END, pos)
                if end < 0:
                    break
                self._write(buf[pos:end])
                self.in_data = False
                pos = end
                continue
            marker = buf.find(SECTION, pos)
            if marker < 0:
                break
            title_end = buf.find(b"\n", marker + len(SECTION))
            if title_end < 0:
                break
            self._write(buf[pos:marker])
            title = buf[marker + len(SECTION):title_end]
            self._section_start(title)
            self._write(buf[marker:title_end])
            self.in_data = title.startswith(DATA_TITLE)
            pos = title_end
        keep = len(DATA_END) if self.in_data else KEEP
        keep_from = len(buf) if final else max(pos, len(buf) - keep)
        if not final and keep_from > pos and buf[keep_from - 1:keep_from] == b"\n":
            keep_from -= 1  # never split a row marker between two writes (at the end, write it all)
        self._write(buf[pos:keep_from])
        self.buffer = buf[keep_from:]

    def finish(self) -> DumpResult:
        self._drain(final=True)
        self._close_part()
        if not COMPLETED.search(self.tail):
            raise DumpFormatError("the dump ended without its '-- Dump completed' line: it was cut short")
        return self.result


def split_dump(stream: BinaryIO | Iterable[bytes], folder: Path, level: int = 3, chunk_size: int = 4 << 20) -> DumpResult:
    """Split a whole dump stream into ``folder``; returns the parts with sizes, hashes and rows."""
    splitter = DumpSplitter(folder, level)
    header = b""
    if hasattr(stream, "read"):
        chunks: Iterable[bytes] = iter(lambda: stream.read(chunk_size), b"")  # type: ignore[union-attr]
    else:
        chunks = stream  # type: ignore[assignment]
    for chunk in chunks:
        if len(header) < 65536:
            header += chunk[: 65536 - len(header)]
        splitter.feed(chunk)
    result = splitter.finish()
    coords = BINLOG_COORDS.search(header)
    if coords:
        result.binlog_file, result.binlog_position = coords.group(1).decode(), int(coords.group(2))
    gtid = GTID_POS.search(splitter.tail)
    if gtid:
        result.gtid = gtid.group(1).decode()
    return result
