"""Safe extraction: the one way this project turns an archive back into files.

``safe_extract`` never writes into the target directly. It extracts into a fresh sibling folder
(``.<target>.restore-XXXX``), checking every member before it is written, and swaps that folder
in only when everything was extracted and verified; any failure removes the sibling and leaves
the target exactly as it was. With ``validate_first=True`` a first pass over the archive checks
every member before the sibling folder is even created (worth it for small archives; a
multi-terabyte restore validates as it goes instead, with the same guarantee for the target).

Refused, with the member and the reason: absolute paths, ``..`` components, symbolic links or
hard links that point outside the target, members inside a symlinked folder, device and FIFO
entries, other special types, and members that appear twice. When a listing (the backup's
``contents.jsonl.zst`` or a config manifest's entries) is given, every member must match it in
order and every file's sha256 must match: a damaged or substituted archive does not restore.
Permissions, mtimes (to the nanosecond) and, when running as root, owners are restored.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import io
import logging
import os
import posixpath
import pwd
import queue
import secrets
import shutil
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

log = logging.getLogger(__name__)

CHUNK = 1 << 20


class UnsafeArchiveError(ValueError):
    """The archive holds a member that must not be extracted; nothing was written to the target."""


class ArchiveIntegrityError(RuntimeError):
    """The archive does not match its listing (missing, extra or altered files)."""


@dataclass
class ExtractReport:
    target: str
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes: int = 0
    verified: int = 0


# --------------------------------------------------------------------------------------------
# Streams


class ConcatReader(io.RawIOBase):
    """The files of ``paths`` read back to back as one stream (the parts of an archive)."""

    def __init__(self, paths: Iterable[Path]) -> None:
        super().__init__()
        self._paths = list(paths)
        self._index = 0
        self._current: BinaryIO | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._index < len(self._paths):
            if self._current is None:
                self._current = open(self._paths[self._index], "rb")  # noqa: SIM115 - closed below
            n = self._current.readinto(buffer)
            if n:
                return n
            self._current.close()
            self._current = None
            self._index += 1
        return 0

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None
        super().close()


class Prefetcher(io.RawIOBase):
    """Reads ``raw`` ahead in a background thread, at most ``depth`` chunks ahead, so that
    decompression (which releases the GIL) overlaps with writing the files."""

    def __init__(self, raw: BinaryIO, depth: int = 8) -> None:
        super().__init__()
        self._raw = raw
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._pending = memoryview(b"")
        self._done = False
        self._thread = threading.Thread(target=self._run, name="archive-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: bytes | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                chunk = self._raw.read(CHUNK)
                if not chunk:
                    break
                if not self._put(chunk):
                    return
            self._put(None)
        except zstandard.ZstdError as exc:
            self._put(ArchiveIntegrityError(f"the compressed archive is damaged: {exc}"))
        except BaseException as exc:  # noqa: BLE001 - handed over to the reading thread
            self._put(exc)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            if self._done:
                return 0
            item = self._queue.get()
            if item is None:
                self._done = True
                return 0
            if isinstance(item, BaseException):
                self._done = True
                raise item
            self._pending = memoryview(item)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            self._thread.join()
            self._raw.close()
        super().close()


def zstd_tar_stream(paths: Iterable[Path]) -> BinaryIO:
    """The uncompressed tar stream of a zstd archive split into ``paths`` (in order)."""
    raw = ConcatReader(paths)
    return Prefetcher(zstandard.ZstdDecompressor().stream_reader(raw, read_size=CHUNK, closefd=True))


# --------------------------------------------------------------------------------------------
# Reading tar


REGULAR = (b"0", b"\0", b"7")
_SPECIAL_HEADERS = (b"x", b"g", b"L", b"K")
_NO_DATA = (b"2", b"5", b"3", b"4", b"6", b"1")


@dataclass(slots=True)
class Member:
    """One archive member, decoded from its ustar header plus pax / GNU long-name extensions."""

    name: str
    type: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    linkname: str
    uname: str
    gname: str

    def isreg(self) -> bool:
        return self.type in REGULAR

    def isdir(self) -> bool:
        return self.type == b"5"

    def issym(self) -> bool:
        return self.type == b"2"

    def islnk(self) -> bool:
        return self.type == b"1"

    def ischr(self) -> bool:
        return self.type == b"3"

    def isblk(self) -> bool:
        return self.type == b"4"

    def isfifo(self) -> bool:
        return self.type == b"6"


def _number(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * (len(field) - 1))) if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise ArchiveIntegrityError(f"corrupt tar header (number field {text[:16]!r})") from None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    binary = False
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise ArchiveIntegrityError("corrupt pax header") from None
        if length <= 0:
            raise ArchiveIntegrityError("corrupt pax header")
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        if key == b"hdrcharset" and value == b"BINARY":
            binary = True
        records[key.decode("utf-8", "surrogateescape")] = value.decode(
            "utf-8", "surrogateescape" if binary else "strict")
        pos += length
    return records


def _pax_mtime_ns(text: str) -> int:
    seconds, _, fraction = text.partition(".")
    negative = seconds.startswith("-")
    value = abs(int(seconds)) * 1_000_000_000 + int((fraction + "000000000")[:9] or 0)
    return -value if negative else value


class TarReader:
    """A forward-only reader of a tar stream (ustar, pax and GNU long names).

    Iterating yields :class:`Member` objects; a regular file's data is read with :meth:`read`
    before the next member is asked for (what is left unread is skipped).
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = io.BufferedReader(stream, CHUNK) if isinstance(stream, io.RawIOBase) else stream
        self._remaining = 0
        self._padding = 0
        self._globals: dict[str, str] = {}

    def _exact(self, size: int) -> bytes:
        data = self._stream.read(size)
        if len(data) != size:
            raise ArchiveIntegrityError("the archive ends early (truncated, or a part is missing)")
        return data

    def _skip(self, size: int) -> None:
        while size:
            size -= len(self._exact(min(size, CHUNK)))

    def read(self, size: int) -> bytes:
        size = min(size, self._remaining)
        data = self._exact(size) if size else b""
        self._remaining -= len(data)
        return data

    def __iter__(self) -> Iterator[Member]:
        pax: dict[str, str] = {}
        long_name: str | None = None
        long_link: str | None = None
        block = tarfile.BLOCKSIZE
        while True:
            self._skip(self._remaining + self._padding)
            self._remaining = self._padding = 0
            header = self._stream.read(block)
            if len(header) < block:
                raise ArchiveIntegrityError("the archive ends without its end marker (truncated?)")
            if header.count(0) == block:
                return
            if _number(header[148:156]) != sum(header[:148]) + 256 + sum(header[156:]):
                raise ArchiveIntegrityError("corrupt tar header (checksum mismatch)")
            kind = header[156:157]
            size = _number(header[124:136])
            if kind in _SPECIAL_HEADERS:
                data = self._exact(size)
                self._skip(-size % block)
                if kind == b"x":
                    pax = _pax(data)
                elif kind == b"g":
                    self._globals.update(_pax(data))
                elif kind == b"L":
                    long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                else:
                    long_link = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                continue
            name = long_name if long_name is not None else _text(header[0:100])
            if long_name is None and header[257:263] == b"ustar\0" and header[345] != 0:
                name = _text(header[345:500]) + "/" + name
            info = {**self._globals, **pax} if (pax or self._globals) else pax
            member = Member(
                name=info.get("path", name),
                type=kind,
                mode=_number(header[100:108]) & 0o7777,
                uid=int(info["uid"]) if "uid" in info else _number(header[108:116]),
                gid=int(info["gid"]) if "gid" in info else _number(header[116:124]),
                size=int(info["size"]) if "size" in info else size,
                mtime_ns=(_pax_mtime_ns(info["mtime"]) if "mtime" in info
                          else _number(header[136:148]) * 1_000_000_000),
                linkname=info.get("linkpath", long_link if long_link is not None else _text(header[157:257])),
                uname=info.get("uname", _text(header[265:297])),
                gname=info.get("gname", _text(header[297:329])),
            )
            if kind == b"S" or any(key.startswith("GNU.sparse") for key in info):
                member.type = b"S"
            pax, long_name, long_link = {}, None, None
            data_size = 0 if kind in _NO_DATA else member.size
            self._remaining, self._padding = data_size, -data_size % block
            yield member


# --------------------------------------------------------------------------------------------
# Member checks


def _split(name: str) -> list[str]:
    return [p for p in name.split("/") if p not in ("", ".")]


def _refuse(member: str, reason: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"refused to extract {member!r}: {reason}")


def _relative(member: Member, prefix: list[str]) -> list[str] | None:
    """Checked path parts relative to the selected prefix, or ``None`` when not selected."""
    name = member.name
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _refuse(name, "absolute path")
    parts = _split(name)
    if ".." in parts:
        raise _refuse(name, "'..' path component")
    if "\0" in name:
        raise _refuse(name, "NUL byte in the name")
    if parts[:len(prefix)] != prefix:
        return None
    return parts[len(prefix):]


def _check_member(member: Member, rel: list[str], symlinks: set[tuple[str, ...]], prefix: list[str]) -> None:
    name = member.name
    for depth in range(1, len(rel)):
        if tuple(rel[:depth]) in symlinks:
            raise _refuse(name, f"inside {'/'.join(rel[:depth])!r}, which is a symbolic link")
    if member.ischr() or member.isblk():
        raise _refuse(name, "device entry")
    if member.isfifo():
        raise _refuse(name, "FIFO entry")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise _refuse(name, f"unsupported entry type {member.type!r}")
    if not rel and not member.isdir():
        raise _refuse(name, "only a folder may stand for the target itself")
    if member.issym():
        link = member.linkname
        if not link:
            raise _refuse(name, "symbolic link without a target")
        if link.startswith("/"):
            raise _refuse(name, f"symbolic link to the absolute path {link!r}, outside the target")
        resolved = posixpath.normpath(posixpath.join("/".join(rel[:-1]), link))
        if resolved == ".." or resolved.startswith("../"):
            raise _refuse(name, f"symbolic link to {link!r}, outside the target")
    if member.islnk():
        link = member.linkname
        if link.startswith("/"):
            raise _refuse(name, f"hard link to the absolute path {link!r}, outside the target")
        parts = _split(link)
        if ".." in parts or not parts or parts[:len(prefix)] != prefix or len(parts) == len(prefix):
            raise _refuse(name, f"hard link to {link!r}, outside the target")
        target = parts[len(prefix):]
        for depth in range(1, len(target) + 1):
            if tuple(target[:depth]) in symlinks:
                raise _refuse(name, f"hard link through the symbolic link {'/'.join(target[:depth])!r}")


def validate_archive(open_tar: Callable[[], BinaryIO], prefix: str | None = None) -> int:
    """First pass: check every member without writing anything; returns how many were selected."""
    prefix_parts = _split(prefix or "")
    symlinks: set[tuple[str, ...]] = set()
    selected = 0
    with open_tar() as stream:
        tf = TarReader(stream)
        for member in tf:
            rel = _relative(member, prefix_parts)
            if rel is None:
                continue
            _check_member(member, rel, symlinks, prefix_parts)
            if member.issym():
                symlinks.add(tuple(rel))
            selected += 1
    return selected


# --------------------------------------------------------------------------------------------
# Extraction


def _mtime_ns(member: Member) -> int:
    return member.mtime_ns


class _Owners:
    def __init__(self) -> None:
        self.cache: dict[tuple[str, str, int, int], tuple[int, int]] = {}
        self.mine = (os.geteuid(), os.getegid())

    def ids(self, member: Member) -> tuple[int, int]:
        key = (member.uname, member.gname, member.uid, member.gid)
        if key not in self.cache:
            uid, gid = member.uid, member.gid
            with contextlib.suppress(KeyError):
                uid = pwd.getpwnam(member.uname).pw_uid if member.uname else uid
            with contextlib.suppress(KeyError):
                gid = grp.getgrnam(member.gname).gr_gid if member.gname else gid
            self.cache[key] = (uid, gid)
        return self.cache[key]


class _Expected:
    """The listing, consumed in lockstep with the archive members."""

    def __init__(self, entries: Iterable[dict[str, Any]] | None, prefix: list[str]) -> None:
        self._it = iter(entries) if entries is not None else None
        self.prefix = prefix

    def next_for(self, member: Member) -> dict[str, Any] | None:
        if self._it is None:
            return None
        for entry in self._it:
            if _split(entry["path"])[:len(self.prefix)] == self.prefix:
                if _split(entry["path"]) != _split(member.name):
                    raise ArchiveIntegrityError(
                        f"archive member {member.name!r} where the listing expects {entry['path']!r}")
                return entry
        raise ArchiveIntegrityError(f"archive member {member.name!r} is not in the listing")

    def finish(self) -> None:
        if self._it is None:
            return
        for entry in self._it:
            if _split(entry["path"])[:len(self.prefix)] == self.prefix:
                raise ArchiveIntegrityError(f"{entry['path']!r} is in the listing but not in the archive")


def _entry_type(member: Member) -> str:
    return ("file" if member.isreg() else "dir" if member.isdir() else "symlink" if member.issym()
            else "hardlink")


def safe_extract(
    open_tar: Callable[[], BinaryIO],
    target: Path,
    *,
    expected: Iterable[dict[str, Any]] | None = None,
    prefix: str | None = None,
    validate_first: bool = False,
    restore_owners: bool | None = None,
) -> ExtractReport:
    """Extract the tar stream returned by ``open_tar()`` so that ``target`` becomes its content.

    ``prefix`` selects the members under one folder of the archive (for example
    ``app/aiplatform/data``) and strips it. ``expected`` is the listing to verify against, in
    archive order. The target is replaced as a whole at the end; on any error it is left as it was.
    """
    target = Path(os.path.abspath(target))
    prefix_parts = _split(prefix or "")
    if validate_first:
        validate_archive(open_tar, prefix)
    if restore_owners is None:
        restore_owners = os.geteuid() == 0
    target.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    work = target.parent / f".{target.name}.restore-{token}"
    work.mkdir(mode=0o700)
    report = ExtractReport(str(target))
    try:
        root_attrs = _extract_into(open_tar, work, prefix_parts, _Expected(expected, prefix_parts),
                                   restore_owners, report)
        if root_attrs is None:
            mode = os.stat(target).st_mode & 0o7777 if target.is_dir() else 0o755
            os.chmod(work, mode)
        _swap(work, target, token)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("restored %s: %d files (%d bytes, %d verified against the listing), %d folders, "
             "%d symlinks, %d hard links", target, report.files, report.bytes, report.verified,
             report.dirs, report.symlinks, report.hardlinks)
    return report


def _swap(work: Path, target: Path, token: str) -> None:
    """Put ``work`` in place of ``target``; the old content is removed only after the swap."""
    if not os.path.lexists(target):
        os.rename(work, target)
        return
    old = target.parent / f".{target.name}.old-{token}"
    os.rename(target, old)
    try:
        os.rename(work, target)
    except BaseException:
        os.rename(old, target)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    else:
        old.unlink()


def _extract_into(
    open_tar: Callable[[], BinaryIO],
    work: Path,
    prefix: list[str],
    expected: _Expected,
    restore_owners: bool,
    report: ExtractReport,
) -> tuple[int, int] | None:
    symlinks: set[tuple[str, ...]] = set()
    symlink_paths: list[str] = []
    dirs: list[tuple[str, Member]] = []
    owners = _Owners()
    root_attrs = None
    base = str(work)
    made = {base}
    with open_tar() as stream:
        tf = TarReader(stream)
        for member in tf:
            rel = _relative(member, prefix)
            if rel is None:
                continue
            _check_member(member, rel, symlinks, prefix)
            entry = expected.next_for(member)
            if entry is not None and entry.get("type") != _entry_type(member):
                raise ArchiveIntegrityError(
                    f"{member.name!r} is a {_entry_type(member)} in the archive, a {entry.get('type')} in the listing")
            path = os.path.join(base, *rel) if rel else base
            parent = os.path.dirname(path) if rel else base
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            if member.isdir():
                if rel:
                    try:
                        os.mkdir(path, 0o700)
                    except FileExistsError:
                        if not os.path.isdir(path) or os.path.islink(path):
                            raise _refuse(member.name, "appears twice in the archive") from None
                else:
                    root_attrs = (member.mode, _mtime_ns(member))
                dirs.append((path, member))
                report.dirs += 1
            elif member.isreg():
                _write_file(tf, member, path, entry, restore_owners, owners, report)
            elif member.issym():
                try:
                    os.symlink(member.linkname, path)
                except FileExistsError:
                    raise _refuse(member.name, "appears twice in the archive") from None
                if restore_owners:
                    os.lchown(path, *owners.ids(member))
                mtime = _mtime_ns(member)
                os.utime(path, ns=(mtime, mtime), follow_symlinks=False)
                symlinks.add(tuple(rel))
                symlink_paths.append(path)
                report.symlinks += 1
            else:  # hard link to a file extracted before
                source = os.path.join(base, *_split(member.linkname)[len(prefix):])
                if not os.path.isfile(source) or os.path.islink(source):
                    raise _refuse(member.name, f"hard link to {member.linkname!r}, which is not a file extracted before")
                try:
                    os.link(source, path, follow_symlinks=False)
                except FileExistsError:
                    raise _refuse(member.name, "appears twice in the archive") from None
                report.hardlinks += 1
    expected.finish()
    real_base = os.path.realpath(base)
    for path in symlink_paths:
        resolved = os.path.realpath(path)
        if resolved != real_base and not resolved.startswith(real_base + os.sep):
            raise _refuse(os.path.relpath(path, base), "symbolic link resolves outside the target")
    for path, member in reversed(dirs):
        if restore_owners:
            os.chown(path, *owners.ids(member))
        os.chmod(path, member.mode & 0o7777)
        mtime = _mtime_ns(member)
        os.utime(path, ns=(mtime, mtime))
    return root_attrs


def _write_file(
    tf: TarReader,
    member: Member,
    path: str,
    entry: dict[str, Any] | None,
    restore_owners: bool,
    owners: _Owners,
    report: ExtractReport,
) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        raise _refuse(member.name, "appears twice in the archive") from None
    digest = hashlib.sha256()
    try:
        remaining = member.size
        while remaining:
            chunk = tf.read(min(CHUNK, remaining))
            if not chunk:
                raise ArchiveIntegrityError(f"{member.name!r}: archive ends inside this file")
            digest.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
            remaining -= len(chunk)
        if restore_owners:
            ids = owners.ids(member)
            if ids != owners.mine:
                os.fchown(fd, *ids)
        if member.mode & 0o7777 != 0o600:
            os.fchmod(fd, member.mode & 0o7777)
        mtime = _mtime_ns(member)
        os.utime(fd, ns=(mtime, mtime))
    finally:
        os.close(fd)
    if entry is not None:
        if entry.get("size") != member.size or entry.get("sha256") != digest.hexdigest():
            raise ArchiveIntegrityError(f"{member.name!r}: sha256 differs from the backup's listing")
        report.verified += 1
    report.files += 1
    report.bytes += member.size


# --------------------------------------------------------------------------------------------
# Restoring a stored file backup


def archive_parts(folder: Path, manifest: Any, archive_name: str = "archive.tar.zst") -> list[Path]:
    """The archive parts of a backup, in order."""
    parts = [f for f in manifest.files if f.name.startswith(archive_name + ".")]
    parts.sort(key=lambda f: f.meta.get("index", f.name))
    if not parts:
        raise ArchiveIntegrityError(f"backup {manifest.backup_id} lists no {archive_name} parts")
    return [Path(folder) / f.name for f in parts]


def restore_file_backup(
    folder: Path,
    manifest: Any,
    target: Path,
    *,
    root: str | Path | None = None,
    validate_first: bool = False,
) -> ExtractReport:
    """Restore a file backup (its parts and listing in ``folder``, already verified, e.g. by
    ``fetch_backup``) into ``target``. With ``root`` (one of the backup's roots, such as
    ``/app/aiplatform/data``) only that tree is restored, its content becoming ``target``.
    """
    from aiplatform_ops.backup.files import CONTENTS_NAME, arcname_of, read_listing

    parts = archive_parts(folder, manifest)
    prefix = arcname_of(str(root)) if root is not None else None
    if prefix is not None and str(root) not in manifest.details.get("roots", [str(root)]):
        raise ValueError(f"{root} is not a root of backup {manifest.backup_id}: {manifest.details.get('roots')}")
    with open(Path(folder) / CONTENTS_NAME, "rb") as listing:
        return safe_extract(lambda: zstd_tar_stream(parts), target, expected=read_listing(listing),
                            prefix=prefix, validate_first=validate_first)
