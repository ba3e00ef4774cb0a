"""Airflow adapters for ``aiplatform_restore`` and ``aiplatform_restore_drill`` (manual §2.2).

The operators turn connections, the policy and the trigger form into the plain objects of
:mod:`aiplatform_ops.restore` and call it. XCom holds the plan and states (names, ids, times),
never a credential. A restore is never retried automatically: every task here has ``retries=0``;
clearing a task re-runs it safely (the restore skips what a run already restored, the rollback
skips what was already put back).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator, Context, TriggerRule
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from aiplatform_ops.config import load_backup_policy
from aiplatform_ops.operators.backup_copies import kind_stores
from aiplatform_ops.operators.connections import MYSQL_CONN_ID, S3_CONN_ID, mysql_target
from aiplatform_ops.restore.drill import DrillFailed, run_drill
from aiplatform_ops.restore.plan import (
    COMPONENTS,
    ComponentStores,
    RestoreInputError,
    RestorePlan,
    RestoreRequest,
    resolve_plan,
)
from aiplatform_ops.restore.record import build_record, restores_dir, write_drill_result, write_record
from aiplatform_ops.restore.runner import (
    RestoreEnvironment,
    RestoreFailed,
    discard_snapshot,
    execute_restore,
    read_state,
    rollback_restore,
    run_dir,
)
from aiplatform_ops.storage.manifest import iso, utc_now


def drill_settings() -> dict[str, Any]:
    """The ``restore_drill`` section of ``backup_policy.yaml`` (schedule, scratch names), validated."""
    drill = load_backup_policy().drill
    return {"schedule": drill.schedule, "scratch_database": drill.scratch_database,
            "scratch_folder": str(drill.scratch_folder) if drill.scratch_folder else None}


def triggered_by(context: Context) -> str:
    run = context.get("dag_run")
    conf = getattr(run, "conf", None) or {}
    return str(getattr(run, "triggering_user_name", None) or conf.get("requested_by") or "unknown")


def environment(components: Any, *, services: bool, mysql_conn_id: str = MYSQL_CONN_ID,
                s3_conn_id: str = S3_CONN_ID) -> tuple[RestoreEnvironment, Any]:
    """Stores of every kind, the database and, for a live target, the services and their clients."""
    policy = load_backup_policy()
    stores = {}
    for kind in COMPONENTS:
        _, local, remote = kind_stores(kind, s3_conn_id)
        stores[kind] = ComponentStores(local, remote)
    inventory = clients = None
    if services:
        from aiplatform_ops.operators.services import AirflowServiceClients
        from aiplatform_ops.services.inventory import load_services

        inventory, clients = load_services(), AirflowServiceClients()
    env = RestoreEnvironment(stores, mysql_target(mysql_conn_id) if "database" in components else None,
                             inventory, clients)
    return env, policy


class RestorePlanOperator(BaseOperator):
    """Check the trigger form, resolve and verify the backups, print the plan. Changes nothing."""

    ui_color = "#fff8e1"

    def __init__(self, *, mysql_conn_id: str = MYSQL_CONN_ID, s3_conn_id: str = S3_CONN_ID, **kwargs: Any) -> None:
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        self.mysql_conn_id, self.s3_conn_id = mysql_conn_id, s3_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            request = RestoreRequest.from_params(context["params"], triggered_by(context))
            env, policy = environment(request.components, services=False, mysql_conn_id=self.mysql_conn_id,
                                      s3_conn_id=self.s3_conn_id)
            names: list[str] = []
            if request.target == "live":
                from aiplatform_ops.services.inventory import load_services

                names = load_services().names()
            plan = resolve_plan(request, env.stores, work_dir=restores_dir(policy.database.locations.local),
                                run_id=context["run_id"], mysql=env.mysql, live_databases=policy.database.databases,
                                services=names, threads=policy.database.parallel_restore_threads)
        except RestoreInputError as exc:
            context["ti"].xcom_push(key="error", value=str(exc))
            raise AirflowFailException(f"restore refused, nothing was stopped or changed: {exc}") from None
        self.log.info("%s", plan.describe())
        return plan.to_dict()


class DryRunGateOperator(BaseOperator):
    """Ends a dry run after the plan: everything downstream is skipped."""

    ui_color = "#eeeeee"

    def execute(self, context: Context) -> None:
        plan = context["ti"].xcom_pull(task_ids="plan")
        if plan["dry_run"]:
            raise AirflowSkipException("dry run: the plan (see the plan task) is all; nothing was stopped or changed")
        self.log.info("dry_run is off and confirmed for %s: restoring", plan["target_name"])


class RestoreOperator(BaseOperator):
    """Stop → snapshot → database → files → config → start, rolling back itself on any failure."""

    ui_color = "#ffe0b2"

    def __init__(self, *, mysql_conn_id: str = MYSQL_CONN_ID, s3_conn_id: str = S3_CONN_ID, **kwargs: Any) -> None:
        kwargs["retries"] = 0
        super().__init__(**kwargs)
        self.mysql_conn_id, self.s3_conn_id = mysql_conn_id, s3_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        plan = RestorePlan.from_dict(context["ti"].xcom_pull(task_ids="plan"))
        env, _ = environment(plan.components, services=bool(plan.services), mysql_conn_id=self.mysql_conn_id,
                             s3_conn_id=self.s3_conn_id)
        try:
            state = execute_restore(plan, env, context["run_id"], keep_snapshot=True)
        except RestoreFailed as exc:
            raise AirflowFailException(str(exc)) from None
        finally:
            if env.clients is not None:
                env.clients.close()
        expectations = None
        database = plan.components.get("database")
        if database is not None and not (state.get("database") or {}).get("replayed"):
            path = run_dir(plan, context["run_id"]) / "expectations.json"
            path.write_text(json.dumps({"tables": database.details["expected_tables"]}, indent=2))
            expectations = str(path)
        groups = ["service_status", "data_integrity", "core_functions", "metrics"] if plan.target == "live" \
            else ["data_integrity"]
        return {"status": state["status"], "seconds": state["seconds"], "expectations": expectations,
                "verify_groups": groups}


class RollbackOperator(BaseOperator):
    """After a failed verification: stop, put the snapshot back, start. Skips when nothing is left to undo."""

    ui_color = "#ffcdd2"

    def __init__(self, *, mysql_conn_id: str = MYSQL_CONN_ID, s3_conn_id: str = S3_CONN_ID, **kwargs: Any) -> None:
        kwargs["retries"] = 0
        kwargs.setdefault("trigger_rule", TriggerRule.ONE_FAILED)
        super().__init__(**kwargs)
        self.mysql_conn_id, self.s3_conn_id = mysql_conn_id, s3_conn_id

    def execute(self, context: Context) -> str:
        data = context["ti"].xcom_pull(task_ids="plan")
        if not data or data.get("dry_run"):
            raise AirflowSkipException("no restore was started: nothing to roll back")
        plan = RestorePlan.from_dict(data)
        state = read_state(run_dir(plan, context["run_id"]))
        if not state or state.get("status") != "restored":
            raise AirflowSkipException(f"nothing to roll back (restore state: {state.get('status') if state else 'none'})")
        env, _ = environment(plan.components, services=bool(plan.services), mysql_conn_id=self.mysql_conn_id,
                             s3_conn_id=self.s3_conn_id)
        try:
            message = rollback_restore(plan, env, context["run_id"])
        finally:
            if env.clients is not None:
                env.clients.close()
        if message.startswith("ROLLBACK FAILED"):
            raise AirflowFailException(message)
        self.log.warning("verification failed after the restore. %s", message)
        return message


class RestoreRecordOperator(BaseOperator):
    """Write the restore record (JSON beside the backups), then end the run failed unless it restored."""

    ui_color = "#e8eaf6"

    def __init__(self, **kwargs: Any) -> None:
        kwargs["retries"] = 0
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)

    def execute(self, context: Context) -> dict[str, Any]:
        ti, run = context["ti"], context.get("dag_run")
        plan_data = ti.xcom_pull(task_ids="plan")
        verification = ti.xcom_pull(task_ids="verify_system.report", key="summary")
        policy = load_backup_policy()
        folder = restores_dir(policy.database.locations.local)
        state = None
        if plan_data is None:
            result, message = "rejected", ti.xcom_pull(task_ids="plan", key="error") or "the plan failed; see its log"
        elif plan_data["dry_run"]:
            result, message = "dry run", "plan only; nothing was stopped or changed"
        else:
            plan = RestorePlan.from_dict(plan_data)
            state = read_state(run_dir(plan, context["run_id"]))
            status = (state or {}).get("status")
            if status == "restored" and (verification or {}).get("status") == "passed":
                discard_snapshot(plan, context["run_id"])
                result, message = "restored", "restored and verified"
            elif status in ("rolled back", "rollback failed"):
                result = status
                message = f"failed at step {state.get('failed_step') or 'verify'}: {state.get('error') or 'verification failed'}. " \
                          f"{state.get('rollback')}"
            else:
                result, message = "failed", f"restore state {status or 'unknown'}; see the task logs"
        started = getattr(run, "start_date", None)
        record = build_record(
            run_id=context["run_id"], dag_id=getattr(run, "dag_id", None), triggered_by=triggered_by(context),
            plan=plan_data, result=result, started_at=iso(started) if started else None, finished_at=iso(utc_now()),
            seconds=round((utc_now() - started).total_seconds(), 1) if started else None, message=message,
            state=state, verification=verification,
        )
        path = write_record(folder, context["run_id"], record)
        if result not in ("restored", "dry run"):
            raise AirflowFailException(f"restore {result}: {message} (record: {path})")
        return {"result": result, "record": str(path)}


class RestoreDrillOperator(BaseOperator):
    """Restore the newest backups into scratch copies, verify, time and drop them; fail loudly."""

    ui_color = "#e1f5fe"

    def __init__(self, *, components: Any = COMPONENTS, mysql_conn_id: str = MYSQL_CONN_ID,
                 s3_conn_id: str = S3_CONN_ID, **kwargs: Any) -> None:
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        self.components, self.mysql_conn_id, self.s3_conn_id = tuple(components), mysql_conn_id, s3_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        settings = drill_settings()
        env, policy = environment(self.components, services=False, mysql_conn_id=self.mysql_conn_id,
                                  s3_conn_id=self.s3_conn_id)
        folder = restores_dir(policy.database.locations.local)
        scratch_folder = Path(settings["scratch_folder"] or folder / "drill-scratch")
        scratch_folder.mkdir(parents=True, exist_ok=True)
        clock = time.monotonic()
        try:
            result = run_drill(env, work_dir=folder, run_id=context["run_id"],
                               scratch_database=settings["scratch_database"], scratch_folder=scratch_folder,
                               components=self.components, live_databases=policy.database.databases,
                               threads=policy.database.parallel_restore_threads)
        except DrillFailed as exc:
            path = write_drill_result(folder, context["run_id"], exc.result)
            raise AirflowFailException(f"{exc} (result: {path})") from None
        result["seconds"] = round(time.monotonic() - clock, 1)
        path = write_drill_result(folder, context["run_id"], result)
        for step in result["steps"]:
            self.log.info("%-8s %-6s %8.1f s  %s", step["component"], "OK" if step["ok"] else "FAILED",
                          step["seconds"] or 0, step["detail"])
        self.log.info("drill passed; result %s", path)
        return {"result": result["result"], "recovery_seconds": result["recovery_seconds"], "path": str(path)}
