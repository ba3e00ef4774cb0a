"""Airflow adapters for system verification (manual §2.2.2) and the reusable task group.

One task per check group, so the grid shows which part ran and how long it took, then a
``report`` task (trigger rule ``all_done``) that writes the JSON report, prints the table and
fails the run when any check failed or a group task did not finish. ``aiplatform_verify_system``
is this group alone; ``aiplatform_restore`` calls :func:`verify_system_group` as its last step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator, Context, TaskGroup, TriggerRule
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from aiplatform_ops.operators.connections import MYSQL_CONN_ID, REDIS_CONN_ID, mysql_target
from aiplatform_ops.operators.services import as_names
from aiplatform_ops.services.inventory import load_services
from aiplatform_ops.verify.checks import (
    FAILED,
    GROUPS,
    SKIPPED,
    CheckResult,
    VerifySources,
    load_expectations,
    load_thresholds,
    load_verify_settings,
    run_group,
)
from aiplatform_ops.verify.report import VerificationFailed, build_report, raise_if_failed, render_table, write_report


def chosen_groups(value: Any) -> list[str]:
    """The groups to run: all when nothing is chosen; an unknown name is an error, not a no-op."""
    names = as_names(value) or list(GROUPS)
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        raise ValueError(f"unknown verification groups {unknown}; expected some of {', '.join(GROUPS)}")
    return names


class VerifyChecksOperator(BaseOperator):
    """Run one verification group and return its results (a list of dicts, no secrets).

    Failed checks do not fail this task: the ``report`` task judges them all together.
    A group not in ``groups`` is skipped.
    """

    template_fields: Sequence[str] = ("groups", "expectations", "services")
    ui_color = "#e0f0e0"

    def __init__(
        self,
        *,
        group: str,
        groups: Any = None,
        expectations: Any = None,
        services: Any = None,
        mysql_conn_id: str = MYSQL_CONN_ID,
        redis_conn_id: str = REDIS_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if group not in GROUPS:
            raise ValueError(f"unknown verification group {group!r}; expected one of {', '.join(GROUPS)}")
        self.group, self.groups, self.expectations, self.services = group, groups, expectations, services
        self.mysql_conn_id, self.redis_conn_id = mysql_conn_id, redis_conn_id

    def _redis(self) -> Any:
        from airflow.providers.redis.hooks.redis import RedisHook

        return RedisHook(redis_conn_id=self.redis_conn_id).get_conn()

    def execute(self, context: Context) -> list[dict[str, Any]]:
        if self.group not in chosen_groups(self.groups):
            raise AirflowSkipException(f"{self.group} not chosen")
        settings = load_verify_settings()
        sources = VerifySources(
            settings=settings,
            thresholds=load_thresholds(),
            inventory=load_services(),
            mysql=lambda: mysql_target(self.mysql_conn_id).connect(settings.database),
            redis=self._redis,
            expectations=load_expectations(self.expectations),
            services=as_names(self.services) or None,
        )
        results = run_group(self.group, sources)
        for r in results:
            self.log.info("%-7s %s: %s", r.status.upper(), r.name, r.detail)
        return [vars(r) for r in results]


class VerificationReportOperator(BaseOperator):
    """Collect the group results, write ``verify-<time>.json``, log the table, fail on any failure."""

    template_fields: Sequence[str] = ("groups", "report_dir")
    ui_color = "#e0f0e0"

    def __init__(
        self,
        *,
        check_task_ids: Mapping[str, str],
        groups: Any = None,
        report_dir: Any = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        self.check_task_ids, self.groups, self.report_dir = dict(check_task_ids), groups, report_dir

    def execute(self, context: Context) -> dict[str, Any]:
        chosen = chosen_groups(self.groups)
        pulled_by_group = {g: context["ti"].xcom_pull(task_ids=t) for g, t in self.check_task_ids.items() if g in chosen}
        if all(value is None for value in pulled_by_group.values()):
            raise AirflowSkipException("no check ran (what they verify did not happen); nothing to report")
        results: list[CheckResult | dict[str, Any]] = []
        for group, task_id in self.check_task_ids.items():
            if group not in chosen:
                results.append(CheckResult(group, "(group)", SKIPPED, "not chosen for this run"))
                continue
            pulled = pulled_by_group[group]
            if pulled is None:
                results.append(CheckResult(group, "(group)", FAILED, f"task {task_id} did not finish; see its log"))
            else:
                results.extend(pulled)
        run = context.get("dag_run")
        report = build_report(results, {
            "dag_id": getattr(run, "dag_id", None), "run_id": getattr(run, "run_id", None),
            "groups": chosen,
        })
        folder = Path(self.report_dir) if self.report_dir not in (None, "", "None") else load_verify_settings().report_dir
        path = write_report(report, folder)
        self.log.info("verification report %s\n%s", path, render_table(report))
        summary = {"status": report.status, "counts": report.counts(), "report": str(path)}
        context["ti"].xcom_push(key="summary", value=summary)
        try:
            raise_if_failed(report)
        except VerificationFailed as exc:
            raise AirflowFailException(str(exc)) from exc
        return summary


def verify_system_group(
    group_id: str = "verify_system",
    *,
    groups: Any = None,
    expectations: Any = None,
    services: Any = None,
    report_dir: Any = None,
    mysql_conn_id: str = MYSQL_CONN_ID,
    redis_conn_id: str = REDIS_CONN_ID,
) -> TaskGroup:
    """The verification as a task group: one task per group in ``groups`` (all by default), then ``report``.

    ``expectations`` is a mapping ``{"tables": {"db.table": rows}, "files": [...], "files_root": ...}``
    or the path of such a JSON/YAML file (an XComArg or a template works too); ``services`` limits
    the service status checks. Everything is resolved at run time: calling this touches nothing.
    """
    with TaskGroup(group_id=group_id, tooltip="Verify the system (manual §2.2.2)") as group:
        checks = {
            g: VerifyChecksOperator(
                task_id=g, group=g, groups=groups, services=services,
                expectations=expectations if g == "data_integrity" else None,
                mysql_conn_id=mysql_conn_id, redis_conn_id=redis_conn_id,
                doc_md=f"Verification group `{g}`; failed checks are judged by `report`.",
            )
            for g in GROUPS
        }
        report = VerificationReportOperator(
            task_id="report", check_task_ids={g: t.task_id for g, t in checks.items()},
            groups=groups, report_dir=report_dir,
            doc_md="Writes the JSON report, prints the table and fails if any check failed.",
        )
        list(checks.values()) >> report
    return group
