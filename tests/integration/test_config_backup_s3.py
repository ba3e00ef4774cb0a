"""Config versions in both locations, retention by count applied to each."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from aiplatform_ops.backup.config_set import config_versions, take_config_backup
from aiplatform_ops.storage.base import verify_backup
from aiplatform_ops.storage.local import LocalStore
from aiplatform_ops.storage.replicate import sync_to_remote
from aiplatform_ops.storage.retention import apply_retention, plan_by_count
from aiplatform_ops.storage.s3 import S3Store


@pytest.fixture
def s3_store(s3_endpoint) -> S3Store:
    client = boto3.client(
        "s3", endpoint_url=f"http://127.0.0.1:{s3_endpoint.port}", region_name="us-east-1",
        aws_access_key_id="test-access", aws_secret_access_key="test-secret",
    )
    client.create_bucket(Bucket="config-versions")
    return S3Store(client, "config-versions", "config/versions")


def test_eleven_changes_keep_the_last_ten_versions_in_both_locations(tmp_path: Path, s3_store: S3Store) -> None:
    conf = tmp_path / "etc/nginx/conf.d"
    conf.mkdir(parents=True)
    local = LocalStore(tmp_path / "versions")
    created = []
    for n in range(11):
        (conf / "upstreams.conf").write_text(f"upstream gateway {{ keepalive {n + 1}; }}\n")
        created.append(take_config_backup([conf], local).manifest.backup_id)
        sync_to_remote(local, s3_store)
    assert [m.backup_id for m in s3_store.list_backups()] == created
    for manifest in s3_store.list_backups():
        assert verify_backup(s3_store, manifest) == []

    for store in (local, s3_store):
        plan = plan_by_count(store.url, [m for m in store.list_backups() if m.kind == "config"], 10)
        apply_retention(store, plan)
    assert [m.backup_id for m in config_versions(local)] == created[1:]
    assert [m.backup_id for m in s3_store.list_backups()] == created[1:]
