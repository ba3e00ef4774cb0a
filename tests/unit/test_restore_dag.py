"""The restore DAGs parse offline, offer the trigger form the runbook needs and read like it."""

from __future__ import annotations

from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def bag():
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import BaseHook

    original = BaseHook.get_connection

    def refuse(*args, **kwargs):
        raise AssertionError("a DAG file looked up a connection while parsing")

    BaseHook.get_connection = refuse  # type: ignore[method-assign]
    try:
        found = {}
        for name in ("aiplatform_restore.py", "aiplatform_restore_drill.py"):
            dagbag = DagBag(dag_folder=str(DAGS / name))
            assert dagbag.import_errors == {}
            found.update(dagbag.dags)
    finally:
        BaseHook.get_connection = original  # type: ignore[method-assign]
    return found


def test_restore_is_manual_one_at_a_time_and_never_retries(bag):
    dag = bag["aiplatform_restore"]
    assert type(dag.timetable).__name__ == "NullTimetable"
    assert dag.max_active_runs == 1
    assert all(t.retries == 0 for t in dag.tasks if not t.task_id.startswith("verify_system."))
    assert "2.2" in dag.doc_md and "dry run" in dag.doc_md.lower()


def test_trigger_form_defaults_to_a_dry_run_with_every_field_explained(bag):
    params = bag["aiplatform_restore"].params
    assert params.get_param("dry_run").value is True
    assert params.get_param("components").schema["items"]["enum"] == ["database", "files", "config"]
    assert params.get_param("target").schema["enum"] == ["live", "scratch"]
    assert params.get_param("point_in_time").schema["format"] == "date-time"
    for name in ("components", "database_backup", "files_backup", "config_backup", "point_in_time", "target",
                 "scratch_database", "scratch_folder", "dry_run", "confirm"):
        param = params.get_param(name)
        assert param.schema.get("title") and param.description, name


def test_steps_run_in_the_runbook_order_with_rollback_and_record(bag):
    dag = bag["aiplatform_restore"]
    assert dag.get_task("dry_run_gate").upstream_task_ids == {"plan"}
    assert dag.get_task("restore").upstream_task_ids == {"dry_run_gate"}
    verify_tasks = {t.task_id for t in dag.tasks if t.task_id.startswith("verify_system.")}
    assert "verify_system.report" in verify_tasks
    assert all("restore" in dag.get_task(t).upstream_task_ids for t in verify_tasks - {"verify_system.report"})
    rollback, record = dag.get_task("rollback"), dag.get_task("record")
    assert rollback.trigger_rule == "one_failed" and rollback.upstream_task_ids == {"verify_system.report"}
    assert record.trigger_rule == "all_done" and record.upstream_task_ids == {"rollback"}


def test_drill_is_weekly_and_touches_nothing_live(bag):
    dag = bag["aiplatform_restore_drill"]
    assert dag.schedule == "0 5 * * 1"
    assert [t.task_id for t in dag.tasks] == ["drill"]
