"""Health probes against real HTTP and TCP servers on loopback."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sandbox

from aiplatform_ops.services.health import HttpCheck, TcpCheck, probe, redact_url


class Handler(BaseHTTPRequestHandler):
    release = threading.Event()

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        if self.path == "/slow":
            self.release.wait(5)  # answers only when the test is over
        code, body = {"/ok": (200, b'{"status":"UP","db":"UP"}'), "/down": (503, b'{"status":"DOWN"}'),
                      "/slow": (200, b"late")}.get(self.path, (404, b"no"))
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def web():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    Handler.release.set()
    server.shutdown()
    server.server_close()


def test_healthy_endpoint_with_body_match(web):
    assert probe(HttpCheck(f"{web}/ok", body_contains='"status":"UP"')).healthy
    assert probe(HttpCheck(f"{web}/ok", body_regex=r'"db"\s*:\s*"UP"')).healthy


@pytest.mark.parametrize(("check", "detail"), [
    (HttpCheck("/down"), "HTTP 503, expected 200"),
    (HttpCheck("/ok", body_contains="READY"), "body lacks 'READY'"),
    (HttpCheck("/ok", body_regex=r'"db":"DOWN"'), "does not match"),
    (HttpCheck("/slow", timeout_seconds=0.3), "no answer within 0.3s"),
])
def test_unhealthy_endpoints_say_why(web, check, detail):
    check = HttpCheck(web + check.url, check.expect_status, check.body_contains, check.body_regex, check.timeout_seconds)
    result = probe(check)
    assert not result.healthy
    assert detail in result.detail


def test_an_expected_error_status_counts_as_healthy(web):
    assert probe(HttpCheck(f"{web}/down", expect_status=503)).healthy


def test_tcp_open_and_closed_ports():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert probe(TcpCheck("127.0.0.1", listener.getsockname()[1], 1)).healthy
    closed = sandbox.free_port()
    result = probe(TcpCheck("127.0.0.1", closed, 1))
    assert not result.healthy and "connection failed" in result.detail


def test_nothing_listening_is_unhealthy():
    result = probe(HttpCheck(f"http://127.0.0.1:{sandbox.free_port()}/health", timeout_seconds=5))
    assert not result.healthy and "request failed" in result.detail


def test_credentials_in_a_url_never_reach_the_description():
    check = HttpCheck("http://ops:s3cret@gateway:8080/actuator/health")
    assert "s3cret" not in check.describe() and "s3cret" not in redact_url(check.url)
