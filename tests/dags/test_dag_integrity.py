"""Every DAG imports cleanly, is operable from the UI, and touches nothing at parse time."""

from __future__ import annotations

import inspect
import socket
import time
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
import sandbox
from airflow.dag_processing.dagbag import DagBag

from aiplatform_ops.config import load_backup_policy

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
EXPECTED = {
    "aiplatform_db_backup",
    "aiplatform_binlog_archive",
    "aiplatform_file_backup",
    "aiplatform_config_watch",
    "aiplatform_config_backup",
    "aiplatform_verify_system",
    "aiplatform_restore",
    "aiplatform_restore_drill",
}


def load_bag() -> DagBag:
    return DagBag(dag_folder=str(DAGS))


@pytest.fixture(scope="module")
def parsed(request: pytest.FixtureRequest) -> tuple[DagBag, list[warnings.WarningMessage], float]:
    """Parse the DAG folder with the network and every connection lookup forbidden."""
    from airflow.sdk import BaseHook

    patch = pytest.MonkeyPatch()
    contacted: list[str] = []

    def no_network(self: socket.socket, address: object) -> None:
        contacted.append(repr(address))
        raise OSError(f"DAG parsing tried to connect to {address!r}")

    def no_connection(*args: object, **kwargs: object) -> None:
        contacted.append(f"connection {args} {kwargs}")
        raise RuntimeError("DAG parsing looked up a connection")

    patch.setattr(socket.socket, "connect", no_network)
    patch.setattr(BaseHook, "get_connection", no_connection)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            started = time.perf_counter()
            bag = load_bag()
            seconds = time.perf_counter() - started
    finally:
        patch.undo()
    assert not contacted, f"parsing reached out: {contacted}"
    return bag, list(caught), seconds


def test_every_dag_imports_without_errors(parsed):
    bag, _, seconds = parsed
    assert bag.import_errors == {}
    assert set(bag.dag_ids) >= EXPECTED
    print(f"parsed {len(bag.dag_ids)} DAGs in {seconds:.2f}s")


def test_no_deprecation_warnings_from_our_code(parsed):
    _, caught, _ = parsed
    ours = [
        f"{w.filename}:{w.lineno}: {w.message}"
        for w in caught
        if issubclass(w.category, DeprecationWarning | PendingDeprecationWarning | FutureWarning)
        or "Deprecat" in type(w.message).__name__
    ]
    assert ours == []


def test_each_dag_is_operable_from_the_ui(parsed):
    bag, _, _ = parsed
    for dag_id in EXPECTED:
        dag = bag.dags[dag_id]
        assert dag.tags and "aiplatform" in dag.tags, dag_id
        assert dag.doc_md and len(dag.doc_md.strip()) > 200, f"{dag_id} needs doc_md an operator can act on"
        assert dag.max_active_runs == 1, dag_id
        for task in dag.tasks:
            assert task.owner == "aiplatform-ops", f"{dag_id}.{task.task_id}"
            assert task.on_failure_callback, f"{dag_id}.{task.task_id} has no failure alert"


def test_backup_tasks_retry_with_exponential_backoff(parsed):
    bag, _, _ = parsed
    for dag_id in ("aiplatform_db_backup", "aiplatform_file_backup", "aiplatform_config_backup"):
        for task in bag.dags[dag_id].tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id}"
            assert task.retry_exponential_backoff, f"{dag_id}.{task.task_id}"


def test_schedules_and_deadline_come_from_the_policy(parsed):
    bag, _, _ = parsed
    policy = load_backup_policy()
    assert bag.dags["aiplatform_db_backup"].timetable.expression == policy.database.schedule
    assert bag.dags["aiplatform_file_backup"].timetable.expression == policy.files.schedule
    archive_every = timedelta(minutes=policy.database.binlog_archive_interval_minutes)
    assert bag.dags["aiplatform_binlog_archive"].timetable.delta == archive_every
    deadline = bag.dags["aiplatform_db_backup"].deadline[0]
    assert deadline.interval == policy.database.deadline == timedelta(hours=4)
    callback = deadline.callback
    module, _, name = callback.path.rpartition(".")
    function = getattr(__import__(module, fromlist=[name]), name)
    assert inspect.iscoroutinefunction(function), "deadline callbacks run in the triggerer: must be async"


def test_a_changed_policy_changes_the_schedule(tmp_path, monkeypatch):
    config = sandbox.write_sandbox_config(tmp_path / "config", tmp_path)
    policy_file = config / "backup_policy.yaml"
    policy_file.write_text(policy_file.read_text().replace('schedule: "0 2 * * *"', 'schedule: "30 1 * * *"'))
    monkeypatch.setenv("AIPLATFORM_OPS_CONFIG_DIR", str(config))
    bag = load_bag()
    assert bag.import_errors == {}
    assert bag.dags["aiplatform_db_backup"].timetable.expression == "30 1 * * *"
    assert bag.dags["aiplatform_db_backup"].deadline[0].interval == timedelta(hours=4, minutes=30)


def test_every_trigger_form_can_be_submitted_as_it_opens(parsed):
    """A required field left empty blocks the UI's Trigger button: each default must fill its field."""
    bag, _, _ = parsed
    for dag_id in EXPECTED:
        for name, param in bag.dags[dag_id].params.items():
            types = param.schema.get("type")
            nullable = "null" in types if isinstance(types, list) else types == "null"
            if nullable:
                continue
            assert param.value not in (None, "", []), f"{dag_id}: {name} opens empty but is required"
            param.resolve()  # the default satisfies its own schema
