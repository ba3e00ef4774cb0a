"""Database backups in their second location: a damaged copy is found and the intact one used,
and an S3 outage leaves the local backup while a later run catches up."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3
import pytest
import sample_data
import sandbox
import yaml
from db_fixtures import settings_for

from aiplatform_ops.backup.database import take_database_backup
from aiplatform_ops.storage.base import verify_backup
from aiplatform_ops.storage.local import LocalStore
from aiplatform_ops.storage.manifest import sha256_file
from aiplatform_ops.storage.replicate import VerificationError, fetch_backup, sync_to_remote
from aiplatform_ops.storage.s3 import S3Store

REPO = Path(__file__).resolve().parents[2]
PREFIX = "db/daily"


def s3_client(port: int, **config):
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id="test-access", aws_secret_access_key="test-secret",
                        config=Config(**config) if config else None)


@pytest.fixture
def bucket() -> str:
    return f"db-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_store(s3_endpoint, bucket) -> S3Store:
    client = s3_client(s3_endpoint.port)
    client.create_bucket(Bucket=bucket)
    return S3Store(client, bucket, PREFIX)


def use_policy(tmp_path: Path, monkeypatch, local: LocalStore, bucket: str, db: str, s3_port: int) -> None:
    """A config dir whose database policy points at this test's folder, bucket and database."""
    config = tmp_path / "config"
    config.mkdir()
    policy = yaml.safe_load((REPO / "include" / "config" / "backup_policy.yaml").read_text())
    policy["database_backup"].update(locations=[str(local.root), f"s3://{bucket}/{PREFIX}"], databases=[db],
                                     s3_server_side_encryption=None)
    (config / "backup_policy.yaml").write_text(yaml.safe_dump(policy))
    monkeypatch.setenv("AIPLATFORM_OPS_CONFIG_DIR", str(config))
    monkeypatch.setenv("AIRFLOW_CONN_AIPLATFORM_S3", json.dumps({
        "conn_type": "aws", "login": "test-access", "password": "test-secret",
        "extra": {"endpoint_url": f"http://127.0.0.1:{s3_port}", "region_name": "us-east-1",
                  "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}},
    }))


def flip_bit(data: bytes, at: int | None = None) -> bytes:
    damaged = bytearray(data)
    damaged[len(data) // 2 if at is None else at] ^= 0x10
    return bytes(damaged)


def table_part(manifest, table: str) -> str:
    return next(f.name for f in manifest.files if f.meta.get("table") == table)


# --- a flipped bit ---------------------------------------------------------------------------------


def test_a_flipped_bit_is_found_in_either_copy_and_the_intact_one_is_used(platform_db, db_store, s3_store, tmp_path):
    target, db = platform_db
    full = take_database_backup(target, db_store, settings_for(db))
    assert sync_to_remote(db_store, s3_store).uploaded == [full.backup_id]
    name = table_part(full, "ai_training_log")
    local_file = db_store.file_path(full.backup_id, name)
    intact = local_file.read_bytes()

    # The local copy rots.
    local_file.write_bytes(flip_bit(intact))
    problems = verify_backup(db_store, full)
    assert [(p.name, p.location) for p in problems] == [(name, db_store.url)]
    assert "sha256" in problems[0].reason and name in str(problems[0])
    assert verify_backup(s3_store, full) == []
    folder, manifest = fetch_backup([db_store, s3_store], full.backup_id, into=tmp_path / "fetched")
    assert folder == tmp_path / "fetched" and manifest == full
    assert (folder / name).read_bytes() == intact
    assert all(sha256_file(folder / f.name) == (f.size, f.sha256) for f in full.files)

    # Both copies rot (different bits): nothing intact is left, and the error names each damaged copy.
    key = f"{PREFIX}/{full.backup_id}/{name}"
    s3_store.client.put_object(Bucket=s3_store.bucket, Key=key, Body=flip_bit(intact, at=10))
    with pytest.raises(VerificationError) as err:
        fetch_backup([db_store, s3_store], full.backup_id, into=tmp_path / "fetched-again")
    assert {(p.location, p.name) for p in err.value.problems} == {(db_store.url, name), (s3_store.url, name)}
    assert name in str(err.value)

    # Only the S3 copy is damaged: verification names it, and the local copy is used.
    local_file.write_bytes(intact)
    problems = verify_backup(s3_store, full)
    assert [(p.location, p.name) for p in problems] == [(s3_store.url, name)]
    folder, _ = fetch_backup([s3_store, db_store], full.backup_id, into=tmp_path / "fetched-third")
    assert folder == db_store.backup_dir(full.backup_id)


def test_the_verify_task_fails_naming_the_damaged_file(platform_db, db_store, s3_endpoint, s3_store, bucket, tmp_path,
                                                       monkeypatch):
    from aiplatform_ops.operators.backup_copies import VerifyBackupOperator

    target, db = platform_db
    full = take_database_backup(target, db_store, settings_for(db))
    sample_data.change_rows(target, db, 0.02, tag="verify")
    incr = take_database_backup(target, db_store, settings_for(db))
    sync_to_remote(db_store, s3_store)
    use_policy(tmp_path, monkeypatch, db_store, bucket, db, s3_endpoint.port)

    for backup in (full, incr):
        result = VerifyBackupOperator(task_id="verify_copies", kind="database", backup_id=backup.backup_id).execute({})
        assert result == {"backup_id": backup.backup_id, "verified": [db_store.url, s3_store.url]}

    binlog = incr.files[0].name
    key = f"{PREFIX}/{incr.backup_id}/{binlog}"
    body = s3_store.client.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3_store.client.put_object(Bucket=bucket, Key=key, Body=flip_bit(body))
    with pytest.raises(VerificationError) as err:
        VerifyBackupOperator(task_id="verify_copies", kind="database", backup_id=incr.backup_id).execute({})
    assert f"{s3_store.url}/{incr.backup_id}/{binlog}" in str(err.value)
    assert db_store.url not in str(err.value)

    # A truncated local part (size differs) is named too.
    part = db_store.file_path(full.backup_id, table_part(full, "ai_dataset"))
    part.write_bytes(part.read_bytes()[:-1])
    with pytest.raises(VerificationError, match=f"{full.backup_id}/{part.name}: size"):
        VerifyBackupOperator(task_id="verify_copies", kind="database", backup_id=full.backup_id).execute({})


# --- S3 down ---------------------------------------------------------------------------------------


def test_s3_down_keeps_the_local_backup_and_the_next_sync_catches_up(platform_db, db_store, tmp_path, monkeypatch):
    from aiplatform_ops.operators.backup_copies import CopyBackupsToS3Operator

    target, db = platform_db
    settings = settings_for(db)
    bucket = f"db-{uuid.uuid4().hex[:12]}"
    dead_port = sandbox.free_port()  # nothing listens there: S3 is down
    down = S3Store(s3_client(dead_port, retries={"max_attempts": 1}, connect_timeout=2), bucket, PREFIX)

    full = take_database_backup(target, db_store, settings)
    with pytest.raises(Exception, match=r"(?i)connect"):
        sync_to_remote(db_store, down)
    use_policy(tmp_path, monkeypatch, db_store, bucket, db, dead_port)
    with pytest.raises(Exception, match=r"(?i)connect"):
        CopyBackupsToS3Operator(task_id="copy_to_s3", kind="database").execute({})
    assert [m.backup_id for m in db_store.list_backups()] == [full.backup_id]
    assert verify_backup(db_store, full) == []

    # The next night S3 is still down; the chain goes on locally.
    sample_data.change_rows(target, db, 0.02, tag="outage")
    incr = take_database_backup(target, db_store, settings)
    assert incr.type == "incremental"
    with pytest.raises(Exception, match=r"(?i)connect"):
        sync_to_remote(db_store, down)

    s3 = sandbox.start_s3(tmp_path / "s3-back")  # S3 is back (a new, empty endpoint)
    try:
        client = s3_client(s3.port)
        client.create_bucket(Bucket=bucket)
        remote = S3Store(client, bucket, PREFIX)
        # An upload cut off by the outage left objects without a manifest: not a backup, cleaned first.
        client.put_object(Bucket=bucket, Key=f"{PREFIX}/{full.backup_id}/{full.files[0].name}", Body=b"partial")
        assert remote.list_backups() == []

        monkeypatch.setenv("AIRFLOW_CONN_AIPLATFORM_S3", json.dumps({
            "conn_type": "aws", "login": "test-access", "password": "test-secret",
            "extra": {"endpoint_url": f"http://127.0.0.1:{s3.port}", "region_name": "us-east-1"}}))
        result = CopyBackupsToS3Operator(task_id="copy_to_s3", kind="database").execute({})
        assert result == {"uploaded": [full.backup_id, incr.backup_id], "present": []}
        assert [m.backup_id for m in remote.list_backups()] == [full.backup_id, incr.backup_id]
        for manifest in (full, incr):
            assert verify_backup(remote, manifest) == []
            assert remote.read_manifest(manifest.backup_id) == manifest

        again = sync_to_remote(db_store, remote)
        assert (again.uploaded, again.present, again.cleaned) == ([], [full.backup_id, incr.backup_id], [])
    finally:
        s3.stop()
