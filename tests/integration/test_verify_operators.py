"""The verification task group's operators with Airflow connections to the real MariaDB and Redis."""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path

import pytest
import sandbox
import yaml
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from aiplatform_ops.operators.verify import VerificationReportOperator, VerifyChecksOperator
from aiplatform_ops.verify.checks import GROUPS


class TaskInstance:
    """The two XCom calls the operators make, kept in memory."""

    def __init__(self) -> None:
        self.returned: dict[str, object] = {}
        self.pushed: dict[str, object] = {}

    def xcom_pull(self, task_ids: str):
        return self.returned.get(task_ids)

    def xcom_push(self, key: str, value: object) -> None:
        json.dumps(value)  # XCom values must serialise
        self.pushed[key] = value


@pytest.fixture
def airflow_env(tmp_path, monkeypatch, mariadb, redis_server):
    db = f"verify_op_{uuid.uuid4().hex[:8]}"
    sandbox.root_sql(mariadb, f"""
        CREATE DATABASE {db};
        CREATE TABLE {db}.ai_dataset (id INT PRIMARY KEY, name VARCHAR(64));
        CREATE TABLE {db}.ai_dataset_file (id INT PRIMARY KEY, dataset_id INT, file_path VARCHAR(255));
        INSERT INTO {db}.ai_dataset VALUES (1, 'cats');
        INSERT INTO {db}.ai_dataset_file VALUES (1, 1, '/d/1');
    """)
    config = tmp_path / "config"
    config.mkdir()
    (config / "verify.yaml").write_text(yaml.safe_dump({
        "report_dir": str(tmp_path / "reports"), "database": db,
        "orphan_checks": [{"name": "dataset files without a dataset", "child": "ai_dataset_file.dataset_id",
                           "parent": "ai_dataset.id"}],
        "smoke": {"sql": [{"name": "datasets can be listed", "sql": "SELECT id FROM ai_dataset"}]},
    }))
    (config / "thresholds.yaml").write_text(yaml.safe_dump({
        "mysql": {"threads_connected_max": 500}, "redis": {"hit_rate_min": 0.5, "min_lookups": 1_000_000},
        "disk": {"free_percent_min": 0, "paths": [str(tmp_path)]},
    }))
    (config / "services.yaml").write_text(yaml.safe_dump({"services": {"aiplatform-db": {
        "systemd": {"unit": "mariadb"}, "health": [{"type": "tcp", "host": "127.0.0.1", "port": mariadb.port}]}}}))
    monkeypatch.setenv("AIPLATFORM_OPS_CONFIG_DIR", str(config))
    monkeypatch.setenv("AIRFLOW_CONN_AIPLATFORM_MYSQL", sandbox.mysql_conn_uri(mariadb, db))
    monkeypatch.setenv("AIRFLOW_CONN_AIPLATFORM_REDIS", sandbox.redis_conn_uri(redis_server))
    yield db, tmp_path
    sandbox.root_sql(mariadb, f"DROP DATABASE {db}")


def run_groups(ti: TaskInstance, groups, expectations=None) -> None:
    for group in GROUPS:
        op = VerifyChecksOperator(task_id=group, group=group, groups=groups, expectations=expectations)
        with contextlib.suppress(AirflowSkipException):
            ti.returned[group] = op.execute({"ti": ti})


def report(ti: TaskInstance, groups):
    op = VerificationReportOperator(task_id="report", check_task_ids={g: g for g in GROUPS}, groups=groups)
    return op.execute({"ti": ti})


def test_healthy_platform_passes_and_the_report_is_written(airflow_env, tmp_path):
    db, _ = airflow_env
    expectations = tmp_path / "expected.json"
    expectations.write_text(json.dumps({"tables": {f"{db}.ai_dataset": 1, f"{db}.ai_dataset_file": 1}}))
    ti = TaskInstance()
    run_groups(ti, None, str(expectations))
    summary = report(ti, None)

    assert summary["status"] == "passed"
    saved = json.loads(Path(summary["report"]).read_text())
    names = {r["name"]: r["status"] for r in saved["results"]}
    assert names[f"rows {db}.ai_dataset"] == "passed"
    assert names["redis hit rate"] == "skipped"  # too few lookups to judge
    assert "mysql Threads_connected" in names and ti.pushed["summary"] == summary


def test_orphan_fails_the_report_task_not_the_group_task(airflow_env, mariadb):
    db, _ = airflow_env
    sandbox.root_sql(mariadb, f"INSERT INTO {db}.ai_dataset_file VALUES (2, 42, '/d/2')")
    ti = TaskInstance()
    run_groups(ti, "['data_integrity']")  # a list as Jinja renders it
    assert set(ti.returned) == {"data_integrity"}
    with pytest.raises(AirflowFailException, match="dataset files without a dataset"):
        report(ti, "['data_integrity']")
    saved = json.loads(Path(ti.pushed["summary"]["report"]).read_text())
    assert saved["status"] == "failed"
    assert {r["group"]: r["status"] for r in saved["results"] if r["name"] == "(group)"} == {
        "service_status": "skipped", "core_functions": "skipped", "metrics": "skipped"}


def test_a_group_task_that_did_not_finish_fails_the_verification(airflow_env):
    ti = TaskInstance()
    run_groups(ti, ["service_status", "metrics"])
    del ti.returned["metrics"]  # as if the task had crashed
    with pytest.raises(AirflowFailException, match="metrics.*did not finish"):
        report(ti, ["service_status", "metrics"])


def test_unknown_group_is_refused():
    with pytest.raises(ValueError, match="unknown verification groups"):
        VerifyChecksOperator(task_id="x", group="metrics", groups="metrics,speed").execute({"ti": TaskInstance()})
