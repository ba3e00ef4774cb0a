"""Stopping and starting systemd services over a real OpenSSH server (fake units on loopback)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import sandbox
from services_fixtures import SSHClients, fake_units, serving, sshd, write_config  # noqa: F401

from aiplatform_ops.services.control import ServiceOperationFailed, start_services, stop_services
from aiplatform_ops.services.inventory import load_services


def http_service(unit: str, port: int, units, **extra) -> dict:
    return {
        "systemd": {"unit": unit, "commands": units.commands()},
        "health": [{"type": "http", "url": f"http://127.0.0.1:{port}/health", "body_contains": "UP",
                    "timeout_seconds": 1},
                   {"type": "tcp", "host": "127.0.0.1", "port": port, "timeout_seconds": 1}],
        "stop_timeout_seconds": 15, "start_timeout_seconds": 15, **extra,
    }


@pytest.fixture
def platform(tmp_path: Path, sshd, fake_units):  # noqa: F811
    """Two fake services, web depending on auth, both running."""
    auth_port = fake_units.add("fake-auth")
    web_port = fake_units.add("fake-web", stop_delay=0.5)
    config = write_config(tmp_path / "config", {
        "fake-auth": http_service("fake-auth", auth_port, fake_units),
        "fake-web": http_service("fake-web", web_port, fake_units, depends_on=["fake-auth"]),
    })
    clients = SSHClients(sshd)
    inventory = load_services(config)
    start_services(inventory, clients)
    assert serving(auth_port) and serving(web_port)
    yield inventory, clients, auth_port, web_port
    clients.close()


def test_stop_waits_until_really_down_then_start_restores_what_ran(platform, caplog):
    inventory, clients, auth_port, web_port = platform
    with caplog.at_level(logging.INFO, logger="aiplatform_ops.audit"):
        record = stop_services(inventory, clients)

    assert not serving(auth_port) and not serving(web_port)
    assert not sandbox.port_open(auth_port) and not sandbox.port_open(web_port)
    assert [a.service for a in record.actions] == ["fake-web", "fake-auth"]  # dependents first
    assert record.ok and record.was_running == {"fake-web": True, "fake-auth": True}
    audit = [r.getMessage() for r in caplog.records if r.name == "aiplatform_ops.audit"]
    assert len(audit) == 2 and all("action=stop" in line and "outcome=done" in line for line in audit)

    # The record survives XCom (JSON) and brings back exactly what ran, dependencies first.
    started = start_services(inventory, clients, previous=json.loads(json.dumps(record.to_dict())))
    assert [a.service for a in started.actions] == ["fake-auth", "fake-web"]
    assert started.ok and serving(auth_port) and serving(web_port)


def test_dry_run_reports_the_plan_and_changes_nothing(platform):
    inventory, clients, auth_port, web_port = platform
    record = stop_services(inventory, clients, dry_run=True)
    assert [(a.service, a.outcome) for a in record.actions] == [("fake-web", "planned"), ("fake-auth", "planned")]
    assert all(a.before == "active" for a in record.actions)
    assert serving(auth_port) and serving(web_port)


def test_service_stopped_before_the_restore_stays_stopped(platform):
    inventory, clients, auth_port, web_port = platform
    stop_services(inventory, clients, ["fake-web"])
    record = stop_services(inventory, clients)
    assert record.was_running == {"fake-web": False, "fake-auth": True}

    started = start_services(inventory, clients, previous=record)
    assert {a.service: a.outcome for a in started.actions} == {"fake-auth": "done", "fake-web": "left stopped"}
    assert serving(auth_port) and not serving(web_port)


def test_stop_that_does_not_stop_fails_with_the_partial_record(tmp_path, sshd, fake_units):  # noqa: F811
    port = fake_units.add("stubborn", ignore_stop=True)
    spec = http_service("stubborn", port, fake_units) | {"stop_timeout_seconds": 0.5}
    inventory = load_services(write_config(tmp_path / "config", {"stubborn": spec}))
    clients = SSHClients(sshd)
    start_services(inventory, clients)

    with pytest.raises(ServiceOperationFailed, match="stubborn not down") as failure:
        stop_services(inventory, clients)
    assert failure.value.record.was_running == {"stubborn": True}
    assert failure.value.record.actions[-1].outcome == "failed"
    assert serving(port)
    clients.close()


def test_start_that_never_gets_healthy_fails_and_names_the_check(tmp_path, sshd, fake_units):  # noqa: F811
    port = fake_units.add("sick", health="DOWN")
    spec = http_service("sick", port, fake_units) | {"start_timeout_seconds": 0.5}
    inventory = load_services(write_config(tmp_path / "config", {"sick": spec}))
    clients = SSHClients(sshd)

    with pytest.raises(ServiceOperationFailed, match="body lacks 'UP'"):
        start_services(inventory, clients)
    clients.close()


def test_operator_uses_the_airflow_ssh_connection(platform, sshd, monkeypatch, tmp_path):  # noqa: F811
    from aiplatform_ops.operators.services import StartServicesOperator, StopServicesOperator

    inventory, _clients, auth_port, web_port = platform
    monkeypatch.setenv("AIPLATFORM_OPS_CONFIG_DIR", str(inventory.file.parent))
    monkeypatch.setenv("AIRFLOW_CONN_AIPLATFORM_SSH", json.dumps({
        "conn_type": "ssh", "host": "127.0.0.1", "port": sshd.port, "login": sshd.extra["user"],
        "extra": {"key_file": sshd.extra["key_file"], "host_key": sshd.extra["host_key"], "look_for_keys": "false"},
    }))
    stop = StopServicesOperator(task_id="stop_services").execute({})
    assert stop["ok"] and not serving(auth_port) and not serving(web_port)
    assert sshd.extra["key_file"] not in json.dumps(stop)

    start = StartServicesOperator(task_id="start_services", previous=str(stop)).execute({})  # as Jinja renders it
    assert start["ok"] and serving(auth_port) and serving(web_port)


def test_rollback_start_reads_the_partial_record_of_a_failed_stop(platform, sshd, monkeypatch):  # noqa: F811
    from aiplatform_ops.operators.services import StartServicesOperator

    inventory, clients, auth_port, web_port = platform
    partial = stop_services(inventory, clients, ["fake-web"]).to_dict()  # web stopped, then the stop "failed"

    class TaskInstance:
        def xcom_pull(self, task_ids, key="return_value"):
            return {("stop_services", "record"): partial}.get((task_ids, key))

    monkeypatch.setenv("AIPLATFORM_OPS_CONFIG_DIR", str(inventory.file.parent))
    monkeypatch.setenv("AIRFLOW_CONN_AIPLATFORM_SSH", json.dumps({
        "conn_type": "ssh", "host": "127.0.0.1", "port": sshd.port, "login": sshd.extra["user"],
        "extra": {"key_file": sshd.extra["key_file"], "host_key": sshd.extra["host_key"], "look_for_keys": "false"},
    }))
    start = StartServicesOperator(task_id="rollback_start", stop_task_id="stop_services").execute({"ti": TaskInstance()})
    assert {a["service"]: a["outcome"] for a in start["actions"]} == {"fake-auth": "already running", "fake-web": "done"}
    assert serving(web_port) and serving(auth_port)
