"""Health probes: is a service answering, not merely running.

A process can be up while the service is useless (port bound, HTTP 503, a Spring
``"status":"DOWN"``), so start waits on these probes, and stop waits until none of them answers.
Every probe has a timeout: a hung endpoint is a failed probe, never a hung task.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import urlsplit, urlunsplit

import requests

MAX_BODY_BYTES = 64 * 1024


def redact_url(url: str) -> str:
    """The URL without any ``user:password@`` part, for logs and reports."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


@dataclass(frozen=True)
class HttpCheck:
    """GET ``url``; healthy when the status matches and the body holds the substring/regex."""

    url: str
    expect_status: int = 200
    body_contains: str | None = None
    body_regex: str | None = None
    timeout_seconds: float = 5.0
    verify_tls: bool = True
    kind: ClassVar[str] = "http"

    def describe(self) -> str:
        return f"GET {redact_url(self.url)} -> {self.expect_status}"


@dataclass(frozen=True)
class TcpCheck:
    """Connect to ``host:port``; healthy when the connection is accepted."""

    host: str
    port: int
    timeout_seconds: float = 3.0
    kind: ClassVar[str] = "tcp"

    def describe(self) -> str:
        return f"tcp {self.host}:{self.port}"


HealthCheck = HttpCheck | TcpCheck


@dataclass(frozen=True)
class HealthResult:
    check: str
    healthy: bool
    detail: str
    seconds: float


def probe_http(check: HttpCheck) -> HealthResult:
    started = time.monotonic()

    def result(healthy: bool, detail: str) -> HealthResult:
        return HealthResult(check.describe(), healthy, detail, round(time.monotonic() - started, 3))

    try:
        with requests.get(
            check.url, timeout=check.timeout_seconds, verify=check.verify_tls, stream=True, allow_redirects=False
        ) as response:
            body = response.raw.read(MAX_BODY_BYTES, decode_content=True).decode(
                response.encoding or "utf-8", "replace"
            )
            status = response.status_code
    except requests.Timeout:
        return result(False, f"no answer within {check.timeout_seconds:g}s")
    except requests.RequestException as exc:
        return result(False, f"request failed: {type(exc).__name__}")
    if status != check.expect_status:
        return result(False, f"HTTP {status}, expected {check.expect_status}")
    if check.body_contains is not None and check.body_contains not in body:
        return result(False, f"HTTP {status} but body lacks {check.body_contains!r}")
    if check.body_regex is not None and not re.search(check.body_regex, body):
        return result(False, f"HTTP {status} but body does not match /{check.body_regex}/")
    return result(True, f"HTTP {status}")


def probe_tcp(check: TcpCheck) -> HealthResult:
    started = time.monotonic()
    try:
        with socket.create_connection((check.host, check.port), timeout=check.timeout_seconds):
            pass
    except TimeoutError:
        detail, healthy = f"no answer within {check.timeout_seconds:g}s", False
    except OSError as exc:
        detail, healthy = f"connection failed: {exc.strerror or type(exc).__name__}", False
    else:
        detail, healthy = "connection accepted", True
    return HealthResult(check.describe(), healthy, detail, round(time.monotonic() - started, 3))


def probe(check: HealthCheck) -> HealthResult:
    return probe_http(check) if isinstance(check, HttpCheck) else probe_tcp(check)


def probe_all(checks: tuple[HealthCheck, ...] | list[HealthCheck]) -> list[HealthResult]:
    return [probe(check) for check in checks]
