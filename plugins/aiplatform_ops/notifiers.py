"""Telling an operator that something needs them: on task failure and on a missed deadline.

By default a clear log line (searchable, one per event). Optionally a webhook (an HTTP
connection: POST of a small JSON body) and/or e-mail through an SMTP connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from typing import Any

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)


def post_webhook(url: str, payload: dict[str, Any], timeout: float = 10.0) -> int:
    """POST ``payload`` as JSON; returns the HTTP status."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - operator-set URL
        return response.status


def alert_payload(event: str, context: dict[str, Any] | None, message: str) -> dict[str, Any]:
    context = context or {}
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    return {
        "event": event,
        "dag_id": getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", None) or context.get("dag_id"),
        "task_id": getattr(ti, "task_id", None),
        "run_id": getattr(ti, "run_id", None) or getattr(dag_run, "run_id", None),
        "try_number": getattr(ti, "try_number", None),
        "message": message,
    }


def _webhook_url(conn_id: str) -> str:
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    scheme = conn.schema or "https"
    host = conn.host or ""
    if host.startswith(("http://", "https://")):
        base = host
    else:
        base = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
    path = conn.extra_dejson.get("path", "")
    return base.rstrip("/") + ("/" + path.lstrip("/") if path else "")


def send_alert(payload: dict[str, Any], webhook_conn_id: str | None, smtp_conn_id: str | None, to: list[str]) -> None:
    """Log the alert, then deliver it to the optional channels; a broken channel is logged, not raised."""
    log.error("AIPLATFORM-ALERT %s", json.dumps(payload, sort_keys=True))
    if webhook_conn_id:
        try:
            status = post_webhook(_webhook_url(webhook_conn_id), payload)
            log.info("alert delivered to webhook %s (HTTP %s)", webhook_conn_id, status)
        except Exception as exc:  # noqa: BLE001 - alerting must not mask the original failure
            log.error("alert webhook %s failed: %s", webhook_conn_id, exc)
    if smtp_conn_id and to:
        try:
            from airflow.providers.smtp.hooks.smtp import SmtpHook

            subject = f"[aiplatform-ops] {payload['event']}: {payload.get('dag_id')}.{payload.get('task_id')}"
            with SmtpHook(smtp_conn_id=smtp_conn_id) as hook:
                hook.send_email_smtp(to=to, subject=subject, html_content=f"<pre>{json.dumps(payload, indent=2)}</pre>")
        except Exception as exc:  # noqa: BLE001
            log.error("alert e-mail via %s failed: %s", smtp_conn_id, exc)


class OpsFailureNotifier(BaseNotifier):
    """``on_failure_callback`` for every task: one clear line, plus webhook/e-mail if configured."""

    template_fields = ("message",)

    def __init__(
        self,
        message: str = "{{ ti.dag_id }}.{{ ti.task_id }} failed (try {{ ti.try_number }}), run {{ ti.run_id }}",
        webhook_conn_id: str | None = None,
        smtp_conn_id: str | None = None,
        to: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.message = message
        self.webhook_conn_id = webhook_conn_id
        self.smtp_conn_id = smtp_conn_id
        self.to = to or []

    def notify(self, context: Any) -> None:
        send_alert(alert_payload("task_failed", context, self.message), self.webhook_conn_id, self.smtp_conn_id, self.to)


async def deadline_missed(**kwargs: Any) -> None:
    """Deadline-alert callback (runs in the triggerer): the night's backup has not succeeded in time."""
    context = kwargs.pop("context", None)
    message = kwargs.get("message", "deadline missed")
    payload = alert_payload("deadline_missed", context, message)
    # The triggerer runs many coroutines in one loop: keep the blocking HTTP call off it.
    await asyncio.to_thread(send_alert, payload, kwargs.get("webhook_conn_id"), None, [])
