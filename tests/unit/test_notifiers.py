"""Failure and deadline alerts reach the log and, when configured, a webhook."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest

from aiplatform_ops.notifiers import OpsFailureNotifier, deadline_missed


@pytest.fixture
def webhook(monkeypatch):
    """A real HTTP server on loopback that records what it receives, named by an Airflow connection."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AIRFLOW_CONN_OPS_WEBHOOK", json.dumps({
        "conn_type": "http", "host": "127.0.0.1", "port": server.server_port, "schema": "http",
        "extra": {"path": "/hooks/aiplatform"},
    }))
    yield received
    server.shutdown()


def context():
    ti = SimpleNamespace(dag_id="aiplatform_db_backup", task_id="take_backup", run_id="scheduled__1", try_number=4)
    return {"ti": ti, "task_instance": ti}


def test_failure_alert_is_one_clear_log_line(caplog):
    caplog.set_level(logging.ERROR)
    OpsFailureNotifier(message="backup failed").notify(context())
    lines = [r.getMessage() for r in caplog.records if "AIPLATFORM-ALERT" in r.getMessage()]
    assert len(lines) == 1
    payload = json.loads(lines[0].split("AIPLATFORM-ALERT ", 1)[1])
    assert payload == {"event": "task_failed", "dag_id": "aiplatform_db_backup", "task_id": "take_backup",
                       "run_id": "scheduled__1", "try_number": 4, "message": "backup failed"}


def test_failure_alert_is_posted_to_the_webhook(webhook):
    OpsFailureNotifier(message="backup failed", webhook_conn_id="ops_webhook").notify(context())
    assert [p["task_id"] for p in webhook] == ["take_backup"]
    assert webhook[0]["event"] == "task_failed"


def test_a_dead_webhook_does_not_hide_the_failure(caplog, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_DEAD_HOOK", json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": 9,
                                                              "schema": "http"}))
    caplog.set_level(logging.ERROR)
    OpsFailureNotifier(message="backup failed", webhook_conn_id="dead_hook").notify(context())
    messages = [r.getMessage() for r in caplog.records]
    assert any("AIPLATFORM-ALERT" in m for m in messages)
    assert any("alert webhook dead_hook failed" in m for m in messages)


def test_missed_deadline_alerts_from_the_triggerer(webhook):
    asyncio.run(deadline_missed(context={"dag_run": SimpleNamespace(dag_id="aiplatform_db_backup", run_id="r1")},
                                message="the nightly database backup has not succeeded within 4:00:00",
                                webhook_conn_id="ops_webhook"))
    assert webhook == [{"event": "deadline_missed", "dag_id": "aiplatform_db_backup", "task_id": None,
                        "run_id": "r1", "try_number": None,
                        "message": "the nightly database backup has not succeeded within 4:00:00"}]
