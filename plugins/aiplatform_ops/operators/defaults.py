"""Defaults every DAG of the project shares: owner, retries with backoff, failure alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

from aiplatform_ops.notifiers import OpsFailureNotifier, deadline_missed

START_DATE = datetime(2026, 1, 1, tzinfo=UTC)
OWNER = "aiplatform-ops"


def default_args(retries: int = 3) -> dict[str, Any]:
    """Retries back off exponentially (1, 2, 4 ... minutes, at most 30) for network and S3 hiccups."""
    return {
        "owner": OWNER,
        "retries": retries,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "on_failure_callback": OpsFailureNotifier(),
    }


def deadline_alert(allowed: timedelta | None, what: str) -> DeadlineAlert | None:
    """Alert when a scheduled run has not succeeded ``allowed`` after its scheduled time."""
    if allowed is None:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=allowed,
        callback=AsyncCallback(deadline_missed, kwargs={"message": f"{what} has not succeeded within {allowed}"}),
    )
