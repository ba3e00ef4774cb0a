"""Control logic over several hosts, with in-memory hosts standing in for SSH (the real SSH path is
in tests/integration/test_services_ssh.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiplatform_ops.services import systemd
from aiplatform_ops.services.control import ServiceOperationFailed, ServiceRecord, start_services, stop_services
from aiplatform_ops.services.inventory import SSHTarget, parse_inventory


class Host:
    """A host whose units obey ``systemctl``: state changes at once, commands are recorded."""

    def __init__(self, name: str, active: set[str], fail: str | None = None) -> None:
        self.label, self.active, self.fail, self.commands = name, active, fail, []

    def run(self, command: str, timeout: float = 60.0) -> tuple[int, str, str]:
        self.commands.append(command)
        verb, unit = command.split()[-2:]
        if self.fail and self.fail in command:
            return 1, "", "Failed to stop: Access denied"
        if verb == "is-active":
            return (0, "active\n", "") if unit in self.active else (3, "inactive\n", "")
        (self.active.discard if verb == "stop" else self.active.add)(unit)
        return 0, "", ""


class Clients:
    def __init__(self, hosts: dict[str, Host]) -> None:
        self.hosts = hosts

    def ssh(self, target: SSHTarget) -> Host:
        return self.hosts[target.host or "default"]

    def apps_api(self, k8s_conn_id: str):
        raise AssertionError("no Kubernetes here")


def inventory():
    return parse_inventory(Path("services.yaml"), {
        "defaults": {"poll_interval_seconds": 0.01, "stop_timeout_seconds": 0.2, "start_timeout_seconds": 0.2},
        "services": {
            "auth": {"systemd": {"unit": "auth.service", "hosts": ["app-1", "app-2"]}},
            "web": {"depends_on": ["auth"], "systemd": {"unit": "web.service", "hosts": [{"host": "app-2", "ssh_conn_id": "ssh_app2"}]}},
        },
    })


def test_a_unit_on_two_hosts_is_stopped_on_both_and_started_on_both():
    hosts = {"app-1": Host("app-1", {"auth.service"}), "app-2": Host("app-2", {"auth.service", "web.service"})}
    record = stop_services(inventory(), Clients(hosts))
    assert hosts["app-1"].active == set() and hosts["app-2"].active == set()
    assert record.was_running == {"web": True, "auth": True}
    assert hosts["app-2"].commands.index("systemctl stop web.service") < hosts["app-2"].commands.index("systemctl stop auth.service")

    start_services(inventory(), Clients(hosts), previous=record)
    assert hosts["app-1"].active == {"auth.service"} and hosts["app-2"].active == {"auth.service", "web.service"}


def test_a_refused_stop_names_host_and_error_and_keeps_the_record():
    hosts = {"app-1": Host("app-1", {"auth.service"}, fail="stop auth"), "app-2": Host("app-2", {"auth.service", "web.service"})}
    with pytest.raises(ServiceOperationFailed, match="app-1: stop auth.service failed .*Access denied") as failure:
        stop_services(inventory(), Clients(hosts))
    record = ServiceRecord.from_dict(failure.value.record.to_dict())
    assert [(a.service, a.outcome) for a in record.actions] == [("web", "done"), ("auth", "failed")]
    assert not record.ok


def test_unreadable_state_is_an_error_not_a_stopped_service():
    class Broken(Host):
        def run(self, command, timeout=60.0):
            return 255, "", "ssh: connect to host app-1: Connection refused"

    with pytest.raises(systemd.ServiceControlError, match="cannot read the state"):
        systemd.unit_state(Broken("app-1", set()), "auth.service", systemd.SystemdCommands())
