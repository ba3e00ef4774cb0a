"""Full file backups (manual §2.1.2): tar → zstd → sha256 → parts, in one streaming pass.

The tree is walked in a fixed order (sorted names, depth first). Each entry becomes a POSIX
(pax) tar member with its permissions, owner, nanosecond mtime; symlinks stay links and hard
links stay hard links. The tar stream is compressed with zstd and cut into parts of a fixed size,
each hashed while it is written, so a multi-terabyte tree never needs one huge object and never
a temporary copy. Memory stays bounded: one read buffer, the compressor's window and the list of
parts.

Every archived entry is also written, in archive order, to ``contents.jsonl.zst``: path, type,
size, mtime, mode, owner and the sha256 of the bytes archived. A restore checks each file
against it, and a later run compares two listings in one pass to say what changed.

A file that changes while it is read (size or mtime differ before and after, or it was replaced)
or vanishes is reported, not fatal. A file or folder that cannot be read is listed, and the run
fails unless the policy allows unreadable files.
"""

from __future__ import annotations

import fnmatch
import grp
import hashlib
import io
import json
import logging
import os
import pwd
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from aiplatform_ops.backup.compress import CompressingWriter
from aiplatform_ops.storage.local import LocalStore
from aiplatform_ops.storage.manifest import (
    BackupManifest,
    FileEntry,
    iso,
    utc_now,
)

log = logging.getLogger(__name__)

ARCHIVE_NAME = "archive.tar.zst"
CONTENTS_NAME = "contents.jsonl.zst"
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
READ_CHUNK = 1 << 20
FLUSH_AT = 1 << 20
REPORT_LIMIT = 1000
MiB = 1024 * 1024


class FileBackupError(RuntimeError):
    """A file backup could not be taken."""


class UnreadableFilesError(FileBackupError):
    """Files could not be read and the policy does not allow that."""

    def __init__(self, unreadable: list[dict[str, str]], total: int) -> None:
        self.unreadable, self.total = unreadable, total
        shown = "; ".join(f"{u['path']} ({u['error']})" for u in unreadable[:20])
        more = f" and {total - 20} more" if total > 20 else ""
        super().__init__(
            f"{total} file(s) or folder(s) could not be read: {shown}{more}. Fix their permissions, "
            "exclude them in the policy (file_backup.exclude) or set file_backup.allow_unreadable: true"
        )


# --------------------------------------------------------------------------------------------
# Output side: compressed stream cut into hashed parts


class PartWriter(io.RawIOBase):
    """A write-only sink that cuts what it receives into ``<base>.000``, ``.001``, ... of
    ``part_size`` bytes, hashing each part while it is written and syncing it when full."""

    def __init__(self, folder: Path, base: str, part_size: int) -> None:
        super().__init__()
        if part_size < 1:
            raise ValueError("part size must be positive")
        self.folder, self.base, self.part_size = Path(folder), base, part_size
        self.parts: list[FileEntry] = []
        self._file: BinaryIO | None = None
        self._digest = hashlib.sha256()
        self._size = 0

    def writable(self) -> bool:
        return True

    def _open_next(self) -> None:
        name = f"{self.base}.{len(self.parts):03d}"
        self._file = open(self.folder / name, "wb")  # noqa: SIM115 - closed in _finish_part
        self._name, self._digest, self._size = name, hashlib.sha256(), 0

    def _finish_part(self) -> None:
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self.parts.append(FileEntry(self._name, self._size, self._digest.hexdigest(), {"index": len(self.parts)}))
        self._file = None

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        while view:
            if self._file is None:
                self._open_next()
            room = self.part_size - self._size
            piece = view[:room]
            self._file.write(piece)
            self._digest.update(piece)
            self._size += len(piece)
            view = view[len(piece):]
            if self._size >= self.part_size:
                self._finish_part()
        return total

    def finish(self) -> list[FileEntry]:
        """Close the last part (an empty archive still gets one part) and return them all."""
        if self._file is None and not self.parts:
            self._open_next()
        if self._file is not None:
            self._finish_part()
        return self.parts


class _TarOut:
    """Writes tar members to a binary sink, batching small writes into ~1 MiB blocks."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.buf = bytearray()

    def write(self, data: Any) -> None:
        if len(data) >= FLUSH_AT:
            self.flush()
            self.sink.write(data)
            return
        self.buf += data
        if len(self.buf) >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.sink.write(self.buf)
            self.buf = bytearray()

    def pad(self, size: int) -> None:
        remainder = size % BLOCK
        if remainder:
            self.write(b"\0" * (BLOCK - remainder))

    def close(self, written: int) -> None:
        """End of archive: two zero blocks, padded to a full record like tar does."""
        end = written + 2 * BLOCK
        self.write(b"\0" * (2 * BLOCK + (-end) % RECORD))
        self.flush()


# --------------------------------------------------------------------------------------------
# Reports


@dataclass
class _Capped:
    """A list of report items kept to ``REPORT_LIMIT`` entries, with the true count."""

    items: list[dict[str, str]] = field(default_factory=list)
    total: int = 0

    def add(self, item: dict[str, str]) -> None:
        self.total += 1
        if len(self.items) < REPORT_LIMIT:
            self.items.append(item)


@dataclass
class ArchiveResult:
    """What one pass over the trees produced and saw."""

    parts: list[FileEntry] = field(default_factory=list)
    contents: FileEntry | None = None
    entries: int = 0
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes: int = 0
    tar_bytes: int = 0
    changed: _Capped = field(default_factory=_Capped)
    vanished: _Capped = field(default_factory=_Capped)
    unreadable: _Capped = field(default_factory=_Capped)
    skipped: _Capped = field(default_factory=_Capped)

    def details(self) -> dict[str, Any]:
        return {
            "counts": {
                "entries": self.entries, "files": self.files, "dirs": self.dirs, "symlinks": self.symlinks,
                "hardlinks": self.hardlinks, "bytes": self.bytes, "tar_bytes": self.tar_bytes,
                "changed": self.changed.total, "vanished": self.vanished.total,
                "unreadable": self.unreadable.total, "skipped": self.skipped.total,
            },
            "changed": self.changed.items,
            "vanished": self.vanished.items,
            "unreadable": self.unreadable.items,
            "skipped": self.skipped.items,
            "report_limit": REPORT_LIMIT,
        }


# --------------------------------------------------------------------------------------------
# The walk


def arcname_of(path: str) -> str:
    """Member name of an absolute path: the path without its leading slash, like GNU tar."""
    return path.lstrip("/") or "."


def is_excluded(path: str, patterns: Iterable[str], is_dir: bool = False) -> bool:
    """``fnmatch`` against the absolute path (and ``path/`` for folders, so ``*/.cache/*`` prunes
    the folder itself) and against the bare name."""
    name = os.path.basename(path)
    for pattern in patterns:
        if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(name, pattern):
            return True
        if is_dir and fnmatch.fnmatchcase(path + "/", pattern):
            return True
    return False


class _Owners:
    """uid/gid → name lookups, cached (the same few owners recur millions of times)."""

    def __init__(self) -> None:
        self.users: dict[int, str] = {}
        self.groups: dict[int, str] = {}

    def user(self, uid: int) -> str:
        if uid not in self.users:
            try:
                self.users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self.users[uid] = ""
        return self.users[uid]

    def group(self, gid: int) -> str:
        if gid not in self.groups:
            try:
                self.groups[gid] = grp.getgrgid(gid).gr_name
            except KeyError:
                self.groups[gid] = ""
        return self.groups[gid]


def _mtime_text(mtime_ns: int) -> str:
    seconds, nanos = divmod(mtime_ns, 1_000_000_000)
    return f"{seconds}.{nanos:09d}" if nanos else str(seconds)


_EMPTY_OCTAL = b"0000000\0"


def _ustar(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, typeflag: bytes,
           linkname: bytes = b"", uname: bytes = b"", gname: bytes = b"") -> bytes:
    buf = b"".join((
        name[:100].ljust(100, b"\0"), b"%07o\0" % mode, b"%07o\0" % uid, b"%07o\0" % gid,
        b"%011o\0" % size, b"%011o\0" % mtime, b"        ", typeflag, linkname[:100].ljust(100, b"\0"),
        b"ustar\x0000", uname[:32].ljust(32, b"\0"), gname[:32].ljust(32, b"\0"), _EMPTY_OCTAL, _EMPTY_OCTAL,
        b"\0" * 167,
    ))
    return buf[:148] + b"%06o\0 " % sum(buf) + buf[156:]


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = key + b"=" + value + b"\n"
    length = len(body) + 2
    while (actual := len(body) + 1 + len(str(length))) != length:
        length = actual
    return b"%d " % length + body


def member_header(info: tarfile.TarInfo, mtime_ns: int) -> bytes:
    """The pax header blocks of one member, as ``TarInfo.tobuf(PAX_FORMAT)`` would write them but
    built directly (tens of times faster, which matters for millions of small files), with the
    mtime to the nanosecond. Falls back to ``tobuf`` for what this fast path does not cover."""
    name = info.name + "/" if info.type == tarfile.DIRTYPE and not info.name.endswith("/") else info.name
    seconds, nanos = divmod(mtime_ns, 1_000_000_000)
    try:
        name_b, link_b = name.encode("utf-8"), info.linkname.encode("utf-8")
        user_b, group_b = info.uname.encode("utf-8"), info.gname.encode("utf-8")
    except UnicodeEncodeError:
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    if seconds < 0 or seconds >= 8 ** 11 or info.mode >= 8 ** 7:
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    records = []
    if len(name_b) > 100 or not name_b.isascii():
        records.append(_pax_record(b"path", name_b))
    if len(link_b) > 100 or not link_b.isascii():
        records.append(_pax_record(b"linkpath", link_b))
    if nanos:
        records.append(_pax_record(b"mtime", b"%d.%09d" % (seconds, nanos)))
    size, uid, gid = info.size, info.uid, info.gid
    if size >= 8 ** 11:
        records.append(_pax_record(b"size", b"%d" % size))
        size = 0
    if uid >= 8 ** 7:
        records.append(_pax_record(b"uid", b"%d" % uid))
        uid = 0
    if gid >= 8 ** 7:
        records.append(_pax_record(b"gid", b"%d" % gid))
        gid = 0
    if len(user_b) > 32 or not user_b.isascii():
        records.append(_pax_record(b"uname", user_b))
    if len(group_b) > 32 or not group_b.isascii():
        records.append(_pax_record(b"gname", group_b))
    header = _ustar(name_b, info.mode, uid, gid, size, seconds, info.type, link_b, user_b, group_b)
    if not records:
        return header
    body = b"".join(records)
    pad = b"\0" * (-len(body) % BLOCK)
    return _ustar(b"././@PaxHeader", 0o644, 0, 0, len(body), 0, tarfile.XHDTYPE) + body + pad + header


class TreeArchiver:
    """One pass over a set of roots: each entry into the tar stream and the contents listing.

    ``sink`` receives the uncompressed tar stream (or ``None``: only list and hash, as the
    config watch does). ``listing`` receives one dict per archived entry, in archive order.
    """

    def __init__(
        self,
        sink: Any | None,
        listing: Callable[[dict[str, Any]], None],
        *,
        exclude: Iterable[str] = (),
        skip: Iterable[Path] = (),
    ) -> None:
        self.out = _TarOut(sink) if sink is not None else None
        self.listing = listing
        self.exclude = tuple(exclude)
        self.skip = {os.path.realpath(p) for p in skip}
        self.result = ArchiveResult()
        self.owners = _Owners()
        self.links: dict[tuple[int, int], str] = {}
        self.buffer = bytearray(READ_CHUNK)
        self.written = 0

    # -- reporting

    def _unreadable(self, path: str, exc: BaseException) -> None:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        self.result.unreadable.add({"path": path, "error": reason})
        log.warning("cannot read %s: %s", path, reason)

    def _vanished(self, path: str, when: str) -> None:
        self.result.vanished.add({"path": path, "what": when})
        log.warning("%s vanished %s", path, when)

    def _changed(self, path: str, what: str) -> None:
        self.result.changed.add({"path": path, "what": what})
        log.warning("%s changed while it was read: %s", path, what)

    # -- walking

    def add_roots(self, roots: Iterable[Path]) -> None:
        for root in sorted({os.path.abspath(r) for r in roots}):
            self.add_tree(root)

    def add_tree(self, root: str) -> None:
        try:
            st = os.lstat(root)
        except FileNotFoundError:
            raise FileBackupError(f"{root}: backup root does not exist (is the volume mounted?)") from None
        stack: list[tuple[str, os.stat_result]] = [(root, st)]
        while stack:
            path, st = stack.pop()
            if stat.S_ISDIR(st.st_mode):
                if os.path.realpath(path) in self.skip:
                    log.info("skipping %s: it is where backups are written", path)
                    continue
                self._add_entry(path, st)
                children = self._list_dir(path)
                # reversed so that popping yields sorted order, depth first
                stack.extend(reversed(children))
            else:
                self._add_entry(path, st)

    def _list_dir(self, path: str) -> list[tuple[str, os.stat_result]]:
        found = []
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            self._vanished(path + "/", "before its folder was listed")
            return []
        except OSError as exc:
            self._unreadable(path + "/", exc)
            return []
        for entry in entries:
            child = entry.path
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                self._vanished(child, "before it was read")
                continue
            except OSError as exc:
                self._unreadable(child, exc)
                continue
            if is_excluded(child, self.exclude, stat.S_ISDIR(st.st_mode)):
                continue
            found.append((child, st))
        return found

    # -- one entry

    def _info(self, path: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
        info = tarfile.TarInfo(arcname_of(path))
        info.type = kind
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname, info.gname = self.owners.user(st.st_uid), self.owners.group(st.st_gid)
        info.mtime = st.st_mtime_ns // 1_000_000_000
        if st.st_mtime_ns % 1_000_000_000:
            info.pax_headers = {"mtime": _mtime_text(st.st_mtime_ns)}
        return info

    def _record(self, info: tarfile.TarInfo, kind: str, st: os.stat_result, **extra: Any) -> None:
        entry = {
            "path": info.name, "type": kind, "size": info.size if kind == "file" else 0,
            "mode": info.mode, "mtime_ns": st.st_mtime_ns, "uid": info.uid, "gid": info.gid,
            "user": info.uname, "group": info.gname,
        }
        entry.update(extra)
        self.listing(entry)
        self.result.entries += 1

    def _header(self, info: tarfile.TarInfo, mtime_ns: int) -> None:
        if self.out is not None:
            header = member_header(info, mtime_ns)
            self.out.write(header)
            self.written += len(header)

    def _add_entry(self, path: str, st: os.stat_result) -> None:
        mode = st.st_mode
        if stat.S_ISREG(mode):
            self._add_file(path, st)
        elif stat.S_ISDIR(mode):
            info = self._info(path, st, tarfile.DIRTYPE)
            self._header(info, st.st_mtime_ns)
            self._record(info, "dir", st)
            self.result.dirs += 1
        elif stat.S_ISLNK(mode):
            try:
                target = os.readlink(path)
            except FileNotFoundError:
                self._vanished(path, "before it was read")
                return
            except OSError as exc:
                self._unreadable(path, exc)
                return
            info = self._info(path, st, tarfile.SYMTYPE)
            info.linkname = target
            self._header(info, st.st_mtime_ns)
            self._record(info, "symlink", st, link=target)
            self.result.symlinks += 1
        else:
            what = ("fifo" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode)
                    else "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special file")
            self.result.skipped.add({"path": path, "what": f"{what}, not archived"})

    def _add_file(self, path: str, st: os.stat_result) -> None:
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.links:
            info = self._info(path, st, tarfile.LNKTYPE)
            info.linkname = self.links[key]
            self._header(info, st.st_mtime_ns)
            self._record(info, "hardlink", st, link=info.linkname)
            self.result.hardlinks += 1
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            self._vanished(path, "before it was read")
            return
        except OSError as exc:
            self._unreadable(path, exc)
            return
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode):
                self._changed(path, "no longer a regular file")
                return
            if (opened.st_dev, opened.st_ino) != key:
                self._changed(path, "replaced by another file before it was read")
                st = opened
            info = self._info(path, st, tarfile.REGTYPE)
            info.size = st.st_size
            self._header(info, st.st_mtime_ns)
            digest, got = self._copy(fd, info.size)
            after = os.fstat(fd)
        except OSError as exc:
            # a read error after the header was written would corrupt the stream: give up the run
            raise FileBackupError(f"{path}: read failed part-way: {exc}") from exc
        finally:
            os.close(fd)
        if got < info.size:
            self._changed(path, f"shrank from {info.size} to {got} bytes while read; zero-padded")
        elif after.st_size != info.size:
            self._changed(path, f"size {info.size} -> {after.st_size} while read; first {info.size} bytes kept")
        elif after.st_mtime_ns != st.st_mtime_ns:
            self._changed(path, "modified while read")
        if not os.path.lexists(path):
            self._vanished(path, "while it was read (archived as read)")
        if st.st_nlink > 1:
            self.links[key] = info.name
        self._record(info, "file", st, sha256=digest)
        self.result.files += 1
        self.result.bytes += info.size

    def _copy(self, fd: int, size: int) -> tuple[str, int]:
        """Copy exactly ``size`` bytes of ``fd`` into the stream, hashing them; returns how many
        were really there (the rest is zero padding, so the stream stays well formed)."""
        digest = hashlib.sha256()
        remaining, got = size, 0
        out = self.out
        if size <= READ_CHUNK:
            data = os.read(fd, size) if size else b""
            while len(data) < size:
                more = os.read(fd, size - len(data))
                if not more:
                    break
                data += more
            got = len(data)
            if got < size:
                data += b"\0" * (size - got)
            digest.update(data)
            if out is not None:
                out.write(data)
        else:
            view = memoryview(self.buffer)
            while remaining:
                n = os.readv(fd, [view[:min(remaining, READ_CHUNK)]])
                if n == 0:
                    break
                chunk = view[:n]
                digest.update(chunk)
                if out is not None:
                    out.write(chunk)
                remaining -= n
                got += n
            if remaining:
                zeros = b"\0" * min(remaining, READ_CHUNK)
                while remaining:
                    piece = zeros[:min(remaining, len(zeros))]
                    digest.update(piece)
                    if out is not None:
                        out.write(piece)
                    remaining -= len(piece)
        if out is not None:
            out.pad(size)
        self.written += size + (-size) % BLOCK
        return digest.hexdigest(), got

    def close(self) -> ArchiveResult:
        if self.out is not None:
            self.out.close(self.written)
        self.result.tar_bytes = self.written + 2 * BLOCK + (-(self.written + 2 * BLOCK)) % RECORD
        return self.result


# --------------------------------------------------------------------------------------------
# Writing an archive and its listing


class _ListingWriter:
    """``contents.jsonl.zst``: one JSON object per archived entry, in archive order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer = CompressingWriter(path, level=3)
        self._buf: list[str] = []

    def __call__(self, entry: dict[str, Any]) -> None:
        self._buf.append(json.dumps(entry, separators=(",", ":")))
        if len(self._buf) >= 4096:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            self._writer.write(("\n".join(self._buf) + "\n").encode("utf-8", "surrogatepass"))
            self._buf = []

    def close(self) -> FileEntry:
        self._flush()
        self._writer.close()
        return FileEntry(self.path.name, self._writer.size, self._writer.sha256,
                         {"format": "jsonl", "compression": "zstd"})

    def abort(self) -> None:
        self._writer.file.close()


def write_archive(
    roots: Iterable[Path],
    folder: Path,
    *,
    exclude: Iterable[str] = (),
    skip: Iterable[Path] = (),
    part_size: int = 1024 * MiB,
    level: int = 3,
    threads: int | None = None,
    on_entry: Callable[[dict[str, Any]], None] | None = None,
) -> ArchiveResult:
    """Archive ``roots`` into ``folder``: ``archive.tar.zst.NNN`` parts plus ``contents.jsonl.zst``."""
    folder = Path(folder)
    parts = PartWriter(folder, ARCHIVE_NAME, part_size)
    workers = threads if threads is not None else min(os.cpu_count() or 1, 4)
    params = zstandard.ZstdCompressionParameters.from_level(
        level, threads=workers if workers > 1 else 0, write_checksum=True
    )
    compressor = zstandard.ZstdCompressor(compression_params=params).stream_writer(
        parts, closefd=False, write_size=FLUSH_AT
    )
    listing = _ListingWriter(folder / CONTENTS_NAME)

    def record(entry: dict[str, Any]) -> None:
        listing(entry)
        if on_entry is not None:
            on_entry(entry)

    archiver = TreeArchiver(compressor, record, exclude=exclude, skip=skip)
    try:
        archiver.add_roots(roots)
        result = archiver.close()
        compressor.close()
    except BaseException:
        listing.abort()
        raise
    result.parts = parts.finish()
    result.contents = listing.close()
    return result


def scan_tree(roots: Iterable[Path], *, exclude: Iterable[str] = (), skip: Iterable[Path] = ()) -> tuple[
        list[dict[str, Any]], ArchiveResult]:
    """The listing an archive of ``roots`` would have, with every file hashed; writes nothing.

    Used for small trees (the config set): the entries are kept in memory.
    """
    entries: list[dict[str, Any]] = []
    archiver = TreeArchiver(None, entries.append, exclude=exclude, skip=skip)
    for root in sorted({os.path.abspath(r) for r in roots}):
        if os.path.lexists(root):
            archiver.add_tree(root)
    return entries, archiver.close()


def read_listing(stream: BinaryIO) -> Iterator[dict[str, Any]]:
    """Entries of a ``contents.jsonl.zst`` stream, one at a time."""
    reader = zstandard.ZstdDecompressor().stream_reader(stream, read_size=READ_CHUNK)
    text = io.TextIOWrapper(reader, encoding="utf-8", errors="surrogatepass", newline="\n")
    for line in text:
        if line.strip():
            yield json.loads(line)


# --------------------------------------------------------------------------------------------
# What changed between two backups, in one pass over both listings


def _order_key(path: str) -> tuple[str, ...]:
    return tuple(path.split("/"))


@dataclass
class ListingDiff:
    added: int = 0
    removed: int = 0
    changed: int = 0
    unchanged: int = 0
    examples: dict[str, list[str]] = field(default_factory=lambda: {"added": [], "removed": [], "changed": []})

    def _note(self, what: str, path: str) -> None:
        setattr(self, what, getattr(self, what) + 1)
        if len(self.examples[what]) < 20:
            self.examples[what].append(path)

    def as_dict(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed, "changed": self.changed,
                "unchanged": self.unchanged, "examples": self.examples}


def _fingerprint(entry: dict[str, Any]) -> tuple[Any, ...]:
    return (entry["type"], entry.get("sha256"), entry.get("link"), entry["mode"], entry["uid"], entry["gid"])


def diff_listings(old: Iterable[dict[str, Any]], new: Iterable[dict[str, Any]]) -> ListingDiff:
    """Added, removed and changed entries of two listings in archive order (a merge, not a map)."""
    diff = ListingDiff()
    old_it, new_it = iter(old), iter(new)
    a, b = next(old_it, None), next(new_it, None)
    while a is not None or b is not None:
        if b is None or (a is not None and _order_key(a["path"]) < _order_key(b["path"])):
            diff._note("removed", a["path"])
            a = next(old_it, None)
        elif a is None or _order_key(b["path"]) < _order_key(a["path"]):
            diff._note("added", b["path"])
            b = next(new_it, None)
        else:
            if _fingerprint(a) != _fingerprint(b):
                diff._note("changed", b["path"])
            else:
                diff.unchanged += 1
            a, b = next(old_it, None), next(new_it, None)
    return diff


# --------------------------------------------------------------------------------------------
# The backup


def _previous_listing(local: LocalStore, manifests: list[BackupManifest]) -> tuple[str, Path] | None:
    for manifest in reversed(manifests):
        if manifest.kind == "files" and any(f.name == CONTENTS_NAME for f in manifest.files):
            path = local.file_path(manifest.backup_id, CONTENTS_NAME)
            if path.is_file():
                return manifest.backup_id, path
    return None


def take_full_backup(
    roots: Iterable[Path],
    local: LocalStore,
    *,
    exclude: Iterable[str] = (),
    part_size_mb: int = 1024,
    compression_level: int = 3,
    allow_unreadable: bool = False,
    threads: int | None = None,
    part_size_bytes: int | None = None,
    started: datetime | None = None,
) -> BackupManifest:
    """Take one full file backup of ``roots`` into ``local``; returns its committed manifest.

    Nothing is listed until the manifest is written last. A run that fails (unreadable files
    not allowed, a root missing, the disk full) removes its staging folder.
    """
    roots = [Path(r) for r in roots]
    with local.lock("file backup"):
        local.clean_leftovers()
        return _take_full_backup(roots, local, exclude=tuple(exclude), part_size=part_size_bytes or part_size_mb * MiB,
                                 compression_level=compression_level, allow_unreadable=allow_unreadable,
                                 threads=threads, started=started or utc_now())


def _take_full_backup(roots: list[Path], local: LocalStore, *, exclude: tuple[str, ...], part_size: int,
                      compression_level: int, allow_unreadable: bool, threads: int | None,
                      started: datetime) -> BackupManifest:
    backup_id = local.new_backup_id(started, "files")
    previous = _previous_listing(local, local.list_backups())
    staging = local.staging_dir(backup_id)
    try:
        result = write_archive(
            roots, staging, exclude=exclude, skip=[local.root], level=compression_level, threads=threads,
            part_size=part_size,
        )
        if result.unreadable.total and not allow_unreadable:
            raise UnreadableFilesError(result.unreadable.items, result.unreadable.total)
        details = result.details()
        details.update({
            "roots": [str(r) for r in roots],
            "exclude": list(exclude),
            "archive": {"name": ARCHIVE_NAME, "format": "pax", "compression": "zstd",
                        "compression_level": compression_level, "parts": len(result.parts),
                        "part_size": part_size},
            "contents": CONTENTS_NAME,
            "restore": "aiplatform_ops.restore.extract.restore_file_backup",
        })
        if previous is not None:
            previous_id, path = previous
            with open(path, "rb") as old, open(staging / CONTENTS_NAME, "rb") as new:
                diff = diff_listings(read_listing(old), read_listing(new))
            details["since_previous"] = {"backup_id": previous_id, **diff.as_dict()}
        manifest = BackupManifest(
            backup_id=backup_id, kind="files", type="full", started_at=iso(started), finished_at=iso(utc_now()),
            files=[*result.parts, result.contents], details=details,
        )
        local.commit(staging, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    counts = details["counts"]
    log.info(
        "file backup %s: %d files, %d folders, %d symlinks, %d bytes -> %d bytes in %d part(s); "
        "%d changed while read, %d vanished, %d unreadable, %d special files skipped",
        backup_id, counts["files"], counts["dirs"], counts["symlinks"], counts["bytes"], manifest.size,
        len(result.parts), counts["changed"], counts["vanished"], counts["unreadable"], counts["skipped"],
    )
    if "since_previous" in details:
        since = details["since_previous"]
        log.info("since %s: %d added, %d removed, %d changed, %d unchanged", since["backup_id"],
                 since["added"], since["removed"], since["changed"], since["unchanged"])
    return manifest
