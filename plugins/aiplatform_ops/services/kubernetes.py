"""Deployments on Kubernetes: scale to zero and back, rollout restart.

Stopping records the replica count first so the start (or a rollback) puts back exactly what ran,
not the manifest's default. Patches are JSON merge patches holding only fields of the ``V1Scale``
and ``V1Deployment`` schemas; a restart sets the pod template annotation
``kubectl.kubernetes.io/restartedAt`` exactly as ``kubectl rollout restart`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT = 30


@dataclass(frozen=True)
class DeploymentState:
    """What the Deployment asks for (``desired``) and what its pods are doing."""

    name: str
    namespace: str
    desired: int
    replicas: int
    ready: int
    available: int
    updated: int
    terminating: int
    generation: int
    observed_generation: int

    @property
    def observed(self) -> bool:
        return self.observed_generation >= self.generation

    @property
    def is_down(self) -> bool:
        """No pod left, terminating ones included."""
        return self.observed and self.desired == 0 and self.replicas == 0 and self.terminating == 0

    @property
    def is_ready(self) -> bool:
        """The rollout is complete: every wanted pod is new, ready and available, no old ones left."""
        n = self.desired
        return self.observed and n > 0 and self.updated == n and self.ready == n and self.available == n and self.replicas == n

    def describe(self) -> str:
        return f"{self.ready}/{self.desired} ready ({self.replicas} pods)"


def read_deployment(api: Any, name: str, namespace: str) -> DeploymentState:
    """Read a Deployment through an ``AppsV1Api``; fields the API omits (zero) count as 0."""
    dep = api.read_namespaced_deployment(name, namespace, _request_timeout=REQUEST_TIMEOUT)
    status = dep.status

    def count(value: Any) -> int:
        return int(value or 0)

    return DeploymentState(
        name=name,
        namespace=namespace,
        desired=count(dep.spec.replicas) if dep.spec.replicas is not None else 1,
        replicas=count(status and status.replicas),
        ready=count(status and status.ready_replicas),
        available=count(status and status.available_replicas),
        updated=count(status and status.updated_replicas),
        terminating=count(status and getattr(status, "terminating_replicas", 0)),
        generation=count(dep.metadata.generation),
        observed_generation=count(status and status.observed_generation),
    )


def scale_deployment(api: Any, name: str, namespace: str, replicas: int) -> None:
    """Set ``spec.replicas`` through the scale subresource, as ``kubectl scale`` does."""
    if replicas < 0:
        raise ValueError(f"replicas must be >= 0, got {replicas}")
    api.patch_namespaced_deployment_scale(
        name, namespace, {"spec": {"replicas": replicas}}, _content_type=MERGE_PATCH, _request_timeout=REQUEST_TIMEOUT
    )


def rollout_restart(api: Any, name: str, namespace: str, at: datetime | None = None) -> str:
    """Replace every pod of the Deployment with a rolling update; returns the timestamp set."""
    stamp = (at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
    api.patch_namespaced_deployment(name, namespace, body, _content_type=MERGE_PATCH, _request_timeout=REQUEST_TIMEOUT)
    return stamp
