"""Real parts for the service control tests: an OpenSSH server, fake units, a mock Kubernetes API.

A fake unit is a small HTTP server (``python -m http.server``) on a free loopback port, controlled
by ``fakeunit start|stop|is-active UNIT`` which the inventory uses in place of ``systemctl``
over SSH. ``stop`` only signals and returns at once, as a unit with a slow shutdown would, so the
code must wait until the service is really down.

The Kubernetes API cannot run here: :class:`MockKubernetesAPI` serves Deployments and their scale
subresource on loopback, simulates the controller (pods come and go over a few reads) and checks
every request body against the schema models of the ``kubernetes`` package, answering 422 for a
field the real API server would not know, as ``fieldValidation=Strict`` does.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import signal
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paramiko
import pytest
import sandbox
import yaml
from kubernetes import client as k8s_client

from aiplatform_ops.services.inventory import SSHTarget
from aiplatform_ops.services.systemd import ParamikoRunner

FAKEUNIT = textwrap.dedent("""\
    #!/bin/bash
    # fakeunit start|stop|is-active UNIT: systemctl stand-in over a python http.server
    set -u
    dir="__ROOT__/$2"
    pidf="$dir/pid"
    alive() {  # running and not a zombie
      [ -f "$pidf" ] || return 1
      local st; st=$(sed 's/.*) //' "/proc/$(cat "$pidf")/stat" 2>/dev/null | cut -d' ' -f1)
      [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
    }
    case "$1" in
      start)
        alive && exit 0
        rm -f "$dir/stopping"
        setsid "__PYTHON__" -m http.server "$(cat "$dir/port")" --bind 127.0.0.1 --directory "$dir/www" \\
          </dev/null >>"$dir/log" 2>&1 &
        echo $! > "$pidf"
        ;;
      stop)
        [ -f "$dir/ignore-stop" ] && exit 0
        alive || exit 0
        touch "$dir/stopping"
        delay=$(cat "$dir/stop-delay" 2>/dev/null || echo 0)
        setsid bash -c "sleep $delay; kill $(cat "$pidf")" </dev/null >/dev/null 2>&1 &
        ;;
      is-active)
        if alive; then
          if [ -f "$dir/stopping" ]; then echo deactivating; exit 3; fi
          echo active; exit 0
        fi
        echo inactive; exit 3
        ;;
      *) echo "usage: fakeunit start|stop|is-active UNIT" >&2; exit 2 ;;
    esac
""")


class FakeUnits:
    """Fake systemd units under ``root``, each an HTTP server with ``/health`` on its own port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.script = root / "fakeunit"
        self.script.write_text(FAKEUNIT.replace("__ROOT__", str(root)).replace("__PYTHON__", sys.executable))
        self.script.chmod(0o755)

    def add(self, unit: str, *, health: str = "UP", stop_delay: float = 0.3, ignore_stop: bool = False) -> int:
        folder = self.root / unit
        (folder / "www").mkdir(parents=True, exist_ok=True)
        port = sandbox.free_port()
        (folder / "port").write_text(str(port))
        (folder / "www" / "health").write_text(health)
        (folder / "stop-delay").write_text(str(stop_delay))
        if ignore_stop:
            (folder / "ignore-stop").touch()
        return port

    def commands(self) -> dict[str, str]:
        return {"stop": f"{self.script} stop {{unit}}", "start": f"{self.script} start {{unit}}",
                "is_active": f"{self.script} is-active {{unit}}"}

    def pid(self, unit: str) -> int | None:
        pidf = self.root / unit / "pid"
        return int(pidf.read_text()) if pidf.exists() else None

    def kill_all(self) -> None:
        for pidf in self.root.glob("*/pid"):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidf.read_text()), signal.SIGKILL)


class SSHClients:
    """``ServiceClients`` for tests: paramiko to the loopback sshd, host key checked."""

    def __init__(self, sshd: sandbox.Service, apps_api: Any = None) -> None:
        self.sshd, self._apps_api = sshd, apps_api
        self.runners: dict[SSHTarget, ParamikoRunner] = {}

    def ssh(self, target: SSHTarget) -> ParamikoRunner:
        if target not in self.runners:
            c = paramiko.SSHClient()
            c.load_host_keys(self.sshd.extra["known_hosts"])
            c.set_missing_host_key_policy(paramiko.RejectPolicy())
            c.connect("127.0.0.1", port=self.sshd.port, username=self.sshd.extra["user"],
                      key_filename=self.sshd.extra["key_file"], look_for_keys=False, allow_agent=False, timeout=10)
            self.runners[target] = ParamikoRunner(c, target.describe())
        return self.runners[target]

    def apps_api(self, k8s_conn_id: str) -> Any:
        if self._apps_api is None:
            raise AssertionError(f"no Kubernetes API in this test (asked for {k8s_conn_id})")
        return self._apps_api

    def close(self) -> None:
        for r in self.runners.values():
            r.client.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sandbox.Service]:
    service = sandbox.start_sshd(tmp_path_factory.mktemp("sshd"))
    yield service
    service.stop()


@pytest.fixture
def fake_units(tmp_path: Path) -> Iterator[FakeUnits]:
    units = FakeUnits(tmp_path / "units")
    yield units
    units.kill_all()


def write_config(folder: Path, services: dict[str, Any], **defaults: Any) -> Path:
    """A config folder holding only ``services.yaml``."""
    folder.mkdir(parents=True, exist_ok=True)
    body = {"defaults": {"poll_interval_seconds": 0.05, **defaults}, "services": services}
    (folder / "services.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return folder


# --- Kubernetes -----------------------------------------------------------------------------

def schema_violations(data: Any, model: str, path: str = "") -> list[str]:
    """Fields of ``data`` that the Kubernetes model ``model`` (e.g. ``V1Scale``) does not have."""
    if model in ("object", "str", "int", "bool", "float", "datetime", "date"):
        expected = {"str": str, "int": int, "bool": bool, "float": (int, float), "datetime": str, "date": str}
        if model in expected and (not isinstance(data, expected[model]) or isinstance(data, bool) and model == "int"):
            return [f"{path or '(body)'}: expected {model}, got {type(data).__name__}"]
        return []
    if m := re.fullmatch(r"list\[(.+)\]", model):
        if not isinstance(data, list):
            return [f"{path}: expected a list"]
        return [v for i, item in enumerate(data) for v in schema_violations(item, m.group(1), f"{path}[{i}]")]
    if m := re.fullmatch(r"dict[(\[](\w+), (.+)[)\]]", model):
        if not isinstance(data, dict):
            return [f"{path}: expected a mapping"]
        return [v for k, item in data.items() for v in schema_violations(item, m.group(2), f"{path}.{k}")]
    cls = getattr(k8s_client.models, model)
    if not isinstance(data, dict):
        return [f"{path or '(body)'}: expected a {model} object"]
    by_json = {json_name: cls.openapi_types[attr] for attr, json_name in cls.attribute_map.items()}
    problems = []
    for key, value in data.items():
        if key not in by_json:
            problems.append(f"{path}.{key}: unknown field of {model}")
        elif value is not None:
            problems += schema_violations(value, by_json[key], f"{path}.{key}")
    return problems


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch."""
    out = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class MockDeployment:
    name: str
    namespace: str
    replicas: int
    generation: int = 1
    pods: int = 0
    ready: int = 0
    annotations: dict[str, str] = field(default_factory=dict)
    template_annotations: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pods = self.ready = self.replicas

    def step(self) -> None:
        """One controller step: one pod started, readied or removed."""
        if self.pods > self.replicas:
            self.pods -= 1
            self.ready = min(self.ready, self.pods)
        elif self.pods < self.replicas:
            self.pods += 1
        elif self.ready < self.pods:
            self.ready += 1

    def as_json(self) -> dict[str, Any]:
        status: dict[str, Any] = {"observedGeneration": self.generation}
        for key, value in (("replicas", self.pods), ("readyReplicas", self.ready), ("availableReplicas", self.ready),
                           ("updatedReplicas", self.pods)):
            if value:  # the API server omits zero counts
                status[key] = value
        return {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": self.name, "namespace": self.namespace, "generation": self.generation,
                         "annotations": self.annotations},
            "spec": {"replicas": self.replicas, "selector": {"matchLabels": {"app": self.name}},
                     "template": {"metadata": {"labels": {"app": self.name}, "annotations": self.template_annotations},
                                  "spec": {"containers": [{"name": "app", "image": f"{self.name}:1"}]}}},
            "status": status,
        }

    def scale_json(self) -> dict[str, Any]:
        return {"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"replicas": self.replicas}, "status": {"replicas": self.pods}}


class MockKubernetesAPI:
    """apps/v1 Deployments (read, patch, scale subresource) on a loopback HTTP server."""

    PATH = re.compile(r"/apis/apps/v1/namespaces/([a-z0-9\-]+)/deployments/([a-z0-9\-]+)(/scale)?")
    PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")

    def __init__(self) -> None:
        self.deployments: dict[tuple[str, str], MockDeployment] = {}
        self.requests: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                code, body = api.handle("GET", self.path, self.headers.get("Content-Type"), None)
                self._send(code, body)

            def do_PATCH(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                code, body = api.handle("PATCH", self.path, self.headers.get("Content-Type"), raw)
                self._send(code, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, name: str, namespace: str, replicas: int) -> MockDeployment:
        dep = MockDeployment(name, namespace, replicas)
        self.deployments[(namespace, name)] = dep
        return dep

    def _status(self, code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
        return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                      "message": message, "code": code}

    def handle(self, method: str, path: str, content_type: str | None, raw: bytes | None) -> tuple[int, dict[str, Any]]:
        with self.lock:
            match = self.PATH.fullmatch(path.split("?", 1)[0])
            if not match:
                return self._status(404, "NotFound", f"no route {path}")
            dep = self.deployments.get((match.group(1), match.group(2)))
            if dep is None:
                return self._status(404, "NotFound", f'deployments.apps "{match.group(2)}" not found')
            scale = bool(match.group(3))
            if method == "GET":
                dep.step()
                return 200, dep.scale_json() if scale else dep.as_json()
            body = json.loads(raw or b"null")
            self.requests.append({"path": path, "content_type": content_type, "body": body})
            problems = []
            if content_type not in self.PATCH_TYPES:
                problems.append(f"content type {content_type!r} is not a merge patch")
            if not isinstance(body, dict):
                problems.append("a merge patch body must be a JSON object")
            else:
                problems += schema_violations(body, "V1Scale" if scale else "V1Deployment")
            if problems:
                self.rejected += problems
                return self._status(422, "Invalid", "; ".join(problems))
            if scale:
                new = body.get("spec", {}).get("replicas", dep.replicas)
                if new != dep.replicas:
                    dep.replicas, dep.generation = new, dep.generation + 1
                return 200, dep.scale_json()
            patched = merge_patch(dep.as_json(), body)
            template = patched["spec"]["template"]["metadata"].get("annotations") or {}
            if template != dep.template_annotations:  # a new pod template: roll every pod
                dep.template_annotations, dep.generation, dep.ready = dict(template), dep.generation + 1, 0
            dep.annotations = patched["metadata"].get("annotations") or {}
            dep.replicas = patched["spec"]["replicas"]
            return 200, dep.as_json()

    def apps_api(self) -> k8s_client.AppsV1Api:
        config = k8s_client.Configuration(host=self.url)
        return k8s_client.AppsV1Api(k8s_client.ApiClient(config))

    def __enter__(self) -> MockKubernetesAPI:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def kube_api() -> Iterator[MockKubernetesAPI]:
    with MockKubernetesAPI() as api:
        yield api


def serving(port: int) -> bool:
    """Whether a fake unit on ``port`` answers its health check."""
    import requests

    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=1).text == "UP"
    except requests.RequestException:
        return False
