"""Chain-aware retention in both locations: whole chains expire, a needed base stays, the newest
chain always stays, and a dry run deletes nothing."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from aiplatform_ops.storage.local import LocalStore
from aiplatform_ops.storage.manifest import BackupManifest, FileEntry, iso, sha256_file
from aiplatform_ops.storage.retention import apply_retention, plan_by_age
from aiplatform_ops.storage.s3 import S3Store

NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
KEEP_DAYS = 30  # cutoff 2026-10-26 03:00


def day(month: int, d: int) -> datetime:
    return datetime(2026, month, d, 2, 0, tzinfo=UTC)


# chain id -> the start times of its members, full first
CHAINS = {
    "old": [day(9, 1), day(9, 2), day(9, 3)],                # ended long before the cutoff: goes whole
    "spanning": [day(10, 20), day(10, 25), day(10, 30)],     # base expired, last incremental kept
    "recent": [day(11, 20), day(11, 21)],                    # all kept
}


def add_backup(store: LocalStore, started: datetime, full_id: str | None, parent: str | None) -> BackupManifest:
    backup_id = store.new_backup_id(started, "full" if full_id is None else "incr")
    staging = store.staging_dir(backup_id)
    (staging / "data.zst").write_bytes(f"payload of {backup_id}".encode())
    size, sha = sha256_file(staging / "data.zst")
    manifest = BackupManifest(
        backup_id=backup_id, kind="database", type="full" if full_id is None else "incremental",
        started_at=iso(started), finished_at=iso(started + timedelta(minutes=10)),
        files=[FileEntry("data.zst", size, sha)], parent_id=parent, chain_id=full_id or backup_id,
    )
    store.commit(staging, manifest)
    return manifest


def build(store: LocalStore, chains: dict[str, list[datetime]]) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {}
    for name, starts in chains.items():
        members: list[BackupManifest] = []
        for started in starts:
            full_id = members[0].backup_id if members else None
            parent = members[-1].backup_id if members else None
            members.append(add_backup(store, started, full_id, parent))
        ids[name] = [m.backup_id for m in members]
    return ids


@pytest.fixture
def s3_client(s3_endpoint):
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_endpoint.port}", region_name="us-east-1",
                        aws_access_key_id="test-access", aws_secret_access_key="test-secret")


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path: Path):
    """Where retention runs: the local folder itself, or an S3 prefix holding copies of it."""
    local = LocalStore(tmp_path / "backup" / "db" / "daily")

    def make(chains: dict[str, list[datetime]]):
        ids = build(local, chains)
        if request.param == "local":
            return local, ids
        client = request.getfixturevalue("s3_client")
        bucket = f"retention-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=bucket)
        remote = S3Store(client, bucket, "db/daily")
        for manifest in local.list_backups():
            remote.store_backup(local.backup_dir(manifest.backup_id), manifest)
        return remote, ids

    return make


def listed(store) -> list[str]:
    return [m.backup_id for m in store.list_backups()]


def test_expired_chains_go_whole_and_a_needed_base_stays(location, caplog) -> None:
    store, ids = location(CHAINS)
    plan = plan_by_age(store.url, store.list_backups(), KEEP_DAYS, NOW)
    assert sorted(plan.delete) == sorted(ids["old"])
    assert sorted(plan.keep) == sorted(ids["spanning"] + ids["recent"])
    assert "before" in plan.reasons[ids["old"][0]]

    with caplog.at_level(logging.INFO, logger="aiplatform_ops.storage.retention"):
        deleted = apply_retention(store, plan)
    assert deleted == sorted(ids["old"])
    assert listed(store) == ids["spanning"] + ids["recent"]
    # The expired base of the spanning chain is still there, intact, because its incrementals are kept.
    base = store.read_manifest(ids["spanning"][0])
    assert base.type == "full" and store.has_backup(base.backup_id)
    with store.open_file(base.backup_id, "data.zst") as stream:
        assert stream.read() == f"payload of {base.backup_id}".encode()
    # Every deletion is logged with its reason.
    for backup_id in ids["old"]:
        assert any(backup_id in r.getMessage() and "deleting" in r.getMessage() for r in caplog.records)


def test_nothing_of_a_deleted_backup_is_left_behind(location) -> None:
    store, ids = location(CHAINS)
    apply_retention(store, plan_by_age(store.url, store.list_backups(), KEEP_DAYS, NOW))
    if isinstance(store, LocalStore):
        left = {p.name for p in store.root.iterdir() if not p.name.startswith(".")}
        staged = list((store.root / ".incomplete").iterdir()) if (store.root / ".incomplete").exists() else []
        assert staged == []
    else:
        left = set(store._ids())
    assert left == set(ids["spanning"] + ids["recent"])


def test_a_dry_run_deletes_nothing(location, caplog) -> None:
    store, ids = location(CHAINS)
    before = listed(store)
    plan = plan_by_age(store.url, store.list_backups(), KEEP_DAYS, NOW)
    with caplog.at_level(logging.INFO, logger="aiplatform_ops.storage.retention"):
        would = apply_retention(store, plan, dry_run=True)
    assert would == sorted(ids["old"])
    assert listed(store) == before
    assert any("would delete" in r.getMessage() and ids["old"][0] in r.getMessage() for r in caplog.records)


def test_the_newest_chain_is_kept_even_when_expired(location) -> None:
    """Backups stopped a while ago: retention must not empty the location."""
    store, ids = location({"old": CHAINS["old"], "older_but_newer": [day(9, 10), day(9, 11)]})
    plan = plan_by_age(store.url, store.list_backups(), KEEP_DAYS, NOW)
    apply_retention(store, plan)
    assert listed(store) == ids["older_but_newer"]
    assert "newest chain" in plan.reasons[ids["older_but_newer"][0]]


def test_an_incremental_without_its_full_here_is_left_alone(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "db")
    ids = build(store, {"old": CHAINS["old"], "recent": CHAINS["recent"]})
    store.delete_backup(ids["old"][0])  # someone removed the base by hand
    plan = plan_by_age(store.url, store.list_backups(), KEEP_DAYS, NOW)
    assert set(ids["old"][1:]) <= set(plan.keep) and plan.delete == []
    assert "no full backup" in plan.reasons[ids["old"][1]]


def test_retention_runs_again_without_deleting_more(location) -> None:
    store, ids = location(CHAINS)
    apply_retention(store, plan_by_age(store.url, store.list_backups(), KEEP_DAYS, NOW))
    second = plan_by_age(store.url, store.list_backups(), KEEP_DAYS, NOW)
    assert second.delete == []
    # A week later the spanning chain has aged out completely and goes whole, its base with it.
    later = plan_by_age(store.url, store.list_backups(), KEEP_DAYS, NOW + timedelta(days=7))
    assert sorted(later.delete) == sorted(ids["spanning"])
    apply_retention(store, later)
    assert listed(store) == ids["recent"]
