"""Stop and start the platform's services (manual §2.2.1 steps 1 and 5), with a record for rollback.

``stop_services`` goes in reverse dependency order and returns only when each service is really
down: the unit is inactive / the Deployment has no pods, and none of its health probes answers.
``start_services`` goes in dependency order and waits for each to be healthy before the next.
Both return a :class:`ServiceRecord` (JSON-ready, for XCom) holding what was running and the
replica counts found, so a later start or a rollback restores exactly that. On failure they raise
`ServiceOperationFailed` carrying the partial record. Every action writes one audit line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aiplatform_ops.services import kubernetes as k8s
from aiplatform_ops.services import systemd
from aiplatform_ops.services.health import HealthResult, probe_all
from aiplatform_ops.services.inventory import (
    KubernetesControl,
    ServiceInventory,
    ServiceSpec,
    SSHTarget,
    SystemdControl,
)
from aiplatform_ops.services.systemd import CommandRunner

log = logging.getLogger(__name__)
audit_log = logging.getLogger("aiplatform_ops.audit")


class ServiceOperationFailed(systemd.ServiceControlError):
    """Stopping or starting failed; ``record`` says what had been done until then."""

    def __init__(self, message: str, record: ServiceRecord) -> None:
        super().__init__(message)
        self.record = record


class ServiceClients(Protocol):
    """Where control gets its connections: an SSH runner per host, an ``AppsV1Api`` per cluster."""

    def ssh(self, target: SSHTarget) -> CommandRunner: ...

    def apps_api(self, k8s_conn_id: str) -> Any: ...


@dataclass
class ServiceAction:
    service: str
    action: str
    target: str
    outcome: str  # done | already stopped | already running | planned | left stopped | failed
    before: str = ""
    after: str = ""
    detail: str = ""
    seconds: float = 0.0


@dataclass
class ServiceRecord:
    """What a stop or start did. ``was_running``/``replicas`` are the state found before a stop."""

    operation: str
    dry_run: bool
    started_at: str
    finished_at: str = ""
    ok: bool = False
    actions: list[ServiceAction] = field(default_factory=list)
    was_running: dict[str, bool] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServiceRecord:
        values = dict(data)
        values["actions"] = [ServiceAction(**a) for a in values.get("actions", [])]
        return cls(**values)

    def summary(self) -> str:
        lines = [f"{self.operation}{' (dry run)' if self.dry_run else ''}: {'ok' if self.ok else 'FAILED'}"]
        for a in self.actions:
            change = f" {a.before} -> {a.after}" if a.before or a.after else ""
            lines.append(f"  {a.service:<24} {a.action:<6} {a.outcome:<16}{change} {a.detail}".rstrip())
        return "\n".join(lines)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _audit(action: ServiceAction, dry_run: bool) -> None:
    audit_log.info(
        "AUDIT service=%s action=%s target=%r outcome=%s before=%r after=%r seconds=%.1f dry_run=%s detail=%r",
        action.service, action.action, action.target, action.outcome, action.before, action.after,
        action.seconds, dry_run, action.detail,
    )


def _wait(condition: Callable[[], tuple[bool, str]], timeout: float, poll: float) -> tuple[bool, str]:
    """Poll ``condition`` until it holds or ``timeout`` passes; returns the last (held, state)."""
    deadline = time.monotonic() + timeout
    while True:
        held, state = condition()
        if held or time.monotonic() >= deadline:
            return held, state
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))


def _health_text(results: list[HealthResult]) -> str:
    return "; ".join(f"{r.check}: {r.detail}" for r in results)


class _Controller:
    """One service's control plane, whichever kind it is."""

    def __init__(self, spec: ServiceSpec, clients: ServiceClients) -> None:
        self.spec, self.clients = spec, clients

    @property
    def target(self) -> str:
        c = self.spec.control
        if isinstance(c, SystemdControl):
            return f"systemd {c.unit} on " + ", ".join(t.describe() for t in c.targets)
        return f"deployment {c.namespace}/{c.deployment} via {c.k8s_conn_id}"

    def _runners(self) -> list[CommandRunner]:
        assert isinstance(self.spec.control, SystemdControl)
        return [self.clients.ssh(t) for t in self.spec.control.targets]

    def _deployment(self) -> k8s.DeploymentState:
        c = self.spec.control
        assert isinstance(c, KubernetesControl)
        return k8s.read_deployment(self.clients.apps_api(c.k8s_conn_id), c.deployment, c.namespace)

    def state(self) -> tuple[bool, str, int | None]:
        """(running, description, replicas wanted) from the control plane alone."""
        c = self.spec.control
        if isinstance(c, SystemdControl):
            states = [systemd.unit_state(r, c.unit, c.commands) for r in self._runners()]
            return any(s != "inactive" and s != "failed" for s in states), ",".join(states), None
        dep = self._deployment()
        return dep.desired > 0 or dep.replicas > 0, dep.describe(), dep.desired

    def stop(self) -> None:
        c = self.spec.control
        if isinstance(c, SystemdControl):
            for runner in self._runners():
                systemd.stop_unit(runner, c.unit, c.commands)
        else:
            k8s.scale_deployment(self.clients.apps_api(c.k8s_conn_id), c.deployment, c.namespace, 0)

    def start(self, replicas: int | None) -> None:
        c = self.spec.control
        if isinstance(c, SystemdControl):
            for runner in self._runners():
                systemd.start_unit(runner, c.unit, c.commands)
        else:
            api = self.clients.apps_api(c.k8s_conn_id)
            current = k8s.read_deployment(api, c.deployment, c.namespace).desired
            # The recorded count wins; without one a running Deployment keeps its scale.
            wanted = replicas or current or c.default_replicas
            if current != wanted:
                k8s.scale_deployment(api, c.deployment, c.namespace, wanted)

    def is_down(self) -> tuple[bool, str]:
        c = self.spec.control
        if isinstance(c, SystemdControl):
            states = [systemd.unit_state(r, c.unit, c.commands) for r in self._runners()]
            down, state = all(s in ("inactive", "failed") for s in states), ",".join(states)
        else:
            dep = self._deployment()
            down, state = dep.is_down, dep.describe()
        if not down:
            return False, state
        answering = [r for r in probe_all(self.spec.health) if r.healthy]
        if answering:
            return False, f"{state}; still answering: {_health_text(answering)}"
        return True, state

    def is_healthy(self) -> tuple[bool, str]:
        c = self.spec.control
        if isinstance(c, SystemdControl):
            states = [systemd.unit_state(r, c.unit, c.commands) for r in self._runners()]
            up, state = all(s == "active" for s in states), ",".join(states)
        else:
            dep = self._deployment()
            up, state = dep.is_ready, dep.describe()
        if not up:
            return False, state
        results = probe_all(self.spec.health)
        failing = [r for r in results if not r.healthy]
        if failing:
            return False, f"{state}; unhealthy: {_health_text(failing)}"
        return True, f"{state}; {_health_text(results)}" if results else state


def stop_services(
    inventory: ServiceInventory,
    clients: ServiceClients,
    services: Sequence[str] | None = None,
    *,
    dry_run: bool = False,
) -> ServiceRecord:
    """Stop the chosen services (all by default) in reverse dependency order, each until really down.

    A dry run reads each service's state and reports what would be stopped, changing nothing.
    """
    record = ServiceRecord("stop", dry_run, _now())
    for spec in inventory.stop_order(services):
        ctl = _Controller(spec, clients)
        action = ServiceAction(spec.name, "stop", ctl.target, "failed")
        started = time.monotonic()
        try:
            running, before, desired = ctl.state()
            action.before = before
            record.was_running[spec.name] = running
            if desired is not None:
                record.replicas[spec.name] = desired
            if dry_run:
                action.outcome = "planned" if running else "already stopped"
            elif not running:
                down, action.after = ctl.is_down()
                action.outcome = "already stopped"
                if not down:
                    raise systemd.ServiceControlError(f"{spec.name} is stopped but still answers: {action.after}")
            else:
                ctl.stop()
                down, action.after = _wait(ctl.is_down, spec.stop_timeout_seconds, inventory.poll_interval_seconds)
                if not down:
                    raise systemd.ServiceControlError(
                        f"{spec.name} not down after {spec.stop_timeout_seconds:g}s: {action.after}"
                    )
                action.outcome = "done"
        except Exception as exc:
            action.outcome, action.detail = "failed", str(exc)
            _finish(record, action, started, ok=False)
            raise ServiceOperationFailed(f"stopping {spec.name} failed: {exc}", record) from exc
        _finish(record, action, started)
    record.ok, record.finished_at = True, _now()
    return record


def start_services(
    inventory: ServiceInventory,
    clients: ServiceClients,
    services: Sequence[str] | None = None,
    *,
    previous: ServiceRecord | Mapping[str, Any] | None = None,
    dry_run: bool = False,
) -> ServiceRecord:
    """Start the chosen services in dependency order, each until healthy or its timeout.

    With ``previous`` (the record of the stop, also as a dict from XCom) only services that were
    running before the stop are started, and Deployments get back their recorded replica counts:
    this is how a restore, and its rollback, leave things as they found them.
    """
    if isinstance(previous, Mapping):
        previous = ServiceRecord.from_dict(previous)
    record = ServiceRecord("start", dry_run, _now())
    for spec in inventory.start_order(services):
        ctl = _Controller(spec, clients)
        action = ServiceAction(spec.name, "start", ctl.target, "failed")
        started = time.monotonic()
        replicas = previous.replicas.get(spec.name) if previous else None
        try:
            if previous is not None and not previous.was_running.get(spec.name, True):
                action.outcome, action.detail = "left stopped", "was not running before the stop"
                _finish(record, action, started)
                continue
            running, action.before, _desired = ctl.state()
            if dry_run:
                action.outcome = "planned"
                action.detail = f"to {replicas} replicas" if replicas else ""
                _finish(record, action, started)
                continue
            ctl.start(replicas)
            healthy, action.after = _wait(ctl.is_healthy, spec.start_timeout_seconds, inventory.poll_interval_seconds)
            if not healthy:
                raise systemd.ServiceControlError(
                    f"{spec.name} not healthy after {spec.start_timeout_seconds:g}s: {action.after}"
                )
            action.outcome = "already running" if running and not replicas else "done"
        except Exception as exc:
            action.outcome, action.detail = "failed", str(exc)
            _finish(record, action, started, ok=False)
            raise ServiceOperationFailed(f"starting {spec.name} failed: {exc}", record) from exc
        _finish(record, action, started)
    record.ok, record.finished_at = True, _now()
    return record


def _finish(record: ServiceRecord, action: ServiceAction, started: float, ok: bool = True) -> None:
    action.seconds = round(time.monotonic() - started, 3)
    record.actions.append(action)
    if not ok:
        record.finished_at = _now()
    _audit(action, record.dry_run)
