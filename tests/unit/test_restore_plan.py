"""Choosing what to restore: chains, points in time, and the trigger form's checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aiplatform_ops.restore.plan import RestoreInputError, RestoreRequest, choose_database_chain
from aiplatform_ops.storage.manifest import BackupManifest, iso

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


def backup(day: int, kind: str, chain: str | None = None, parent: str | None = None) -> BackupManifest:
    started = T0 + timedelta(days=day)
    backup_id = f"{started:%Y%m%dT%H%M%SZ}-{'full' if kind == 'full' else 'incr'}"
    return BackupManifest(backup_id, "database", kind, iso(started), iso(started + timedelta(minutes=5)), [],
                          parent_id=parent, chain_id=chain or backup_id, details={"pitr": True})


@pytest.fixture
def manifests():
    a = backup(0, "full")
    a1 = backup(1, "incremental", a.backup_id, a.backup_id)
    a2 = backup(2, "incremental", a.backup_id, a1.backup_id)
    b = backup(7, "full")
    b1 = backup(8, "incremental", b.backup_id, b.backup_id)
    return {m.backup_id: m for m in (a, a1, a2, b, b1)}


def ids(chain):
    return [m.backup_id.split("-")[0][:8] for m in chain]


def test_latest_is_the_whole_newest_chain(manifests):
    assert ids(choose_database_chain(manifests, "latest", None)) == ["20261108", "20261109"]


def test_a_point_in_time_takes_the_newest_full_before_it_and_incrementals_up_to_it(manifests):
    point = T0 + timedelta(days=1, hours=3)
    assert ids(choose_database_chain(manifests, "latest", point)) == ["20261101", "20261102", "20261103"]
    point = T0 + timedelta(hours=12)
    assert ids(choose_database_chain(manifests, "latest", point)) == ["20261101", "20261102"]


def test_an_id_restores_its_chain_up_to_it(manifests):
    a1 = sorted(manifests)[1]
    assert ids(choose_database_chain(manifests, a1, None)) == ["20261101", "20261102"]


@pytest.mark.parametrize(("offset", "error"), [
    (timedelta(hours=-1), "before the oldest archived binary log"),
    (timedelta(days=4), "falls in a gap"),
    (timedelta(days=9), "after the newest archived binary log"),
])
def test_points_outside_the_archived_binary_logs_are_refused(manifests, offset, error):
    with pytest.raises(RestoreInputError, match=error):
        choose_database_chain(manifests, "latest", T0 + offset)


def test_an_incremental_without_its_full_backup_cannot_be_restored(manifests):
    full = sorted(manifests)[0]
    del manifests[full]
    with pytest.raises(RestoreInputError, match="whose full backup is in no location"):
        choose_database_chain(manifests, sorted(manifests)[0], None)


@pytest.mark.parametrize(("params", "error"), [
    ({"components": []}, "non-empty subset"),
    ({"components": ["database", "logs"]}, "non-empty subset"),
    ({"components": ["files"], "point_in_time": "2026-11-01T03:00:00Z"}, "database only"),
    ({"components": ["database"], "database_backup": "yesterday"}, "neither 'latest' nor a backup id"),
    ({"components": ["database"], "target": "prod"}, "target must be one of"),
    ({"components": ["database"], "point_in_time": "soon"}, "not an ISO 8601"),
])
def test_the_form_is_checked_before_anything_else(params, error):
    with pytest.raises(RestoreInputError, match=error):
        RestoreRequest.from_params(params)


def test_the_form_defaults_to_a_dry_run_of_the_latest_backups():
    request = RestoreRequest.from_params({"components": ["config", "database"], "point_in_time": "2026-11-01 03:00:00"})
    assert request.dry_run and request.components == ("database", "config")
    assert request.backups == {"database": "latest", "config": "latest"}
    assert request.point_in_time == datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
