"""The dump splitter: one mariadb-dump stream in, per-table zstd parts out, whatever the chunking."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import zstandard

from aiplatform_ops.backup.dump_stream import DumpFormatError, split_dump

HEADER = b"/*M!999999\\- enable the sandbox mode */ \n" + b"""-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)
--
-- Host: 127.0.0.1    Database: shop
-- ------------------------------------------------------
-- Server version\t10.11.19-MariaDB-0+deb12u1-log

/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET NAMES utf8mb4 */;
/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;
-- CHANGE MASTER TO MASTER_USE_GTID=slave_pos;

--
-- Alternately, following is the position of the binary logging from SHOW MASTER STATUS at point of backup.
-- Use this when creating a slave of the master server where the backup was made.
--

-- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000042', MASTER_LOG_POS=1983;

"""


def table(name: str, rows: list[bytes]) -> bytes:
    """A table section exactly as mariadb-dump 10.11 writes it (one row per line)."""
    out = (
        b"--\n-- Table structure for table `" + name.encode() + b"`\n--\n\n"
        b"DROP TABLE IF EXISTS `" + name.encode() + b"`;\n"
        b"CREATE TABLE `" + name.encode() + b"` (\n  `id` int(11) NOT NULL,\n  `v` text DEFAULT NULL,\n"
        b"  PRIMARY KEY (`id`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n\n"
        b"--\n-- Dumping data for table `" + name.encode() + b"`\n--\n\n"
        b"LOCK TABLES `" + name.encode() + b"` WRITE;\n"
        b"/*!40000 ALTER TABLE `" + name.encode() + b"` DISABLE KEYS */;\n"
    )
    if rows:
        out += b"INSERT INTO `" + name.encode() + b"` VALUES\n" + b",\n".join(rows) + b";\n"
    out += (
        b"/*!40000 ALTER TABLE `" + name.encode() + b"` ENABLE KEYS */;\n"
        b"UNLOCK TABLES;\n\n"
    )
    return out


# Data as mariadb-dump escapes it: a newline inside a string is the two characters backslash n,
# so the section marker text inside a value never looks like a real section marker.
TRICKY_ROWS = [
    b"(1,'plain')",
    b"(2,'a\\n--\\n-- Table structure for table `fake`\\n--\\n')",
    b"(3,'\\n--\\n-- Current Database: `evil`\\n UNLOCK TABLES; (\\n(')",
    b"(4,'-- Dump completed on 2026-01-01')",
    b"(5,'\xe6\x95\xb0\xe6\x8d\xae\xe9\x9b\x86 ''quoted'' \\\\ backslash')",
]
LOG_ROWS = [b"(%d,'step %d loss=0.%06d (warm) \\n(not a row)')" % (i, i, i) for i in range(1, 301)]

DUMP = (
    HEADER
    + b"--\n-- Current Database: `shop`\n--\n\n"
    b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;\n\n"
    b"USE `shop`;\n\n"
    + table("empty", [])
    + table("tricky", TRICKY_ROWS)
    + table("log", LOG_ROWS)
    + b"--\n-- Dumping events for database 'shop'\n--\n\n"
    b"--\n-- Dumping routines for database 'shop'\n--\n\n"
    b"--\n-- Current Database: `other db`\n--\n\n"
    b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `other db`;\n\nUSE `other db`;\n\n"
    + table("t", [b"(1,'x')", b"(2,'y')"])
    + b"--\n-- Dumping events for database 'other db'\n--\n\n"
    b"--\n-- Dumping routines for database 'other db'\n--\n\n"
    b"-- The deferred gtid setting for slave corresponding to the master-data CHANGE-MASTER follows\n\n"
    b"-- SET GLOBAL gtid_slave_pos='0-1-9';\n"
    b"/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;\n\n"
    b"-- Dump completed on 2026-11-28  2:37:13\n"
)

EXPECTED = [
    # (section, database, table, rows)
    ("preamble", None, None, 0),
    ("serial", "shop", None, 0),
    ("table", "shop", "empty", 0),
    ("table", "shop", "tricky", len(TRICKY_ROWS)),
    ("table", "shop", "log", len(LOG_ROWS)),
    ("serial", "shop", None, 0),
    ("serial", "other db", None, 0),
    ("table", "other db", "t", 2),
    ("serial", "other db", None, 0),
]


def chunked(data: bytes, size: int):
    for start in range(0, len(data), size):
        yield data[start:start + size]


def decompressed(path: Path) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())


def check_split(folder: Path, data: bytes, chunk_size: int) -> None:
    folder.mkdir()
    result = split_dump(chunked(data, chunk_size), folder)
    got = [(p.section, p.database, p.table, p.rows) for p in result.parts]
    assert got == EXPECTED, f"chunk size {chunk_size}"
    # Lossless: the parts, decompressed and joined in order, are the dump byte for byte.
    contents = [decompressed(folder / p.name) for p in result.parts]
    assert b"".join(contents) == data, f"chunk size {chunk_size}"
    for part, content in zip(result.parts, contents, strict=True):
        stored = (folder / part.name).read_bytes()
        assert part.size == len(stored) and part.sha256 == hashlib.sha256(stored).hexdigest()
        assert part.raw_bytes == len(content)
        if part.section == "table":
            assert content.startswith(b"\n--\n-- Table structure for table `" + part.table.encode() + b"`\n")
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in result.parts)
    assert [p.opens_database for p in result.parts] == [False, True, False, False, False, False, True, False, False]
    assert (result.binlog_file, result.binlog_position, result.gtid) == ("binlog.000042", 1983, "0-1-9")
    assert result.raw_bytes == len(data)


@pytest.mark.parametrize("chunk_size", [*range(1, 65), 1 << 20])
def test_every_chunking_gives_the_same_parts_rows_and_bytes(tmp_path: Path, chunk_size: int) -> None:
    check_split(tmp_path / "parts", DUMP, chunk_size)


def test_a_file_like_stream_is_read_in_bounded_chunks(tmp_path: Path) -> None:
    import io

    (tmp_path / "parts").mkdir()
    result = split_dump(io.BytesIO(DUMP), tmp_path / "parts", chunk_size=7)
    assert [(p.section, p.database, p.table, p.rows) for p in result.parts] == EXPECTED


@pytest.mark.parametrize("cut", [
    len(DUMP) - len(b"-- Dump completed on 2026-11-28  2:37:13\n"),  # trailer lost
    DUMP.index(b"(150,"),  # in the middle of a table's data
    DUMP.index(b"UNLOCK TABLES;") + 3,  # inside a section's end
    len(HEADER) // 2,  # in the header
])
@pytest.mark.parametrize("chunk_size", [1, 13, 1 << 20])
def test_a_stream_cut_short_raises(tmp_path: Path, cut: int, chunk_size: int) -> None:
    (tmp_path / "parts").mkdir()
    with pytest.raises(DumpFormatError, match="cut short"):
        split_dump(chunked(DUMP[:cut], chunk_size), tmp_path / "parts")


def test_the_completion_line_must_end_the_stream(tmp_path: Path) -> None:
    """'-- Dump completed' followed by more output is not a complete dump either."""
    (tmp_path / "parts").mkdir()
    with pytest.raises(DumpFormatError):
        split_dump([DUMP + table("late", [b"(1,'x')"])], tmp_path / "parts")


def test_a_completion_line_inside_data_does_not_count(tmp_path: Path) -> None:
    """A dump cut right after a row whose text reads like the completion line is still cut short."""
    cut = DUMP.index(b"(4,'-- Dump completed") + len(b"(4,'-- Dump completed on 2026-01-01')")
    (tmp_path / "parts").mkdir()
    with pytest.raises(DumpFormatError):
        split_dump([DUMP[:cut] + b"\n"], tmp_path / "parts")
