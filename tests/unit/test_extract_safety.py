"""Safe extraction: a hostile or damaged archive never writes outside, nor into, the target.

Each malicious archive is built here with ``tarfile``. For every case the restore must fail
with a clear reason, the target folder must be exactly as it was (same files, bytes, mtimes),
nothing may appear next to it or outside it, in both modes: validating first, or validating as
it goes into a sibling folder that is discarded.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from aiplatform_ops.restore.extract import (
    ArchiveIntegrityError,
    UnsafeArchiveError,
    safe_extract,
)


def _info(name: str, kind: bytes = tarfile.REGTYPE, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = fields.pop("mode", 0o644)
    info.mtime = fields.pop("mtime", 1_700_000_000)
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def build_tar(members: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return out.getvalue()


def opener(data: bytes) -> Callable[[], io.BytesIO]:
    return lambda: io.BytesIO(data)


def state(folder: Path) -> dict[str, tuple]:
    found = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        content = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        found[str(path.relative_to(folder))] = (content, st.st_mode, st.st_mtime_ns)
    return found


@pytest.fixture
def scene(tmp_path: Path):
    """A target with current content, and an 'outside' folder an attacker would aim at."""
    work = tmp_path / "work"
    target = work / "restore-here"
    (target / "sub").mkdir(parents=True)
    (target / "current.txt").write_text("current data\n")
    (target / "sub/nested.txt").write_text("nested\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("must stay\n")
    return work, target, outside


def good(name: str, data: bytes = b"ok\n") -> tuple[tarfile.TarInfo, bytes]:
    return _info(name), data


MALICIOUS = {
    "absolute path": lambda outside: [good("fine.txt"), (_info(str(outside / "victim.txt")), b"pwned\n")],
    "dot-dot component": lambda outside: [good("fine.txt"), (_info("sub/../../outside/victim.txt"), b"pwned\n")],
    "symlink to an absolute path": lambda outside: [good("fine.txt"), (_info("link", tarfile.SYMTYPE, linkname=str(outside)), None)],
    "symlink escaping with ..": lambda outside: [good("fine.txt"), (_info("a/link", tarfile.SYMTYPE, linkname="../../outside"), None)],
    "write through a symlinked folder": lambda outside: [
        (_info("inner", tarfile.DIRTYPE, mode=0o755), None),
        (_info("alias", tarfile.SYMTYPE, linkname="inner"), None),
        (_info("alias/file.txt"), b"through a link\n"),
    ],
    "symlink chain escaping": lambda outside: [
        (_info("d", tarfile.DIRTYPE, mode=0o755), None),
        (_info("d/up", tarfile.SYMTYPE, linkname=".."), None),
        (_info("escape", tarfile.SYMTYPE, linkname="d/up/.."), None),
    ],
    "hard link to an absolute path": lambda outside: [good("fine.txt"), (_info("hl", tarfile.LNKTYPE, linkname=str(outside / "victim.txt")), None)],
    "hard link escaping with ..": lambda outside: [good("fine.txt"), (_info("hl", tarfile.LNKTYPE, linkname="../outside/victim.txt"), None)],
    "character device": lambda outside: [good("fine.txt"), (_info("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3), None)],
    "block device": lambda outside: [good("fine.txt"), (_info("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0), None)],
    "FIFO": lambda outside: [good("fine.txt"), (_info("pipe", tarfile.FIFOTYPE), None)],
    "member twice": lambda outside: [good("fine.txt"), good("fine.txt", b"replaced\n")],
}

REASONS = {
    "absolute path": "absolute path",
    "dot-dot component": "'..' path component",
    "symlink to an absolute path": "outside the target",
    "symlink escaping with ..": "outside the target",
    "write through a symlinked folder": "symbolic link",
    "symlink chain escaping": "outside the target",
    "hard link to an absolute path": "outside the target",
    "hard link escaping with ..": "outside the target",
    "character device": "device entry",
    "block device": "device entry",
    "FIFO": "FIFO entry",
    "member twice": "appears twice",
}


@pytest.mark.parametrize("validate_first", [True, False], ids=["validate-first", "validate-as-it-goes"])
@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_archive_is_refused_and_leaves_the_target_as_it_was(scene, case: str, validate_first: bool) -> None:
    work, target, outside = scene
    before_target, before_outside = state(target), state(outside)
    before_work = sorted(p.name for p in work.iterdir())
    data = build_tar(MALICIOUS[case](outside))

    with pytest.raises(UnsafeArchiveError, match=REASONS[case]):
        safe_extract(opener(data), target, validate_first=validate_first)

    assert state(target) == before_target
    assert state(outside) == before_outside
    assert sorted(p.name for p in work.iterdir()) == before_work  # no sibling left behind


def test_gnu_format_long_names_are_checked_too(scene) -> None:
    work, target, outside = scene
    long_escape = "a/" * 60 + "../" * 61 + "outside/victim.txt"
    data = build_tar([(_info(long_escape), b"pwned\n")], fmt=tarfile.GNU_FORMAT)
    with pytest.raises(UnsafeArchiveError, match="'..'"):
        safe_extract(opener(data), target)
    assert (outside / "victim.txt").read_text() == "must stay\n"


def test_file_not_matching_its_listing_is_refused_and_target_kept(scene) -> None:
    work, target, _ = scene
    before = state(target)
    data = build_tar([good("a.txt", b"tampered\n")])
    listing = [{"path": "a.txt", "type": "file", "size": 9, "sha256": hashlib.sha256(b"original\n").hexdigest()}]
    with pytest.raises(ArchiveIntegrityError, match="sha256"):
        safe_extract(opener(data), target, expected=listing)
    assert state(target) == before


def test_archive_missing_a_listed_file_is_refused(scene) -> None:
    work, target, _ = scene
    data = build_tar([good("a.txt")])
    listing = [
        {"path": "a.txt", "type": "file", "size": 3, "sha256": hashlib.sha256(b"ok\n").hexdigest()},
        {"path": "b.txt", "type": "file", "size": 3, "sha256": hashlib.sha256(b"ok\n").hexdigest()},
    ]
    with pytest.raises(ArchiveIntegrityError, match="b.txt"):
        safe_extract(opener(data), target, expected=listing)
    assert (target / "current.txt").read_text() == "current data\n"


def test_truncated_archive_is_refused_and_target_kept(scene) -> None:
    work, target, _ = scene
    before = state(target)
    data = build_tar([good("big.bin", os.urandom(200_000)), good("after.txt")])
    with pytest.raises(ArchiveIntegrityError, match="ends"):
        safe_extract(opener(data[:100_000]), target)
    assert state(target) == before


def test_good_archive_replaces_the_target_whole_with_modes_and_mtimes(scene) -> None:
    work, target, _ = scene
    data = build_tar([
        (_info("bin", tarfile.DIRTYPE, mode=0o750, mtime=1_650_000_000), None),
        (_info("bin/tool.sh", mode=0o755, mtime=1_600_000_000), b"#!/bin/sh\n"),
        (_info("bin/current", tarfile.SYMTYPE, linkname="tool.sh"), None),
        (_info("bin/tool-copy.sh", tarfile.LNKTYPE, linkname="bin/tool.sh"), None),
        (_info("notes/说明.txt", mode=0o600), "中文\n".encode()),
    ])
    report = safe_extract(opener(data), target)

    assert not (target / "current.txt").exists()  # the old content is gone: the target was swapped
    assert (target / "bin/tool.sh").read_bytes() == b"#!/bin/sh\n"
    assert (target / "bin/tool.sh").stat().st_mode & 0o7777 == 0o755
    assert (target / "bin/tool.sh").stat().st_mtime == 1_600_000_000
    assert (target / "bin").stat().st_mode & 0o7777 == 0o750
    assert (target / "bin").stat().st_mtime == 1_650_000_000
    assert os.readlink(target / "bin/current") == "tool.sh"
    assert (target / "bin/tool-copy.sh").stat().st_ino == (target / "bin/tool.sh").stat().st_ino
    assert (target / "notes/说明.txt").stat().st_mode & 0o7777 == 0o600
    assert (report.files, report.symlinks, report.hardlinks) == (2, 1, 1)
    assert sorted(p.name for p in work.iterdir()) == ["restore-here"]


def test_prefix_selects_one_tree_and_strips_it(tmp_path: Path) -> None:
    data = build_tar([
        (_info("app/data", tarfile.DIRTYPE, mode=0o711, mtime=1_500_000_000), None),
        (_info("app/data/x.txt"), b"x\n"),
        (_info("etc/other.conf"), b"not selected\n"),
    ])
    target = tmp_path / "data"
    safe_extract(opener(data), target, prefix="app/data")
    assert sorted(p.name for p in target.iterdir()) == ["x.txt"]
    assert target.stat().st_mode & 0o7777 == 0o711 and target.stat().st_mtime == 1_500_000_000
