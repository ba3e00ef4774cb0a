"""File backups in both locations: local folder and a real S3 endpoint on loopback."""

from __future__ import annotations

import json
import os
import random
import stat
from pathlib import Path

import boto3
import pytest

from aiplatform_ops.backup.files import take_full_backup
from aiplatform_ops.restore.extract import restore_file_backup
from aiplatform_ops.storage.base import verify_backup
from aiplatform_ops.storage.local import LocalStore
from aiplatform_ops.storage.replicate import VerificationError, fetch_backup, sync_to_remote
from aiplatform_ops.storage.s3 import S3Store


@pytest.fixture
def s3_store(s3_endpoint, request) -> S3Store:
    client = boto3.client(
        "s3", endpoint_url=f"http://127.0.0.1:{s3_endpoint.port}", region_name="us-east-1",
        aws_access_key_id="test-access", aws_secret_access_key="test-secret",
    )
    bucket = f"files-{request.node.name.lower().replace('_', '-')[:40]}"
    client.create_bucket(Bucket=bucket)
    return S3Store(client, bucket, "files/weekly")


def make_tree(root: Path, count: int = 1500) -> Path:
    rng = random.Random(3)
    for i in range(count):
        folder = root / f"set-{i % 30:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"rec-{i}.json").write_text(json.dumps({"i": i, "v": [rng.random() for _ in range(20)]}))
    (root / "blob.bin").write_bytes(rng.randbytes(2_500_000))
    (root / "模型 ✓.txt").write_text("unicode\n")
    (root / "current").symlink_to("blob.bin")
    (root / "blob.bin").chmod(0o640)
    return root


def tree_state(root: Path) -> dict:
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            found[str(path.relative_to(root))] = ("link", os.readlink(path))
        elif path.is_dir():
            found[str(path.relative_to(root))] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
        else:
            found[str(path.relative_to(root))] = (path.read_bytes(), stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return found


def test_backup_copied_to_s3_restores_from_s3_alone(tmp_path: Path, s3_store: S3Store) -> None:
    tree = make_tree(tmp_path / "data")
    local = LocalStore(tmp_path / "backups")
    manifest = take_full_backup([tree], local, part_size_bytes=400_000)
    report = sync_to_remote(local, s3_store)
    assert report.uploaded == [manifest.backup_id]
    assert verify_backup(local, manifest) == [] and verify_backup(s3_store, manifest) == []

    local.delete_backup(manifest.backup_id)  # the disk with the local copy is lost
    folder, fetched = fetch_backup([local, s3_store], manifest.backup_id, into=tmp_path / "fetched")
    target = tmp_path / "restored"
    restore_file_backup(folder, fetched, target, root=tree)
    assert tree_state(target) == tree_state(tree)


def test_a_flipped_bit_in_the_s3_copy_is_detected_and_the_local_copy_used(tmp_path: Path, s3_store: S3Store) -> None:
    tree = make_tree(tmp_path / "data", count=200)
    local = LocalStore(tmp_path / "backups")
    manifest = take_full_backup([tree], local, part_size_bytes=300_000)
    sync_to_remote(local, s3_store)
    key = f"files/weekly/{manifest.backup_id}/archive.tar.zst.001"
    body = bytearray(s3_store.client.get_object(Bucket=s3_store.bucket, Key=key)["Body"].read())
    body[1234] ^= 0x01
    s3_store.client.put_object(Bucket=s3_store.bucket, Key=key, Body=bytes(body))

    problems = verify_backup(s3_store, manifest)
    assert [p.name for p in problems] == ["archive.tar.zst.001"]
    with pytest.raises(VerificationError):
        fetch_backup([s3_store], manifest.backup_id, into=tmp_path / "fetched")
    folder, _ = fetch_backup([s3_store, local], manifest.backup_id, into=tmp_path / "fetched2")
    assert folder == local.backup_dir(manifest.backup_id)
