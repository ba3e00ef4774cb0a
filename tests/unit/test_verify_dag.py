"""The ``aiplatform_verify_system`` DAG parses fast, offline, and offers the trigger form the runbook needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiplatform_ops.operators.services import as_names
from aiplatform_ops.operators.verify import chosen_groups
from aiplatform_ops.verify.checks import GROUPS

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "aiplatform_verify_system.py"


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import BaseHook

    original = BaseHook.get_connection

    def refuse(*args, **kwargs):
        raise AssertionError("the DAG file looked up a connection while parsing")

    BaseHook.get_connection = refuse  # type: ignore[method-assign]
    try:
        bag = DagBag(dag_folder=str(DAG_FILE))
    finally:
        BaseHook.get_connection = original  # type: ignore[method-assign]
    assert bag.import_errors == {}
    return bag.dags["aiplatform_verify_system"]


def test_manual_trigger_with_owner_tags_and_docs(dag):
    assert type(dag.timetable).__name__ == "NullTimetable"  # manual trigger only
    assert "aiplatform" in dag.tags and dag.owner == "aiplatform-ops"
    assert dag.doc_md and "2.2.2" in dag.doc_md
    assert dag.max_active_runs == 1


def test_trigger_form_offers_the_check_groups(dag):
    checks = dag.params.get_param("checks")
    assert checks.value == list(GROUPS)
    assert checks.schema["items"]["enum"] == list(GROUPS)
    assert dag.params.get_param("expectations_path").value is None


def test_one_task_per_group_then_a_report_that_always_runs(dag):
    ids = {t.task_id for t in dag.tasks}
    assert ids == {f"verify_system.{g}" for g in GROUPS} | {"verify_system.report"}
    report = dag.get_task("verify_system.report")
    assert report.trigger_rule == "all_done" and report.retries == 0
    assert report.upstream_task_ids == {f"verify_system.{g}" for g in GROUPS}
    assert all(dag.get_task(f"verify_system.{g}").retries == 1 for g in GROUPS)


@pytest.mark.parametrize(("rendered", "names"), [
    ("['metrics', 'data_integrity']", ["metrics", "data_integrity"]),
    ('["metrics"]', ["metrics"]),
    ("metrics, service_status", ["metrics", "service_status"]),
    ("[]", []),
    ("None", []),
    (None, []),
])
def test_rendered_params_become_lists(rendered, names):
    assert as_names(rendered) == names


def test_nothing_chosen_means_every_group():
    assert chosen_groups("[]") == list(GROUPS)
