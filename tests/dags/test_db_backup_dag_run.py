"""The nightly database backup DAG, run end to end through dag.test() against real services."""

from __future__ import annotations

import boto3
import sample_data
from conftest import run_dag

from aiplatform_ops.config import load_backup_policy
from aiplatform_ops.storage.base import verify_backup
from aiplatform_ops.storage.local import LocalStore
from aiplatform_ops.storage.s3 import S3Store


def run_backup_dag() -> dict[str, str]:
    return run_dag("aiplatform_db_backup")


def test_two_nights_leave_a_verified_chain_in_both_locations(dag_environment, s3_endpoint):
    target, database = dag_environment
    first = run_backup_dag()
    assert first == dict.fromkeys(("take_backup", "copy_to_s3", "verify_copies", "apply_retention"), "success")
    sample_data.change_rows(target, database, 0.01, tag="night2")
    second = run_backup_dag()
    assert set(second.values()) == {"success"}

    policy = load_backup_policy().database
    local = LocalStore(policy.locations.local)
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_endpoint.port}", region_name="us-east-1",
                          aws_access_key_id="k", aws_secret_access_key="s")
    remote = S3Store(client, policy.locations.s3.bucket, policy.locations.s3.prefix)
    for store in (local, remote):
        backups = store.list_backups()
        assert [m.type for m in backups] == ["full", "incremental"]
        assert backups[1].parent_id == backups[0].backup_id
        assert all(verify_backup(store, m) == [] for m in backups)
