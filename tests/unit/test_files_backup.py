"""Weekly file backups: what an operator relies on when the platform's data tree must come back.

Real trees in temporary folders: thousands of small files, a few large ones, symlinks, a hard
link, unicode names, odd permissions and nanosecond mtimes. The backup is taken, stored, and
restored; the restored tree must equal the source byte for byte, with modes and mtimes.
"""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
from pathlib import Path

import pytest

from aiplatform_ops.backup import files as files_mod
from aiplatform_ops.backup.files import (
    CONTENTS_NAME,
    FileBackupError,
    UnreadableFilesError,
    read_listing,
    take_full_backup,
)
from aiplatform_ops.restore.extract import ArchiveIntegrityError, restore_file_backup
from aiplatform_ops.storage.base import verify_backup
from aiplatform_ops.storage.local import LocalStore

REPO = Path(__file__).resolve().parents[2]
SMALL_FILES = 2000


def make_tree(root: Path, small_files: int = SMALL_FILES, seed: int = 7) -> Path:
    rng = random.Random(seed)
    data = root / "data"
    for i in range(small_files):
        folder = data / f"datasets/part-{i % 40:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        record = {"id": i, "name": f"sample-{i}", "labels": [rng.randint(0, 9) for _ in range(rng.randint(1, 60))]}
        (folder / f"item-{i:05d}.json").write_text(json.dumps(record))
    (data / "models").mkdir()
    (data / "models/weights.bin").write_bytes(rng.randbytes(3 * 1024 * 1024 + 17))
    (data / "models/train.log").write_text("".join(f"step {n} loss {rng.random():.6f}\n" for n in range(60000)))
    (data / "empty-folder").mkdir()
    (data / "数据集 ünïcødé").mkdir()
    (data / "数据集 ünïcødé/说明 📄.txt").write_text("标注数据\n")
    (data / "latest").symlink_to("models/weights.bin")
    (data / "dangling").symlink_to("does/not/exist")
    os.link(data / "models/train.log", data / "models/train.log.hardlink")
    secret = data / "models/private.key"
    secret.write_text("not really a key\n")
    secret.chmod(0o600)
    (data / "datasets/part-00").chmod(0o750)
    script = data / "run.sh"
    script.write_text("#!/bin/sh\necho train\n")
    script.chmod(0o755)
    os.utime(script, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    (data / "scratch.tmp").write_text("excluded")
    (data / "datasets/.cache").mkdir()
    (data / "datasets/.cache/blob").write_text("excluded")
    return data


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything an operator would compare: type, content, mode, mtime (ns), link target."""
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(path), st.st_mtime_ns)
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            else:
                found[rel] = ("file", path.read_bytes(), stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_uid, st.st_gid)
    top = root.stat()
    found["."] = ("dir", stat.S_IMODE(top.st_mode), top.st_mtime_ns)
    return found


EXCLUDE = ("*.tmp", "*/.cache/*")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("source"))


def test_round_trip_is_byte_for_byte_with_modes_mtimes_and_links(tree: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "backups")
    manifest = take_full_backup([tree], store, exclude=EXCLUDE, part_size_bytes=1024 * 1024)

    parts = [f for f in manifest.files if f.name.startswith("archive.tar.zst.")]
    assert len(parts) > 1, "a small part size must split the archive"
    assert manifest.details["counts"]["files"] == SMALL_FILES + 5
    assert manifest.details["counts"]["hardlinks"] == 1
    assert verify_backup(store, manifest) == []

    target = tmp_path / "restored"
    report = restore_file_backup(store.backup_dir(manifest.backup_id), manifest, target, root=tree)

    expected = {k: v for k, v in snapshot(tree).items() if not k.endswith(".tmp") and ".cache" not in k}
    # the folder that held the excluded .cache entry has a new mtime only because .cache is missing
    assert snapshot(target) == expected
    assert report.verified == report.files == SMALL_FILES + 5  # the hard link is a link, not a copy
    assert os.stat(target / "models/train.log").st_ino == os.stat(target / "models/train.log.hardlink").st_ino


def test_listing_records_every_file_with_size_mtime_and_sha256(tree: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "backups")
    manifest = take_full_backup([tree], store, exclude=EXCLUDE)
    with store.open_file(manifest.backup_id, CONTENTS_NAME) as stream:
        entries = {e["path"]: e for e in read_listing(stream)}
    script = entries[str(tree / "run.sh").lstrip("/")]
    assert script["mtime_ns"] == 1_600_000_000_123_456_789
    assert script["mode"] == 0o755 and script["type"] == "file" and script["size"] == len("#!/bin/sh\necho train\n")
    import hashlib

    assert script["sha256"] == hashlib.sha256(b"#!/bin/sh\necho train\n").hexdigest()
    assert entries[str(tree / "latest").lstrip("/")]["link"] == "models/weights.bin"
    assert not [p for p in entries if p.endswith(".tmp") or "/.cache" in p]


def test_archive_is_plain_tar_zstd_that_gnu_tar_extracts(tree: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "backups")
    manifest = take_full_backup([tree], store, exclude=EXCLUDE, part_size_bytes=512 * 1024)
    folder = store.backup_dir(manifest.backup_id)
    out = tmp_path / "gnu"
    out.mkdir()
    parts = " ".join(f"'{folder / f.name}'" for f in manifest.files if f.name.startswith("archive"))
    subprocess.run(["bash", "-o", "pipefail", "-c", f"cat {parts} | zstd -dcq | tar -xpf - -C '{out}'"], check=True)
    restored = out / str(tree).lstrip("/")
    assert (restored / "run.sh").read_bytes() == (tree / "run.sh").read_bytes()
    assert (restored / "run.sh").stat().st_mtime_ns == 1_600_000_000_123_456_789
    assert os.readlink(restored / "latest") == "models/weights.bin"
    assert (restored / "数据集 ünïcødé/说明 📄.txt").read_text() == "标注数据\n"


def test_second_backup_says_what_changed_since_the_first(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src", small_files=50)
    store = LocalStore(tmp_path / "backups")
    take_full_backup([tree], store)
    (tree / "datasets/part-01/item-00001.json").write_text("{}")
    (tree / "datasets/part-02/item-00002.json").unlink()
    (tree / "new.txt").write_text("new")
    second = take_full_backup([tree], store)
    since = second.details["since_previous"]
    assert (since["added"], since["removed"], since["changed"]) == (1, 1, 1)
    assert since["examples"]["added"] == [str(tree / "new.txt").lstrip("/")]


def _patch_copy(monkeypatch: pytest.MonkeyPatch, victim: Path, action) -> None:
    original = files_mod.TreeArchiver._copy
    real_open = os.open
    opened: dict[int, str] = {}

    def tracking_open(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        opened[fd] = str(path)
        return fd

    def copy(self, fd, size):
        if opened.get(fd) == str(victim):
            action()
        return original(self, fd, size)

    monkeypatch.setattr(files_mod.os, "open", tracking_open)
    monkeypatch.setattr(files_mod.TreeArchiver, "_copy", copy)


def test_file_growing_while_archived_is_reported_and_archived_consistently(tmp_path: Path, monkeypatch) -> None:
    tree = make_tree(tmp_path / "src", small_files=20)
    growing = tree / "models/train.log"
    original = growing.read_bytes()

    def append() -> None:
        with open(growing, "ab") as out:
            out.write(b"step 60000 loss 0.1\n" * 1000)

    _patch_copy(monkeypatch, growing, append)
    store = LocalStore(tmp_path / "backups")
    manifest = take_full_backup([tree], store)
    monkeypatch.undo()

    changed = manifest.details["changed"]
    assert [c["path"] for c in changed] == [str(growing)]
    assert "size" in changed[0]["what"]
    target = tmp_path / "restored"
    restore_file_backup(store.backup_dir(manifest.backup_id), manifest, target, root=tree)
    assert (target / "models/train.log").read_bytes() == original  # the size seen when its header was written


def test_file_shrinking_or_vanishing_while_archived_is_reported_not_fatal(tmp_path: Path, monkeypatch) -> None:
    tree = make_tree(tmp_path / "src", small_files=20)
    shrinking = tree / "models/weights.bin"
    vanishing = tree / "datasets/part-03/item-00003.json"
    _patch_copy(monkeypatch, shrinking, lambda: os.truncate(shrinking, 1000))
    original_add = files_mod.TreeArchiver._add_file

    def add_file(self, path, st):
        if path == str(vanishing):
            os.unlink(path)
        return original_add(self, path, st)

    monkeypatch.setattr(files_mod.TreeArchiver, "_add_file", add_file)
    store = LocalStore(tmp_path / "backups")
    manifest = take_full_backup([tree], store)
    monkeypatch.undo()

    assert [(c["path"], "shrank" in c["what"]) for c in manifest.details["changed"]] == [(str(shrinking), True)]
    assert [v["path"] for v in manifest.details["vanished"]] == [str(vanishing)]
    target = tmp_path / "restored"
    restore_file_backup(store.backup_dir(manifest.backup_id), manifest, target, root=tree)
    assert not (target / "datasets/part-03/item-00003.json").exists()
    assert (target / "models/weights.bin").read_bytes()[:1000] == shrinking.read_bytes()


def _backup_outcome(backups: Path, tree: Path, allow: bool) -> dict:
    store = LocalStore(backups)
    try:
        manifest = take_full_backup([tree], store, allow_unreadable=allow)
    except UnreadableFilesError as exc:
        return {"error": str(exc), "listed": [b.backup_id for b in store.list_backups()]}
    return {"unreadable": manifest.details["unreadable"], "listed": [b.backup_id for b in store.list_backups()]}


def _run_backup_as_unprivileged(tmp: Path, tree: Path, allow: bool) -> dict:
    """Root reads everything, so as root the backup runs in a child process as ``nobody``."""
    backups = tmp / f"backups-{allow}"
    backups.mkdir()
    if os.geteuid() != 0:
        return _backup_outcome(backups, tree, allow)
    os.chown(backups, 65534, 65534)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            outcome = _backup_outcome(backups, tree, allow)
        except BaseException as exc:  # noqa: BLE001
            outcome = {"crash": repr(exc)}
        os.write(write_end, json.dumps(outcome).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        raw = pipe.read()
    os.waitpid(pid, 0)
    outcome = json.loads(raw)
    assert "crash" not in outcome, outcome
    return outcome


def test_unreadable_files_fail_the_run_unless_the_policy_allows_them(tmp_path_factory) -> None:
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="unreadable-"))
    base.chmod(0o755)
    try:
        tree = make_tree(base / "src", small_files=10)
        for path in [base, *base.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | (0o005 if path.is_dir() else 0o004))
        locked = tree / "models/locked.bin"
        locked.write_bytes(b"secret")
        locked.chmod(0o000)

        refused = _run_backup_as_unprivileged(base, tree, allow=False)
        assert str(locked) in refused["error"] and "allow_unreadable" in refused["error"]
        assert refused["listed"] == []  # nothing that looks like a backup was left

        allowed = _run_backup_as_unprivileged(base, tree, allow=True)
        assert [u["path"] for u in allowed["unreadable"]] == [str(locked)]
        assert len(allowed["listed"]) == 1
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def test_unreadable_error_names_the_files_and_the_way_out() -> None:
    error = UnreadableFilesError([{"path": "/data/x", "error": "Permission denied"}], 1)
    assert "/data/x (Permission denied)" in str(error) and "file_backup.exclude" in str(error)


def test_a_missing_root_fails_instead_of_backing_up_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "backups")
    with pytest.raises(FileBackupError, match="does not exist"):
        take_full_backup([tmp_path / "not-mounted"], store)
    assert store.list_backups() == []
    assert not any((tmp_path / "backups" / ".incomplete").iterdir())


def test_a_flipped_bit_in_a_part_is_detected_and_never_restored(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src", small_files=200)
    store = LocalStore(tmp_path / "backups")
    manifest = take_full_backup([tree], store, part_size_bytes=256 * 1024)
    part = store.file_path(manifest.backup_id, "archive.tar.zst.001")
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x10
    part.write_bytes(bytes(data))

    problems = verify_backup(store, manifest)
    assert [(p.name, p.reason) for p in problems] == [("archive.tar.zst.001", "sha256 differs from the manifest")]

    target = tmp_path / "restored"
    target.mkdir()
    (target / "keep.txt").write_text("current data")
    with pytest.raises(ArchiveIntegrityError):
        restore_file_backup(store.backup_dir(manifest.backup_id), manifest, target, root=tree)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".restored")] == []


def test_backup_skips_its_own_destination_inside_a_root(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src", small_files=5)
    store = LocalStore(tree / "backups")
    take_full_backup([tree], store)
    second = take_full_backup([tree], store)
    with store.open_file(second.backup_id, CONTENTS_NAME) as stream:
        assert not [e for e in read_listing(stream) if "/backups" in e["path"]]
