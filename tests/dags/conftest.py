"""Fixtures for running whole DAGs through dag.test() against the test services."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import sample_data
import sandbox
from airflow.dag_processing.dagbag import DagBag

from aiplatform_ops.backup.mysql_target import MySQLTarget

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dag_environment(tmp_path, monkeypatch, mariadb, s3_endpoint, airflow_metadata):
    """Connections and a policy pointing at the test services, a fresh platform database."""
    database = f"aiplatform_{uuid.uuid4().hex[:8]}"
    config = sandbox.write_sandbox_config(tmp_path / "config", tmp_path)
    policy = config / "backup_policy.yaml"
    policy.write_text(policy.read_text().replace("databases: [aiplatform]", f"databases: [{database}]"))
    monkeypatch.setenv("AIPLATFORM_OPS_CONFIG_DIR", str(config))
    monkeypatch.setenv("AIRFLOW_CONN_AIPLATFORM_MYSQL", sandbox.mysql_conn_uri(mariadb, database))
    monkeypatch.setenv("AIRFLOW_CONN_AIPLATFORM_S3", sandbox.s3_conn_json(s3_endpoint))
    sandbox.create_buckets(s3_endpoint, config)
    target = MySQLTarget("127.0.0.1", mariadb.port, mariadb.extra["user"], mariadb.extra["password"])
    sample_data.apply_schema(target, database)
    sample_data.populate(target, database, log_rows=2000)
    yield target, database
    target.query(f"DROP DATABASE IF EXISTS `{database}`")


def run_dag(dag_id: str, conf: dict[str, Any] | None = None) -> dict[str, str]:
    """One run through dag.test(); returns each task's final state."""
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    dag = bag.dags[dag_id]
    # dag.test() in Airflow 3.3.2 fails on success when a DAG has deadline alerts (its in-memory
    # DAG holds alert definitions where the run expects their ids); the deadline is tested apart.
    dag.deadline = None
    run = dag.test(run_conf=conf)
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
