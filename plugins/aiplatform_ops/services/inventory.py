"""The services inventory, ``services.yaml``: what runs, how to stop and start it, how to tell it works.

Order comes from ``depends_on``: a service starts after what it depends on and stops before it,
so the gateway never serves while auth is down. The file is validated whole on load; a typo in a
key is an error naming the file and the key, not a silently ignored setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiplatform_ops.config import K8S_CONN_ID, SSH_CONN_ID, ConfigError, Section, load_yaml
from aiplatform_ops.services.health import HealthCheck, HttpCheck, TcpCheck
from aiplatform_ops.services.systemd import SystemdCommands

SERVICES_FILE = "services.yaml"
NAME = r"[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?"  # also a valid Kubernetes name
UNIT = r"[A-Za-z0-9:_.@\-]+"
HOST = r"[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]"


@dataclass(frozen=True)
class SSHTarget:
    """One host running a unit: the Airflow SSH connection and, optionally, the host it overrides."""

    ssh_conn_id: str
    host: str | None = None

    def describe(self) -> str:
        return f"{self.host or '(connection host)'} via {self.ssh_conn_id}"


@dataclass(frozen=True)
class SystemdControl:
    unit: str
    targets: tuple[SSHTarget, ...]
    commands: SystemdCommands
    kind: str = field(default="systemd", init=False)


@dataclass(frozen=True)
class KubernetesControl:
    deployment: str
    namespace: str
    k8s_conn_id: str
    default_replicas: int
    kind: str = field(default="kubernetes", init=False)


Control = SystemdControl | KubernetesControl


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    description: str
    runtime: str
    depends_on: tuple[str, ...]
    control: Control
    health: tuple[HealthCheck, ...]
    stop_timeout_seconds: float
    start_timeout_seconds: float


@dataclass(frozen=True)
class ServiceInventory:
    """All services, kept in start order (dependencies first)."""

    file: Path
    services: tuple[ServiceSpec, ...]
    poll_interval_seconds: float

    def get(self, name: str) -> ServiceSpec:
        for spec in self.services:
            if spec.name == name:
                return spec
        raise KeyError(f"no service {name!r} in {self.file}; known: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [s.name for s in self.services]

    def start_order(self, names: list[str] | tuple[str, ...] | None = None) -> list[ServiceSpec]:
        """The chosen services (all when ``names`` is empty), dependencies first."""
        wanted = set(names or self.names())
        unknown = wanted - set(self.names())
        if unknown:
            raise KeyError(f"unknown services {sorted(unknown)}; known: {', '.join(self.names())}")
        return [s for s in self.services if s.name in wanted]

    def stop_order(self, names: list[str] | tuple[str, ...] | None = None) -> list[ServiceSpec]:
        return list(reversed(self.start_order(names)))


def _only_keys(s: Section, allowed: set[str]) -> None:
    for key in s.data:
        if key not in allowed:
            raise s.error(str(key), f"unknown key; expected one of {', '.join(sorted(allowed))}")


def _commands(s: Section, base: SystemdCommands, key: str = "commands") -> SystemdCommands:
    if key not in s.data:
        return base
    c = s.section(key)
    _only_keys(c, {"stop", "start", "is_active"})
    values = {}
    for action in ("stop", "start", "is_active"):
        template = c.string(action, getattr(base, action))
        try:
            template.format(unit="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise c.error(action, f"only the placeholder {{unit}} is allowed ({exc!r})") from None
        values[action] = template
    return SystemdCommands(**values)


def _targets(s: Section, default_conn: str) -> tuple[SSHTarget, ...]:
    conn = s.string("ssh_conn_id", default_conn)
    hosts = s.raw("hosts", None)
    if hosts is None:
        return (SSHTarget(conn),)
    if not isinstance(hosts, list) or not hosts:
        raise s.error("hosts", f"expected a non-empty list of host names or mappings, got {hosts!r}")
    targets = []
    for i, entry in enumerate(hosts):
        if isinstance(entry, str):
            entry = {"host": entry}
        h = Section(s.file, entry, f"{s.key}.hosts[{i}]")
        _only_keys(h, {"host", "ssh_conn_id"})
        host = h.optional_string("host")
        if host is not None and not re.fullmatch(HOST, host):
            raise h.error("host", f"{host!r} is not a host name or address")
        targets.append(SSHTarget(h.string("ssh_conn_id", conn), host))
    if len(set(targets)) != len(targets):
        raise s.error("hosts", "a host is listed twice")
    return tuple(targets)


def _health(s: Section, default_timeout: float) -> tuple[HealthCheck, ...]:
    entries = s.raw("health", [])
    if not isinstance(entries, list):
        raise s.error("health", f"expected a list of checks, got {entries!r}")
    checks: list[HealthCheck] = []
    for i, entry in enumerate(entries):
        h = Section(s.file, entry, f"{s.key}.health[{i}]")
        kind = h.choice("type", ("http", "tcp"))
        timeout = h.number("timeout_seconds", default_timeout, minimum=0.1)
        if kind == "http":
            _only_keys(h, {"type", "url", "expect_status", "body_contains", "body_regex", "timeout_seconds", "verify_tls"})
            url = h.string("url", pattern=r"https?://\S+")
            regex = h.optional_string("body_regex")
            if regex is not None:
                try:
                    re.compile(regex)
                except re.error as exc:
                    raise h.error("body_regex", f"not a valid regular expression: {exc}") from None
            checks.append(HttpCheck(
                url=url, expect_status=h.integer("expect_status", 200, minimum=100),
                body_contains=h.optional_string("body_contains"), body_regex=regex,
                timeout_seconds=timeout, verify_tls=h.boolean("verify_tls", True),
            ))
        else:
            _only_keys(h, {"type", "host", "port", "timeout_seconds"})
            host = h.string("host", pattern=HOST)
            port = h.integer("port", minimum=1)
            if port > 65535:
                raise h.error("port", f"expected at most 65535, got {port}")
            checks.append(TcpCheck(host, port, timeout))
    return tuple(checks)


SERVICE_KEYS = {"description", "runtime", "depends_on", "systemd", "kubernetes", "health",
                "stop_timeout_seconds", "start_timeout_seconds"}


def _service(name: str, s: Section, d: Section, base_commands: SystemdCommands) -> ServiceSpec:
    _only_keys(s, SERVICE_KEYS)
    if ("systemd" in s.data) == ("kubernetes" in s.data):
        raise s.error("(control)", "needs exactly one of 'systemd' or 'kubernetes'")
    control: Control
    if "systemd" in s.data:
        c = s.section("systemd")
        _only_keys(c, {"unit", "hosts", "ssh_conn_id", "commands"})
        control = SystemdControl(
            unit=c.string("unit", name, pattern=UNIT),
            targets=_targets(c, d.string("ssh_conn_id", SSH_CONN_ID)),
            commands=_commands(c, base_commands),
        )
    else:
        c = s.section("kubernetes")
        _only_keys(c, {"deployment", "namespace", "k8s_conn_id", "replicas"})
        control = KubernetesControl(
            deployment=c.string("deployment", name, pattern=NAME),
            namespace=c.string("namespace", d.raw("namespace", None) or ..., pattern=NAME),
            k8s_conn_id=c.string("k8s_conn_id", d.string("k8s_conn_id", K8S_CONN_ID)),
            default_replicas=c.integer("replicas", 1, minimum=1),
        )
    depends = s.strings("depends_on", [], non_empty=False)
    return ServiceSpec(
        name=name,
        description=s.string("description", name),
        runtime=s.choice("runtime", ("java", "python", "other"), "other"),
        depends_on=depends,
        control=control,
        health=_health(s, d.number("health_timeout_seconds", 5.0, minimum=0.1)),
        stop_timeout_seconds=s.number("stop_timeout_seconds", d.number("stop_timeout_seconds", 120.0, minimum=0.1), minimum=0.1),
        start_timeout_seconds=s.number("start_timeout_seconds", d.number("start_timeout_seconds", 300.0, minimum=0.1), minimum=0.1),
    )


def _start_order(services: dict[str, ServiceSpec], root: Section) -> list[ServiceSpec]:
    """Dependencies first; among services free to go, the file's order. Cycles are errors."""
    for spec in services.values():
        for dep in spec.depends_on:
            if dep not in services:
                raise root.error(f"services.{spec.name}.depends_on", f"unknown service {dep!r}")
    ordered: list[ServiceSpec] = []
    placed: set[str] = set()
    while len(ordered) < len(services):
        ready = [s for s in services.values() if s.name not in placed and set(s.depends_on) <= placed]
        if not ready:
            cycle = sorted(set(services) - placed)
            raise root.error("services", f"dependency cycle among {', '.join(cycle)}")
        ordered.append(ready[0])
        placed.add(ready[0].name)
    return ordered


def parse_inventory(path: Path, data: dict[str, Any]) -> ServiceInventory:
    root = Section(path, data)
    _only_keys(root, {"defaults", "services"})
    d = root.section("defaults", required=False)
    _only_keys(d, {"ssh_conn_id", "k8s_conn_id", "namespace", "stop_timeout_seconds", "start_timeout_seconds",
                   "poll_interval_seconds", "health_timeout_seconds", "systemd_commands"})
    base_commands = _commands(d, SystemdCommands(), "systemd_commands")
    listing = root.section("services")
    if not listing.data:
        raise root.error("services", "expected at least one service")
    services: dict[str, ServiceSpec] = {}
    for name in listing.data:
        if not isinstance(name, str) or not re.fullmatch(NAME, name):
            raise listing.error(str(name), "a service name is lower case letters, digits and '-'")
        services[name] = _service(name, listing.section(name), d, base_commands)
    return ServiceInventory(
        file=path,
        services=tuple(_start_order(services, root)),
        poll_interval_seconds=d.number("poll_interval_seconds", 2.0, minimum=0.01),
    )


def load_services(directory: Path | None = None) -> ServiceInventory:
    """Load and validate ``services.yaml``; raises :class:`ConfigError` naming file and key."""
    path, data = load_yaml(SERVICES_FILE, directory)
    return parse_inventory(path, data)


__all__ = ["ConfigError", "ServiceInventory", "ServiceSpec", "SSHTarget", "SystemdControl", "KubernetesControl",
           "load_services", "parse_inventory"]
