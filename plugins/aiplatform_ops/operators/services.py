"""Airflow adapters for stopping and starting the platform's services.

The operators load the inventory, open SSH and Kubernetes clients from Airflow connections and
call :mod:`aiplatform_ops.services.control`. The record they return (XCom) holds states and
replica counts only, never a credential; a failed stop or start pushes its partial record under
the XCom key ``record`` before failing, so a rollback task can undo exactly what was done.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from aiplatform_ops.services.control import ServiceOperationFailed, ServiceRecord, start_services, stop_services
from aiplatform_ops.services.inventory import SSHTarget, load_services
from aiplatform_ops.services.systemd import CommandRunner, ParamikoRunner


class AirflowServiceClients:
    """SSH runners from ``SSHHook`` (one per connection and host) and ``AppsV1Api`` from ``KubernetesHook``."""

    def __init__(self) -> None:
        self._ssh: dict[tuple[str, str | None], ParamikoRunner] = {}
        self._k8s: dict[str, Any] = {}

    def ssh(self, target: SSHTarget) -> CommandRunner:
        key = (target.ssh_conn_id, target.host)
        if key not in self._ssh:
            from airflow.providers.ssh.hooks.ssh import SSHHook

            hook = SSHHook(ssh_conn_id=target.ssh_conn_id, remote_host=target.host or "")
            self._ssh[key] = ParamikoRunner(hook.get_conn(), target.describe())
        return self._ssh[key]

    def apps_api(self, k8s_conn_id: str) -> Any:
        if k8s_conn_id not in self._k8s:
            from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

            self._k8s[k8s_conn_id] = KubernetesHook(conn_id=k8s_conn_id).apps_v1_client
        return self._k8s[k8s_conn_id]

    def close(self) -> None:
        for runner in self._ssh.values():
            runner.client.close()
        self._ssh.clear()


def as_bool(value: Any) -> bool:
    """A flag that may arrive rendered by Jinja as the text ``True``/``False``."""
    if isinstance(value, str):
        if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ValueError(f"expected a true/false flag, got {value!r}")
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def as_names(value: Any) -> list[str]:
    """A list that may arrive as a list, JSON/Python text rendered by Jinja, or ``a,b`` text."""
    if value is None or value == "" or value == "None":
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                value = ast.literal_eval(text)
        else:
            value = [part.strip() for part in text.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of names, got {value!r}")
    return list(value)


class _ServicesOperator(BaseOperator):
    template_fields: Sequence[str] = ("services", "dry_run")
    ui_color = "#f5e6cc"

    def __init__(self, *, services: Any = None, dry_run: Any = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.services, self.dry_run = services, dry_run

    def _run(self, context: Context, call: Any, **kwargs: Any) -> dict[str, Any]:
        inventory = load_services()
        clients = AirflowServiceClients()
        try:
            record = call(inventory, clients, as_names(self.services) or None, dry_run=as_bool(self.dry_run), **kwargs)
        except ServiceOperationFailed as exc:
            self.log.error("%s", exc.record.summary())
            context["ti"].xcom_push(key="record", value=exc.record.to_dict())
            raise
        finally:
            clients.close()
        self.log.info("%s", record.summary())
        return record.to_dict()


class StopServicesOperator(_ServicesOperator):
    """Stop the platform's services (all, or ``services``), dependents first, until really down.

    Returns the stop record; pass it to :class:`StartServicesOperator` ``previous`` to bring back
    what ran, at the replica counts found.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        return self._run(context, stop_services)


class StartServicesOperator(_ServicesOperator):
    """Start the platform's services in dependency order and wait until each is healthy.

    ``previous`` is a stop record (``stop_task.output``, a dict or its rendered text), or name the
    stop task in ``stop_task_id``: only what was running is started, Deployments at their recorded
    replica counts. Neither: every chosen service is started.
    """

    template_fields: Sequence[str] = ("services", "dry_run", "previous")

    def __init__(self, *, previous: Any = None, stop_task_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.previous, self.stop_task_id = previous, stop_task_id

    def _previous(self, context: Context) -> ServiceRecord | None:
        previous = self.previous
        if previous is None and self.stop_task_id:
            # The stop's return value, or the partial record a failed stop left (rollback).
            ti = context["ti"]
            previous = ti.xcom_pull(task_ids=self.stop_task_id) or ti.xcom_pull(task_ids=self.stop_task_id, key="record")
        if isinstance(previous, str):
            text = previous.strip()
            if text in ("", "None"):
                return None
            try:
                previous = json.loads(text)
            except ValueError:
                previous = ast.literal_eval(text)  # a dict rendered by Jinja
        if previous is None or isinstance(previous, ServiceRecord):
            return previous
        return ServiceRecord.from_dict(previous)

    def execute(self, context: Context) -> dict[str, Any]:
        return self._run(context, start_services, previous=self._previous(context))
