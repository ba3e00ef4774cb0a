"""Kubernetes Deployments through the real client against a mocked API server.

Every request body is checked against the ``kubernetes`` package's schema models by the mock,
which answers 422 for an unknown field; each test also asserts nothing was rejected.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from services_fixtures import MockKubernetesAPI, SSHClients, kube_api, schema_violations, write_config  # noqa: F401

from aiplatform_ops.services import kubernetes as k8s
from aiplatform_ops.services.control import ServiceOperationFailed, start_services, stop_services
from aiplatform_ops.services.inventory import load_services


def deployment_service(name: str, **extra) -> dict:
    return {"kubernetes": {"deployment": name, "namespace": "aiplatform", "replicas": 1},
            "stop_timeout_seconds": 5, "start_timeout_seconds": 5, **extra}


@pytest.fixture
def cluster(tmp_path: Path, kube_api: MockKubernetesAPI):  # noqa: F811
    kube_api.add("aiplatform-training", "aiplatform", 2)
    kube_api.add("aiplatform-gateway", "aiplatform", 3)
    inventory = load_services(write_config(tmp_path / "config", {
        "aiplatform-training": deployment_service("aiplatform-training"),
        "aiplatform-gateway": deployment_service("aiplatform-gateway", depends_on=["aiplatform-training"]),
    }))
    clients = SSHClients(sshd=None, apps_api=kube_api.apps_api())  # type: ignore[arg-type]
    yield inventory, clients, kube_api
    assert kube_api.rejected == []


def test_scale_to_zero_and_back_to_the_recorded_replicas(cluster):
    inventory, clients, api = cluster
    record = stop_services(inventory, clients)

    gateway, training = api.deployments["aiplatform", "aiplatform-gateway"], api.deployments["aiplatform", "aiplatform-training"]
    assert (gateway.replicas, gateway.pods, training.replicas, training.pods) == (0, 0, 0, 0)
    assert record.replicas == {"aiplatform-gateway": 3, "aiplatform-training": 2}
    assert [a.service for a in record.actions] == ["aiplatform-gateway", "aiplatform-training"]

    # Rollback path: the stop record brings back 3 and 2, not the inventory's default of 1.
    started = start_services(inventory, clients, previous=record.to_dict())
    assert started.ok
    assert (gateway.replicas, gateway.ready, training.replicas, training.ready) == (3, 3, 2, 2)
    assert all(r["content_type"] == k8s.MERGE_PATCH for r in api.requests)


def test_start_without_a_record_uses_the_inventory_replicas(cluster):
    inventory, clients, api = cluster
    stop_services(inventory, clients, ["aiplatform-gateway"])
    start_services(inventory, clients, ["aiplatform-gateway"])
    assert api.deployments["aiplatform", "aiplatform-gateway"].ready == 1


def test_start_leaves_a_running_deployment_at_its_scale(cluster):
    inventory, clients, api = cluster
    record = start_services(inventory, clients)
    assert {a.service: a.outcome for a in record.actions} == {"aiplatform-training": "already running",
                                                            "aiplatform-gateway": "already running"}
    assert api.requests == []  # 2 and 3 replicas kept, not the inventory's 1


def test_dry_run_sends_no_patch(cluster):
    inventory, clients, api = cluster
    record = stop_services(inventory, clients, dry_run=True)
    assert api.requests == []
    assert {a.service: a.outcome for a in record.actions} == {"aiplatform-gateway": "planned",
                                                            "aiplatform-training": "planned"}
    assert record.replicas == {"aiplatform-gateway": 3, "aiplatform-training": 2}


def test_rollout_restart_sets_the_kubectl_annotation_and_rolls_pods(kube_api):  # noqa: F811
    dep = kube_api.add("aiplatform-gateway", "aiplatform", 3)
    api = kube_api.apps_api()
    stamp = k8s.rollout_restart(api, "aiplatform-gateway", "aiplatform", datetime(2026, 11, 28, 3, 0, tzinfo=UTC))

    assert stamp == "2026-11-28T03:00:00Z"
    assert dep.template_annotations == {k8s.RESTARTED_AT: stamp}
    assert dep.replicas == 3 and dep.generation == 2
    assert not k8s.read_deployment(api, "aiplatform-gateway", "aiplatform").is_ready  # pods are being replaced
    assert kube_api.rejected == []


def test_missing_deployment_fails_the_stop_with_a_record(tmp_path, kube_api):  # noqa: F811
    inventory = load_services(write_config(tmp_path / "config", {"aiplatform-ghost": deployment_service("aiplatform-ghost")}))
    clients = SSHClients(sshd=None, apps_api=kube_api.apps_api())  # type: ignore[arg-type]
    with pytest.raises(ServiceOperationFailed, match="aiplatform-ghost") as failure:
        stop_services(inventory, clients)
    assert failure.value.record.actions[0].outcome == "failed"


def test_the_schema_check_rejects_what_the_api_server_would():
    assert schema_violations({"spec": {"replicas": 0}}, "V1Scale") == []
    assert schema_violations({"spec": {"replica": 0}}, "V1Scale") == [".spec.replica: unknown field of V1ScaleSpec"]
    assert schema_violations({"spec": {"replicas": "3"}}, "V1Scale") == [".spec.replicas: expected int, got str"]
    body = {"spec": {"template": {"metadata": {"annotations": {k8s.RESTARTED_AT: "x"}}}}}
    assert schema_violations(body, "V1Deployment") == []
    assert schema_violations({"spec": {"template": {"annotations": {}}}}, "V1Deployment") != []


def test_a_body_the_api_server_refuses_surfaces_as_an_error(kube_api):  # noqa: F811
    from kubernetes.client.rest import ApiException

    kube_api.add("aiplatform-gateway", "aiplatform", 1)
    api = kube_api.apps_api()
    with pytest.raises(ApiException) as refused:
        api.patch_namespaced_deployment_scale("aiplatform-gateway", "aiplatform", {"spec": {"replica": 0}})
    assert refused.value.status == 422
    kube_api.rejected.clear()
