"""Verification checks against the real MariaDB and Redis fixtures, and the report they produce."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
import redis as redis_lib
import sandbox

from aiplatform_ops.backup.mysql_target import MySQLTarget
from aiplatform_ops.services.inventory import parse_inventory
from aiplatform_ops.verify.checks import (
    FAILED,
    PASSED,
    SKIPPED,
    Expectations,
    MetricThresholds,
    OrphanCheck,
    SqlSmoke,
    VerifySettings,
    VerifySources,
    check_disk_free,
    check_files,
    check_mysql_metrics,
    check_orphans,
    check_redis_metrics,
    check_row_counts,
    check_sql_smoke,
    run_group,
)
from aiplatform_ops.verify.report import VerificationFailed, build_report, raise_if_failed, render_table, write_report

ORPHANS = (
    OrphanCheck("dataset files without a dataset", "ai_dataset_file", "dataset_id", "ai_dataset", "id"),
    OrphanCheck("training jobs without a dataset", "ai_training_job", "dataset_id", "ai_dataset", "id"),
)


@pytest.fixture(scope="module")
def platform_db(mariadb):
    """A scratch copy of the platform schema: 3 datasets, 5 files of which 2 point at dataset 99."""
    name = f"verify_{uuid.uuid4().hex[:10]}"
    sandbox.root_sql(mariadb, f"""
        CREATE DATABASE {name};
        CREATE TABLE {name}.ai_dataset (id INT PRIMARY KEY, name VARCHAR(64), type VARCHAR(16), status VARCHAR(16));
        CREATE TABLE {name}.ai_dataset_file (id INT PRIMARY KEY, dataset_id INT NULL, file_path VARCHAR(255));
        CREATE TABLE {name}.ai_training_job (id INT PRIMARY KEY, dataset_id INT, status VARCHAR(16));
        CREATE TABLE {name}.ai_empty (id INT PRIMARY KEY);
        INSERT INTO {name}.ai_dataset VALUES (1,'cats','image','active'),(2,'dogs','image','active'),(3,'text','text','archived');
        INSERT INTO {name}.ai_dataset_file VALUES (1,1,'/d/1'),(2,2,'/d/2'),(3,99,'/d/3'),(4,99,'/d/4'),(5,NULL,'/d/5');
        INSERT INTO {name}.ai_training_job VALUES (1,1,'running'),(2,2,'pending');
    """)
    target = MySQLTarget("127.0.0.1", mariadb.port, mariadb.extra["user"], mariadb.extra["password"])
    yield name, target
    sandbox.root_sql(mariadb, f"DROP DATABASE {name}")


@pytest.fixture
def conn(platform_db):
    name, target = platform_db
    connection = target.connect(name)
    yield connection
    connection.close()


def test_row_counts_match_and_a_missing_row_is_caught(platform_db, conn):
    name, _ = platform_db
    results = check_row_counts(conn, {f"{name}.ai_dataset": 3, f"{name}.ai_dataset_file": 6})
    by_name = {r.name: r for r in results}
    assert by_name[f"rows {name}.ai_dataset"].status == PASSED
    assert by_name[f"rows {name}.ai_dataset_file"].status == FAILED
    assert by_name[f"rows {name}.ai_dataset_file"].detail == "5 rows, expected 6"


def test_table_checksum_catches_a_changed_row(platform_db, conn):
    name, _ = platform_db
    table = f"{name}.ai_training_job"
    cur = conn.cursor()
    cur.execute(f"CHECKSUM TABLE {table}")
    checksum = cur.fetchone()[1]
    assert check_row_counts(conn, {table: {"rows": 2, "checksum": checksum}})[0].status == PASSED

    cur.execute(f"UPDATE {table} SET status = 'failed' WHERE id = 2")
    try:
        result = check_row_counts(conn, {table: {"rows": 2, "checksum": checksum}})[0]
        assert result.status == FAILED and "checksum" in result.detail
    finally:
        cur.execute(f"UPDATE {table} SET status = 'pending' WHERE id = 2")


def test_orphans_are_found_and_null_references_are_not_orphans(platform_db, conn):
    name, _ = platform_db
    files, jobs = check_orphans(conn, name, ORPHANS)
    assert files.status == FAILED and files.observed == {"orphans": 2, "sample": ["99"]}
    assert "2 rows of ai_dataset_file.dataset_id -> ai_dataset.id point nowhere" in files.detail
    assert jobs.status == PASSED


def test_missing_table_fails_the_check_instead_of_crashing(platform_db, conn):
    name, _ = platform_db
    result = check_orphans(conn, name, [OrphanCheck("x", "ai_nope", "dataset_id", "ai_dataset", "id")])[0]
    assert result.status == FAILED and "cannot check" in result.detail


def test_sql_smoke_needs_rows_and_never_writes(platform_db, conn):
    name, _ = platform_db
    results = check_sql_smoke(conn, name, [
        SqlSmoke("datasets can be listed", "SELECT id FROM ai_dataset"),
        SqlSmoke("empty table", "SELECT id FROM ai_empty"),
        SqlSmoke("sneaky write", "DELETE FROM ai_dataset"),
    ])
    assert [r.status for r in results] == [PASSED, FAILED, FAILED]
    assert results[1].detail == "0 rows, expected at least 1"
    assert "refused" in results[2].detail
    assert check_row_counts(conn, {f"{name}.ai_dataset": 3})[0].status == PASSED


def thresholds(tmp_path: Path, **overrides) -> MetricThresholds:
    values = dict(file=Path("thresholds.yaml"), mysql_threads_connected_max=10_000, redis_hit_rate_min=0.7,
                  redis_min_lookups=4, disk_free_percent_min=0.0, disk_paths=(tmp_path,))
    return MetricThresholds(**(values | overrides))


def test_mysql_connections_against_the_threshold(platform_db, conn, tmp_path):
    name, target = platform_db
    assert check_mysql_metrics(conn, thresholds(tmp_path))[0].status == PASSED
    second = target.connect(name)  # at least two clients are connected now
    try:
        over = check_mysql_metrics(conn, thresholds(tmp_path, mysql_threads_connected_max=1))[0]
    finally:
        second.close()
    assert over.status == FAILED and over.observed >= 2


def test_redis_hit_rate(redis_server, tmp_path):
    client = redis_lib.Redis(host="127.0.0.1", port=redis_server.port)
    client.config_resetstat()
    assert check_redis_metrics(client, thresholds(tmp_path))[0].status == SKIPPED  # no lookups yet
    client.set("ds:1", "cats")
    for _ in range(3):
        client.get("ds:1")
    client.get("ds:missing")
    assert check_redis_metrics(client, thresholds(tmp_path))[0].status == PASSED  # 75% >= 70%
    low = check_redis_metrics(client, thresholds(tmp_path, redis_hit_rate_min=0.8))[0]
    assert low.status == FAILED and low.observed == 0.75


def test_disk_free(tmp_path):
    assert check_disk_free([tmp_path], 0.0)[0].status == PASSED
    assert check_disk_free([tmp_path], 100.0)[0].status == FAILED
    assert "cannot read" in check_disk_free([tmp_path / "missing"], 0.0)[0].detail


def test_file_checksums_find_missing_and_damaged_files(tmp_path):
    entries = []
    for i in range(3):
        data = f"file {i}".encode()
        (tmp_path / f"f{i}.bin").write_bytes(data)
        entries.append({"path": f"f{i}.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    assert check_files(entries, tmp_path)[0].status == PASSED

    (tmp_path / "f1.bin").write_bytes(b"file X")  # same size, other content
    (tmp_path / "f2.bin").unlink()
    result = check_files(entries, tmp_path)[0]
    assert result.status == FAILED
    assert result.observed == {"missing": [str(tmp_path / "f2.bin")], "sha256_mismatch": [str(tmp_path / "f1.bin")]}


def test_a_failed_verification_writes_a_failed_report_and_raises(platform_db, tmp_path):
    name, target = platform_db
    settings = VerifySettings(Path("verify.yaml"), tmp_path, name, ORPHANS, (SqlSmoke("jobs", "SELECT id FROM ai_training_job"),), ())
    inventory = parse_inventory(Path("services.yaml"), {"services": {"web": {
        "systemd": {"unit": "web"}, "health": [{"type": "tcp", "host": "127.0.0.1", "port": sandbox.free_port()}]}}})
    sources = VerifySources(settings, thresholds(tmp_path), inventory, mysql=lambda: target.connect(name),
                            redis=lambda: None, expectations=Expectations(tables={f"{name}.ai_dataset": 3}))
    results = run_group("data_integrity", sources) + run_group("core_functions", sources) + run_group("service_status", sources)
    report = build_report(results, {"dag_id": "aiplatform_verify_system"})
    path = write_report(report, tmp_path / "reports")

    saved = json.loads(path.read_text())
    assert saved["status"] == "failed"
    assert saved["counts"] == {"passed": 3, "failed": 2, "skipped": 0}
    assert {r["name"] for r in saved["results"] if r["status"] == "failed"} == {
        "orphans: dataset files without a dataset", f"web: tcp 127.0.0.1:{inventory.get('web').health[0].port}"}
    table = render_table(report)
    assert "FAILED" in table and "verification FAILED: 3 passed, 2 failed, 0 skipped" in table
    with pytest.raises(VerificationFailed, match="2 of 5 checks failed: .*dataset files without a dataset"):
        raise_if_failed(report)
    assert target.password not in path.read_text()


def test_unreachable_database_is_a_failed_check(tmp_path):
    settings = VerifySettings(Path("verify.yaml"), tmp_path, "aiplatform", ORPHANS, (), ())
    target = MySQLTarget("127.0.0.1", sandbox.free_port(), "nobody", "wrong-password")
    sources = VerifySources(settings, thresholds(tmp_path), None, mysql=target.connect, redis=lambda: None)  # type: ignore[arg-type]
    results = run_group("data_integrity", sources)
    assert [(r.name, r.status) for r in results] == [("rows and files vs backup", SKIPPED), ("mysql connection", FAILED)]
    assert "wrong-password" not in json.dumps([r.detail for r in results])
