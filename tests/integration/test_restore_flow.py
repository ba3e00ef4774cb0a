"""Restores against real MariaDB with binary logs, a real S3 endpoint and services behind sshd.

Every assertion is about what an operator cares about: the rows, files and config after the
restore (or after its rollback), whether services run, and what the error says.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
import sample_data
from db_fixtures import db_store, platform_db, settings_for  # noqa: F401 - fixtures
from services_fixtures import SSHClients, fake_units, serving, sshd, write_config  # noqa: F401 - fixtures

from aiplatform_ops.backup.config_set import take_config_backup
from aiplatform_ops.backup.database import take_database_backup
from aiplatform_ops.backup.files import take_full_backup as take_file_backup
from aiplatform_ops.restore.drill import DrillFailed, run_drill
from aiplatform_ops.restore.plan import ComponentStores, RestoreInputError, RestoreRequest, resolve_plan
from aiplatform_ops.restore.runner import RestoreEnvironment, RestoreFailed, execute_restore
from aiplatform_ops.services.control import start_services
from aiplatform_ops.services.inventory import load_services
from aiplatform_ops.storage.local import LocalStore
from aiplatform_ops.storage.replicate import sync_to_remote
from aiplatform_ops.storage.s3 import S3Store

# --- the platform under test ----------------------------------------------------------------


class Platform:
    """A platform database, a data tree and a config set, each backed up to local + S3."""

    def __init__(self, root: Path, target, db: str, s3_client, bucket: str) -> None:
        self.root, self.target, self.db = root, target, db
        self.data = root / "app" / "data"
        self.conf = root / "etc" / "aiplatform"
        self.stores = {
            kind: ComponentStores(LocalStore(root / "backup" / kind), S3Store(s3_client, bucket, kind))
            for kind in ("database", "files", "config")
        }
        self.work = root / "backup" / "restores"

    def write_files(self, version: str) -> None:
        (self.data / "datasets").mkdir(parents=True, exist_ok=True)
        (self.data / "datasets" / "a.txt").write_text(f"dataset a {version}\n")
        (self.data / f"only-{version}.bin").write_bytes(os.urandom(2000))
        self.conf.mkdir(parents=True, exist_ok=True)
        (self.conf / "app.yaml").write_text(f"version: {version}\n")

    def backup_db(self):
        return take_database_backup(self.target, self.stores["database"].local, settings_for(self.db))

    def backup_files_and_config(self) -> None:
        take_file_backup([self.data], self.stores["files"].local, threads=0)
        take_config_backup([self.conf], self.stores["config"].local)

    def sync(self) -> None:
        for stores in self.stores.values():
            sync_to_remote(stores.local, stores.remote)

    def state(self) -> dict:
        files = {str(p.relative_to(self.root)): (p.read_bytes(), p.stat().st_mode)
                 for top in (self.data.parent, self.conf.parent) for p in sorted(top.rglob("*")) if p.is_file()}
        return {"rows": sample_data.table_fingerprints(self.target, self.db), "files": files}

    def plan(self, run_id: str = "", **params):
        params.setdefault("components", ["database"])
        request = RestoreRequest.from_params(params, triggered_by="pytest")
        return resolve_plan(request, self.stores, work_dir=self.work, run_id=run_id or uuid.uuid4().hex[:8],
                            mysql=self.target, live_databases=[self.db], services=self.services)

    services: list[str] = []


@pytest.fixture
def platform(tmp_path, platform_db, s3_endpoint):  # noqa: F811
    target, db = platform_db
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_endpoint.port}", region_name="us-east-1",
                          aws_access_key_id="test-access", aws_secret_access_key="test-secret")
    bucket = f"restore-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return Platform(tmp_path, target, db, client, bucket)


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- database: full and point in time -------------------------------------------------------

def test_point_in_time_and_latest_restores_reproduce_the_rows_of_that_moment(platform):
    p = platform
    p.backup_db()
    at_full = sample_data.table_fingerprints(p.target, p.db)
    sample_data.change_rows(p.target, p.db, 0.05, tag="before-point")
    time.sleep(1.1)
    point = utc_now()
    at_point = sample_data.table_fingerprints(p.target, p.db)
    time.sleep(1.1)
    sample_data.change_rows(p.target, p.db, 0.05, tag="after-point")
    sample_data.run_sql(p.target, "DROP TABLE ai_dataset_file;", p.db)
    p.backup_db()
    at_end = sample_data.table_fingerprints(p.target, p.db)
    assert len({str(at_full), str(at_point), str(at_end)}) == 3
    p.sync()

    scratch = f"{p.db}_pit"
    try:
        plan = p.plan(target="scratch", scratch_database=scratch, point_in_time=point.isoformat(),
                      dry_run=False, confirm=scratch)
        assert plan.components["database"].details["stop_datetime"] == point.strftime("%Y-%m-%d %H:%M:%S")
        execute_restore(plan, RestoreEnvironment(p.stores, p.target), "pit")
        assert sample_data.table_fingerprints(p.target, scratch) == at_point

        plan = p.plan(target="scratch", scratch_database=scratch, dry_run=False, confirm=scratch)
        execute_restore(plan, RestoreEnvironment(p.stores, p.target), "latest")
        assert sample_data.table_fingerprints(p.target, scratch) == at_end
    finally:
        p.target.query(f"DROP DATABASE IF EXISTS `{scratch}`")
    assert sample_data.table_fingerprints(p.target, p.db) == at_end  # the live database was never touched


def test_damaged_local_copy_is_restored_from_s3(platform):
    p = platform
    full = p.backup_db()
    expected = sample_data.table_fingerprints(p.target, p.db)
    p.sync()
    part = next(f for f in full.files if f.meta.get("table") == "ai_training_log")
    flip_a_byte(p.stores["database"].local.file_path(full.backup_id, part.name))
    scratch = f"{p.db}_s3"
    try:
        plan = p.plan(target="scratch", scratch_database=scratch, dry_run=False, confirm=scratch)
        assert plan.components["database"].read_from[0].startswith("s3://")
        execute_restore(plan, RestoreEnvironment(p.stores, p.target), "from-s3")
        assert sample_data.table_fingerprints(p.target, scratch) == expected
    finally:
        p.target.query(f"DROP DATABASE IF EXISTS `{scratch}`")


# --- live restore with services, and its rollback -------------------------------------------

def _service(unit: str, port: int, units) -> dict:
    return {"systemd": {"unit": unit, "commands": units.commands()},
            "health": [{"type": "http", "url": f"http://127.0.0.1:{port}/health", "body_contains": "UP",
                        "timeout_seconds": 1}],
            "stop_timeout_seconds": 15, "start_timeout_seconds": 15}


@pytest.fixture
def live(platform, sshd, fake_units, tmp_path):  # noqa: F811
    """The platform with two services running behind sshd, backed up, then changed."""
    p = platform
    ports = {"fake-auth": fake_units.add("fake-auth"), "fake-web": fake_units.add("fake-web")}
    services = {"fake-auth": _service("fake-auth", ports["fake-auth"], fake_units),
                "fake-web": _service("fake-web", ports["fake-web"], fake_units) | {"depends_on": ["fake-auth"]}}
    inventory = load_services(write_config(tmp_path / "svc", services))
    clients = SSHClients(sshd)
    start_services(inventory, clients)
    p.services = inventory.names()
    p.write_files("v1")
    p.backup_db()
    p.backup_files_and_config()
    p.sync()
    backed_up = p.state()
    sample_data.change_rows(p.target, p.db, 0.05, tag="after-backup")
    (p.data / "datasets" / "a.txt").write_text("changed after the backup\n")
    (p.data / "new-after-backup.txt").write_text("new\n")
    (p.conf / "app.yaml").write_text("version: broken\n")
    env = RestoreEnvironment(p.stores, p.target, inventory, clients)
    yield p, env, ports, backed_up
    clients.close()


def test_live_restore_stops_restores_and_starts_everything(live, caplog):
    p, env, ports, backed_up = live
    plan = p.plan(components=["database", "files", "config"], dry_run=False, confirm=p.db)
    assert plan.services == ["fake-auth", "fake-web"] or set(plan.services) == {"fake-auth", "fake-web"}
    with caplog.at_level(logging.INFO, logger="aiplatform_ops.audit"):
        state = execute_restore(plan, env, "live-ok")
    assert state["status"] == "finished"
    assert p.state() == backed_up
    assert all(serving(port) for port in ports.values())
    audit = [r.getMessage() for r in caplog.records if r.name == "aiplatform_ops.audit"]
    assert any("step=database action=drop" in line for line in audit)
    assert any("action=stop" in line for line in audit) and any("action=start" in line for line in audit)
    assert not list(p.root.rglob("*.pre-restore-*"))  # the moved-aside copies are gone after success
    assert (p.stores["database"].local.root / ".chain-broken.json").exists()  # next backup starts a new chain


@pytest.mark.parametrize("failing_step", ["database", "start_services"])
def test_failure_after_the_database_step_rolls_back_to_the_exact_state_before(live, failing_step):
    p, env, ports, _ = live
    before = p.state()
    plan = p.plan(components=["database", "files", "config"], dry_run=False, confirm=p.db)

    def fail(step: str) -> None:
        if step == failing_step:
            raise RuntimeError("injected failure")

    with pytest.raises(RestoreFailed) as failure:
        execute_restore(plan, env, f"fail-{failing_step}", after_step=fail)
    message = str(failure.value)
    assert f"failed at step '{failing_step}'" in message and "injected failure" in message
    assert "Rolled back" in message and "services that ran before started again" in message
    assert p.state() == before
    assert all(serving(port) for port in ports.values())
    assert not list(p.root.rglob("*.pre-restore-*"))


def test_dry_run_plans_and_changes_nothing(live):
    p, env, ports, _ = live
    before = p.state()
    plan = p.plan(components=["database", "files", "config"])
    assert plan.dry_run
    text = plan.describe()
    assert "dry run" in text and "stop services: fake-web, fake-auth" in text or "fake-auth" in text
    assert f"confirm = '{p.db}'" in text
    with pytest.raises(Exception, match="dry run"):
        execute_restore(plan, env, "dry")
    assert p.state() == before
    assert all(serving(port) for port in ports.values())


# --- bad input: a clear error before anything is stopped, nothing changed --------------------

def test_every_bad_input_is_refused_before_anything_changes(live, tmp_path):
    p, env, ports, _ = live
    before = p.state()
    first = p.stores["database"].local.list_backups()[0]

    cases = {
        "unknown backup": ({"database_backup": "20200101T000000Z-full"}, "unknown database backup"),
        "before oldest": ({"point_in_time": (first.started - timedelta(days=1)).isoformat()},
                          "before the oldest archived binary log"),
        "after newest": ({"point_in_time": (utc_now() + timedelta(hours=1)).isoformat()},
                         "after the newest archived binary log"),
        "no confirmation": ({"dry_run": False}, "type the target's name"),
        "wrong confirmation": ({"dry_run": False, "confirm": "aiplatform_other"}, "does not match"),
        "scratch folder missing": ({"components": ["files"], "target": "scratch",
                                    "scratch_folder": str(tmp_path / "nowhere" / "rehearsal")}, "does not exist"),
        "scratch is live": ({"target": "scratch", "scratch_database": p.db}, "is a live database"),
        "not a point in time": ({"point_in_time": "yesterday"}, "not an ISO 8601"),
    }
    for name, (params, error) in cases.items():
        with pytest.raises(RestoreInputError, match=error):
            p.plan(**params)
        assert p.state() == before, name

    with pytest.raises(RestoreInputError, match="does not exist on"):
        _plan_for_missing_db(p)

    with p.stores["database"].local.lock("database backup"), pytest.raises(RestoreInputError, match="while a backup"):
        p.plan(dry_run=False, confirm=p.db)

    full = first
    for store in (p.stores["database"].local,):
        flip_a_byte(store.file_path(full.backup_id, full.files[-1].name))
    s3 = p.stores["database"].remote
    key = f"database/{full.backup_id}/{full.files[-1].name}"
    body = bytearray(s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=bytes(body))
    with pytest.raises(RestoreInputError, match="damaged in every location"):
        p.plan(dry_run=False, confirm=p.db)
    assert p.state() == before
    assert all(serving(port) for port in ports.values())


def _plan_for_missing_db(p: Platform):
    """A live restore of a backup whose database is gone from the server."""
    other = f"{p.db}_gone"
    sample_data.apply_schema(p.target, other)
    take_database_backup(p.target, LocalStore(p.root / "backup" / "other"), settings_for(other))
    p.target.query(f"DROP DATABASE `{other}`")
    stores = dict(p.stores)
    stores["database"] = ComponentStores(LocalStore(p.root / "backup" / "other"))
    request = RestoreRequest.from_params({"components": ["database"]})
    return resolve_plan(request, stores, work_dir=p.work, run_id="gone", mysql=p.target)


# --- the drill ------------------------------------------------------------------------------

def test_drill_passes_on_good_backups_and_fails_on_a_damaged_one(platform):
    p = platform
    p.write_files("v1")
    p.backup_db()
    sample_data.change_rows(p.target, p.db, 0.02, tag="drill")
    p.backup_db()
    p.backup_files_and_config()
    p.sync()
    env = RestoreEnvironment(p.stores, p.target)
    scratch = f"{p.db}_drill"
    result = run_drill(env, work_dir=p.work, run_id="drill-good", scratch_database=scratch,
                       scratch_folder=p.root / "drill", live_databases=[p.db])
    assert result["result"] == "passed"
    assert all(isinstance(s, float) for s in result["recovery_seconds"].values())
    assert not p.target.query("SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (scratch,))
    assert not (p.root / "drill" / "files").exists()

    damaged = p.stores["files"].local.list_backups()[-1]
    part = damaged.files[0].name
    flip_a_byte(p.stores["files"].local.file_path(damaged.backup_id, part))
    s3 = p.stores["files"].remote
    key = f"files/{damaged.backup_id}/{part}"
    body = bytearray(s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=bytes(body))
    with pytest.raises(DrillFailed, match="files: .*damaged in every location") as failure:
        run_drill(env, work_dir=p.work, run_id="drill-bad", scratch_database=scratch,
                  scratch_folder=p.root / "drill", live_databases=[p.db])
    steps = {s["component"]: s["ok"] for s in failure.value.result["steps"]}
    assert steps == {"database": True, "files": False, "config": True}
    json.dumps(failure.value.result)  # the drill result is storable as JSON
